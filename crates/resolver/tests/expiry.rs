//! Registrations that are not refreshed expire.

use crate::common;

use std::time::Duration;

use common::*;
use peerchannel::resolver::Resolver;
use peerchannel_resolver::ResolverConfig;

#[tokio::test]
async fn a_registration_not_refreshed_disappears_after_its_lifetime() {
    let config = ResolverConfig {
        lifetime: Duration::from_secs(1),
        cleanup_interval: Duration::from_millis(100),
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let client = client(&server);
    let m = mesh("m");
    let forgotten = client.register(&m, peer(1), &[addr(1)]).await.unwrap();
    assert_eq!(forgotten.lifetime, Duration::from_secs(1));
    assert_eq!(client.resolve(&m, 10).await.unwrap().len(), 1);

    eventually("the registration to expire", || async {
        client
            .resolve(&m, 10)
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let err = client.refresh(&m, &forgotten.id).await.unwrap_err();
    assert!(err.is_registration_not_found(), "{err}");
    // The sweep removes it and counts it.
    eventually("the sweep to count the expiry", || async {
        (metric(&server, "peerchannel_resolver_expirations_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&server, "peerchannel_resolver_registrations").await,
        0.0
    );
}

#[tokio::test]
async fn a_refreshed_registration_outlives_its_first_lifetime() {
    let config = ResolverConfig {
        lifetime: Duration::from_secs(1),
        cleanup_interval: Duration::from_millis(100),
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let client = client(&server);
    let m = mesh("m");
    let kept = client.register(&m, peer(1), &[addr(1)]).await.unwrap();
    let dropped = client.register(&m, peer(2), &[addr(2)]).await.unwrap();
    // Refresh one of the two every 300 ms until the other is gone: then the refreshed one
    // has lived past its first lifetime and is still there.
    eventually("the other registration to expire", || async {
        client.refresh(&m, &kept.id).await.unwrap();
        let ids: Vec<_> = client
            .resolve(&m, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
        assert!(
            ids.contains(&Some(peer(1))),
            "the refreshed registration expired"
        );
        (ids == vec![Some(peer(1))]).then_some(())
    })
    .await;
    assert!(
        client
            .refresh(&m, &dropped.id)
            .await
            .unwrap_err()
            .is_registration_not_found()
    );
}
