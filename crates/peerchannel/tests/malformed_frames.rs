//! Hostile frames on an authenticated link, and junk at the UDP port: three nodes share a mesh
//! while a fourth, with an identity of its own, completes a real TLS/QUIC handshake with one of
//! them and writes garbage, truncated frames, oversized length prefixes, frames for a mesh
//! that does not exist and frames claiming huge counts. The node closes each link that broke
//! the protocol (or ignores what is harmless), stays up, and the three keep delivering.

mod common;

use std::net::SocketAddr;

use common::*;
use peerchannel::node::DEFAULT_MAX_MESSAGE_SIZE;
use peerchannel::tls::{self, ExpectedPeer, LinkConfig};
use peerchannel::{Identity, MeshOptions, Node, PeerId, RawChannel};
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
        let attacker = Attacker::connect(&a).await;
        attacker.write(&bytes, true).await;
        attacker.closed_for_violation(what).await;
        chans.still_delivering(what).await;
    }

    // A frame cut short by the end of its stream is dropped; the link stays and is answered:
    // a well-formed request for a mesh the node is not in gets "not a member".
    let attacker = Attacker::connect(&a).await;
    let mut cut = encode(&join("nosuchmesh"));
    cut.truncate(cut.len() - 3);
    attacker.write(&cut, true).await;
    // Half a length prefix, then the stream ends.
    attacker.write(&[5, 0], true).await;
    // Streams left open in the middle of a frame hold nothing but their own task.
    let mut open = Vec::new();
    for _ in 0..20 {
        let mut s = attacker.conn.open_uni().await.unwrap();
        s.write_all(&[200, 0, 0, 0, WIRE_VERSION]).await.unwrap();
        open.push(s);
    }
    attacker.write(&encode(&join("nosuchmesh")), true).await;
    let answer = attacker.read_message().await;
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
    attacker.write(&pseudo_random(100, 7), true).await;
    attacker
        .closed_for_violation("garbage after valid frames")
        .await;
    drop(open);

    // Raw junk at the node's UDP port, some of it shaped like QUIC packets.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (i, len) in [1usize, 20, 1200, 1500, 65_000].into_iter().enumerate() {
        let mut junk = pseudo_random(len, i as u64 + 1);
        if len >= 1200 {
            junk[..6].copy_from_slice(&[0xc3, 0, 0, 0, 1, 8]); // a long header, Initial
        }
        for _ in 0..10 {
            let _ = socket.send_to(&junk, a.local_addr()).await;
        }
    }
    chans.still_delivering("junk datagrams").await;

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

/// A peer with an identity of its own, linked to the node over real TLS/QUIC.
struct Attacker {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl Attacker {
    async fn connect(target: &Node) -> Self {
        let identity = Identity::generate().unwrap();
        let client = tls::client_config(&identity, &LinkConfig::default()).unwrap();
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        endpoint.set_default_client_config(client);
        let name = ExpectedPeer::Id(target.peer_id()).server_name();
        let connecting = endpoint.connect(target.local_addr(), &name).unwrap();
        let conn = within("the attacker's handshake", connecting)
            .await
            .expect("the handshake completes");
        assert_eq!(tls::peer_id(&conn).unwrap(), target.peer_id());
        Self {
            _endpoint: endpoint,
            conn,
        }
    }

    /// Writes `bytes` on a new uni stream, finishing it if asked.
    async fn write(&self, bytes: &[u8], finish: bool) {
        let mut stream = self.conn.open_uni().await.unwrap();
        // The node may close the link before everything is written: that is the point.
        if stream.write_all(bytes).await.is_ok() && finish {
            let _ = stream.finish();
        }
    }

    /// Waits until the node closes the link as a protocol violation.
    async fn closed_for_violation(&self, what: &str) {
        let reason = within(
            &format!("the link to close after {what}"),
            self.conn.closed(),
        )
        .await;
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(
                    close.error_code,
                    quinn::VarInt::from_u32(PROTOCOL_VIOLATION),
                    "{what}: {close:?}"
                );
            }
            other => panic!("{what}: the link ended otherwise: {other}"),
        }
    }

    /// Reads the node's first message on its own stream.
    async fn read_message(&self) -> Message<PeerId> {
        within("the node's answer", async {
            let mut stream = self.conn.accept_uni().await.unwrap();
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).await.unwrap();
            let len = wire::frame_len(prefix, DEFAULT_MAX_FRAME).unwrap();
            let mut body = vec![0; len];
            stream.read_exact(&mut body).await.unwrap();
            wire::decode_body(&body).unwrap()
        })
        .await
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

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
