//! A node that dies without a goodbye is noticed through the link timeout (about 3 s), the
//! mesh repairs, and the others keep exchanging messages. Before the timeout, a sender
//! flat out is not held up by the dead neighbor's full queue.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use peerchannel::{DisconnectReason, Event, Mesh, MeshOptions, Node, NodeConfig};

/// Joins every node to `mesh` with `options`, then waits until each has at least `neighbors`
/// neighbors.
async fn join_all<const N: usize>(
    nodes: [&Node; N],
    mesh: &str,
    options: MeshOptions,
    neighbors: usize,
) -> [Mesh; N] {
    let mut meshes = Vec::with_capacity(N);
    for node in nodes {
        meshes.push(node.join(mesh, options.clone()).await.unwrap());
    }
    for m in &meshes {
        neighbors_at_least(m, neighbors).await;
    }
    meshes
        .try_into()
        .unwrap_or_else(|_| unreachable!("one mesh per node"))
}

#[tokio::test]
async fn a_crashed_node_is_noticed_and_routed_around() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let c = node(&[&a, &b]).await;
    let d = node(&[&a, &b]).await;
    let [_ma, mb, mc, md] = join_all([&a, &b, &c, &d], "crash", MeshOptions::default(), 2).await;
    let mut events = mb.events();
    let mut cb = mb.raw_channel("x").unwrap();
    let mut cc = mc.raw_channel("x").unwrap();
    let cd = md.raw_channel("x").unwrap();

    let crashed = Instant::now();
    a.crash();
    let down = event(
        &mut events,
        |e| matches!(e, Event::NeighborDown(p, _) if *p == a.peer_id()),
    )
    .await;
    let noticed = crashed.elapsed();
    assert_eq!(
        down,
        Event::NeighborDown(a.peer_id(), DisconnectReason::LinkLost)
    );
    assert!(
        noticed >= Duration::from_millis(1500) && noticed < Duration::from_secs(8),
        "noticed after {noticed:?}: a crash is noticed by the idle timeout (3 s)"
    );
    for (name, m) in [("b", &mb), ("c", &mc), ("d", &md)] {
        within(&format!("{name} to drop the dead node"), async {
            while m.neighbors().await.unwrap().contains(&a.peer_id()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
    cd.send(&b"after the crash"[..]).await.unwrap();
    assert_eq!(
        &within("b's copy", cb.recv()).await.unwrap().body[..],
        b"after the crash"
    );
    assert_eq!(
        &within("c's copy", cc.recv()).await.unwrap().body[..],
        b"after the crash"
    );
    for n in [b, c, d] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_flat_out_past_a_crashed_neighbor_loses_nothing() {
    send_past_a_crashed_neighbor(10_000, None).await;
}

/// The same with links that stay up while silent, so that nothing but routing around d can end
/// a's wait for it (not the idle timeout). Ignored until 2026-12-07 as "loses messages at b
/// or c in about one run of three": that loss was the stores' window (see below); with stores
/// that hold every message it passed every run, on a quiet machine and beside two busy loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbor_that_stops_reading_is_routed_around_without_loss() {
    send_past_a_crashed_neighbor(5_000, Some(Duration::from_secs(60))).await;
}

/// Four nodes in one mesh; d crashes (it acknowledges nothing from then on, so a's link to it
/// fills up: its queue and QUIC's window hold some 1,700 1 KiB messages); a sends `messages`
/// flat out; b and c must get every one. With `idle`, links time out only after that long, and
/// d must still be a's neighbor when a is done (routed around, not dropped).
///
/// The stores hold every message sent: a node cut off from the tree while d is routed around
/// repairs from its neighbors' stores, and what is to be checked here is that the mesh routes
/// around d and repairs, not how long a store keeps messages. With the default 4 MiB (about
/// 3,800 of these messages) a receiver starved of CPU (the whole suite running beside it, on
/// 2 cores) asked for its repair when a was already past what the stores held, in about one
/// run of three on 2026-12-07, and lost a run of about 4,000 messages: the store's window,
/// documented with `BroadcastConfig::store_bytes`.
async fn send_past_a_crashed_neighbor(messages: u32, idle: Option<Duration>) {
    // Channels that hold every message: this is not about slow readers.
    let config = || {
        let mut config = NodeConfig::default();
        config.channel_capacity = messages as usize;
        if let Some(idle) = idle {
            config.link.max_idle_timeout = idle;
        }
        config
    };
    let a = node_with(&[], config()).await;
    let b = node_with(&[&a], config()).await;
    let c = node_with(&[&a, &b], config()).await;
    let d = node_with(&[&a, &b, &c], config()).await;
    let mut options = MeshOptions::default();
    // Every message with room to spare (each is stored with its envelope and header).
    options.protocol.broadcast.store_bytes = messages as usize * 2048;
    let [ma, mb, mc, md] = join_all([&a, &b, &c, &d], "stopped", options, 3).await;
    // Each receiver counts the distinct messages it gets.
    let counter = |node: &Node, mesh: &Mesh| {
        let mut channel = mesh.raw_channel("x").unwrap();
        let name = node.peer_id().fmt_short();
        tokio::spawn(async move {
            let mut seen = vec![false; messages as usize];
            let mut count = 0;
            while count < messages {
                let m = channel
                    .recv()
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let i = u32::from_be_bytes(m.body[..4].try_into().unwrap()) as usize;
                if !std::mem::replace(&mut seen[i], true) {
                    count += 1;
                }
            }
            count
        })
    };
    let got_b = counter(&b, &mb);
    let got_c = counter(&c, &mc);
    let ca = ma.raw_channel("x").unwrap();

    d.crash();
    within("a's sends", async {
        for i in 0..messages {
            let mut body = vec![0u8; 1024];
            body[..4].copy_from_slice(&i.to_be_bytes());
            ca.send(body).await.unwrap();
        }
    })
    .await;
    assert_eq!(within("b's messages", got_b).await.unwrap(), messages);
    assert_eq!(within("c's messages", got_c).await.unwrap(), messages);
    if idle.is_some() {
        assert!(ma.neighbors().await.unwrap().contains(&d.peer_id()));
    }
    drop(md);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
