//! Hostile frames on an authenticated link: three nodes share a mesh while a fourth, with an
//! identity of its own, completes a real TLS/QUIC handshake with one of them and writes
//! garbage, truncated frames, oversized length prefixes, frames for a mesh that does not exist
//! and frames claiming huge counts. The node closes each link that broke the protocol (or
//! ignores what is harmless), stays up, and the three keep delivering. (Junk at the UDP port,
//! before any handshake: `garbage.rs`.)

use crate::common;

use common::security::RawPeer;
use common::*;
use peerchannel::node::DEFAULT_MAX_MESSAGE_SIZE;
use peerchannel::{MeshOptions, PeerId, RawChannel};
use peerchannel_proto::wire::{self, DEFAULT_MAX_FRAME, WIRE_VERSION};
use peerchannel_proto::{DisconnectReason, MembershipMessage, MeshId, MeshMessage, Message};

const MESH: &str = "frames";

/// The QUIC application close code of a protocol violation (`link::close_code`).
const PROTOCOL_VIOLATION: u32 = 2;

#[tokio::test]
async fn hostile_frames_close_only_the_attackers_link() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let c = node(&[&a]).await;
    let ma = a.join(MESH, MeshOptions::default()).await.unwrap();
    let mb = b.join(MESH, MeshOptions::default()).await.unwrap();
    let mc = c.join(MESH, MeshOptions::default()).await.unwrap();
    let mut chans = Chans {
        a: ma.raw_channel("x").unwrap(),
        b: mb.raw_channel("x").unwrap(),
        c: mc.raw_channel("x").unwrap(),
    };
    neighbors_at_least(&ma, 2).await;
    neighbors_at_least(&mb, 1).await;
    neighbors_at_least(&mc, 1).await;
    chans.still_delivering("before any attack").await;

    let violations: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes behind a length prefix", {
            let mut f = 100u32.to_le_bytes().to_vec();
            f.extend(pseudo_random(4096, 0x2545_f491_4f6c_dd1d));
            f
        }),
        ("a length prefix of 4 GiB", u32::MAX.to_le_bytes().to_vec()),
        ("a length prefix of 1 GiB, then a body", {
            let mut f = (1u32 << 30).to_le_bytes().to_vec();
            f.extend(vec![0xab; 64 * 1024]);
            f
        }),
        (
            "one byte over the largest frame",
            // The node's limit: the largest message plus room for the envelope.
            ((DEFAULT_MAX_MESSAGE_SIZE + DEFAULT_MAX_FRAME + 1) as u32)
                .to_le_bytes()
                .to_vec(),
        ),
        ("an empty frame", vec![0, 0, 0, 0]),
        ("an unknown wire version", frame(&[WIRE_VERSION + 1, 0, 0])),
        ("a mesh id that is not a hostname", {
            let mut body = vec![WIRE_VERSION, 8];
            body.extend_from_slice(b"bad_mesh");
            body.extend_from_slice(&[0, 0, 0]); // Membership(Join { data: None })
            frame(&body)
        }),
        (
            "a join reply claiming 4 billion referrals",
            frame(&mesh_body(&[0, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f])),
        ),
        (
            "lazy announcements claiming 4 billion ids",
            frame(&mesh_body(&[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f])),
        ),
        (
            "a message whose payload claims 1 GiB",
            // Broadcast(Gossip { id: (origin, seq), hops, hop_limit, kind, payload }).
            frame(&mesh_body(
                &[
                    &[1u8, 0][..],
                    &[7; 32],
                    &[1, 1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x04],
                ]
                .concat(),
            )),
        ),
        ("peer data over the limit", {
            // Membership(Join { data: Some(600 bytes) }).
            let mut body = mesh_body(&[0, 0, 1, 0xd8, 0x04]);
            body.extend(vec![1; 600]);
            frame(&body)
        }),
        ("a valid message with trailing bytes", {
            let mut body = encode(&join("nosuchmesh"))[4..].to_vec();
            body.push(0);
            frame(&body)
        }),
        ("an unknown message kind", frame(&mesh_body(&[9, 0]))),
    ];
    for (what, bytes) in violations {
        let attacker = RawPeer::connect(&a).await;
        attacker.write_stream(&bytes, true).await;
        attacker.closed_with(PROTOCOL_VIOLATION, what).await;
        chans.still_delivering(what).await;
    }

    // A frame cut short by the end of its stream is dropped; the link stays and is answered:
    // a well-formed request for a mesh the node is not in gets "not a member".
    let mut attacker = RawPeer::connect(&a).await;
    let mut cut = encode(&join("nosuchmesh"));
    cut.truncate(cut.len() - 3);
    attacker.write_stream(&cut, true).await;
    // Half a length prefix, then the stream ends.
    attacker.write_stream(&[5, 0], true).await;
    // Streams left open in the middle of a frame hold nothing but their own task.
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(attacker.open_stream(&[200, 0, 0, 0, WIRE_VERSION]).await);
    }
    attacker.send(join("nosuchmesh")).await;
    let answer = attacker.next("the node's answer", Some).await;
    assert_eq!(
        answer,
        Message {
            mesh: MeshId::new("nosuchmesh").unwrap(),
            body: MeshMessage::Membership(MembershipMessage::Disconnect {
                reason: DisconnectReason::NotMember,
            }),
        }
    );
    chans
        .still_delivering("truncated frames and streams left open")
        .await;
    // Then garbage on the same link still closes it.
    attacker.write_stream(&pseudo_random(100, 7), true).await;
    attacker
        .closed_with(PROTOCOL_VIOLATION, "garbage after valid frames")
        .await;
    drop(open);

    let neighbors = ma.neighbors().await.unwrap();
    assert!(
        neighbors.contains(&b.peer_id()) || neighbors.contains(&c.peer_id()),
        "the attacked node kept its neighbors: {neighbors:?}"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// The three nodes' channels.
struct Chans {
    a: RawChannel,
    b: RawChannel,
    c: RawChannel,
}

impl Chans {
    /// A message from b reaches a and c, and one from c reaches b.
    async fn still_delivering(&mut self, after: &str) {
        let line = format!("after {after}");
        self.b.send(line.clone().into_bytes()).await.unwrap();
        for (who, chan) in [("a", &mut self.a), ("c", &mut self.c)] {
            let got = within(&format!("{who} to get b's message {line:?}"), chan.recv())
                .await
                .unwrap();
            assert_eq!(&got.body[..], line.as_bytes());
        }
        let reply = format!("{line}: c");
        self.c.send(reply.clone().into_bytes()).await.unwrap();
        let got = within(&format!("b to get {reply:?}"), self.b.recv())
            .await
            .unwrap();
        assert_eq!(&got.body[..], reply.as_bytes());
        // a hears c's message too; take it so that the next round starts clean.
        let got = within("a to get c's message", self.a.recv()).await.unwrap();
        assert_eq!(&got.body[..], reply.as_bytes());
    }
}

fn join(mesh: &str) -> Message<PeerId> {
    Message {
        mesh: MeshId::new(mesh).unwrap(),
        body: MeshMessage::Membership(MembershipMessage::Join { data: None }),
    }
}

fn encode(message: &Message<PeerId>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_frame(message, DEFAULT_MAX_FRAME, &mut out).unwrap();
    out
}

/// A frame body: the version, this test's mesh id, then `rest` (the postcard of a body).
fn mesh_body(rest: &[u8]) -> Vec<u8> {
    let mut body = vec![WIRE_VERSION, MESH.len() as u8];
    body.extend_from_slice(MESH.as_bytes());
    body.extend_from_slice(rest);
    body
}

/// `body` behind its length prefix.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}
