//! Link security: mutual TLS 1.3 inside QUIC, where a node's certificate key is its peer id.
//!
//! # Design
//!
//! Every node presents a certificate self-signed with its Ed25519 [`Identity`], on both sides
//! of every link (mutual TLS). The certificate is only a carrier for the public key: what is
//! checked is that the peer proved, by signing the TLS 1.3 handshake, that it holds the private
//! key of the [`PeerId`] we meant to reach. Names, dates, issuers and self-signatures in the
//! certificate are not trusted and not checked.
//!
//! - **Client side.** The caller says whom it expects with an [`ExpectedPeer`], which travels to
//!   the verifier inside the TLS server name (see [`ExpectedPeer::server_name`]). The verifier
//!   refuses a certificate whose key is not exactly that peer id. The server name is never put
//!   on the wire: SNI is off, since the server has one certificate and needs no hint.
//! - **Server side.** A client must present a certificate (the handshake fails without one);
//!   any Ed25519 key is acceptable, because anyone may connect. Which peer connected is read
//!   afterwards with [`peer_id`].
//! - **Unknown peers.** A static bootstrap address (`host:port`) comes without a peer id.
//!   [`ExpectedPeer::Unknown`] accepts whichever Ed25519 key the server proves it holds, and
//!   the caller learns the id from the connection. This is a deliberate choice the caller makes
//!   per connection: the link is encrypted and the id it reports is authentic, but nothing
//!   checks it was the node the operator had in mind.
//! - Only TLS 1.3 (QUIC requires it), only the ring provider, ALPN [`ALPN`], no session
//!   resumption and no 0-RTT: every link is authenticated by a full handshake.
//!
//! # Getting started
//!
//! ```no_run
//! use peerchannel::identity::Identity;
//! use peerchannel::tls::{self, ExpectedPeer, LinkConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = Identity::generate()?;
//! let endpoint = tls::bind_endpoint(&identity, "0.0.0.0:0".parse()?, &LinkConfig::default())?;
//!
//! // Dial a peer whose id we know: the handshake fails unless it proves to be that peer.
//! let peer = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".parse()?;
//! let (conn, id) = tls::connect(&endpoint, "192.0.2.7:4433".parse()?, ExpectedPeer::Id(peer)).await?;
//! assert_eq!(id, peer);
//!
//! // Accept a peer and learn who it is.
//! if let Some(incoming) = endpoint.accept().await {
//!     let conn = incoming.await?;
//!     println!("{} connected", tls::peer_id(&conn)?);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What the peer sees when it is refused
//!
//! TLS 1.3 finishes the client's side of the handshake before the server has checked the
//! client's certificate. A server that refuses a client (no certificate, not Ed25519) closes
//! the connection just after the client's [`connect`] returned: treat a link as up once the
//! peer has sent something over it, not when `connect` returns.

mod verify;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, alg_id};
use rustls::server::ParsedCertificate;

use self::verify::{PeerClientVerifier, PeerServerVerifier};
use crate::id::PeerId;
use crate::identity::Identity;

/// The ALPN protocol id of peerchannel links. A later incompatible link protocol gets a new
/// one (`peerchannel/2`), so two versions refuse each other during the handshake.
pub const ALPN: &[u8] = b"peerchannel/1";

/// The domain under which server names carry the expected peer id:
/// `<peer id>.peerchannel.invalid`. `.invalid` is reserved (RFC 6761, section 6.4), so such a
/// name can never be a real host.
pub const SERVER_NAME_DOMAIN: &str = "peerchannel.invalid";

/// The label that stands for "any peer id" in a server name: `any.peerchannel.invalid`.
/// Three characters, so it can never be read as a 52-character peer id.
pub const UNKNOWN_PEER_LABEL: &str = "any";

/// How long a link may stay silent before it is declared dead: 3 s.
///
/// A peer that is killed, loses power or its network sends no `CONNECTION_CLOSE`; silence is
/// the only sign, and the mesh should route around it within a few seconds. With
/// [`KEEP_ALIVE_INTERVAL`] at 1 s a live link is never silent that long unless about three
/// packets in a row are lost. Each side proposes a value and the smaller one applies; QUIC
/// raises it to at least three probe timeouts (RFC 9000, section 10.1), so on a path with a
/// long round trip it stretches (to about 3 × (RTT + 4 × RTT variance)). It also bounds a
/// handshake: dialling an address where nobody answers fails after this long.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often an otherwise idle link sends a keep-alive (a QUIC PING): 1 s.
///
/// A third of [`MAX_IDLE_TIMEOUT`], so that two lost keep-alives in a row do not kill a
/// healthy link. The cost is one small packet per second per neighbor, and a node keeps a
/// handful of neighbors.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// How many bidirectional streams a peer may have open towards us at once: 100 (quinn's
/// default). A link uses one per service stream or file transfer in flight; the limit bounds
/// the buffers a peer can make us hold.
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 100;

/// How many unidirectional streams a peer may have open towards us at once: 100 (quinn's
/// default). Mesh traffic uses one long-lived stream per direction.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 100;

/// Bytes of received QUIC datagrams buffered until the application reads them: 1 MiB, about
/// 800 full-size datagrams. Datagrams carry the unreliable low-latency mode; when the buffer
/// is full the oldest are dropped, which is what "unreliable" promises.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 1024 * 1024;

/// Bytes of outgoing QUIC datagrams buffered until congestion control lets them out: 1 MiB
/// (quinn's default). The oldest are dropped first when it is full.
pub const DATAGRAM_SEND_BUFFER: usize = 1024 * 1024;

/// Bytes a peer may send on one stream ahead of what the node has read: 1.25 MB (quinn's
/// default, enough for 100 Mbit/s over a 100 ms round trip).
///
/// This is QUIC's flow control window per stream. A node that reads as fast as data comes
/// never fills it; one that is saturated (its CPU the bottleneck) holds up to a window for
/// every link that feeds it, and new messages wait behind it. Measured with
/// `peerchannel-bench` (10 nodes in one process, the sender flat out, 2026-12-07): median
/// one-way latency under load 316-366 ms with this window, 165 ms with 256 KiB, and 56 ms with
/// 256 KiB and a node queue of 512 events instead of 4,096 (which costs the pause phase, see
/// the node's queue), throughput unchanged. A smaller window is a choice for meshes that run
/// saturated on short paths: one stream carries at most a window per round trip (256 KiB:
/// about 100 Mbit/s at 20 ms, 20 Mbit/s at 100 ms).
pub const STREAM_RECEIVE_WINDOW: u32 = 1_250_000;

/// Whom a client expects to reach, checked against the key the server proves it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedPeer {
    /// The server must prove it holds this peer id's private key; the connection fails with a
    /// peer-id mismatch otherwise. The normal case: ids come from the resolver, from mesh
    /// messages or from the user.
    Id(PeerId),
    /// Any Ed25519 key is accepted and the caller learns the peer id from the connection
    /// ([`connect`] returns it, or [`peer_id`]). For addresses configured without an id, such
    /// as a static bootstrap `host:port`. The link is still encrypted and the id still
    /// authentic; what is lost is the check that it belongs to the node the caller meant.
    Unknown,
}

impl ExpectedPeer {
    /// The TLS server name that carries this expectation to the certificate verifier:
    /// `<peer id>.peerchannel.invalid` (the 52-character base32 id is a valid DNS label), or
    /// `any.peerchannel.invalid` for [`ExpectedPeer::Unknown`].
    ///
    /// Pass it to [`quinn::Endpoint::connect`] when not using [`connect`]. The name stays on
    /// this node: SNI is not sent.
    pub fn server_name(&self) -> String {
        match self {
            Self::Id(id) => format!("{id}.{SERVER_NAME_DOMAIN}"),
            Self::Unknown => format!("{UNKNOWN_PEER_LABEL}.{SERVER_NAME_DOMAIN}"),
        }
    }

    /// Reads a server name made by [`server_name`](Self::server_name) (case-insensitive).
    pub fn from_server_name(name: &str) -> Result<Self, TlsError> {
        let bad = || TlsError::BadServerName {
            name: name.to_owned(),
        };
        let (label, domain) = name.split_once('.').ok_or_else(bad)?;
        if !domain.eq_ignore_ascii_case(SERVER_NAME_DOMAIN) {
            return Err(bad());
        }
        if label.eq_ignore_ascii_case(UNKNOWN_PEER_LABEL) {
            return Ok(Self::Unknown);
        }
        PeerId::from_str(label).map(Self::Id).map_err(|_| bad())
    }
}

impl From<PeerId> for ExpectedPeer {
    fn from(id: PeerId) -> Self {
        Self::Id(id)
    }
}

/// QUIC transport parameters of links. [`Default`] gives the constants at the top of this
/// module; tests and special deployments override single fields:
///
/// ```
/// use std::time::Duration;
/// use peerchannel::tls::LinkConfig;
///
/// let fast = LinkConfig {
///     max_idle_timeout: Duration::from_millis(600),
///     keep_alive_interval: Duration::from_millis(200),
///     ..LinkConfig::default()
/// };
/// assert!(fast.transport_config().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// See [`MAX_IDLE_TIMEOUT`]. Must be more than zero and more than `keep_alive_interval`.
    pub max_idle_timeout: Duration,
    /// See [`KEEP_ALIVE_INTERVAL`]. Must be more than zero and less than `max_idle_timeout`.
    pub keep_alive_interval: Duration,
    /// See [`MAX_CONCURRENT_BIDI_STREAMS`].
    pub max_concurrent_bidi_streams: u32,
    /// See [`MAX_CONCURRENT_UNI_STREAMS`].
    pub max_concurrent_uni_streams: u32,
    /// See [`DATAGRAM_RECEIVE_BUFFER`]. Zero turns receiving datagrams off.
    pub datagram_receive_buffer: usize,
    /// See [`DATAGRAM_SEND_BUFFER`].
    pub datagram_send_buffer: usize,
    /// See [`STREAM_RECEIVE_WINDOW`]. Must be more than zero.
    pub stream_receive_window: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: MAX_IDLE_TIMEOUT,
            keep_alive_interval: KEEP_ALIVE_INTERVAL,
            max_concurrent_bidi_streams: MAX_CONCURRENT_BIDI_STREAMS,
            max_concurrent_uni_streams: MAX_CONCURRENT_UNI_STREAMS,
            datagram_receive_buffer: DATAGRAM_RECEIVE_BUFFER,
            datagram_send_buffer: DATAGRAM_SEND_BUFFER,
            stream_receive_window: STREAM_RECEIVE_WINDOW,
        }
    }
}

impl LinkConfig {
    /// The quinn transport configuration for these parameters; fails if they are out of
    /// range or inconsistent.
    pub fn transport_config(&self) -> Result<TransportConfig, ConfigError> {
        let invalid = |parameter, reason| ConfigError::InvalidTransport { parameter, reason };
        if self.max_idle_timeout.is_zero() {
            return Err(invalid("max_idle_timeout", "must be more than zero"));
        }
        if self.keep_alive_interval.is_zero() {
            return Err(invalid("keep_alive_interval", "must be more than zero"));
        }
        if self.keep_alive_interval >= self.max_idle_timeout {
            // Idle links would time out between two keep-alives.
            return Err(invalid(
                "keep_alive_interval",
                "must be less than max_idle_timeout",
            ));
        }
        if self.stream_receive_window == 0 {
            return Err(invalid("stream_receive_window", "must be more than zero"));
        }
        let idle = IdleTimeout::try_from(self.max_idle_timeout)
            .map_err(|_| invalid("max_idle_timeout", "must be less than 2^62 ms"))?;
        let mut transport = TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .datagram_receive_buffer_size(
                Some(self.datagram_receive_buffer).filter(|&size| size > 0),
            )
            .datagram_send_buffer_size(self.datagram_send_buffer)
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window));
        Ok(transport)
    }
}

/// The node's TLS certificate: self-signed with its Ed25519 key, subject and DNS name
/// `<peer id>.peerchannel.invalid` (for people reading it with `openssl x509`; verifiers only
/// look at the key).
pub fn self_signed_certificate(
    identity: &Identity,
) -> Result<CertificateDer<'static>, ConfigError> {
    let key_pair = identity
        .rcgen_key_pair()
        .map_err(ConfigError::Certificate)?;
    let name = ExpectedPeer::Id(identity.peer_id()).server_name();
    let mut params =
        rcgen::CertificateParams::new(vec![name.clone()]).map_err(ConfigError::Certificate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let certificate = params
        .self_signed(&key_pair)
        .map_err(ConfigError::Certificate)?;
    Ok(certificate.der().clone())
}

/// The configuration for accepting links: presents `identity`'s certificate, requires an
/// Ed25519 client certificate, speaks [`ALPN`], TLS 1.3 only.
pub fn server_config(
    identity: &Identity,
    link: &LinkConfig,
) -> Result<quinn::ServerConfig, ConfigError> {
    let provider = provider();
    let verifier = Arc::new(PeerClientVerifier::new(&provider));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![self_signed_certificate(identity)?],
            private_key(identity),
        )
        .map_err(ConfigError::Rustls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: a resumed session would skip the certificate, and links are long-lived.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto = QuicServerConfig::try_from(tls).map_err(|_| ConfigError::NoQuicCipherSuite)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(link.transport_config()?));
    Ok(config)
}

/// The configuration for making links: presents `identity`'s certificate and checks the
/// server against the [`ExpectedPeer`] in the server name, speaks [`ALPN`], TLS 1.3 only.
pub fn client_config(
    identity: &Identity,
    link: &LinkConfig,
) -> Result<quinn::ClientConfig, ConfigError> {
    let provider = provider();
    let verifier = Arc::new(PeerServerVerifier::new(&provider));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![self_signed_certificate(identity)?],
            private_key(identity),
        )
        .map_err(ConfigError::Rustls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // The server name only carries the expected peer id to our own verifier.
    tls.enable_sni = false;
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = QuicClientConfig::try_from(tls).map_err(|_| ConfigError::NoQuicCipherSuite)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(link.transport_config()?));
    Ok(config)
}

/// A QUIC endpoint bound to `addr` that accepts links ([`server_config`]) and makes them
/// ([`client_config`] is its default client configuration). Port 0 picks a free port; read it
/// back with [`quinn::Endpoint::local_addr`]. Its socket asks for the same larger receive
/// buffer as a node's (2 MiB, where the system allows it).
///
/// Must be called within a Tokio runtime.
pub fn bind_endpoint(
    identity: &Identity,
    addr: SocketAddr,
    link: &LinkConfig,
) -> Result<quinn::Endpoint, BindError> {
    let server = server_config(identity, link)?;
    let client = client_config(identity, link)?;
    let socket = crate::socket::bind_udp(addr).map_err(|source| BindError::Io { addr, source })?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| BindError::Io { addr, source })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Makes a link to `addr` with the endpoint's default client configuration and returns it
/// with the peer's authenticated id (equal to the expected one for [`ExpectedPeer::Id`]).
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    expected: ExpectedPeer,
) -> Result<(quinn::Connection, PeerId), ConnectError> {
    let conn = endpoint
        .connect(addr, &expected.server_name())
        .map_err(ConnectError::Connect)?
        .await
        .map_err(ConnectError::Handshake)?;
    let actual = match peer_id(&conn) {
        Ok(actual) => actual,
        Err(e) => {
            conn.close(AUTH_FAILED_CLOSE_CODE, b"peer authentication failed");
            return Err(ConnectError::Auth(e));
        }
    };
    if let ExpectedPeer::Id(expected) = expected {
        // The verifier already checked this; a second look costs nothing and guards against a
        // client configuration that was not made by `client_config`.
        if expected != actual {
            conn.close(AUTH_FAILED_CLOSE_CODE, b"peer id mismatch");
            return Err(ConnectError::Auth(TlsError::PeerIdMismatch {
                expected,
                actual,
            }));
        }
    }
    Ok((conn, actual))
}

/// The authenticated peer id of an established link, incoming or outgoing: the Ed25519 key
/// of the certificate with which the peer signed the handshake.
pub fn peer_id(conn: &quinn::Connection) -> Result<PeerId, TlsError> {
    let identity = conn.peer_identity().ok_or(TlsError::NotAuthenticated)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NotAuthenticated)?;
    let end_entity = chain.first().ok_or(TlsError::NoCertificate)?;
    peer_id_of_certificate(end_entity)
}

/// The peer id in a certificate: its key, which must be Ed25519. Nothing else in the
/// certificate is checked.
pub fn peer_id_of_certificate(certificate: &CertificateDer<'_>) -> Result<PeerId, TlsError> {
    let parsed = ParsedCertificate::try_from(certificate)
        .map_err(|source| TlsError::MalformedCertificate { source })?;
    let spki = parsed.subject_public_key_info();
    // DER is canonical and RFC 8410 (section 3) forbids parameters for Ed25519, so every
    // Ed25519 SubjectPublicKeyInfo is these 12 bytes followed by the 32-byte key.
    let key = spki
        .as_ref()
        .strip_prefix(ED25519_SPKI_PREFIX.as_slice())
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .ok_or_else(|| TlsError::NotEd25519 {
            algorithm: KeyAlgorithm::of_spki(spki.as_ref()),
        })?;
    Ok(PeerId::from_bytes(key))
}

/// Why a link's peer could not be authenticated. Grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    // The peer sent a bad certificate.
    /// The peer presented no certificate.
    ///
    /// Cause: a client that is not a peerchannel node, or one configured without its
    /// identity. Fix: on the peer, use [`client_config`] / [`bind_endpoint`].
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The peer's certificate is not valid X.509 DER.
    ///
    /// Cause: a broken or hostile peer. Fix: none here; the link is refused.
    #[error("the peer's certificate is malformed: {source}")]
    MalformedCertificate {
        /// What the parser found wrong.
        source: rustls::Error,
    },
    /// The peer's certificate holds a key of another type than Ed25519 (RSA, ECDSA, ...).
    ///
    /// Cause: the peer is not a peerchannel node (peer ids are Ed25519 keys), or was given a
    /// certificate of another kind. Fix: on the peer, use an Ed25519 [`Identity`].
    #[error("the peer's certificate key is {algorithm}, not Ed25519: it is not a peer id")]
    NotEd25519 {
        /// The key type found.
        algorithm: KeyAlgorithm,
    },

    // The peer is not who we expected.
    /// The peer proved it holds a different key than the peer id the caller asked for.
    ///
    /// Cause: the address now belongs to another node (a restart with a new key, a stale
    /// resolver entry, address reuse), or someone is impersonating the peer. Fix: resolve the
    /// peer again; the link is refused.
    #[error("peer id mismatch: expected {expected}, the peer is {actual}")]
    PeerIdMismatch {
        /// The peer id the caller expected.
        expected: PeerId,
        /// The peer id the peer proved.
        actual: PeerId,
    },

    // The API was misused (never caused by network data).
    /// A server name that does not come from [`ExpectedPeer::server_name`] was given to
    /// [`quinn::Endpoint::connect`] with our client configuration.
    ///
    /// Fix: connect with `ExpectedPeer::...::server_name()`, or use [`connect`].
    #[error(
        "server name {name:?} names no peer: expected <peer id>.{SERVER_NAME_DOMAIN} or \
         {UNKNOWN_PEER_LABEL}.{SERVER_NAME_DOMAIN}"
    )]
    BadServerName {
        /// The server name given.
        name: String,
    },
    /// The connection has no peer certificate to read: it was made with a configuration that
    /// does not come from this module, or with a crypto session other than rustls.
    ///
    /// Fix: make endpoints with [`bind_endpoint`] or the configs of this module.
    #[error("the connection has no authenticated peer certificate")]
    NotAuthenticated,
}

/// A key type found in a certificate that is not Ed25519, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// ECDSA on P-521.
    EcdsaP521,
    /// RSA.
    Rsa,
    /// Ed448.
    Ed448,
    /// Ed25519 encoded with parameters or a wrong length, which RFC 8410 forbids.
    MalformedEd25519,
    /// Something else.
    Other,
}

impl KeyAlgorithm {
    fn of_spki(spki: &[u8]) -> Self {
        // A scan for the AlgorithmIdentifier's encoding: only used to name the key in an error,
        // so it need not parse the structure.
        let has = |needle: &[u8]| spki.windows(needle.len()).any(|window| window == needle);
        if has(alg_id::ECDSA_P256.as_ref()) {
            Self::EcdsaP256
        } else if has(alg_id::ECDSA_P384.as_ref()) {
            Self::EcdsaP384
        } else if has(alg_id::ECDSA_P521.as_ref()) {
            Self::EcdsaP521
        } else if has(alg_id::RSA_ENCRYPTION.as_ref()) || has(alg_id::RSA_PSS_SHA256.as_ref()) {
            Self::Rsa
        } else if has(&ED448_OID) {
            Self::Ed448
        } else if has(alg_id::ED25519.as_ref()) {
            Self::MalformedEd25519
        } else {
            Self::Other
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ECDSA P-256",
            Self::EcdsaP384 => "ECDSA P-384",
            Self::EcdsaP521 => "ECDSA P-521",
            Self::Rsa => "RSA",
            Self::Ed448 => "Ed448",
            Self::MalformedEd25519 => "a malformed Ed25519 key",
            Self::Other => "an unknown key type",
        })
    }
}

/// Why the TLS or QUIC configuration could not be built. Happens before any I/O; none of it
/// is caused by the network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// rcgen could not make the self-signed certificate.
    ///
    /// Cause: a bug, or an identity rcgen's ring backend cannot use. Fix: report it.
    #[error("cannot make the self-signed certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the configuration (for example a key its ring provider cannot use).
    ///
    /// Cause: a bug, or a rustls built without the features this crate asks for. Fix: report
    /// it.
    #[error("rustls refused the TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
    /// The TLS configuration has no cipher suite QUIC can start with
    /// (`TLS13_AES_128_GCM_SHA256`).
    ///
    /// Cause: a provider without that suite. Fix: use the ring provider's defaults.
    #[error("the TLS configuration has no cipher suite usable for QUIC")]
    NoQuicCipherSuite,
    /// A [`LinkConfig`] field is out of range or inconsistent with another.
    ///
    /// Fix: change the field as the message says.
    #[error("invalid link configuration: {parameter} {reason}")]
    InvalidTransport {
        /// The field at fault.
        parameter: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why [`bind_endpoint`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The configuration could not be built; see [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The UDP socket could not be bound (address in use, not a local address, no
    /// permission), or there is no Tokio runtime.
    ///
    /// Fix: pick another address or port; call from within a Tokio runtime.
    #[error("cannot bind a QUIC endpoint to {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// quinn refused to start the connection, before sending anything: the endpoint is
    /// shutting down, has no default client configuration, or the address is unusable.
    ///
    /// Fix: make the endpoint with [`bind_endpoint`]; do not connect after closing it.
    #[error("cannot start a connection: {0}")]
    Connect(#[source] quinn::ConnectError),
    /// The handshake or the connection failed: nobody answered within the idle timeout, the
    /// peer refused us, or our verifier refused the peer. In the last case the message is a
    /// [`TlsError`]'s (for example "peer id mismatch: expected ..., the peer is ..."): quinn
    /// passes on the text, not the typed error.
    ///
    /// Fix: depends on the message; for a refused peer, see [`TlsError`].
    #[error("handshake failed: {0}")]
    Handshake(#[source] quinn::ConnectionError),
    /// The connection was established but the peer's identity is not acceptable.
    #[error(transparent)]
    Auth(TlsError),
}

/// The application close code [`connect`] uses when it drops a link whose peer failed
/// authentication after the handshake.
const AUTH_FAILED_CLOSE_CODE: VarInt = VarInt::from_u32(1);

/// SubjectPublicKeyInfo of an Ed25519 key up to the key (RFC 8410, section 4):
/// SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (33 bytes: 0 unused bits, key) }.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER encoding of the Ed448 OID 1.3.101.113.
const ED448_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x71];

/// The ring crypto provider: the only one this crate uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn private_key(identity: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(identity.pkcs8_der().clone_key())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rustls::SignatureScheme;
    use rustls::pki_types::ServerName;

    use super::*;

    /// A deadline for every network wait, so a broken test fails instead of hanging.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn localhost() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    async fn within<F: IntoFuture>(future: F) -> F::Output {
        tokio::time::timeout(DEADLINE, future)
            .await
            .expect("timed out")
    }

    /// A node endpoint on loopback.
    fn node() -> (Identity, quinn::Endpoint) {
        let identity = Identity::generate().unwrap();
        let endpoint = bind_endpoint(&identity, localhost(), &LinkConfig::default()).unwrap();
        (identity, endpoint)
    }

    fn rustls_client(
        provider: Arc<CryptoProvider>,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        let verifier = Arc::new(PeerServerVerifier::new(&provider));
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
    }

    /// A misbehaving client, made with a hand-made rustls config, dials a node. Returns what
    /// the node's accept gave and the client's view of the connection: TLS 1.3 clients finish
    /// the handshake first, so a refused client may see the connection established and then
    /// closed by the server.
    async fn dial_node(
        tls: rustls::ClientConfig,
    ) -> (
        Result<quinn::Connection, quinn::ConnectionError>,
        Result<quinn::ConnectionError, quinn::ConnectionError>,
    ) {
        let (_, server) = node();
        let accept = tokio::spawn({
            let server = server.clone();
            async move { server.accept().await.expect("endpoint open").await }
        });
        let client = quinn::Endpoint::client(localhost()).unwrap();
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        let addr = server.local_addr().unwrap();
        let name = ExpectedPeer::Unknown.server_name();
        let client_side = within(client.connect_with(config, addr, &name).unwrap()).await;
        let server_side = within(accept).await.unwrap();
        let client_side = match client_side {
            Ok(conn) => Ok(within(conn.closed()).await),
            Err(e) => Err(e),
        };
        (server_side, client_side)
    }

    /// Asserts that the node refused the client with an error containing `server_error`, and
    /// that the client's connection failed or was closed by the node.
    fn assert_refused(
        (server_side, client_side): (
            Result<quinn::Connection, quinn::ConnectionError>,
            Result<quinn::ConnectionError, quinn::ConnectionError>,
        ),
        server_error: &str,
    ) {
        let err = server_side.expect_err("the node accepted the client");
        assert!(err.to_string().contains(server_error), "node saw: {err}");
        let client_err = client_side.unwrap_or_else(|closed| closed);
        assert!(
            !matches!(client_err, quinn::ConnectionError::LocallyClosed),
            "{client_err}"
        );
    }

    #[test]
    fn server_names_round_trip() {
        let id = Identity::generate().unwrap().peer_id();
        let name = ExpectedPeer::Id(id).server_name();
        assert_eq!(name, format!("{id}.peerchannel.invalid"));
        assert!(
            ServerName::try_from(name.clone()).is_ok(),
            "{name} is a valid DNS name"
        );
        assert_eq!(
            ExpectedPeer::from_server_name(&name).unwrap(),
            ExpectedPeer::Id(id)
        );
        assert_eq!(
            ExpectedPeer::from_server_name(&name.to_ascii_uppercase()).unwrap(),
            ExpectedPeer::Id(id)
        );
        let any = ExpectedPeer::Unknown.server_name();
        assert_eq!(any, "any.peerchannel.invalid");
        assert_eq!(
            ExpectedPeer::from_server_name(&any).unwrap(),
            ExpectedPeer::Unknown
        );
        for bad in [
            "",
            "example.com",
            "any.peerchannel.invalid.",
            "x.peerchannel.invalid",
            "any",
        ] {
            let err = ExpectedPeer::from_server_name(bad).unwrap_err();
            assert!(
                matches!(err, TlsError::BadServerName { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn certificate_carries_the_peer_id() {
        let identity = Identity::generate().unwrap();
        let cert = self_signed_certificate(&identity).unwrap();
        assert_eq!(peer_id_of_certificate(&cert).unwrap(), identity.peer_id());
    }

    #[test]
    fn other_key_types_are_named_in_the_error() {
        for (alg, expected) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyAlgorithm::EcdsaP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyAlgorithm::EcdsaP384),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["x.invalid".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let err = peer_id_of_certificate(cert.der()).unwrap_err();
            assert!(
                matches!(err, TlsError::NotEd25519 { algorithm } if algorithm == expected),
                "{err}"
            );
        }
        let err = peer_id_of_certificate(&CertificateDer::from(vec![0x30, 0x00])).unwrap_err();
        assert!(
            matches!(err, TlsError::MalformedCertificate { .. }),
            "{err}"
        );
    }

    #[test]
    fn link_config_is_validated() {
        assert!(LinkConfig::default().transport_config().is_ok());
        let bad = [
            LinkConfig {
                max_idle_timeout: Duration::ZERO,
                ..LinkConfig::default()
            },
            LinkConfig {
                keep_alive_interval: Duration::ZERO,
                ..LinkConfig::default()
            },
            LinkConfig {
                keep_alive_interval: MAX_IDLE_TIMEOUT,
                ..LinkConfig::default()
            },
            LinkConfig {
                max_idle_timeout: Duration::MAX,
                ..LinkConfig::default()
            },
            LinkConfig {
                stream_receive_window: 0,
                ..LinkConfig::default()
            },
        ];
        for config in bad {
            let err = config.transport_config().unwrap_err();
            assert!(matches!(err, ConfigError::InvalidTransport { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn a_peer_with_a_non_ed25519_certificate_is_refused_by_the_client() {
        // A server with an ECDSA P-256 certificate.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.invalid".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
        let server = quinn::Endpoint::server(config, localhost()).unwrap();
        let accept = tokio::spawn({
            let server = server.clone();
            async move { server.accept().await.unwrap().await }
        });

        let (_, client) = node();
        let addr = server.local_addr().unwrap();
        let err = within(connect(&client, addr, ExpectedPeer::Unknown))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Handshake(_)), "{err}");
        assert!(
            err.to_string().contains("ECDSA P-256, not Ed25519"),
            "{err}"
        );
        assert!(within(accept).await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_client_with_a_non_ed25519_certificate_is_refused_by_the_server() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.invalid".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut tls = rustls_client(provider())
            .with_client_auth_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        assert_refused(dial_node(tls).await, "ECDSA P-256, not Ed25519");
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let mut tls = rustls_client(provider()).with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        assert_refused(dial_node(tls).await, "no certificates");
    }

    #[tokio::test]
    async fn a_client_without_our_alpn_is_refused() {
        let identity = Identity::generate().unwrap();
        let mut tls = rustls_client(provider())
            .with_client_auth_cert(
                vec![self_signed_certificate(&identity).unwrap()],
                private_key(&identity),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"peerchannel/0".to_vec()];
        let (server_side, client_side) = dial_node(tls).await;
        assert!(client_side.is_err(), "the client's handshake should fail");
        assert_refused((server_side, client_side), "known protocol");
    }

    /// The victim's certificate with the impostor's key: what someone who copied a node's
    /// certificate (it is public) but not its key can present.
    fn impostor_key(victim: &Identity) -> Arc<rustls::sign::CertifiedKey> {
        let impostor = Identity::generate().unwrap();
        let key = provider()
            .key_provider
            .load_private_key(private_key(&impostor))
            .unwrap();
        Arc::new(rustls::sign::CertifiedKey::new(
            vec![self_signed_certificate(victim).unwrap()],
            key,
        ))
    }

    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    impl rustls::client::ResolvesClientCert for Fixed {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_server_with_a_copied_certificate_but_not_the_key_is_refused() {
        let victim = Identity::generate().unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(impostor_key(&victim))));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
        let server = quinn::Endpoint::server(config, localhost()).unwrap();
        let accept = tokio::spawn({
            let server = server.clone();
            async move { server.accept().await.unwrap().await }
        });

        let (_, client) = node();
        let addr = server.local_addr().unwrap();
        let err = within(connect(&client, addr, ExpectedPeer::Id(victim.peer_id())))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Handshake(_)), "{err}");
        assert!(err.to_string().contains("BadSignature"), "{err}");
        assert!(within(accept).await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_client_with_a_copied_certificate_but_not_the_key_is_refused() {
        let victim = Identity::generate().unwrap();
        let mut tls = rustls_client(provider())
            .with_client_cert_resolver(Arc::new(Fixed(impostor_key(&victim))));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        assert_refused(dial_node(tls).await, "BadSignature");
    }
}
