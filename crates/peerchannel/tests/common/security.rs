//! Helpers for the closed-mesh and signing tests: options, waiting for authentication
//! failures, and a raw peer that speaks the mesh protocol over QUIC by hand.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use peerchannel::security::{AuthFailure, MeshSecurity};
use peerchannel::tls::{self, ExpectedPeer, LinkConfig};
use peerchannel::{Event, Identity, Mesh, MeshId, MeshOptions, MeshPassword, Node, PeerId};
use peerchannel_proto::wire;
use peerchannel_proto::{BroadcastMessage, MembershipMessage, MeshMessage, Message};
use tokio::sync::mpsc;

use super::within;

/// Options for a password mesh.
pub fn password(secret: &str) -> MeshOptions {
    MeshOptions::default().with_security(MeshSecurity::Password(
        MeshPassword::new(secret).expect("a non-empty test password"),
    ))
}

/// Waits for an authentication failure on a mesh; returns the peer and the reason.
pub async fn auth_failure(
    mesh: &Mesh,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
) -> (PeerId, AuthFailure) {
    within(
        &format!("an authentication failure at {}", mesh.me().fmt_short()),
        async {
            loop {
                match events.recv().await {
                    Ok(Event::AuthenticationFailed { peer, reason }) => return (peer, reason),
                    Ok(_) => {}
                    Err(e) => panic!("event stream ended: {e}"),
                }
            }
        },
    )
    .await
}

/// Polls `f` until it is true, failing the test after the deadline.
pub async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    within(what, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A peer that speaks the mesh protocol by hand over a real QUIC link: it sends whatever
/// frames a test builds and hands back every message the node sends it. The wire format it
/// writes is the one a foreign implementation would: if these tests break, the wire changed.
pub struct RawPeer {
    pub id: PeerId,
    conn: quinn::Connection,
    send: quinn::SendStream,
    pub received: mpsc::UnboundedReceiver<Message<PeerId>>,
    _endpoint: quinn::Endpoint,
}

impl RawPeer {
    /// Links to `node` and asks to join `mesh` through it.
    pub async fn join(node: &Node, mesh: &str) -> Self {
        Self::join_with(node, mesh, &LinkConfig::default()).await
    }

    /// [`RawPeer::join`] over a link with these settings.
    pub async fn join_with(node: &Node, mesh: &str, link: &LinkConfig) -> Self {
        let mut peer = Self::connect_with(node, link).await;
        let mesh = MeshId::new(mesh).unwrap();
        peer.send(Message {
            mesh: mesh.clone(),
            body: MeshMessage::Membership(MembershipMessage::Join { data: None }),
        })
        .await;
        // "Push messages to me eagerly": the raw peer sees everything the node passes on.
        peer.send(Message {
            mesh,
            body: MeshMessage::Broadcast(BroadcastMessage::Graft { id: None }),
        })
        .await;
        peer
    }

    /// Links to `node` (a real TLS/QUIC handshake with an identity of its own) and sends
    /// nothing yet.
    pub async fn connect(node: &Node) -> Self {
        Self::connect_with(node, &LinkConfig::default()).await
    }

    /// [`RawPeer::connect`] over a link with these settings.
    pub async fn connect_with(node: &Node, link: &LinkConfig) -> Self {
        let identity = Identity::generate().unwrap();
        let id = identity.peer_id();
        let endpoint = tls::bind_endpoint(
            &identity,
            "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
            link,
        )
        .unwrap();
        let (conn, _) = within(
            "the raw peer's handshake",
            tls::connect(
                &endpoint,
                node.local_addr(),
                ExpectedPeer::Id(node.peer_id()),
            ),
        )
        .await
        .unwrap();
        let send = conn.open_uni().await.unwrap();
        let (tx, received) = mpsc::unbounded_channel();
        let reader = conn.clone();
        tokio::spawn(async move {
            while let Ok(mut stream) = reader.accept_uni().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut prefix = [0u8; wire::LEN_PREFIX];
                    while stream.read_exact(&mut prefix).await.is_ok() {
                        let Ok(len) = wire::frame_len(prefix, 1 << 20) else {
                            return;
                        };
                        let mut body = vec![0u8; len];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if let Ok(m) = wire::decode_body::<Message<PeerId>>(&body) {
                            let _ = tx.send(m);
                        }
                    }
                });
            }
        });
        Self {
            id,
            conn,
            send,
            received,
            _endpoint: endpoint,
        }
    }

    /// Sends one message as a frame.
    pub async fn send(&mut self, message: Message<PeerId>) {
        let mut frame = Vec::new();
        wire::encode_frame(&message, 1 << 20, &mut frame).unwrap();
        self.send.write_all(&frame).await.unwrap();
    }

    /// The next message the node sends that `pick` accepts (others are skipped).
    pub async fn next<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(Message<PeerId>) -> Option<T>,
    ) -> T {
        within(what, async {
            loop {
                let m = self.received.recv().await.expect("the link is open");
                if let Some(t) = pick(m) {
                    return t;
                }
            }
        })
        .await
    }

    /// Writes raw `bytes` on a stream of their own, finishing it if asked. The node may close
    /// the link before everything is written.
    pub async fn write_stream(&self, bytes: &[u8], finish: bool) {
        let mut stream = self.conn.open_uni().await.unwrap();
        if stream.write_all(bytes).await.is_ok() && finish {
            let _ = stream.finish();
        }
    }

    /// Opens a stream, writes `bytes` and leaves it open.
    pub async fn open_stream(&self, bytes: &[u8]) -> quinn::SendStream {
        let mut stream = self.conn.open_uni().await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream
    }

    /// Waits until the node closes the link with the application close `code`.
    pub async fn closed_with(&self, code: u32, what: &str) {
        let reason = within(
            &format!("the link to close after {what}"),
            self.conn.closed(),
        )
        .await;
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(
                    close.error_code,
                    quinn::VarInt::from_u32(code),
                    "{what}: {close:?}"
                );
            }
            other => panic!("{what}: the link ended otherwise: {other}"),
        }
    }

    /// Closes the link.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

/// The envelope of an application message as it is on the wire (see `envelope.rs`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WireEnvelope {
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub auth: Option<WireAuth>,
}

/// A signature as it is on the wire.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WireAuth {
    pub timestamp_ms: u64,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub certificate: Option<Vec<u8>>,
}

impl WireEnvelope {
    pub fn decode(payload: &[u8]) -> Self {
        postcard::from_bytes(payload).expect("an envelope")
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).unwrap())
    }
}
