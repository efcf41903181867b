//! Links between real QUIC endpoints on loopback: mutual authentication by peer id, and the
//! transport settings (keep-alive, idle timeout, datagrams, flow control) that the link layer
//! relies on.
//!
//! Every wait has a deadline; nothing waits on a fixed sleep to synchronise.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use peerchannel::PeerId;
use peerchannel::identity::Identity;
use peerchannel::tls::{self, ConnectError, ExpectedPeer, LinkConfig};

/// A deadline for every network wait, so a broken test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(10);

async fn within<F: IntoFuture>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("timed out")
}

fn localhost() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

struct Node {
    id: PeerId,
    endpoint: quinn::Endpoint,
}

impl Node {
    fn new() -> Self {
        Self::with_config(&LinkConfig::default())
    }

    fn with_config(config: &LinkConfig) -> Self {
        let identity = Identity::generate().unwrap();
        let endpoint = tls::bind_endpoint(&identity, localhost(), config).unwrap();
        Self {
            id: identity.peer_id(),
            endpoint,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap()
    }

    /// Connects to `other`: this side's connection and `other`'s.
    async fn link_to(&self, other: &Node) -> (quinn::Connection, quinn::Connection) {
        let accept = other.accept_one();
        let (conn, _) = within(tls::connect(&self.endpoint, other.addr(), other.id.into()))
            .await
            .unwrap();
        (conn, within(accept).await.unwrap().unwrap())
    }

    /// Accepts one connection in the background and returns the accept's result.
    fn accept_one(
        &self,
    ) -> tokio::task::JoinHandle<Result<quinn::Connection, quinn::ConnectionError>> {
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move { endpoint.accept().await.expect("endpoint open").await })
    }
}

#[tokio::test]
async fn two_nodes_authenticate_each_other_and_exchange_data() {
    let (a, b) = (Node::new(), Node::new());
    let accept = b.accept_one();

    let (a_to_b, id) = within(tls::connect(&a.endpoint, b.addr(), ExpectedPeer::Id(b.id)))
        .await
        .unwrap();
    assert_eq!(id, b.id);
    assert_eq!(tls::peer_id(&a_to_b).unwrap(), b.id);
    let b_to_a = within(accept).await.unwrap().unwrap();
    assert_eq!(tls::peer_id(&b_to_a).unwrap(), a.id);
    assert_eq!(
        a_to_b
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol
            .as_deref(),
        Some(tls::ALPN)
    );

    // A bi stream: A sends, B echoes.
    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = b_to_a.accept_bi().await.unwrap();
        let data = recv.read_to_end(1024).await.unwrap();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        // Keep the connection until A has read the echo.
        b_to_a.closed().await
    });
    let (mut send, mut recv) = a_to_b.open_bi().await.unwrap();
    send.write_all(b"hello over peerchannel/1").await.unwrap();
    send.finish().unwrap();
    let echoed = within(recv.read_to_end(1024)).await.unwrap();
    assert_eq!(echoed, b"hello over peerchannel/1");
    a_to_b.close(0u32.into(), b"done");
    within(echo).await.unwrap();
}

#[tokio::test]
async fn a_client_expecting_another_peer_id_is_refused() {
    let (a, b) = (Node::new(), Node::new());
    let someone_else = Identity::generate().unwrap().peer_id();
    let accept = b.accept_one();

    let err = within(tls::connect(
        &a.endpoint,
        b.addr(),
        ExpectedPeer::Id(someone_else),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Handshake(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("peer id mismatch"), "{message}");
    assert!(message.contains(&someone_else.to_string()), "{message}");
    assert!(message.contains(&b.id.to_string()), "{message}");

    // B sees the refusal too.
    let err = within(accept).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("peer id mismatch"), "{err}");
}

#[tokio::test]
async fn a_client_without_the_peer_id_learns_it() {
    let (a, b) = (Node::new(), Node::new());
    let accept = b.accept_one();

    let (conn, id) = within(tls::connect(&a.endpoint, b.addr(), ExpectedPeer::Unknown))
        .await
        .unwrap();
    assert_eq!(id, b.id);
    assert_eq!(tls::peer_id(&conn).unwrap(), b.id);
    let incoming = within(accept).await.unwrap().unwrap();
    assert_eq!(tls::peer_id(&incoming).unwrap(), a.id);
}

#[tokio::test]
async fn raw_quinn_connect_with_the_server_name_is_checked_too() {
    // The runtime may call quinn directly; the default client config still checks the id.
    let (a, b) = (Node::new(), Node::new());
    let endpoint = b.endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let _ = incoming.await;
        }
    });
    let wrong = ExpectedPeer::Id(a.id).server_name();
    let err = within(a.endpoint.connect(b.addr(), &wrong).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("peer id mismatch"), "{err}");

    let err = within(a.endpoint.connect(b.addr(), "example.com").unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("names no peer"), "{err}");
}

#[tokio::test]
async fn datagrams_are_enabled() {
    let (a, b) = (Node::new(), Node::new());
    let accept = b.accept_one();
    let (a_to_b, _) = within(tls::connect(&a.endpoint, b.addr(), b.id.into()))
        .await
        .unwrap();
    let b_to_a = within(accept).await.unwrap().unwrap();
    assert!(a_to_b.max_datagram_size().is_some());
    a_to_b
        .send_datagram(bytes::Bytes::from_static(b"unreliable"))
        .unwrap();
    assert_eq!(
        within(b_to_a.read_datagram()).await.unwrap(),
        &b"unreliable"[..]
    );
}

/// Whether a write of one more byte to `send` is still waiting after 300 ms: the stream's flow
/// control has no room for it. (A machine too busy to finish a free write in that time would
/// make this say "blocked" wrongly: it is only asked where "blocked" is the answer expected.)
async fn blocked(send: &mut quinn::SendStream) -> bool {
    tokio::time::timeout(Duration::from_millis(300), send.write(&[7]))
        .await
        .is_err()
}

#[tokio::test]
async fn a_stream_carries_no_more_than_the_readers_window_ahead_of_its_reading() {
    let small = LinkConfig {
        stream_receive_window: 16 * 1024,
        ..LinkConfig::default()
    };
    let (a, b) = (Node::new(), Node::with_config(&small));
    let (conn, b_side) = a.link_to(&b).await;

    // b reads nothing yet: a may send its window, not a byte more.
    let window = small.stream_receive_window as usize;
    let mut send = conn.open_uni().await.unwrap();
    within(send.write_all(&vec![7u8; window])).await.unwrap();
    assert!(blocked(&mut send).await, "a byte past the window was taken");

    // Once b reads, the rest follows.
    let reader = tokio::spawn(async move {
        let mut recv = b_side.accept_uni().await.unwrap();
        recv.read_to_end(1 << 20).await.unwrap().len()
    });
    within(send.write_all(&vec![7u8; 64 * 1024 - window]))
        .await
        .unwrap();
    send.finish().unwrap();
    assert_eq!(within(reader).await.unwrap(), 64 * 1024);

    // The default window takes the same 64 KiB without anyone reading (a smaller one would
    // hold the write until the deadline).
    let (conn, _c_side) = a.link_to(&Node::new()).await;
    let mut send = conn.open_uni().await.unwrap();
    within(send.write_all(&vec![7u8; 64 * 1024])).await.unwrap();
}

#[tokio::test]
async fn a_silent_peer_is_noticed_within_the_default_idle_timeout() {
    // B sits behind a relay that can be cut: after the cut B is silent, as a killed process or
    // a pulled cable would be, and sends no CONNECTION_CLOSE.
    let (a, b) = (Node::new(), Node::new());
    let relay = Relay::start(b.addr()).await;
    let accept = b.accept_one();
    let (conn, _) = within(tls::connect(&a.endpoint, relay.addr, b.id.into()))
        .await
        .unwrap();
    let _b_side = within(accept).await.unwrap().unwrap();

    relay.cut();
    let cut_at = Instant::now();
    let reason = within(conn.closed()).await;
    let noticed_after = cut_at.elapsed();
    assert!(
        matches!(reason, quinn::ConnectionError::TimedOut),
        "{reason}"
    );
    // About MAX_IDLE_TIMEOUT (3 s); QUIC may add up to a few probe timeouts on top.
    assert!(
        noticed_after >= tls::MAX_IDLE_TIMEOUT - Duration::from_millis(500),
        "{noticed_after:?}"
    );
    assert!(
        noticed_after < tls::MAX_IDLE_TIMEOUT * 2,
        "{noticed_after:?}"
    );
}

#[tokio::test]
async fn keep_alives_hold_an_idle_link_open() {
    let config = LinkConfig {
        max_idle_timeout: Duration::from_millis(500),
        keep_alive_interval: Duration::from_millis(150),
        ..LinkConfig::default()
    };
    let (a, b) = (Node::with_config(&config), Node::with_config(&config));
    let accept = b.accept_one();
    let (conn, _) = within(tls::connect(&a.endpoint, b.addr(), b.id.into()))
        .await
        .unwrap();
    let b_side = within(accept).await.unwrap().unwrap();

    // Let the link sit idle for several idle timeouts. This sleep is the scenario, not a
    // synchronisation: nothing else happens meanwhile.
    tokio::time::sleep(config.max_idle_timeout * 4).await;
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"still here").await.unwrap();
    send.finish().unwrap();
    let mut recv = within(b_side.accept_uni()).await.unwrap();
    assert_eq!(within(recv.read_to_end(64)).await.unwrap(), b"still here");
}

/// A UDP relay on loopback between one client and `server`, which can be cut to make the
/// server fall silent.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind(localhost()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let is_cut = cut.clone();
        tokio::spawn(async move {
            let mut client = None;
            let mut buf = vec![0; 65536];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if is_cut.load(Ordering::Relaxed) {
                    continue;
                }
                let to = if from == server {
                    match client {
                        Some(client) => client,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                let _ = socket.send_to(&buf[..len], to).await;
            }
        });
        Self { addr, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}
