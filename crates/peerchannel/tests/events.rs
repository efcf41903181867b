//! Online, offline and neighbor events arrive in order, and leaving says goodbye at once.

use crate::common;

use common::*;
use peerchannel::{DisconnectReason, Event, MeshOptions};

#[tokio::test]
async fn online_neighbor_up_neighbor_down_offline_in_order() {
    let a = node(&[]).await;
    let ma = a.join("events", MeshOptions::default()).await.unwrap();
    let mut events = ma.events();
    assert!(!ma.is_online().await.unwrap(), "alone in the mesh: offline");

    let b = node(&[&a]).await;
    let mb = b.join("events", MeshOptions::default()).await.unwrap();
    assert_eq!(event(&mut events, |_| true).await, Event::Online);
    assert_eq!(
        event(&mut events, |_| true).await,
        Event::NeighborUp(b.peer_id())
    );

    // A goodbye is noticed at once, well before any link timeout.
    let started = std::time::Instant::now();
    mb.leave().await.unwrap();
    assert_eq!(
        event(&mut events, |_| true).await,
        Event::NeighborDown(b.peer_id(), DisconnectReason::Leaving)
    );
    assert_eq!(event(&mut events, |_| true).await, Event::Offline);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a goodbye must not wait for the idle timeout (took {:?})",
        started.elapsed()
    );
    a.shutdown().await;
    b.shutdown().await;
}
