//! Garbage sent to a node's UDP port does not disturb it.

use crate::common;

use common::*;
use peerchannel::MeshOptions;

#[tokio::test]
async fn garbage_datagrams_leave_the_node_working() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let ma = a.join("garbage", MeshOptions::default()).await.unwrap();
    let mb = b.join("garbage", MeshOptions::default()).await.unwrap();
    let mut ca = ma.raw_channel("x").unwrap();
    let cb = mb.raw_channel("x").unwrap();
    neighbors_at_least(&ma, 1).await;

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (i, len) in [0usize, 1, 7, 20, 64, 1200, 1500, 65_000]
        .into_iter()
        .enumerate()
    {
        let junk = pseudo_random(len, 0x2545_f491_4f6c_dd1d + i as u64);
        for _ in 0..20 {
            let _ = socket.send_to(&junk, a.local_addr()).await;
        }
    }
    // Something that looks like a QUIC long header, then random bytes.
    let mut fake_initial = vec![0xc3, 0, 0, 0, 1, 8];
    fake_initial.extend(std::iter::repeat_n(0xab, 1200));
    let _ = socket.send_to(&fake_initial, a.local_addr()).await;

    cb.send(&b"still listening?"[..]).await.unwrap();
    assert_eq!(
        &within("a message after the garbage", ca.recv())
            .await
            .unwrap()
            .body[..],
        b"still listening?"
    );
    assert!(ma.neighbors().await.unwrap().contains(&b.peer_id()));
    a.shutdown().await;
    b.shutdown().await;
}
