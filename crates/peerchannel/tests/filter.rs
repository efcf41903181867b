//! A propagation filter decides, per message, whether to deliver it here and pass it on.

use crate::common;

use std::time::Duration;

use common::*;
use peerchannel::{MeshOptions, Propagation};

#[tokio::test]
async fn a_filter_can_hide_messages_from_this_node_without_stopping_them() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let c = node(&[&a, &b]).await;
    // b keeps messages on the "secret" path from its own channels but still passes them on.
    let only_public = MeshOptions::default().with_filter(|m| {
        if m.path == "secret" {
            Propagation::ForwardOnly
        } else {
            Propagation::DeliverAndForward
        }
    });
    let ma = a.join("filtered", MeshOptions::default()).await.unwrap();
    let mb = b.join("filtered", only_public).await.unwrap();
    let mc = c.join("filtered", MeshOptions::default()).await.unwrap();
    for m in [&ma, &mb, &mc] {
        neighbors_at_least(m, 1).await;
    }
    let sender = ma.raw_channel("secret").unwrap();
    let mut at_b = mb.raw_channel("secret").unwrap();
    let mut at_c = mc.raw_channel("secret").unwrap();
    sender.send(&b"psst"[..]).await.unwrap();
    assert_eq!(
        &within("c's copy", at_c.recv()).await.unwrap().body[..],
        b"psst"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), at_b.recv())
            .await
            .is_err(),
        "b's filter keeps the message from b's channels"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
