//! End-to-end signed messages over real QUIC links: signed messages are delivered; a message
//! whose content was altered, or that is unsigned where signatures are required, is dropped,
//! counted and not passed on; a genuine message replayed after it left the duplicate cache is
//! dropped by the timestamp window.
//!
//! The attacks come from raw peers ([`RawPeer`]): real QUIC links to the node under test that
//! write mesh frames by hand. A peer of the mesh is exactly who could mount them (anyone may
//! join an open mesh, and a forwarder sees every message), and the node's code is not touched:
//! what is tested is what arrives on the wire.

use crate::common;

use std::time::Duration;

use common::security::*;
use common::*;
use peerchannel::{MeshOptions, PeerId};
use peerchannel_proto::{
    BroadcastMessage, Gossip, GossipKind, MeshId, MeshMessage, Message, MessageId,
};

const MESH: &str = "news";

fn signed() -> MeshOptions {
    MeshOptions::default().signed().require_signed()
}

fn gossip_of(message: Message<PeerId>) -> Option<Gossip<PeerId>> {
    match message.body {
        MeshMessage::Broadcast(BroadcastMessage::Gossip(g)) if g.kind == GossipKind::App => Some(g),
        _ => None,
    }
}

#[tokio::test]
async fn signed_messages_are_delivered() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let am = a.join(MESH, signed()).await.unwrap();
    let bm = b.join(MESH, signed()).await.unwrap();
    let ac = am.raw_channel("wire").unwrap();
    let mut bc = bm.raw_channel("wire").unwrap();
    neighbors_at_least(&am, 1).await;
    for i in 0..20u8 {
        ac.send(vec![i; 100]).await.unwrap();
    }
    for i in 0..20u8 {
        let got = within("a signed message", bc.recv()).await.unwrap();
        assert_eq!((got.body[0], got.from), (i, a.peer_id()));
    }
    let stats = bm.security_stats();
    assert_eq!(
        (stats.bad_signatures, stats.unsigned, stats.stale_signatures),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn forged_unsigned_and_replayed_messages_are_dropped_counted_and_not_passed_on() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    // b forgets message ids after 1 s and accepts timestamps within 500 ms, so that a replay
    // after the duplicate cache forgot the id happens within the test's time.
    let mut b_options = signed();
    b_options.protocol.broadcast.seen_retention = Duration::from_secs(1);
    b_options.signature_window = Duration::from_millis(500);
    let am = a.join(MESH, signed()).await.unwrap();
    let bm = b.join(MESH, b_options).await.unwrap();
    let ac = am.raw_channel("wire").unwrap();
    let mut bc = bm.raw_channel("wire").unwrap();
    neighbors_at_least(&bm, 1).await;
    // The attacker, and a witness of everything b passes on.
    let mut attacker = RawPeer::join(&b, MESH).await;
    let mut witness = RawPeer::join(&b, MESH).await;
    neighbors_at_least(&bm, 3).await;

    ac.send(&b"genuine"[..]).await.unwrap();
    let got = within("the genuine message at b", bc.recv()).await.unwrap();
    assert_eq!(&got.body[..], b"genuine");
    let captured = attacker
        .next("the genuine message, captured", |m| {
            gossip_of(m).filter(|g| g.id.origin == a.peer_id())
        })
        .await;
    let mesh = MeshId::new(MESH).unwrap();
    let inject = |g: Gossip<PeerId>| Message {
        mesh: mesh.clone(),
        body: MeshMessage::Broadcast(BroadcastMessage::Gossip(g)),
    };

    // 1. Altered: another body (and a fresh id, so it is not a duplicate), a's signature.
    let mut envelope = WireEnvelope::decode(&captured.payload);
    envelope.body = b"forged".to_vec();
    let mut forged = captured.clone();
    forged.id.seq += 1000;
    forged.payload = envelope.encode();
    attacker.send(inject(forged.clone())).await;
    until("the forgery counted", async || {
        bm.security_stats().bad_signatures == 1
    })
    .await;

    // 2. Unsigned, in a mesh that requires signatures.
    let unsigned = Gossip {
        id: MessageId {
            origin: attacker.id,
            seq: 1,
        },
        hops: 1,
        hop_limit: None,
        kind: GossipKind::App,
        payload: WireEnvelope {
            path: "wire".into(),
            body: b"unsigned".to_vec(),
            auth: None,
        }
        .encode(),
    };
    attacker.send(inject(unsigned)).await;
    until("the unsigned message counted", async || {
        bm.security_stats().unsigned == 1
    })
    .await;

    // 3. The genuine message again, until b has forgotten its id: then it is too old.
    until("the replay refused as stale", async || {
        attacker.send(inject(captured.clone())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        bm.security_stats().stale_signatures >= 1
    })
    .await;

    // Nothing of that was delivered or passed on: the witness sees, before the next genuine
    // message, only the first genuine one.
    ac.send(&b"marker"[..]).await.unwrap();
    let mut seen = Vec::new();
    witness
        .next("the marker at the witness", |m| {
            let g = gossip_of(m)?;
            let body = WireEnvelope::decode(&g.payload).body;
            let done = body == b"marker";
            seen.push((g.id, body));
            done.then_some(())
        })
        .await;
    for (id, body) in &seen {
        assert!(
            body == b"genuine" || body == b"marker",
            "b passed on {id:?} {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let got = within("the marker at b", bc.recv()).await.unwrap();
    assert_eq!(&got.body[..], b"marker", "b delivered nothing in between");
    let stats = bm.security_stats();
    assert_eq!((stats.bad_signatures, stats.unsigned), (1, 1), "{stats:?}");
    let proto = bm.stats().await.unwrap().unwrap();
    assert!(proto.broadcast.rejected >= 3, "{proto:?}");
    attacker.close();
    witness.close();
}
