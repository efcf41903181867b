//! A neighbor that floods the node past its limits is cut off; the others carry on.

use crate::common;

use common::*;
use peerchannel::tls::{self, ExpectedPeer, LinkConfig};
use peerchannel::{Identity, Limits, MeshId, MeshOptions, Node, NodeConfig, PeerId};
use peerchannel_proto::wire::{DEFAULT_MAX_FRAME, encode_frame};
use peerchannel_proto::{BroadcastMessage, MeshMessage, Message};

#[tokio::test]
async fn a_flooding_peer_is_disconnected_and_the_mesh_carries_on() {
    let mut limits = Limits::default();
    limits.frames_per_second = 200;
    limits.frames_burst = 400;
    let mut config = NodeConfig::default().listen("127.0.0.1:0".parse().unwrap());
    config.limits = limits;
    let victim = Node::bind(Identity::generate().unwrap(), config)
        .await
        .unwrap();
    let b = node(&[&victim]).await;
    let mv = victim.join("limits", MeshOptions::default()).await.unwrap();
    let mb = b.join("limits", MeshOptions::default()).await.unwrap();
    let mut at_victim = mv.raw_channel("x").unwrap();
    let from_b = mb.raw_channel("x").unwrap();
    neighbors_at_least(&mv, 1).await;

    // The attacker authenticates like any node, then sends valid frames far too fast.
    let attacker_id = Identity::generate().unwrap();
    let endpoint = tls::bind_endpoint(
        &attacker_id,
        "127.0.0.1:0".parse().unwrap(),
        &LinkConfig::default(),
    )
    .unwrap();
    let (conn, _) = tls::connect(
        &endpoint,
        victim.local_addr(),
        ExpectedPeer::Id(victim.peer_id()),
    )
    .await
    .unwrap();
    let mut stream = conn.open_uni().await.unwrap();
    let frame = {
        let message: Message<PeerId> = Message {
            mesh: MeshId::new("limits").unwrap(),
            body: MeshMessage::Broadcast(BroadcastMessage::IHave(Vec::new())),
        };
        let mut buf = Vec::new();
        encode_frame(&message, DEFAULT_MAX_FRAME, &mut buf).unwrap();
        buf
    };
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 1000)
        .collect();
    let flood = async {
        for _ in 0..100 {
            if stream.write_all(&batch).await.is_err() {
                return;
            }
        }
    };
    within("the flood to be cut off", async {
        tokio::join!(flood, async {
            let reason = conn.closed().await;
            let text = reason.to_string();
            assert!(text.contains("too many messages"), "closed with: {text}");
        })
    })
    .await;

    // Everyone else is still served.
    from_b.send(&b"still here"[..]).await.unwrap();
    let got = within("a message after the flood", at_victim.recv())
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"still here");
    victim.shutdown().await;
    b.shutdown().await;
    endpoint.close(0u32.into(), b"");
}
