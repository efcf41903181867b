//! Resolvers: how a node finds a few members of a mesh to connect to.
//!
//! A node needs the addresses of one or two members of a mesh to join it; after that the mesh
//! itself (membership shuffles, referrals) tells it about the others. A [`Resolver`] provides
//! those first contacts, and publishes this node so that others can find it.
//!
//! # Implementations
//!
//! | type | when to use it |
//! | --- | --- |
//! | [`ServiceResolver`] | a `peerchannel resolver` HTTP service is running somewhere reachable |
//! | [`StaticResolver`] | a fixed list of `host:port` bootstrap peers |
//! | [`MultiResolver`] | several of the above at once: register with all, resolve from any |
//! | [`MdnsResolver`] | no server: nodes on the same LAN or host find each other with mDNS / DNS-SD |
//! | [`AutoResolver`] | the default: a resolver service when it answers, mDNS otherwise |
//!
//! You may implement [`Resolver`] yourself; the runtime only ever holds an
//! `Arc<dyn Resolver>`.
//!
//! # Registrations are soft state
//!
//! [`Resolver::register`] returns a [`Registration`]: an opaque id and a lifetime. The
//! registration disappears unless it is refreshed within its lifetime, so a node that crashes
//! drops out of the resolver by itself. [`spawn_registration`] runs the loop that keeps a
//! registration alive: it refreshes at half the lifetime, registers again when the resolver has
//! forgotten it (it restarted, or the registration expired while the node was cut off), and
//! retries with capped exponential backoff while the resolver is unreachable. A resolver
//! without expiry (static peers) returns [`NEVER_EXPIRES`] as the lifetime.
//!
//! # Members whose peer id is not known
//!
//! A resolver answers with [`PeerAddr`]s. A static list of bootstrap peers has addresses but
//! no peer ids, so [`PeerAddr::peer_id`] is an `Option`: `None` means "some member listens
//! here, its id is not known yet". The runtime dials such an address without expecting a
//! particular key and learns the peer id from the TLS handshake (the certificate's key is the
//! peer id, see the `tls` module); a known id, by contrast, is checked against the certificate
//! and the connection refused on a mismatch. Registration always needs an id: a node always
//! knows its own.
//!
//! # Example
//!
//! Keep this node registered with a resolver service and ask it for members:
//!
//! ```no_run
//! # async fn example(my_id: peerchannel::PeerId) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use peerchannel::MeshId;
//! use peerchannel::resolver::{Resolver, ServiceResolver, spawn_registration};
//!
//! let resolver: Arc<dyn Resolver> = Arc::new(ServiceResolver::new("http://127.0.0.1:7700")?);
//! let mesh = MeshId::new("soccerpals")?;
//! let handle = spawn_registration(
//!     resolver.clone(),
//!     mesh.clone(),
//!     my_id,
//!     vec!["127.0.0.1:4433".parse()?],
//! );
//! let members = resolver.resolve(&mesh, 8).await?;
//! println!("{} members to try; registration: {}", members.len(), handle.status());
//! handle.unregister().await;
//! # Ok(())
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{MeshId, PeerId};

pub mod api;
mod auto;
mod mdns;
mod multi;
mod registration;
mod service;
mod static_peers;

pub use auto::{AUTO_SERVICE_RECHECK, AUTO_SERVICE_TIMEOUT, AutoResolver, AutoSource};
pub use mdns::{
    FIRST_BROWSE_WAIT, GOODBYE_TIMEOUT, MAX_NEARBY, MAX_TXT_LEN, MdnsConfig, MdnsError,
    MdnsResolver, NearbyNode, RECORD_TTL, SERVICE_TYPE, VERIFY_INTERVAL, VERIFY_TIMEOUT,
};
pub use multi::{MULTI_RESOLVE_TIMEOUT, MultiResolver};
pub use registration::{RegistrationHandle, RegistrationStatus, spawn_registration};
pub use service::{InvalidResolverUrl, REQUEST_TIMEOUT, ServiceResolver};
pub use static_peers::{InvalidStaticPeer, StaticResolver};

/// The lifetime a resolver without expiry returns: long enough that it is never refreshed.
///
/// About a hundred years; it still fits in any `Instant` arithmetic the keeper does, which
/// `Duration::MAX` would not.
pub const NEVER_EXPIRES: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A boxed, sendable future: what the methods of [`Resolver`] return, so the trait stays
/// object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A mesh member as a resolver knows it: its peer id, when known, and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAddr {
    /// The member's peer id, or `None` when the resolver only knows an address (a static
    /// bootstrap peer). The runtime then learns the id from the TLS handshake.
    pub peer_id: Option<PeerId>,
    /// The addresses it listens on, most preferred first.
    pub addresses: Vec<SocketAddr>,
}

impl PeerAddr {
    /// A member whose peer id is known.
    pub fn new(peer_id: PeerId, addresses: Vec<SocketAddr>) -> Self {
        Self {
            peer_id: Some(peer_id),
            addresses,
        }
    }

    /// A member known only by its address; its peer id is learnt when connecting.
    pub fn without_id(addresses: Vec<SocketAddr>) -> Self {
        Self {
            peer_id: None,
            addresses,
        }
    }
}

/// The opaque token that names one registration at one resolver.
///
/// For the resolver service it is a secret: whoever holds it may refresh, change or delete the
/// registration. `Debug` therefore prints only its first characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegistrationId(String);

impl RegistrationId {
    /// Wraps a token issued by a resolver.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token, as the resolver issued it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(6).collect();
        write!(f, "RegistrationId({shown}…)")
    }
}

/// A registration accepted by a resolver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The token to refresh, update or remove it with.
    pub id: RegistrationId,
    /// How long it lives unless refreshed. [`NEVER_EXPIRES`] for resolvers without expiry.
    pub lifetime: Duration,
}

/// Publishes this node in a mesh and finds other members of it.
///
/// All methods take `&self` and may be called concurrently. Each returns a boxed future so
/// that the trait stays object-safe (the runtime holds an `Arc<dyn Resolver>`); implement them
/// as `Box::pin(async move { ... })`.
///
/// A resolver that does not publish anything (static peers) accepts every registration and
/// returns [`NEVER_EXPIRES`]; one without a notion of registration ids may return any token
/// and ignore it later.
pub trait Resolver: Send + Sync + fmt::Debug + 'static {
    /// Publishes `peer_id`, listening on `addresses`, as a member of `mesh`.
    ///
    /// A second registration of the same peer id in the same mesh replaces the first.
    fn register<'a>(
        &'a self,
        mesh: &'a MeshId,
        peer_id: PeerId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Registration, ResolverError>>;

    /// Replaces the addresses of a registration, and refreshes it. Returns the new lifetime.
    ///
    /// Fails with [`ResolverError::RegistrationNotFound`] when the registration has expired or
    /// the resolver forgot it; register again then.
    fn update<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Duration, ResolverError>>;

    /// Extends a registration's life. Returns the new lifetime.
    ///
    /// Fails with [`ResolverError::RegistrationNotFound`] when the registration has expired or
    /// the resolver forgot it; register again then.
    fn refresh<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<Duration, ResolverError>>;

    /// Removes a registration, so that others stop being told about this node.
    fn unregister<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<(), ResolverError>>;

    /// Up to `max` members of `mesh`, chosen at random where the resolver knows more.
    ///
    /// The answer may include this node itself; the caller skips its own peer id. A mesh the
    /// resolver has never heard of is an empty list, not an error: it is how every mesh
    /// starts.
    fn resolve<'a>(
        &'a self,
        mesh: &'a MeshId,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>>;

    /// A short name for messages and logs, such as the service's URL. The default is the
    /// `Debug` form.
    fn name(&self) -> String {
        format!("{self:?}")
    }
}

/// Why a resolver could not do what was asked.
///
/// Errors name the resolver (its URL) so that a message with several resolvers says which one
/// failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolverError {
    /// The resolver could not be reached: the connection was refused or reset, its host name
    /// did not resolve, or it did not answer within the timeout.
    ///
    /// Fix: check that the resolver is running and that the URL is right. The registration
    /// keeper retries by itself with backoff.
    #[error("cannot reach the resolver at {url}: {reason}")]
    Unreachable {
        /// The resolver's URL.
        url: String,
        /// What went wrong, e.g. "connection refused".
        reason: String,
    },
    /// The resolver does not know this registration: it expired (it was not refreshed in
    /// time) or the resolver restarted and lost its state.
    ///
    /// Fix: register again. The registration keeper does this by itself.
    #[error(
        "the resolver at {url} does not know this registration \
         (it expired, or the resolver restarted); register again"
    )]
    RegistrationNotFound {
        /// The resolver's URL.
        url: String,
    },
    /// The resolver turned the request down because this client sends too many requests.
    ///
    /// Fix: wait `retry_after` (when given) before the next request; the registration keeper
    /// does.
    #[error("the resolver at {url} asks to slow down{}", fmt_retry_after(*.retry_after))]
    RateLimited {
        /// The resolver's URL.
        url: String,
        /// How long the resolver asks to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The resolver rejected the request as invalid or over a limit (an HTTP 4xx status other
    /// than 404 and 429), with its own explanation.
    ///
    /// Fix: read the message. Typical causes are too many addresses, a mesh that is full, or
    /// too many registrations from one address; a limit may clear when registrations expire.
    #[error("the resolver at {url} rejected the request ({status}): {message}")]
    Rejected {
        /// The resolver's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The resolver's machine-readable error code (see [`api::error_code`]); empty if it
        /// gave none.
        code: String,
        /// The resolver's explanation.
        message: String,
    },
    /// The resolver failed on its side (an HTTP 5xx status).
    ///
    /// Fix: none on this side; the registration keeper retries. If it persists, look at the
    /// resolver's logs.
    #[error("the resolver at {url} failed ({status}): {message}")]
    Service {
        /// The resolver's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What it said, if anything.
        message: String,
    },
    /// The resolver answered with something this client does not understand.
    ///
    /// Fix: check that the URL is that of a peerchannel resolver, of a compatible version.
    #[error(
        "the resolver at {url} sent an answer this client does not understand ({reason}); \
         is this the URL of a peerchannel resolver?"
    )]
    InvalidResponse {
        /// The resolver's URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A host name in a static peer list did not resolve to any address.
    ///
    /// Fix: check the name, or give an IP address instead.
    #[error("cannot look up the bootstrap peer `{host}`: {reason}")]
    Lookup {
        /// The `host:port` that was looked up.
        host: String,
        /// Why the lookup failed.
        reason: String,
    },
    /// Every resolver of a [`MultiResolver`] failed; each one's error is listed.
    ///
    /// Fix: see the individual errors.
    #[error("no resolver answered: {}", fmt_all(errors))]
    AllFailed {
        /// One error per resolver, in the order they were given.
        errors: Vec<ResolverError>,
    },
    /// An error from a resolver implemented outside this crate.
    #[error(transparent)]
    Other(Box<dyn StdError + Send + Sync>),
}

impl ResolverError {
    /// Whether the resolver was out of reach, rather than reached and unhappy: what a user
    /// interface calls "resolver unreachable". For [`ResolverError::AllFailed`], whether every
    /// resolver was out of reach.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::AllFailed { errors } => {
                !errors.is_empty() && errors.iter().all(ResolverError::is_unreachable)
            }
            _ => false,
        }
    }

    /// Whether the resolver no longer knows the registration, so that registering again is
    /// the way forward.
    pub fn is_registration_not_found(&self) -> bool {
        matches!(self, Self::RegistrationNotFound { .. })
    }

    /// How long the resolver asked to wait before the next request, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn fmt_retry_after(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!("; retry in {} s", wait.as_secs_f32().ceil()),
        None => String::new(),
    }
}

fn fmt_all(errors: &[ResolverError]) -> String {
    if errors.is_empty() {
        return "no resolver was configured".to_owned();
    }
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_is_object_safe() {
        fn takes(_: std::sync::Arc<dyn Resolver>) {}
        takes(std::sync::Arc::new(StaticResolver::from_addrs(Vec::new())));
    }

    #[test]
    fn registration_id_debug_hides_the_secret() {
        let id = RegistrationId::new("abcdefghijklmnopqrstuvwxyz");
        let shown = format!("{id:?}");
        assert!(!shown.contains("ghij"), "{shown}");
        assert_eq!(id.as_str(), "abcdefghijklmnopqrstuvwxyz");
    }

    #[test]
    fn messages_read_well() {
        let unreachable = ResolverError::Unreachable {
            url: "http://127.0.0.1:7700".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            unreachable.to_string(),
            "cannot reach the resolver at http://127.0.0.1:7700: connection refused"
        );
        let limited = ResolverError::RateLimited {
            url: "http://r".into(),
            retry_after: Some(Duration::from_millis(1500)),
        };
        assert_eq!(
            limited.to_string(),
            "the resolver at http://r asks to slow down; retry in 2 s"
        );
        let all = ResolverError::AllFailed {
            errors: vec![
                unreachable,
                ResolverError::RegistrationNotFound {
                    url: "http://b".into(),
                },
            ],
        };
        let text = all.to_string();
        assert!(text.starts_with("no resolver answered: cannot reach the resolver at http://127"));
        assert!(
            text.contains("; the resolver at http://b does not know"),
            "{text}"
        );
        assert!(!all.is_unreachable());
    }

    #[test]
    fn unreachable_is_recognised_through_all_failed() {
        let down = || ResolverError::Unreachable {
            url: "u".into(),
            reason: "r".into(),
        };
        assert!(down().is_unreachable());
        assert!(
            ResolverError::AllFailed {
                errors: vec![down(), down()]
            }
            .is_unreachable()
        );
        assert!(!ResolverError::AllFailed { errors: vec![] }.is_unreachable());
        assert!(
            ResolverError::RegistrationNotFound { url: "u".into() }.is_registration_not_found()
        );
    }

    #[test]
    fn peer_addr_without_id_round_trips_through_json() {
        let known = PeerAddr::new(
            PeerId::from_bytes([3; 32]),
            vec!["127.0.0.1:1".parse().unwrap()],
        );
        let unknown = PeerAddr::without_id(vec!["[::1]:2".parse().unwrap()]);
        for peer in [known, unknown] {
            let json = serde_json::to_string(&peer).unwrap();
            assert_eq!(serde_json::from_str::<PeerAddr>(&json).unwrap(), peer);
        }
    }
}
