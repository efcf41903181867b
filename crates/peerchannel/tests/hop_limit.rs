//! A hop limit of 1 reaches the sender's neighbors only; 2 reaches their neighbors too.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use peerchannel::resolver::StaticResolver;
use peerchannel::{Identity, MeshOptions, Node, NodeConfig, SendOptions};

/// Options that keep a node at one neighbor, to build a line a - b - c.
fn one_neighbor() -> MeshOptions {
    let mut options = MeshOptions::default();
    let m = &mut options.protocol.membership;
    m.active_min = 1;
    m.active_ideal = 1;
    m.active_max = 1;
    options
}

#[tokio::test]
async fn hop_limits_bound_how_far_a_message_goes() {
    let b = node(&[]).await;
    let mb = b.join("hops", MeshOptions::default()).await.unwrap();
    let through_b = |b: &Node| {
        NodeConfig::default()
            .listen("127.0.0.1:0".parse().unwrap())
            .resolver(Arc::new(StaticResolver::from_peers([(
                b.peer_id(),
                b.local_addr(),
            )])))
    };
    let a = Node::bind(Identity::generate().unwrap(), through_b(&b))
        .await
        .unwrap();
    let c = Node::bind(Identity::generate().unwrap(), through_b(&b))
        .await
        .unwrap();
    let ma = a.join("hops", one_neighbor()).await.unwrap();
    let mc = c.join("hops", one_neighbor()).await.unwrap();
    let sender = ma.raw_channel("x").unwrap();
    let mut at_b = mb.raw_channel("x").unwrap();
    let mut at_c = mc.raw_channel("x").unwrap();
    neighbors_at_least(&mb, 2).await;
    assert_eq!(ma.neighbors().await.unwrap(), vec![b.peer_id()]);
    assert_eq!(mc.neighbors().await.unwrap(), vec![b.peer_id()]);

    sender
        .send_with(&b"one hop"[..], SendOptions::hop_limit(1))
        .await
        .unwrap();
    assert_eq!(
        &within("one hop at b", at_b.recv()).await.unwrap().body[..],
        b"one hop"
    );
    sender
        .send_with(&b"two hops"[..], SendOptions::hop_limit(2))
        .await
        .unwrap();
    assert_eq!(
        &within("two hops at b", at_b.recv()).await.unwrap().body[..],
        b"two hops"
    );
    // c is two hops away: it gets the second message, and never the first.
    let first_at_c = within("two hops at c", at_c.recv()).await.unwrap();
    assert_eq!(&first_at_c.body[..], b"two hops");
    assert_eq!(first_at_c.hops, 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), at_c.recv())
            .await
            .is_err(),
        "nothing else may reach c"
    );
    assert!(matches!(
        sender
            .send_with(&b"zero"[..], SendOptions::hop_limit(0))
            .await,
        Err(peerchannel::SendError::ZeroHopLimit)
    ));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
