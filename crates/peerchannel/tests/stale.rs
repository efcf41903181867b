//! A neighbor back from a stall announces what it kept from before: messages the node
//! delivered long ago and has since forgotten (its duplicate cache holds the newest ids only).
//! The node must not ask for them again, which would deliver them a second time, nor for its
//! own messages. Until 2026-12-07 it did both: with `peerchannel-bench --pause-one 10
//! --pause-rate 10000` the repair traffic that followed a paused node's return cost the
//! healthy receivers 20-38% of the messages sent after it.

use crate::common;

use common::security::{RawPeer, WireEnvelope, until};
use common::*;
use peerchannel::{MeshOptions, NodeConfig, PeerId};
use peerchannel_proto::{
    Announced, Announcement, BroadcastMessage, Gossip, GossipKind, MeshId, MeshMessage, Message,
    MessageId,
};

const MESH: &str = "stale";

/// The node's duplicate cache, in ids.
const REMEMBERED: usize = 64;

/// Messages of the raw peer's origin the node gets first: three times what it remembers.
const SENT: u64 = 3 * REMEMBERED as u64;

/// Where the raw peer's origin starts numbering (origins start at random).
const FIRST: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_announcements_from_a_returning_neighbor_are_not_asked_for() {
    let mut config = NodeConfig::default();
    config.channel_capacity = 4 * SENT as usize;
    let a = node_with(&[], config).await;
    let mut options = MeshOptions::default();
    options.protocol.broadcast.seen_capacity = REMEMBERED;
    let ma = a.join(MESH, options).await.unwrap();
    let mut channel = ma.raw_channel("x").unwrap();

    let mut raw = RawPeer::join(&a, MESH).await;
    let raw_id = raw.id;
    until("a to take the raw peer as a neighbor", async || {
        ma.neighbors().await.unwrap().contains(&raw_id)
    })
    .await;
    let mesh = MeshId::new(MESH).unwrap();
    let gossip = |seq: u64| Message {
        mesh: mesh.clone(),
        body: MeshMessage::Broadcast(BroadcastMessage::Gossip(Gossip {
            id: MessageId {
                origin: raw_id,
                seq,
            },
            hops: 0,
            hop_limit: None,
            kind: GossipKind::App,
            payload: WireEnvelope {
                path: "x".into(),
                body: seq.to_be_bytes().to_vec(),
                auth: None,
            }
            .encode(),
        })),
    };
    // a's own messages, more than it remembers, and then the raw peer's.
    let own = ma.raw_channel("own").unwrap();
    for i in 0..SENT {
        own.send(i.to_be_bytes().to_vec()).await.unwrap();
    }
    for seq in FIRST..FIRST + SENT {
        raw.send(gossip(seq)).await;
    }
    for seq in FIRST..FIRST + SENT {
        let got = within("a's deliveries", channel.recv()).await.unwrap();
        assert_eq!(got.body.as_ref(), seq.to_be_bytes(), "in order, once each");
    }

    // Back from a stall: the raw peer announces, as catch-up, the first half of its messages
    // (forgotten by a) and a's first messages; then, as new, one a never had.
    let a_first = within("a's first message", async {
        raw.next("a's messages", |m| match m.body {
            MeshMessage::Broadcast(BroadcastMessage::Gossip(g)) if g.id.origin == a.peer_id() => {
                Some(g.id)
            }
            _ => None,
        })
        .await
    })
    .await;
    let announce = |ids: Vec<MessageId<PeerId>>, catch_up| Message {
        mesh: mesh.clone(),
        body: MeshMessage::Broadcast(BroadcastMessage::IHave(Announced::group(
            &ids.into_iter()
                .map(|id| Announcement {
                    id,
                    hops: 1,
                    catch_up,
                })
                .collect::<Vec<_>>(),
        ))),
    };
    let old: Vec<_> = (FIRST..FIRST + SENT / 2)
        .map(|seq| MessageId {
            origin: raw_id,
            seq,
        })
        .collect();
    let mine: Vec<_> = (0..8)
        .map(|i| MessageId {
            seq: a_first.seq + i,
            ..a_first
        })
        .collect();
    raw.send(announce(old, true)).await;
    raw.send(announce(mine, true)).await;
    let new = MessageId {
        origin: raw_id,
        seq: FIRST + 2 * SENT,
    };
    raw.send(announce(vec![new], false)).await;

    // The catch-up's requests would come first (a catch-up waits `graft_timeout_2`, a new
    // announcement at least `graft_timeout_1`): the first request a sends is for the new one.
    let asked = raw
        .next("a's request for the new message", |m| match m.body {
            MeshMessage::Broadcast(BroadcastMessage::Graft { id: Some(id) })
            | MeshMessage::Broadcast(BroadcastMessage::Resume { from: id })
            | MeshMessage::Broadcast(BroadcastMessage::Fetch { id, .. }) => Some(id),
            _ => None,
        })
        .await;
    assert_eq!(asked, new, "a asked for an old message first");
    let stats = ma.stats().await.unwrap().unwrap();
    assert_eq!(stats.broadcast.stale_ignored, SENT / 2);
    // Answered, the new message is delivered: the node takes new messages from the peer as
    // before. (Nothing old could have come again: the raw peer answers no other request,
    // and the first request a sent was for the new message.)
    raw.send(gossip(new.seq)).await;
    let got = within("the new message", channel.recv()).await.unwrap();
    assert_eq!(got.body.as_ref(), new.seq.to_be_bytes());
    a.shutdown().await;
}
