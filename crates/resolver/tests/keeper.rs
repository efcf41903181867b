//! The registration keeper against the real service: updates, unregister, and dropping.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use peerchannel::resolver::{PeerAddr, RegistrationStatus, Resolver, spawn_registration};
use peerchannel_resolver::ResolverConfig;

#[tokio::test]
async fn unregister_removes_the_registration_at_once() {
    let server = start_relaxed().await;
    let client = Arc::new(client(&server));
    let m = mesh("m");
    let handle = spawn_registration(client.clone(), m.clone(), peer(1), vec![addr(1)]);
    handle
        .watch_status()
        .wait_for(RegistrationStatus::is_registered)
        .await
        .unwrap();
    assert_eq!(client.resolve(&m, 10).await.unwrap().len(), 1);
    let mut status = handle.watch_status();
    handle.unregister().await;
    // No waiting: the DELETE was answered before `unregister` returned.
    assert!(client.resolve(&m, 10).await.unwrap().is_empty());
    assert!(matches!(
        *status.borrow_and_update(),
        RegistrationStatus::Stopped
    ));
}

#[tokio::test]
async fn new_addresses_reach_the_resolver() {
    let server = start_relaxed().await;
    let client = Arc::new(client(&server));
    let m = mesh("m");
    let handle = spawn_registration(client.clone(), m.clone(), peer(1), vec![addr(1)]);
    handle
        .watch_status()
        .wait_for(RegistrationStatus::is_registered)
        .await
        .unwrap();
    handle.update_addresses(vec![addr(2), addr(3)]);
    eventually("the new addresses to be published", || async {
        let peers = client.resolve(&m, 10).await.unwrap();
        (peers == vec![PeerAddr::new(peer(1), vec![addr(2), addr(3)])]).then_some(())
    })
    .await;
    handle.unregister().await;
}

#[tokio::test]
async fn a_dropped_handle_stops_refreshing_and_the_registration_expires() {
    let config = ResolverConfig {
        lifetime: Duration::from_secs(1),
        cleanup_interval: Duration::from_millis(100),
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let client = Arc::new(client(&server));
    let m = mesh("m");
    let kept = spawn_registration(client.clone(), m.clone(), peer(1), vec![addr(1)]);
    let dropped = spawn_registration(client.clone(), m.clone(), peer(2), vec![addr(2)]);
    for handle in [&kept, &dropped] {
        handle
            .watch_status()
            .wait_for(RegistrationStatus::is_registered)
            .await
            .unwrap();
    }
    drop(dropped);
    // The kept one is refreshed every half second and stays; the dropped one expires.
    eventually("the dropped registration to expire", || async {
        let ids: Vec<_> = client
            .resolve(&m, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
        (ids == vec![Some(peer(1))]).then_some(())
    })
    .await;
    assert!(kept.status().is_registered());
    kept.unregister().await;
}
