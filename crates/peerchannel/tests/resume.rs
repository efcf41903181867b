//! A neighbor that asks for a whole gap at once (a `Resume`, as a node whose parent stalled
//! does) gets all of it, though the gap is several times what a link's data lane holds (512
//! frames): the answers that do not fit wait beside the lane and go as it drains. Dropped
//! (until 2026-12-07), they had to be asked for again, by when the stores had often moved on.

use crate::common;

use std::collections::BTreeSet;

use common::security::{RawPeer, until};
use common::*;
use peerchannel::tls::LinkConfig;
use peerchannel::{MeshOptions, NodeConfig, PeerId};
use peerchannel_proto::{BroadcastMessage, GossipKind, MeshId, MeshMessage, Message, MessageId};

const MESH: &str = "resume";

/// Messages in the gap: about four data lanes' worth, about 2 MiB (the store keeps 4 MiB).
const SENT: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_larger_than_the_data_lane_is_answered_in_full() {
    let mut config = NodeConfig::default();
    config.channel_capacity = SENT as usize;
    let a = node_with(&[], config.clone()).await;
    let b = node_with(&[&a], config).await;
    let ma = a.join(MESH, MeshOptions::default()).await.unwrap();
    let mb = b.join(MESH, MeshOptions::default()).await.unwrap();
    neighbors_at_least(&ma, 1).await;
    let ca = ma.raw_channel("x").unwrap();
    let mut cb = mb.raw_channel("x").unwrap();
    for i in 0..SENT {
        ca.send(vec![i as u8; 1000]).await.unwrap();
    }
    // b has them all, so a has sent them all (and stored them).
    for _ in 0..SENT {
        within("b's copies", cb.recv()).await.unwrap();
    }

    // A raw peer that lets a send only 1 KiB ahead of its reading: a's writer drains the
    // lane far slower than a answers, as a busy link does (on an idle loopback link the
    // writer keeps up with the answers, and the lane never fills).
    let slow = LinkConfig {
        stream_receive_window: 1024,
        ..LinkConfig::default()
    };
    let mut raw = RawPeer::join_with(&a, MESH, &slow).await;
    let raw_id = raw.id;
    until("a to take the raw peer as a neighbor", async || {
        ma.neighbors().await.unwrap().contains(&raw_id)
    })
    .await;
    // Everything a stores of its own, from the lowest sequence number on.
    let origin: PeerId = a.peer_id();
    raw.send(Message {
        mesh: MeshId::new(MESH).unwrap(),
        body: MeshMessage::Broadcast(BroadcastMessage::Resume {
            from: MessageId { origin, seq: 0 },
        }),
    })
    .await;
    // Every one of the 2,000 (a sends nothing else), or the wait for the next times out.
    let mut got = BTreeSet::new();
    while (got.len() as u64) < SENT {
        let seq = raw
            .next("the resume's answers", |m| match m.body {
                MeshMessage::Broadcast(BroadcastMessage::Gossip(g))
                    if g.id.origin == origin && g.kind == GossipKind::App =>
                {
                    Some(g.id.seq)
                }
                _ => None,
            })
            .await;
        got.insert(seq);
    }
    for n in [a, b] {
        n.shutdown().await;
    }
}
