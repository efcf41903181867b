//! Typed messages between nodes over real QUIC on loopback.

use crate::common;

use common::*;
use peerchannel::MeshOptions;

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Line {
    nick: String,
    text: String,
}

#[tokio::test]
async fn three_nodes_exchange_typed_messages() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let c = node(&[&a]).await;
    let ma = a
        .join("net.p2p://soccerpals/chat", MeshOptions::default())
        .await
        .unwrap();
    let mb = b.join("soccerpals", MeshOptions::default()).await.unwrap();
    let mc = c.join("SoccerPals", MeshOptions::default()).await.unwrap();
    assert_eq!(ma.path(), "chat");
    let mut ca = ma.channel::<Line>("chat").unwrap();
    let mut cb = mb.channel::<Line>("chat").unwrap();
    let mut cc = mc.channel::<Line>("chat").unwrap();
    neighbors_at_least(&ma, 2).await;
    neighbors_at_least(&mb, 1).await;
    neighbors_at_least(&mc, 1).await;

    let line = Line {
        nick: "bob".into(),
        text: "hello".into(),
    };
    cb.send(&line).await.unwrap();
    let (from, got) = within("a's copy", ca.recv()).await.unwrap();
    assert_eq!((from, &got), (b.peer_id(), &line));
    let (from, got) = within("c's copy", cc.recv()).await.unwrap();
    assert_eq!((from, &got), (b.peer_id(), &line));

    let reply = Line {
        nick: "carol".into(),
        text: "hi bob".into(),
    };
    cc.send(&reply).await.unwrap();
    let (from, got) = within("b's copy", cb.recv()).await.unwrap();
    assert_eq!((from, got), (c.peer_id(), reply));
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn messages_that_arrive_before_a_channel_is_opened_are_kept_for_it() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let ma = a.join("backlog", MeshOptions::default()).await.unwrap();
    let mb = b.join("backlog", MeshOptions::default()).await.unwrap();
    let sender = mb.raw_channel("late").unwrap();
    neighbors_at_least(&ma, 1).await;
    sender.send(&b"before"[..]).await.unwrap();
    // Nothing is open on "late" at a yet; wait until the message has surely arrived.
    within("the message to reach a", async {
        loop {
            if ma.stats().await.unwrap().unwrap().broadcast.received >= 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut late = ma.raw_channel("late").unwrap();
    let got = within("the kept message", late.recv()).await.unwrap();
    assert_eq!((&got.body[..], got.from), (&b"before"[..], b.peer_id()));
    sender.send(&b"after"[..]).await.unwrap();
    assert_eq!(
        &within("a live message", late.recv()).await.unwrap().body[..],
        b"after"
    );
    a.shutdown().await;
    b.shutdown().await;
}
