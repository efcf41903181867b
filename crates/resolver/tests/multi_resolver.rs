//! A MultiResolver over a live resolver and a dead URL works as long as one answers, and
//! says which URLs failed when none does.

use crate::common;

use std::sync::Arc;

use common::*;
use peerchannel::resolver::{MultiResolver, PeerAddr, Resolver, ResolverError, ServiceResolver};

/// A URL where nothing listens: a port that was free a moment ago.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn one_dead_url_does_not_stop_the_others() {
    let live_a = start_relaxed().await;
    let live_b = start_relaxed().await;
    let dead = dead_url().await;
    let resolvers: Vec<Arc<dyn Resolver>> = vec![
        Arc::new(ServiceResolver::new(&dead).unwrap()),
        Arc::new(client(&live_a)),
        Arc::new(client(&live_b)),
    ];
    let multi = MultiResolver::new(resolvers);
    let m = mesh("m");

    let registration = multi.register(&m, peer(1), &[addr(1)]).await.unwrap();
    // Registered with both live resolvers.
    for live in [&live_a, &live_b] {
        assert_eq!(
            client(live).resolve(&m, 10).await.unwrap(),
            vec![PeerAddr::new(peer(1), vec![addr(1)])]
        );
    }
    // Others registered with only one of them; the union has both, once each.
    client(&live_b)
        .register(&m, peer(2), &[addr(2)])
        .await
        .unwrap();
    let mut found = multi.resolve(&m, 10).await.unwrap();
    found.sort_by_key(|p| p.peer_id);
    assert_eq!(
        found,
        vec![
            PeerAddr::new(peer(1), vec![addr(1)]),
            PeerAddr::new(peer(2), vec![addr(2)])
        ]
    );

    multi.refresh(&m, &registration.id).await.unwrap();
    multi.unregister(&m, &registration.id).await.unwrap();
    assert_eq!(client(&live_a).resolve(&m, 10).await.unwrap(), vec![]);
}

#[tokio::test]
async fn when_every_url_is_dead_the_error_names_each() {
    let (first, second) = (dead_url().await, dead_url().await);
    let resolvers: Vec<Arc<dyn Resolver>> = vec![
        Arc::new(ServiceResolver::new(&first).unwrap()),
        Arc::new(ServiceResolver::new(&second).unwrap()),
    ];
    let multi = MultiResolver::new(resolvers);
    let err = multi.resolve(&mesh("m"), 10).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("no resolver answered: "), "{text}");
    assert!(text.contains(&first) && text.contains(&second), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    let err = multi
        .register(&mesh("m"), peer(1), &[addr(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolverError::AllFailed { ref errors } if errors.len() == 2),
        "{err}"
    );
}
