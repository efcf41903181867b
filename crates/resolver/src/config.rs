//! The service's settings: lifetimes and limits, each with a named default.

use std::num::NonZeroU32;
use std::time::Duration;

/// How long a registration lives unless refreshed. A minute: a crashed node disappears from
/// answers within a minute, while a live one refreshes every 30 s, a negligible load.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// How often expired registrations are swept. Expired registrations are never served even
/// before the sweep (every lookup checks the time); the sweep only frees their memory.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5);

/// The largest request body. A registration with the maximum number of IPv6 addresses is
/// under 1 KiB; 16 KiB leaves room for future fields.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The most addresses one registration may carry: a host with a few interfaces, each with an
/// IPv4 and an IPv6 address or two.
pub const MAX_ADDRESSES: usize = 16;

/// The number of peers a lookup returns when the request does not say.
pub const DEFAULT_PEERS: usize = 32;

/// The most peers one lookup returns: a node needs a handful to join, not the whole mesh.
pub const MAX_PEERS: usize = 100;

/// The most live registrations in one mesh. A guess: large enough for any chat or game
/// session, small enough that one mesh cannot fill the service.
pub const MAX_REGISTRATIONS_PER_MESH: usize = 10_000;

/// The most live registrations made from one source address (IPv6: one /64). Many nodes may
/// share an address behind a NAT or on one host; [`ResolverConfig::relaxed`] lifts this for
/// demos and benchmarks that run hundreds of nodes on one machine.
pub const MAX_REGISTRATIONS_PER_IP: usize = 256;

/// The most live registrations in total: bounds memory (a registration takes well under
/// 1 KiB, so about 100 MiB at most).
pub const MAX_REGISTRATIONS: usize = 100_000;

/// The most meshes with live registrations.
pub const MAX_MESHES: usize = 50_000;

/// Requests per second allowed from one source address, sustained. A node makes one request
/// per mesh every 30 s plus the occasional lookup; 50 per second serves a thousand nodes
/// behind one address.
pub const REQUESTS_PER_SECOND: u32 = 50;

/// Requests allowed from one source address in a burst: a host starting many nodes at once.
pub const REQUEST_BURST: u32 = 200;

/// The most connections open at once. Beyond it, new connections wait in the kernel's backlog
/// until one closes. Clients keep one connection each, briefly; 1024 also stays under the
/// common default limit of open files.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a connection may make no progress (no byte read or written) before it is closed:
/// an idle keep-alive connection, or a client sending its request too slowly.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of a resolver service. Start from [`Default`] and change what you need:
///
/// ```
/// use std::time::Duration;
///
/// use peerchannel_resolver::ResolverConfig;
///
/// let config = ResolverConfig { lifetime: Duration::from_secs(30), ..ResolverConfig::default() };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// How long a registration lives unless refreshed; whole seconds, at least 1 s (the API
    /// reports it in seconds). Default [`DEFAULT_LIFETIME`].
    pub lifetime: Duration,
    /// How often expired registrations are swept. Default [`DEFAULT_CLEANUP_INTERVAL`].
    pub cleanup_interval: Duration,
    /// The largest request body in bytes; larger ones get `413`. Default [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// The most addresses per registration. Default [`MAX_ADDRESSES`].
    pub max_addresses: usize,
    /// Peers returned by a lookup without `max`. Default [`DEFAULT_PEERS`].
    pub default_peers: usize,
    /// The most peers a lookup returns. Default [`MAX_PEERS`].
    pub max_peers: usize,
    /// The most live registrations in one mesh. Default [`MAX_REGISTRATIONS_PER_MESH`].
    pub max_registrations_per_mesh: usize,
    /// The most live registrations from one source address. Default
    /// [`MAX_REGISTRATIONS_PER_IP`].
    pub max_registrations_per_ip: usize,
    /// The most live registrations in total. Default [`MAX_REGISTRATIONS`].
    pub max_registrations: usize,
    /// The most meshes with live registrations. Default [`MAX_MESHES`].
    pub max_meshes: usize,
    /// The request rate allowed per source address; `None` for no limit. Default
    /// [`REQUESTS_PER_SECOND`] with bursts of [`REQUEST_BURST`].
    pub rate_limit: Option<RateLimit>,
    /// The most connections open at once. Default [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// How long a connection may make no progress before it is closed. Default
    /// [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

/// A token bucket per source address: `burst` requests at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// The bucket's size: requests allowed at once.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A limit of `per_second` sustained and `burst` at once; `None` if either is zero.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            lifetime: DEFAULT_LIFETIME,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_body_bytes: MAX_BODY_BYTES,
            max_addresses: MAX_ADDRESSES,
            default_peers: DEFAULT_PEERS,
            max_peers: MAX_PEERS,
            max_registrations_per_mesh: MAX_REGISTRATIONS_PER_MESH,
            max_registrations_per_ip: MAX_REGISTRATIONS_PER_IP,
            max_registrations: MAX_REGISTRATIONS,
            max_meshes: MAX_MESHES,
            rate_limit: RateLimit::new(REQUESTS_PER_SECOND, REQUEST_BURST),
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

impl ResolverConfig {
    /// The defaults without the per-address limits (registrations and request rate): for a
    /// resolver that serves many nodes from one address, such as the demo or a benchmark
    /// running hundreds of nodes on one host. The per-mesh and total limits stay.
    pub fn relaxed() -> Self {
        Self {
            max_registrations_per_ip: MAX_REGISTRATIONS,
            rate_limit: None,
            ..Self::default()
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let invalid = |reason: String| Err(InvalidConfig { reason });
        if self.lifetime < Duration::from_secs(1) || self.lifetime.subsec_nanos() != 0 {
            return invalid(format!(
                "the lifetime is {:?}; it must be whole seconds, at least 1 s",
                self.lifetime
            ));
        }
        if self.cleanup_interval.is_zero() {
            return invalid("the cleanup interval must be longer than zero".to_owned());
        }
        if self.idle_timeout.is_zero() {
            return invalid("the idle timeout must be longer than zero".to_owned());
        }
        if self.max_body_bytes < 1024 {
            return invalid(format!(
                "a body limit of {} bytes is too small for a registration; give at least 1024",
                self.max_body_bytes
            ));
        }
        if self.default_peers == 0 || self.default_peers > self.max_peers {
            return invalid(format!(
                "the default number of peers ({}) must be between 1 and the maximum ({})",
                self.default_peers, self.max_peers
            ));
        }
        let at_least_one = [
            ("max_addresses", self.max_addresses),
            (
                "max_registrations_per_mesh",
                self.max_registrations_per_mesh,
            ),
            ("max_registrations_per_ip", self.max_registrations_per_ip),
            ("max_registrations", self.max_registrations),
            ("max_meshes", self.max_meshes),
            ("max_connections", self.max_connections),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return invalid(format!("{name} is 0; nothing could register"));
            }
        }
        Ok(())
    }

    /// The settings as `GET /v1/settings` reports them.
    pub fn to_api(&self) -> peerchannel::resolver::api::Settings {
        peerchannel::resolver::api::Settings {
            lifetime_s: self.lifetime.as_secs(),
            max_body_bytes: self.max_body_bytes,
            max_addresses: self.max_addresses,
            default_peers: self.default_peers,
            max_peers: self.max_peers,
            max_registrations_per_mesh: self.max_registrations_per_mesh,
            max_registrations_per_ip: self.max_registrations_per_ip,
            max_registrations: self.max_registrations,
            max_meshes: self.max_meshes,
            requests_per_second: self.rate_limit.map_or(0, |r| r.per_second.get()),
            request_burst: self.rate_limit.map_or(0, |r| r.burst.get()),
        }
    }
}

/// Settings that do not make sense; see [`ResolverConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resolver settings: {reason}")]
pub struct InvalidConfig {
    /// What is wrong.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert_eq!(ResolverConfig::default().validate(), Ok(()));
        assert_eq!(ResolverConfig::relaxed().validate(), Ok(()));
        let half_second = ResolverConfig {
            lifetime: Duration::from_millis(500),
            ..Default::default()
        };
        assert!(
            half_second
                .validate()
                .unwrap_err()
                .reason
                .contains("whole seconds")
        );
        let no_meshes = ResolverConfig {
            max_meshes: 0,
            ..Default::default()
        };
        assert!(
            no_meshes
                .validate()
                .unwrap_err()
                .reason
                .starts_with("max_meshes")
        );
        let peers = ResolverConfig {
            default_peers: 200,
            ..Default::default()
        };
        assert!(peers.validate().is_err());
        assert_eq!(RateLimit::new(0, 5), None);
    }
}
