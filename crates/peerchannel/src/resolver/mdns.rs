//! Serverless discovery on the local network: [`MdnsResolver`], mDNS / DNS-SD.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mdns_sd::{
    DaemonEvent, IfKind, RecvTimeoutError, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent,
    ServiceInfo,
};
use tokio::sync::watch;

use super::{
    BoxFuture, NEVER_EXPIRES, PeerAddr, Registration, RegistrationId, Resolver, ResolverError,
};
use crate::addresses::MAX_ADDRESSES;
use crate::{MeshId, PeerId};

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

/// The TXT keys and the record version this module writes and understands.
const TXT_VERSION_KEY: &str = "v";
const TXT_VERSION: &str = "1";
// One letter: a TXT string is at most 255 bytes, and `m=` plus the longest mesh id (253) is
// exactly that.
const TXT_MESH_KEY: &str = "m";
const TXT_PEER_KEY: &str = "id";

/// Characters of the mesh id and of the peer id that go into an instance name (at most 63
/// bytes in all, one DNS label).
const INSTANCE_MESH_CHARS: usize = 24;
const INSTANCE_PEER_CHARS: usize = 16;

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
        let browser = Browser {
            daemon: daemon.clone(),
            known: BTreeMap::new(),
            nearby: nearby_tx,
            ignored: ignored.clone(),
            verify_interval: config.verify_interval,
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

/// Why an instance heard on the network is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ignored {
    TxtTooLarge(usize),
    Version,
    NoMesh,
    BadMesh,
    NoPeerId,
    BadPeerId,
    NoUsableAddress,
}

/// The thread that follows the browse and keeps the list of nearby nodes.
struct Browser {
    daemon: ServiceDaemon,
    known: BTreeMap<String, NearbyNode>,
    nearby: watch::Sender<Arc<Vec<NearbyNode>>>,
    ignored: Arc<AtomicU64>,
    verify_interval: Option<Duration>,
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
                Err(RecvTimeoutError::Disconnected) => return,
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

/// The records for `peer_id` in `mesh`.
fn service_info(
    service_type: &str,
    mesh: &MeshId,
    peer_id: PeerId,
    addresses: &[SocketAddr],
) -> Result<ServiceInfo, MdnsError> {
    let usable: Vec<SocketAddr> = addresses
        .iter()
        .copied()
        .filter(|a| is_usable(a.ip()) && a.port() != 0)
        .collect();
    // SRV has one port: the first usable address's. Addresses on another port (a custom
    // advertise list) cannot be said in these records and are left out.
    let Some(port) = usable.first().map(SocketAddr::port) else {
        return Err(MdnsError::NoUsableAddress {
            addresses: addresses.to_vec(),
        });
    };
    let ips: Vec<IpAddr> = usable
        .iter()
        .filter(|a| a.port() == port)
        .map(SocketAddr::ip)
        .collect();
    let peer = peer_id.to_string();
    let host = format!("pc-{}.local.", &peer[..INSTANCE_PEER_CHARS]);
    let properties = [
        (TXT_VERSION_KEY, TXT_VERSION),
        (TXT_MESH_KEY, mesh.as_str()),
        (TXT_PEER_KEY, peer.as_str()),
    ];
    ServiceInfo::new(
        service_type,
        &instance_name(mesh, peer_id),
        &host,
        &ips[..],
        port,
        &properties[..],
    )
    .map_err(|e| MdnsError::Record(e.to_string()))
}

/// The instance name of `peer_id` in `mesh`: readable, unique per (node, mesh), one label.
fn instance_name(mesh: &MeshId, peer_id: PeerId) -> String {
    let readable: String = mesh
        .as_str()
        .chars()
        .take(INSTANCE_MESH_CHARS)
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    let peer = peer_id.to_string();
    // The readable part may be cut, and `.` becomes `-`: a digest of the whole mesh id keeps
    // two meshes of one node apart. Deterministic, so a restarted node replaces its records.
    let digest = ring::digest::digest(&ring::digest::SHA256, mesh.as_str().as_bytes());
    let tag = data_encoding::BASE32_NOPAD
        .encode(&digest.as_ref()[..5])
        .to_ascii_lowercase();
    format!(
        "{}-{}-{}",
        readable.trim_end_matches('-'),
        &peer[..INSTANCE_PEER_CHARS],
        tag
    )
}

/// Checks an instance heard on the network; see the module documentation for the rules.
fn parse_instance(service: &ResolvedService) -> Result<NearbyNode, Ignored> {
    let txt = &service.txt_properties;
    let txt_len: usize = txt
        .iter()
        .map(|p| 1 + p.key().len() + p.val().map_or(0, |v| 1 + v.len()))
        .sum();
    if txt_len > MAX_TXT_LEN {
        return Err(Ignored::TxtTooLarge(txt_len));
    }
    let text = |key: &str| -> Option<Result<&str, ()>> {
        let value = txt.get_property_val(key)?;
        Some(
            value
                .ok_or(())
                .and_then(|v| std::str::from_utf8(v).map_err(|_| ())),
        )
    };
    if let Some(version) = text(TXT_VERSION_KEY)
        && version != Ok(TXT_VERSION)
    {
        return Err(Ignored::Version);
    }
    let mesh = match text(TXT_MESH_KEY) {
        None => return Err(Ignored::NoMesh),
        Some(Err(())) => return Err(Ignored::BadMesh),
        Some(Ok(m)) => MeshId::new(m).map_err(|_| Ignored::BadMesh)?,
    };
    let peer_id = match text(TXT_PEER_KEY) {
        None => return Err(Ignored::NoPeerId),
        Some(Err(())) => return Err(Ignored::BadPeerId),
        Some(Ok(id)) => id.parse::<PeerId>().map_err(|_| Ignored::BadPeerId)?,
    };
    let port = service.port;
    if port == 0 {
        return Err(Ignored::NoUsableAddress);
    }
    let mut addresses: Vec<SocketAddr> = service
        .addresses
        .iter()
        .filter_map(|ip| socket_addr(ip, port))
        .collect();
    addresses.sort_by_key(|a| (a.ip().is_loopback(), *a));
    addresses.dedup();
    addresses.truncate(MAX_ADDRESSES);
    if addresses.is_empty() {
        return Err(Ignored::NoUsableAddress);
    }
    Ok(NearbyNode {
        mesh,
        peer_id,
        addresses,
        instance: service.fullname.clone(),
    })
}

fn socket_addr(ip: &ScopedIp, port: u16) -> Option<SocketAddr> {
    let addr = ip.to_ip_addr();
    if !is_usable(addr) {
        return None;
    }
    match ip {
        // A link-local IPv6 address is only usable with the interface it was heard on.
        ScopedIp::V6(v6) if is_link_local_v6(v6.addr()) => Some(SocketAddr::V6(SocketAddrV6::new(
            *v6.addr(),
            port,
            0,
            v6.scope_id().index,
        ))),
        _ => Some(SocketAddr::new(addr, port)),
    }
}

fn is_usable(ip: IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

fn is_link_local_v6(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
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

/// `_name._udp[.local[.]]` -> `_name._udp.local.`
fn normalize_service_type(given: &str) -> Result<String, MdnsError> {
    let bad = |reason| MdnsError::ServiceType {
        given: given.to_owned(),
        reason,
    };
    let trimmed = given.trim().trim_end_matches('.');
    let trimmed = trimmed.strip_suffix(".local").unwrap_or(trimmed);
    let (name, proto) = trimmed
        .rsplit_once('.')
        .ok_or_else(|| bad("it has no protocol (._udp or ._tcp)"))?;
    if proto != "_udp" && proto != "_tcp" {
        return Err(bad("the protocol is neither _udp nor _tcp"));
    }
    let name = name
        .strip_prefix('_')
        .ok_or_else(|| bad("the name does not start with _"))?;
    if name.is_empty() || name.len() > 15 {
        return Err(bad("the name is not 1 to 15 characters"));
    }
    let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Err(bad(
            "the name has characters other than letters, digits and -",
        ));
    }
    Ok(format!("_{}.{proto}.local.", name.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn resolved(props: &[(&str, &str)], ips: &str, port: u16) -> ResolvedService {
        ServiceInfo::new(SERVICE_TYPE, "x", "h.local.", ips, port, props)
            .unwrap()
            .as_resolved_service()
    }

    #[test]
    fn our_records_parse_back() {
        let mesh = MeshId::new("soccerpals").unwrap();
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:4433".parse().unwrap()];
        let info = service_info(SERVICE_TYPE, &mesh, peer(7), &addrs).unwrap();
        let node = parse_instance(&info.as_resolved_service()).unwrap();
        assert_eq!(node.mesh, mesh);
        assert_eq!(node.peer_id, peer(7));
        assert_eq!(node.addresses, addrs);
    }

    #[test]
    fn the_txt_stays_small_for_the_longest_mesh_id() {
        let label = "a".repeat(63);
        let longest = MeshId::new(&[&label[..], &label, &label, &label[..61]].join(".")).unwrap();
        assert_eq!(longest.as_str().len(), 253);
        let info = service_info(
            SERVICE_TYPE,
            &longest,
            peer(1),
            &["10.0.0.1:1".parse().unwrap()],
        )
        .unwrap();
        let txt_len: usize = info
            .get_properties()
            .iter()
            .map(|p| 1 + p.key().len() + p.val().map_or(0, |v| 1 + v.len()))
            .sum();
        assert!(txt_len < 400, "{txt_len} bytes");
        assert!(parse_instance(&info.as_resolved_service()).is_ok());
    }

    #[test]
    fn instance_names_are_one_label_and_unique_per_node_and_mesh() {
        let long = MeshId::new(&format!("{}.b", "a".repeat(63))).unwrap();
        let other = MeshId::new(&format!("{}.c", "a".repeat(63))).unwrap();
        let names = [
            instance_name(&long, peer(1)),
            instance_name(&other, peer(1)),
            instance_name(&long, peer(2)),
            instance_name(&MeshId::new("a.b").unwrap(), peer(1)),
            instance_name(&MeshId::new("a-b").unwrap(), peer(1)),
        ];
        for name in &names {
            assert!(name.len() <= 63 && !name.contains('.'), "{name}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(
            instance_name(&MeshId::new("soccerpals").unwrap(), peer(1)).starts_with("soccerpals-")
        );
    }

    #[test]
    fn malformed_instances_are_ignored() {
        let id = peer(3).to_string();
        let good = [("m", "m"), ("id", id.as_str())];
        assert!(parse_instance(&resolved(&good, "10.0.0.1", 9)).is_ok());
        // (TXT, addresses, port, why it is ignored)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16, Ignored);
        let cases: Vec<Case> = vec![
            (vec![("id", &id)], "10.0.0.1", 9, Ignored::NoMesh),
            (vec![("m", "m")], "10.0.0.1", 9, Ignored::NoPeerId),
            (
                vec![("m", "-bad-"), ("id", &id)],
                "10.0.0.1",
                9,
                Ignored::BadMesh,
            ),
            (
                vec![("m", "m"), ("id", "xyz")],
                "10.0.0.1",
                9,
                Ignored::BadPeerId,
            ),
            (
                vec![("v", "2"), ("m", "m"), ("id", &id)],
                "10.0.0.1",
                9,
                Ignored::Version,
            ),
            (good.to_vec(), "10.0.0.1", 0, Ignored::NoUsableAddress),
            (good.to_vec(), "0.0.0.0", 9, Ignored::NoUsableAddress),
            (good.to_vec(), "224.0.0.251", 9, Ignored::NoUsableAddress),
            (
                good.to_vec(),
                "255.255.255.255",
                9,
                Ignored::NoUsableAddress,
            ),
        ];
        for (props, ips, port, want) in cases {
            assert_eq!(
                parse_instance(&resolved(&props, ips, port)),
                Err(want),
                "{props:?} {ips} {port}"
            );
        }
        // A key without a value.
        let mut service = resolved(&good, "10.0.0.1", 9);
        service.txt_properties = resolved(&[("id", &id)], "10.0.0.1", 9).txt_properties;
        assert_eq!(parse_instance(&service), Err(Ignored::NoMesh));
    }

    #[test]
    fn huge_txt_is_ignored_and_addresses_are_filtered_and_capped() {
        let id = peer(3).to_string();
        let filler = "x".repeat(200);
        let mut props = vec![("m", "m"), ("id", id.as_str())];
        let keys: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
        for key in &keys {
            props.push((key.as_str(), filler.as_str()));
        }
        assert!(matches!(
            parse_instance(&resolved(&props, "10.0.0.1", 9)),
            Err(Ignored::TxtTooLarge(_))
        ));

        let many: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}")).collect();
        let ips = format!("0.0.0.0,224.0.0.1,127.0.0.1,{}", many.join(","));
        let node = parse_instance(&resolved(&[("m", "m"), ("id", &id)], &ips, 9)).unwrap();
        assert_eq!(node.addresses.len(), MAX_ADDRESSES);
        assert!(node.addresses.iter().all(|a| is_usable(a.ip())));
        assert!(!node.addresses[0].ip().is_loopback(), "loopback goes last");
    }

    #[test]
    fn unusable_own_addresses_are_not_published() {
        let mesh = MeshId::new("m").unwrap();
        let err = service_info(
            SERVICE_TYPE,
            &mesh,
            peer(1),
            &["0.0.0.0:5".parse().unwrap(), "10.0.0.1:0".parse().unwrap()],
        )
        .unwrap_err();
        assert!(matches!(err, MdnsError::NoUsableAddress { .. }));
    }

    #[test]
    fn service_types_are_checked_and_normalised() {
        for (given, want) in [
            ("_peerchannel._udp", SERVICE_TYPE),
            ("_peerchannel._udp.local", SERVICE_TYPE),
            ("_peerchannel._udp.local.", SERVICE_TYPE),
            ("_PC-Test._tcp", "_pc-test._tcp.local."),
        ] {
            assert_eq!(normalize_service_type(given).unwrap(), want, "{given}");
        }
        for bad in [
            "",
            "peerchannel._udp",
            "_peerchannel",
            "_peerchannel._sctp",
            "_a-very-long-service-name._udp",
            "_bad_name._udp",
            "_._udp",
        ] {
            assert!(normalize_service_type(bad).is_err(), "{bad} was accepted");
        }
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
