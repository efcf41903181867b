//! The maximum message size: a larger send is an error to the sender, and a receiver refuses a
//! larger frame without allocating it, and stays up.

use crate::common;

use common::*;
use peerchannel::{Identity, MeshOptions, Node, NodeConfig, SendError};

#[tokio::test]
async fn an_oversized_send_is_an_error_to_the_sender() {
    let a = node(&[]).await;
    let mesh = a.join("sizes", MeshOptions::default()).await.unwrap();
    let ch = mesh.raw_channel("big").unwrap();
    let at_limit = vec![0u8; 64 * 1024];
    assert!(
        ch.send(at_limit).await.is_ok(),
        "exactly the maximum is fine"
    );
    match ch.send(vec![0u8; 64 * 1024 + 1]).await {
        Err(SendError::TooLarge { size, max }) => {
            assert_eq!((size, max), (64 * 1024 + 1, 64 * 1024))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    a.shutdown().await;
}

#[tokio::test]
async fn a_receiver_with_a_smaller_maximum_refuses_the_frame_and_stays_up() {
    let big = node(&[]).await;
    let small_config = NodeConfig::default()
        .listen("127.0.0.1:0".parse().unwrap())
        .max_message_size(1024)
        .resolver(std::sync::Arc::new(
            peerchannel::resolver::StaticResolver::from_peers([(big.peer_id(), big.local_addr())]),
        ));
    let small = Node::bind(Identity::generate().unwrap(), small_config)
        .await
        .unwrap();
    let mb = big.join("sizes", MeshOptions::default()).await.unwrap();
    let ms = small.join("sizes", MeshOptions::default()).await.unwrap();
    let sender = mb.raw_channel("c").unwrap();
    let mut receiver = ms.raw_channel("c").unwrap();
    neighbors_at_least(&mb, 1).await;

    sender.send(&b"small enough"[..]).await.unwrap();
    assert_eq!(
        &within("a small message", receiver.recv())
            .await
            .unwrap()
            .body[..],
        b"small enough"
    );
    // 8 KiB is fine for the sender, too large for the receiver: the link is dropped as a
    // protocol violation rather than the frame being read.
    sender.send(vec![7u8; 8 * 1024]).await.unwrap();
    let mut events = ms.events();
    event(&mut events, |e| {
        matches!(e, peerchannel::Event::NeighborDown(..))
    })
    .await;
    // The small node still works: it reconnects (the mesh repairs) and small messages flow.
    neighbors_at_least(&ms, 1).await;
    let resend = within("a message after the repair", async {
        loop {
            sender.send(&b"after"[..]).await.unwrap();
            if let Ok(Ok(r)) =
                tokio::time::timeout(std::time::Duration::from_millis(500), receiver.recv()).await
            {
                if &r.body[..] == b"after" {
                    return r;
                }
            }
        }
    })
    .await;
    assert_eq!(resend.from, big.peer_id());
    big.shutdown().await;
    small.shutdown().await;
}
