//! A message sent while offline waits and goes out once online; it is never lost silently.

use crate::common;

use common::*;
use peerchannel::{MeshOptions, SendError, SendStatus};

#[tokio::test]
async fn messages_sent_offline_are_queued_then_delivered() {
    let a = node(&[]).await;
    let ma = a.join("offline", MeshOptions::default()).await.unwrap();
    let ca = ma.raw_channel("q").unwrap();
    assert_eq!(ca.send(&b"first"[..]).await.unwrap(), SendStatus::Queued);
    assert_eq!(ca.send(&b"second"[..]).await.unwrap(), SendStatus::Queued);

    let b = node(&[&a]).await;
    let mb = b.join("offline", MeshOptions::default()).await.unwrap();
    let mut cb = mb.raw_channel("q").unwrap();
    let first = within("the first queued message", cb.recv()).await.unwrap();
    let second = within("the second queued message", cb.recv())
        .await
        .unwrap();
    assert_eq!(
        (&first.body[..], &second.body[..]),
        (&b"first"[..], &b"second"[..])
    );
    assert_eq!(first.from, a.peer_id());
    assert_eq!(ca.send(&b"online now"[..]).await.unwrap(), SendStatus::Sent);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_full_offline_queue_is_an_error() {
    let a = node(&[]).await;
    let mut options = MeshOptions::default();
    options.protocol.mesh.offline_queue_messages = 2;
    let ma = a.join("offline", options).await.unwrap();
    let ca = ma.raw_channel("q").unwrap();
    ca.send(&b"1"[..]).await.unwrap();
    ca.send(&b"2"[..]).await.unwrap();
    match ca.send(&b"3"[..]).await {
        Err(SendError::OfflineQueueFull { messages: 2, .. }) => {}
        other => panic!("expected OfflineQueueFull, got {other:?}"),
    }
    assert_eq!(
        ma.leave().await.unwrap().unsent,
        2,
        "leaving reports what was never sent"
    );
    a.shutdown().await;
}
