//! A resolver that restarts forgets every registration; the keeper notices (404 on refresh)
//! and registers again.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use peerchannel::resolver::{PeerAddr, RegistrationStatus, Resolver, spawn_registration};
use peerchannel_resolver::{ResolverConfig, ResolverServer};

#[tokio::test]
async fn the_keeper_registers_again_after_a_restart_on_the_same_port() {
    let config = ResolverConfig {
        lifetime: Duration::from_secs(2),
        ..ResolverConfig::relaxed()
    };
    let server = start(config.clone()).await;
    let port_addr = server.local_addr();
    let client = Arc::new(client(&server));
    let m = mesh("m");
    let handle = spawn_registration(client.clone(), m.clone(), peer(1), vec![addr(1)]);
    let mut status = handle.watch_status();
    status
        .wait_for(RegistrationStatus::is_registered)
        .await
        .unwrap();
    assert_eq!(
        client.resolve(&m, 10).await.unwrap(),
        vec![PeerAddr::new(peer(1), vec![addr(1)])]
    );

    server.shutdown().await.unwrap();
    // While it is down, the keeper reports it (its next refresh comes within a second).
    eventually("the keeper to notice the resolver is down", || async {
        match &*status.borrow() {
            RegistrationStatus::Retrying { error, .. } if error.is_unreachable() => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        handle
            .status()
            .to_string()
            .starts_with("resolver unreachable"),
        "{}",
        handle.status()
    );

    let restarted = ResolverServer::bind(port_addr, config).await.unwrap();
    eventually(
        "the keeper to register with the restarted resolver",
        || async {
            let peers = client.resolve(&m, 10).await.ok()?;
            (peers == vec![PeerAddr::new(peer(1), vec![addr(1)])]).then_some(())
        },
    )
    .await;
    status
        .wait_for(RegistrationStatus::is_registered)
        .await
        .unwrap();
    // It got there the documented way: a refresh answered 404, then a new registration.
    let refresh_404 = r#"peerchannel_resolver_requests_total{route="/v1/meshes/{mesh}/registrations/{id}/refresh",method="POST",status="404"}"#;
    assert_eq!(metric(&restarted, refresh_404).await, 1.0);
    handle.unregister().await;
    assert!(client.resolve(&m, 10).await.unwrap().is_empty());
    restarted.shutdown().await.unwrap();
}
