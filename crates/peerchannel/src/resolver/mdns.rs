//! Serverless discovery on the local network: [`MdnsResolver`], mDNS / DNS-SD.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, IfKind, RecvTimeoutError, ServiceDaemon, ServiceEvent};
use tokio::sync::watch;

use self::records::{normalize_service_type, parse_instance, service_info};

use super::{
    BoxFuture, NEVER_EXPIRES, PeerAddr, Registration, RegistrationId, Resolver, ResolverError,
};
use crate::{MeshId, PeerId};

mod records;

/// The DNS-SD service type peerchannel nodes advertise and browse.
pub const SERVICE_TYPE: &str = "_peerchannel._udp.local.";

/// How long another node keeps this node's SRV and address records without hearing from it:
/// the time a killed node takes at most to drop out of other nodes' caches.
///
/// Two minutes: mdns-sd's TTL for host records (it does not let it be changed), which is also
/// RFC 6762's recommendation. The PTR and TXT records live longer (75 minutes), but an
/// instance without an SRV record counts as gone.
pub const RECORD_TTL: Duration = Duration::from_secs(120);

/// How long the first [`Resolver::resolve`] after starting waits for answers to the first mDNS
/// query when nothing is known yet. Responders answer within 20-120 ms (RFC 6762 §6), and a
/// node that has just registered announces itself after about a second of probing.
pub const FIRST_BROWSE_WAIT: Duration = Duration::from_millis(1500);

/// How long [`Resolver::unregister`] waits for the daemon to send the goodbye.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often `peerchannel browse` asks each listed instance to confirm itself (see
/// [`MdnsConfig::verify_interval`]).
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(10);

/// How long an instance has to answer a verification before it is dropped. The daemon asks
/// again after a second, so a single lost packet does not drop a live node.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest TXT record accepted, in bytes on the wire. Ours is under 330; anything much
/// larger was not written by peerchannel.
pub const MAX_TXT_LEN: usize = 1024;

/// The most instances kept. Beyond it new ones are ignored until others go: what a flood of
/// fake instances can cost is bounded.
pub const MAX_NEARBY: usize = 1024;

/// How an [`MdnsResolver`] is set up.
///
/// ```
/// use peerchannel::resolver::MdnsConfig;
///
/// let config = MdnsConfig::default().service_type("_pc-test._udp").unwrap();
/// assert_eq!(config.service_type, "_pc-test._udp.local.");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MdnsConfig {
    /// The DNS-SD service type, fully qualified (`_peerchannel._udp.local.`). Nodes with
    /// different types do not see each other: a way to keep groups (or tests) apart on one LAN.
    pub service_type: String,
    /// See [`FIRST_BROWSE_WAIT`].
    pub first_browse_wait: Duration,
    /// When set, every instance known is asked to confirm itself at this interval, and one
    /// that does not answer within [`VERIFY_TIMEOUT`] is dropped: a killed node goes in seconds
    /// instead of [`RECORD_TTL`]. One small query per instance per interval; off by default
    /// (nodes only need contacts now and then), on in `peerchannel browse`.
    pub verify_interval: Option<Duration>,
    /// Restricts mDNS to the interfaces that carry these addresses. Empty (the default): every
    /// interface. A node listening on one address is reachable only there, so advertising (and
    /// browsing) elsewhere would be useless: `peerchannel chat --listen 127.0.0.1:0` keeps its
    /// mDNS traffic on loopback.
    pub interface_addrs: Vec<IpAddr>,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            service_type: SERVICE_TYPE.to_owned(),
            first_browse_wait: FIRST_BROWSE_WAIT,
            verify_interval: None,
            interface_addrs: Vec::new(),
        }
    }
}

impl MdnsConfig {
    /// Uses another service type: `_name._udp` or `_name._tcp`, with or without `.local.`;
    /// the name is 1 to 15 letters, digits and `-` (RFC 6335).
    pub fn service_type(mut self, service_type: &str) -> Result<Self, MdnsError> {
        self.service_type = normalize_service_type(service_type)?;
        Ok(self)
    }

    /// Asks known instances to confirm themselves every `interval` (see
    /// [`MdnsConfig::verify_interval`]).
    pub fn verify_interval(mut self, interval: Duration) -> Self {
        self.verify_interval = Some(interval);
        self
    }

    /// Uses only the interfaces that carry `addrs` (see [`MdnsConfig::interface_addrs`]).
    pub fn interface_addrs(mut self, addrs: Vec<IpAddr>) -> Self {
        self.interface_addrs = addrs;
        self
    }
}

/// A peerchannel node advertised nearby, as [`MdnsResolver::nearby`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NearbyNode {
    /// The mesh it advertises.
    pub mesh: MeshId,
    /// Its peer id, from the TXT record (checked by TLS when connecting).
    pub peer_id: PeerId,
    /// Where it listens, non-loopback addresses first.
    pub addresses: Vec<SocketAddr>,
    /// The DNS-SD instance's full name, e.g. `soccerpals-…._peerchannel._udp.local.`.
    pub instance: String,
}

/// Finds members of a mesh on the local network with mDNS / DNS-SD, and advertises this node
/// there. Needs no server.
///
/// It runs its own mDNS daemon (a thread of mdns-sd's, on UDP port 5353 shared with other
/// responders on the host) from creation until it is dropped, and browses the service type all
/// along, so that a [`Resolver::resolve`] answers from what has been heard, at once.
///
/// # What is published
///
/// Each (node, mesh) registration is one DNS-SD service instance of type
/// `_peerchannel._udp.local.` ([`SERVICE_TYPE`]):
///
/// - **instance name**: `<mesh, shortened>-<first 16 characters of the peer id>-<mesh hash>`,
///   e.g. `soccerpals-ab3dk2xy7qw4mz5c-qx7b2m`; unique per (node, mesh), so several meshes of
///   one node advertise independently;
/// - **SRV**: the node's host name (`pc-<first 16 characters of the peer id>.local.`) and
///   port;
/// - **A / AAAA**: the node's advertised IP addresses (mDNS publishes on each interface the
///   addresses of that interface's subnet);
/// - **TXT**: `v=1`, `m=<mesh id>`, `id=<peer id>` (base32): under 330 bytes for the longest
///   mesh id (`m` is one letter so that the longest mesh id fits a TXT string's 255 bytes).
///
/// These are standard records: `avahi-browse -rpt _peerchannel._udp` and `dns-sd -B` list
/// them.
///
/// # Lifetime of the records
///
/// A graceful leave ([`Resolver::unregister`], which the runtime calls on `leave` and
/// `shutdown`) sends a goodbye (the records with TTL 0): browsers drop the instance within a
/// second. A node that dies without a goodbye drops out of other nodes' caches when its
/// records expire: the SRV and address records live [`RECORD_TTL`] (two minutes, mdns-sd's
/// fixed host-record TTL and RFC 6762's recommendation) after the last answer; browsers ask
/// again from 80% of that, so a live node stays and a dead one goes. With
/// [`MdnsConfig::verify_interval`] (what `peerchannel browse` uses) the resolver also asks each
/// known instance to confirm itself (RFC 6762 §10.4), and a dead node goes within that
/// interval plus [`VERIFY_TIMEOUT`].
///
/// The registration itself never expires ([`NEVER_EXPIRES`]): the mDNS daemon answers for the
/// node as long as it runs.
///
/// # What is accepted from the network
///
/// Anyone on the link can publish anything, so every instance is checked before it is used:
/// the TXT must be at most [`MAX_TXT_LEN`] bytes, carry a valid mesh id and a valid peer id
/// (and `v=1` if it names a version); at least one address must be usable (not unspecified,
/// multicast or broadcast, and a port other than 0); at most
/// [`MAX_ADDRESSES`](crate::addresses::MAX_ADDRESSES) addresses are kept. Anything else is
/// ignored (logged at debug level) and counted ([`MdnsResolver::ignored`]). **An instance
/// without a peer id is ignored** rather than returned as [`PeerAddr::without_id`]: every
/// peerchannel node publishes its id, and the id is what the TLS handshake checks, so an
/// instance without one is not a peerchannel node, or is broken, and dialing it would only
/// spend a connection attempt on a stranger. At most [`MAX_NEARBY`] instances are kept.
///
/// A hostile instance with a valid TXT can still name a mesh and a peer id it does not own:
/// the runtime then fails the TLS check (the certificate's key is the peer id) and drops the
/// contact. A mesh id shared by two unrelated groups on one LAN is expected; a password or
/// certificate mesh keeps strangers out.
///
/// # Example
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
///
/// use peerchannel::resolver::MdnsResolver;
/// use peerchannel::{Identity, MeshOptions, Node, NodeConfig};
///
/// let config = NodeConfig::default().resolver(Arc::new(MdnsResolver::new()?));
/// let node = Node::bind(Identity::generate()?, config).await?;
/// let mesh = node.join("soccerpals", MeshOptions::default()).await?;
/// # Ok(())
/// # }
/// ```
pub struct MdnsResolver {
    daemon: ServiceDaemon,
    config: MdnsConfig,
    started: Instant,
    nearby: watch::Receiver<Arc<Vec<NearbyNode>>>,
    registrations: Mutex<HashMap<String, Published>>,
    ignored: Arc<AtomicU64>,
    /// Set when dropped, so that the browser thread tells its expected end from a failure.
    stopping: Arc<AtomicBool>,
}

/// One registration: what to publish again on an update.
#[derive(Clone, Debug)]
struct Published {
    mesh: MeshId,
    peer_id: PeerId,
}

impl MdnsResolver {
    /// Starts an mDNS daemon browsing [`SERVICE_TYPE`].
    pub fn new() -> Result<Self, MdnsError> {
        Self::with_config(MdnsConfig::default())
    }

    /// Starts an mDNS daemon with `config`.
    pub fn with_config(config: MdnsConfig) -> Result<Self, MdnsError> {
        let service_type = normalize_service_type(&config.service_type)?;
        let config = MdnsConfig {
            service_type,
            ..config
        };
        let daemon = ServiceDaemon::new().map_err(|e| MdnsError::Daemon(e.to_string()))?;
        if !config.interface_addrs.is_empty() {
            // Applied in order before the browse starts: nothing is sent elsewhere.
            let only: Vec<IfKind> = config
                .interface_addrs
                .iter()
                .map(|ip| IfKind::Addr(*ip))
                .collect();
            daemon
                .disable_interface(IfKind::All)
                .and_then(|()| daemon.enable_interface(only))
                .map_err(|e| MdnsError::Daemon(e.to_string()))?;
        }
        let events = daemon
            .browse(&config.service_type)
            .map_err(|e| MdnsError::Daemon(e.to_string()))?;
        let monitor = daemon
            .monitor()
            .map_err(|e| MdnsError::Daemon(e.to_string()))?;
        let (nearby_tx, nearby) = watch::channel(Arc::new(Vec::new()));
        let ignored = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let browser = Browser {
            daemon: daemon.clone(),
            known: BTreeMap::new(),
            nearby: nearby_tx,
            ignored: ignored.clone(),
            verify_interval: config.verify_interval,
            stopping: stopping.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("peerchannel-mdns-browse".into())
            .spawn(move || browser.run(events))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("peerchannel-mdns-monitor".into())
                    .spawn(move || log_daemon_events(monitor))
            });
        if let Err(e) = spawned {
            let _ = daemon.shutdown();
            return Err(MdnsError::Daemon(format!("cannot start a thread: {e}")));
        }
        Ok(Self {
            daemon,
            config,
            started: Instant::now(),
            nearby,
            registrations: Mutex::new(HashMap::new()),
            ignored,
            stopping,
        })
    }

    /// The service type browsed and advertised.
    pub fn service_type(&self) -> &str {
        &self.config.service_type
    }

    /// Every valid peerchannel instance heard of and not gone, sorted by mesh then peer id.
    pub fn nearby(&self) -> Arc<Vec<NearbyNode>> {
        self.nearby.borrow().clone()
    }

    /// A receiver that sees [`MdnsResolver::nearby`] change, as nodes come and go.
    pub fn watch(&self) -> watch::Receiver<Arc<Vec<NearbyNode>>> {
        self.nearby.clone()
    }

    /// How many instances were ignored as malformed (or over [`MAX_NEARBY`]) so far.
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    fn publish(
        &self,
        mesh: &MeshId,
        peer_id: PeerId,
        addresses: &[SocketAddr],
    ) -> Result<String, ResolverError> {
        let info = service_info(&self.config.service_type, mesh, peer_id, addresses)
            .map_err(|e| ResolverError::Other(Box::new(e)))?;
        let fullname = info.get_fullname().to_ascii_lowercase();
        self.daemon
            .register(info)
            .map_err(|e| self.unreachable(e))?;
        Ok(fullname)
    }

    fn unreachable(&self, err: mdns_sd::Error) -> ResolverError {
        ResolverError::Unreachable {
            url: self.name(),
            reason: format!("the mDNS daemon: {err}"),
        }
    }

    fn not_found(&self) -> ResolverError {
        ResolverError::RegistrationNotFound { url: self.name() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Published>> {
        // Every update is a single insert or remove: a poisoned map is still consistent.
        self.registrations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn resolve_inner(&self, mesh: &MeshId, max: usize) -> Vec<PeerAddr> {
        let mut nearby = self.nearby.clone();
        let deadline = tokio::time::Instant::from_std(self.started + self.config.first_browse_wait);
        loop {
            let found: Vec<NearbyNode> = nearby
                .borrow_and_update()
                .iter()
                .filter(|n| n.mesh == *mesh)
                .cloned()
                .collect();
            if !found.is_empty() {
                return sample(found, max);
            }
            match tokio::time::timeout_at(deadline, nearby.changed()).await {
                Ok(Ok(())) => {}
                // The deadline passed, or the browser stopped: nothing (more) to wait for.
                Ok(Err(_)) | Err(_) => return Vec::new(),
            }
        }
    }
}

impl Resolver for MdnsResolver {
    fn register<'a>(
        &'a self,
        mesh: &'a MeshId,
        peer_id: PeerId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
        Box::pin(async move {
            let fullname = self.publish(mesh, peer_id, addresses)?;
            let published = Published {
                mesh: mesh.clone(),
                peer_id,
            };
            self.lock().insert(fullname.clone(), published);
            tracing::debug!(%mesh, instance = %fullname, "advertised on mDNS");
            Ok(Registration {
                id: RegistrationId::new(fullname),
                lifetime: NEVER_EXPIRES,
            })
        })
    }

    fn update<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        Box::pin(async move {
            let published = self.lock().get(id.as_str()).cloned();
            let Some(published) = published.filter(|p| p.mesh == *mesh) else {
                return Err(self.not_found());
            };
            // Registering the same instance again replaces its records (the new address
            // records carry the cache-flush bit, so browsers drop the old ones).
            self.publish(mesh, published.peer_id, addresses)?;
            Ok(NEVER_EXPIRES)
        })
    }

    fn refresh<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        Box::pin(async move {
            match self.lock().get(id.as_str()) {
                Some(p) if p.mesh == *mesh => Ok(NEVER_EXPIRES),
                _ => Err(self.not_found()),
            }
        })
    }

    fn unregister<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<(), ResolverError>> {
        Box::pin(async move {
            {
                let mut registrations = self.lock();
                match registrations.get(id.as_str()) {
                    Some(p) if p.mesh == *mesh => registrations.remove(id.as_str()),
                    _ => return Err(self.not_found()),
                };
            }
            let status = self
                .daemon
                .unregister(id.as_str())
                .map_err(|e| self.unreachable(e))?;
            // The answer comes once the goodbye is sent.
            match tokio::time::timeout(GOODBYE_TIMEOUT, status.recv_async()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) | Err(_) => Err(ResolverError::Unreachable {
                    url: self.name(),
                    reason: "the mDNS daemon did not confirm the goodbye".to_owned(),
                }),
            }
        })
    }

    fn resolve<'a>(
        &'a self,
        mesh: &'a MeshId,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>> {
        Box::pin(async move { Ok(self.resolve_inner(mesh, max).await) })
    }

    fn name(&self) -> String {
        format!("mDNS ({})", self.config.service_type)
    }
}

impl fmt::Debug for MdnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdnsResolver")
            .field("service_type", &self.config.service_type)
            .field("nearby", &self.nearby.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Drop for MdnsResolver {
    fn drop(&mut self) {
        // Sends goodbyes for whatever is still registered and stops the daemon's thread, which
        // closes the browse channel and so ends the browser thread too.
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.daemon.shutdown();
    }
}

/// Why the mDNS resolver cannot start or publish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    /// The mDNS daemon could not be started (no thread, no socket).
    ///
    /// Fix: check that the host allows multicast UDP on port 5353; use a resolver service
    /// (`--resolver`) or static peers (`--peer`) where it does not.
    #[error("cannot start mDNS: {0}")]
    Daemon(String),
    /// The service type is not `_name._udp` or `_name._tcp` (a name of 1 to 15 letters, digits
    /// and `-`).
    ///
    /// Fix: use a type such as `_peerchannel._udp`.
    #[error("`{given}` is not a DNS-SD service type such as _peerchannel._udp: {reason}")]
    ServiceType {
        /// The type as given.
        given: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// None of the node's addresses can be published: all are unspecified, multicast or
    /// have port 0.
    ///
    /// Fix: listen on, or advertise, a concrete address.
    #[error("no address of this node can be advertised on mDNS (given: {addresses:?})")]
    NoUsableAddress {
        /// The addresses given.
        addresses: Vec<SocketAddr>,
    },
    /// mdns-sd refused the records (a bug: they are built to be valid).
    #[error("mDNS refused the service record: {0}")]
    Record(String),
}

/// The thread that follows the browse and keeps the list of nearby nodes.
struct Browser {
    daemon: ServiceDaemon,
    known: BTreeMap<String, NearbyNode>,
    nearby: watch::Sender<Arc<Vec<NearbyNode>>>,
    ignored: Arc<AtomicU64>,
    verify_interval: Option<Duration>,
    stopping: Arc<AtomicBool>,
}

impl Browser {
    fn run(mut self, events: mdns_sd::Receiver<ServiceEvent>) {
        let mut next_verify = self.verify_interval.map(|i| Instant::now() + i);
        loop {
            let event = match next_verify {
                Some(at) => events.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) => {
                    self.verify_all();
                    next_verify = self.verify_interval.map(|i| Instant::now() + i);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if !self.stopping.load(Ordering::Relaxed) {
                        // The daemon stopped, or dropped this subscription: what is listed now
                        // stays as it is.
                        tracing::warn!(
                            "mDNS browsing stopped; nearby nodes are no longer followed"
                        );
                    }
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(service) => {
                let name = service.fullname.to_ascii_lowercase();
                match parse_instance(&service) {
                    Ok(node) => {
                        if self.known.len() >= MAX_NEARBY && !self.known.contains_key(&name) {
                            self.ignored.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(instance = %name, "ignored: {MAX_NEARBY} instances known");
                            return;
                        }
                        if self.known.get(&name) != Some(&node) {
                            self.known.insert(name, node);
                            self.publish();
                        }
                    }
                    Err(why) => {
                        self.ignored.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(instance = %name, "ignored an mDNS instance: {why:?}");
                        // An instance that turned bad is no longer usable.
                        if self.known.remove(&name).is_some() {
                            self.publish();
                        }
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname)
                if self.known.remove(&fullname.to_ascii_lowercase()).is_some() =>
            {
                self.publish();
            }
            _ => {}
        }
    }

    fn verify_all(&self) {
        for name in self.known.keys() {
            if self.daemon.verify(name.clone(), VERIFY_TIMEOUT).is_err() {
                // The daemon's queue is full or it stopped: try again at the next round.
                return;
            }
        }
    }

    fn publish(&self) {
        let mut list: Vec<NearbyNode> = self.known.values().cloned().collect();
        list.sort();
        self.nearby.send_replace(Arc::new(list));
    }
}

fn log_daemon_events(monitor: mdns_sd::Receiver<DaemonEvent>) {
    while let Ok(event) = monitor.recv() {
        match event {
            DaemonEvent::Error(e) => tracing::debug!("mDNS daemon: {e}"),
            DaemonEvent::NameChange(change) => tracing::warn!(
                "mDNS: another responder uses `{}`; this node now answers as `{}`",
                change.original,
                change.new_name
            ),
            _ => {}
        }
    }
}

/// `found` in a random order, cut to `max`.
fn sample(mut found: Vec<NearbyNode>, max: usize) -> Vec<PeerAddr> {
    let order = RandomState::new();
    found.sort_by_cached_key(|n| order.hash_one(&n.instance));
    found
        .into_iter()
        .take(max)
        .map(|n| PeerAddr::new(n.peer_id, n.addresses))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    #[test]
    fn sample_is_cut_to_max_and_keeps_ids() {
        let nodes: Vec<NearbyNode> = (1..=5)
            .map(|i| NearbyNode {
                mesh: MeshId::new("m").unwrap(),
                peer_id: peer(i),
                addresses: vec![SocketAddr::from(([10, 0, 0, i], 1))],
                instance: format!("i{i}"),
            })
            .collect();
        let picked = sample(nodes, 3);
        assert_eq!(picked.len(), 3);
        assert!(picked.iter().all(|p| p.peer_id.is_some()));
    }
}
