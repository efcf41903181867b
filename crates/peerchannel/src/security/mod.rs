//! Closed meshes and trusted messages: password meshes, certificate meshes and end-to-end
//! signed messages.
//!
//! # The three kinds of mesh
//!
//! | [`MeshSecurity`] | who may take part | set up with |
//! | --- | --- | --- |
//! | [`Open`](MeshSecurity::Open) (default) | anyone who knows the mesh id | nothing |
//! | [`Password`](MeshSecurity::Password) | nodes that know the mesh's password | [`MeshPassword`] |
//! | [`Certificate`](MeshSecurity::Certificate) | nodes holding a certificate from the mesh's CA | [`MemberCertificate`], [`certificate::MeshCa`] |
//!
//! Every link is TLS 1.3 inside QUIC whatever the mode (see [`crate::tls`]): what the modes
//! add is *admission*, the check that a peer may take part in this one mesh.
//!
//! ```no_run
//! use peerchannel::security::{MeshPassword, MeshSecurity};
//! use peerchannel::{Identity, MeshOptions, Node, NodeConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::bind(Identity::generate()?, NodeConfig::default()).await?;
//! let password = MeshPassword::new("correct horse battery staple")?;
//! let options = MeshOptions::default()
//!     .with_security(MeshSecurity::Password(password))
//!     .signed()
//!     .require_signed();
//! let mesh = node.join("net.p2p://team/chat", options).await?;
//! # Ok(()) }
//! ```
//!
//! # Admission happens per (peer, mesh), over the authenticated link
//!
//! Modification from `DESIGN.md` ("TLS certificate: self-signed ... or issued by the mesh's CA
//! in a certificate mesh"): a pair of nodes has **one** QUIC connection, shared by every mesh
//! they have in common, and those meshes may be open, protected by different passwords, or
//! certified by different CAs. One TLS handshake cannot present a different certificate per
//! mesh, so TLS keeps proving only the peer id (the node's self-signed Ed25519 certificate),
//! and each closed mesh runs its own admission handshake on a bidirectional stream of that
//! connection ([`admission`]). What TLS proved is still used: the admission binds to the TLS
//! session (its exporter keying material) and to the authenticated peer ids.
//!
//! Until a peer is admitted to a closed mesh, in both directions, none of that mesh's protocol
//! messages pass: outgoing ones wait in a bounded buffer, incoming ones are dropped and
//! counted ([`SecurityStats::unauthenticated`]). A refusal touches nothing else on the link:
//! the peer is dropped from that mesh only, and the application gets
//! [`crate::Event::AuthenticationFailed`].
//!
//! # Signed messages
//!
//! With [`crate::MeshOptions::sign`], the origin signs each message (mesh, origin, sequence
//! number, path, body and a timestamp) with its Ed25519 key. Receivers check every signature
//! they see, and with [`crate::MeshOptions::require_signed`] refuse unsigned messages; a
//! message that fails is neither delivered nor passed on, and is counted. The timestamp must
//! lie within [`SIGNATURE_WINDOW`] of the receiver's clock, shorter than the two minutes the
//! protocol remembers message ids: a message captured and injected again after it has left the
//! duplicate cache is too old by then. In a certificate mesh each signed message carries the
//! origin's member certificate, so that every receiver, not only the origin's neighbors, can
//! check that the signer is a member. See the `signing` module for the format and the costs.

pub mod admission;
pub mod certificate;
mod password;
pub(crate) mod signing;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::PeerId;

pub use self::certificate::{CertificateError, MemberCertificate};

/// How long an admission handshake may take, from opening its stream to the verdict: 5 s.
///
/// Two round trips on a link that is already up take milliseconds; the bound only stops a
/// peer that opens handshakes and goes silent from holding buffers.
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(5);

/// How far a signed message's timestamp may be from the receiver's clock: 60 s either way.
///
/// Must stay below the protocol's duplicate-cache retention (`seen_retention`, 2 min): a
/// message replayed after its id was forgotten is older than this by then and is refused.
/// It must also cover clock differences between members and the age of the messages the
/// protocol re-sends (catch-up and grafts serve messages up to 30 s old).
pub const SIGNATURE_WINDOW: Duration = Duration::from_secs(60);

/// Who may take part in a mesh. See the [module docs](self).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum MeshSecurity {
    /// Anyone who knows the mesh id.
    #[default]
    Open,
    /// Nodes that prove, with a PAKE bound to the link, that they know this password.
    Password(MeshPassword),
    /// Nodes holding a certificate issued by the mesh's CA for their own key.
    Certificate(MemberCertificate),
}

impl MeshSecurity {
    /// Which kind of mesh this is.
    pub fn mode(&self) -> SecurityMode {
        match self {
            Self::Open => SecurityMode::Open,
            Self::Password(_) => SecurityMode::Password,
            Self::Certificate(_) => SecurityMode::Certificate,
        }
    }
}

/// The kind of a mesh's admission, without its secrets: for reports and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SecurityMode {
    /// No admission check.
    Open,
    /// A shared password.
    Password,
    /// Member certificates from a mesh CA.
    Certificate,
}

impl fmt::Display for SecurityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Password => "password-protected",
            Self::Certificate => "certificate-protected",
        })
    }
}

/// A mesh password. Never printed: `Debug` shows `MeshPassword(<redacted>)`, and the bytes are
/// wiped from memory when the last clone is dropped.
///
/// The password is never sent, not even hashed: it only feeds the SPAKE2 exchange of the
/// admission handshake. (The `spake2` crate keeps a copy of its own during a handshake, which
/// it does not wipe.)
#[derive(Clone)]
pub struct MeshPassword(Arc<Zeroizing<Vec<u8>>>);

impl MeshPassword {
    /// A password from its bytes (UTF-8 or not). An empty password is refused.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, PasswordError> {
        let secret = Zeroizing::new(secret.into());
        if secret.is_empty() {
            return Err(PasswordError::Empty);
        }
        Ok(Self(Arc::new(secret)))
    }

    /// Reads a password file: its contents, less one trailing line break (`\n` or `\r\n`), so
    /// that `echo secret > file` works.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PasswordError> {
        let path = path.as_ref();
        let mut bytes =
            Zeroizing::new(std::fs::read(path).map_err(|source| PasswordError::Read {
                path: path.to_owned(),
                source,
            })?);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self::new(bytes.to_vec())
    }

    /// The secret bytes, for the key exchange only.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MeshPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshPassword(<redacted>)")
    }
}

/// Why a password could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password is empty.
    ///
    /// Cause: an empty password file or variable. Fix: put the password in it.
    #[error("the password is empty")]
    Empty,
    /// The password file could not be read.
    ///
    /// Fix: check the path and its permissions.
    #[error("cannot read the password file {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Why a peer was not admitted to a closed mesh (see [`crate::Event::AuthenticationFailed`]).
/// Grouped by who is at fault; the text is one line for a person to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    // The two nodes disagree.
    /// The peer's password differs from ours (or it is a node guessing the password; each
    /// handshake tests one guess, online).
    ///
    /// Fix: give every member the same password.
    #[error("wrong password: the peer's password for this mesh differs from ours")]
    WrongPassword,
    /// The two nodes protect the mesh differently: one is open and the other has a password,
    /// or one uses a password and the other certificates.
    ///
    /// Fix: join the mesh with the same kind of security on every node.
    #[error("the mesh is {ours} here but {theirs} at the peer")]
    ModeMismatch {
        /// How this node protects the mesh.
        ours: SecurityMode,
        /// How the peer does.
        theirs: SecurityMode,
    },

    // The peer's certificate is not acceptable.
    /// The peer presented no member certificate.
    ///
    /// Fix: on the peer, join with a certificate from this mesh's CA.
    #[error("the peer presented no member certificate")]
    NoCertificate,
    /// The peer's certificate was not issued by this mesh's CA (or its signature is wrong).
    ///
    /// Fix: issue the peer's certificate with this mesh's CA (`peerchannel cert issue`).
    #[error("the peer's certificate was not issued by this mesh's CA")]
    UnknownIssuer,
    /// The peer's certificate has expired, or is not valid yet (check both clocks).
    ///
    /// Fix: issue the peer a new certificate.
    #[error("the peer's certificate is outside its validity period: {0}")]
    CertificateExpired(String),
    /// The peer's certificate is for another key than the one the peer proved on the link:
    /// a copied certificate.
    ///
    /// Fix: issue a certificate for the peer's own identity.
    #[error("the peer's certificate is for {certified}, not for the peer")]
    CertificateKeyMismatch {
        /// The key in the certificate.
        certified: PeerId,
    },
    /// The peer's certificate is unusable for another reason (malformed, not a member
    /// certificate, a CA certificate).
    ///
    /// Fix: issue the peer's certificate with `peerchannel cert issue`.
    #[error("the peer's certificate is not acceptable: {0}")]
    BadCertificate(String),

    // The peer refused us.
    /// The peer refused to admit this node, for the reason it gave (its side of one of the
    /// failures above, for example our certificate being expired).
    ///
    /// Fix: as the reason says, on this node.
    #[error("the peer refused us: {0}")]
    RefusedByPeer(String),

    // The handshake did not complete.
    /// The handshake did not finish within [`ADMISSION_TIMEOUT`].
    ///
    /// Cause: an overloaded or hostile peer, or a peer of an older version that does not
    /// answer admission handshakes. Fix: none here; it is tried again later.
    #[error("the admission handshake timed out")]
    TimedOut,
    /// The peer broke the admission protocol (a malformed or oversized frame, an unexpected
    /// step, another version).
    ///
    /// Fix: run the same peerchannel version on both nodes.
    #[error("the peer broke the admission protocol: {0}")]
    Protocol(String),
}

/// A mesh's security counters, from [`crate::Mesh::security_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecurityStats {
    /// Protocol messages dropped because they came from a peer not (yet) admitted to this
    /// closed mesh.
    pub unauthenticated: u64,
    /// Outgoing protocol messages dropped while waiting for a peer's admission (the buffer was
    /// full, or the admission failed).
    pub held_dropped: u64,
    /// Admission handshakes that succeeded.
    pub admitted: u64,
    /// Admission handshakes that failed (each also an
    /// [`crate::Event::AuthenticationFailed`]).
    pub refused: u64,
    /// Messages whose signature was not the origin's signature of their content: forged or
    /// altered. Neither delivered nor passed on.
    pub bad_signatures: u64,
    /// Signed messages whose timestamp was outside [`SIGNATURE_WINDOW`]: replays, or a clock
    /// far off. Neither delivered nor passed on.
    pub stale_signatures: u64,
    /// Unsigned messages refused because the mesh requires signatures.
    pub unsigned: u64,
    /// Signed messages in a certificate mesh whose signer did not show a valid member
    /// certificate.
    pub uncertified_signers: u64,
}

/// The certificate of a mesh member as DER, for APIs taking one.
pub(crate) type Der = CertificateDer<'static>;

/// The live counters behind [`SecurityStats`], shared by the node's task, the mesh's filter
/// and the [`crate::Mesh`] handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) unauthenticated: AtomicU64,
    pub(crate) held_dropped: AtomicU64,
    pub(crate) admitted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) bad_signatures: AtomicU64,
    pub(crate) stale_signatures: AtomicU64,
    pub(crate) unsigned: AtomicU64,
    pub(crate) uncertified_signers: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SecurityStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SecurityStats {
            unauthenticated: read(&self.unauthenticated),
            held_dropped: read(&self.held_dropped),
            admitted: read(&self.admitted),
            refused: read(&self.refused),
            bad_signatures: read(&self.bad_signatures),
            stale_signatures: read(&self.stale_signatures),
            unsigned: read(&self.unsigned),
            uncertified_signers: read(&self.uncertified_signers),
        }
    }
}
