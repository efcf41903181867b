//! The registrations: soft state with limits, no I/O.
//!
//! Time and randomness come in as arguments, so the tests drive it with a made-up clock and a
//! seeded generator.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use data_encoding::BASE32_NOPAD;
use peerchannel::resolver::api::{PeerEntry, error_code};
use peerchannel::{MeshId, PeerId};
use rand::{CryptoRng, Rng};

use crate::config::ResolverConfig;

/// Random bytes in a registration id: 160 bits, far beyond guessing.
const TOKEN_BYTES: usize = 20;

/// Registrations by mesh, with the counts the limits need.
#[derive(Debug)]
pub(crate) struct Registry {
    lifetime: Duration,
    limits: Limits,
    meshes: HashMap<MeshId, Mesh>,
    per_source: HashMap<IpAddr, usize>,
    total: usize,
}

#[derive(Clone, Copy, Debug)]
struct Limits {
    max_addresses: usize,
    per_mesh: usize,
    per_source: usize,
    total: usize,
    meshes: usize,
}

/// One mesh's registrations. `entries` is dense so that a uniform sample is a sample of
/// indices; the maps point into it.
#[derive(Debug, Default)]
struct Mesh {
    entries: Vec<Entry>,
    by_peer: HashMap<PeerId, usize>,
    by_token: HashMap<String, PeerId>,
}

#[derive(Debug)]
struct Entry {
    peer_id: PeerId,
    token: String,
    addresses: Vec<SocketAddr>,
    expires: Instant,
    source: IpAddr,
}

/// Why the registry refused a change. Each maps to one HTTP status and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegistryError {
    #[error("a registration needs at least one address")]
    NoAddresses,
    #[error("{addr} is not an address others can connect to ({why})")]
    BadAddress { addr: SocketAddr, why: &'static str },
    #[error("{count} addresses given; a registration carries at most {limit}")]
    TooManyAddresses { count: usize, limit: usize },
    #[error(
        "no such registration in this mesh: it expired, was deleted, or the resolver restarted; \
         register again"
    )]
    NotFound,
    #[error("the mesh has {limit} registrations, the most allowed; try again later")]
    MeshFull { limit: usize },
    #[error("your address holds {limit} registrations, the most allowed; try again later")]
    TooManyFromSource { limit: usize },
    #[error("the resolver holds {limit} registrations, the most it allows; try again later")]
    TooManyRegistrations { limit: usize },
    #[error("the resolver holds {limit} meshes, the most it allows; try again later")]
    TooManyMeshes { limit: usize },
}

impl RegistryError {
    /// The machine-readable code of the error body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::NoAddresses | Self::BadAddress { .. } => error_code::INVALID_ADDRESS,
            Self::TooManyAddresses { .. } => error_code::TOO_MANY_ADDRESSES,
            Self::NotFound => error_code::REGISTRATION_NOT_FOUND,
            Self::MeshFull { .. } => error_code::MESH_FULL,
            Self::TooManyFromSource { .. } => error_code::TOO_MANY_REGISTRATIONS_FROM_ADDRESS,
            Self::TooManyRegistrations { .. } => error_code::TOO_MANY_REGISTRATIONS,
            Self::TooManyMeshes { .. } => error_code::TOO_MANY_MESHES,
        }
    }

    /// The limit that was hit, if a limit was hit.
    pub(crate) fn limit(&self) -> Option<usize> {
        match self {
            Self::TooManyAddresses { limit, .. }
            | Self::MeshFull { limit }
            | Self::TooManyFromSource { limit }
            | Self::TooManyRegistrations { limit }
            | Self::TooManyMeshes { limit } => Some(*limit),
            _ => None,
        }
    }
}

/// A new registration's id and lifetime, and whether it replaced one of the same peer.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) token: String,
    pub(crate) lifetime: Duration,
    pub(crate) replaced: bool,
}

impl Registry {
    pub(crate) fn new(config: &ResolverConfig) -> Self {
        Self {
            lifetime: config.lifetime,
            limits: Limits {
                max_addresses: config.max_addresses,
                per_mesh: config.max_registrations_per_mesh,
                per_source: config.max_registrations_per_ip,
                total: config.max_registrations,
                meshes: config.max_meshes,
            },
            meshes: HashMap::new(),
            per_source: HashMap::new(),
            total: 0,
        }
    }

    /// Registers `peer_id` in `mesh`, replacing its earlier registration there.
    pub(crate) fn register(
        &mut self,
        mesh: &MeshId,
        peer_id: PeerId,
        addresses: Vec<SocketAddr>,
        source: IpAddr,
        now: Instant,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Registered, RegistryError> {
        self.check_addresses(&addresses)?;
        if let Err(err) = self.check_room(mesh, peer_id, source, now) {
            // Expired registrations still count until swept; sweep and look again before
            // turning anyone away.
            self.expire(now);
            self.check_room(mesh, peer_id, source, now)
                .map_err(|_| err)?;
        }
        let replaced = self.remove_peer(mesh, peer_id);
        let token = new_token(rng);
        let entries = self.meshes.entry(mesh.clone()).or_default();
        entries.by_peer.insert(peer_id, entries.entries.len());
        entries.by_token.insert(token.clone(), peer_id);
        entries.entries.push(Entry {
            peer_id,
            token: token.clone(),
            addresses,
            expires: now + self.lifetime,
            source,
        });
        *self.per_source.entry(source).or_default() += 1;
        self.total += 1;
        Ok(Registered {
            token,
            lifetime: self.lifetime,
            replaced,
        })
    }

    /// Replaces a registration's addresses and refreshes it.
    pub(crate) fn update(
        &mut self,
        mesh: &MeshId,
        token: &str,
        addresses: Vec<SocketAddr>,
        now: Instant,
    ) -> Result<Duration, RegistryError> {
        self.check_addresses(&addresses)?;
        let lifetime = self.lifetime;
        let entry = self.live_entry(mesh, token, now)?;
        entry.addresses = addresses;
        entry.expires = now + lifetime;
        Ok(lifetime)
    }

    /// Extends a registration's life.
    pub(crate) fn refresh(
        &mut self,
        mesh: &MeshId,
        token: &str,
        now: Instant,
    ) -> Result<Duration, RegistryError> {
        let lifetime = self.lifetime;
        let entry = self.live_entry(mesh, token, now)?;
        entry.expires = now + lifetime;
        Ok(lifetime)
    }

    /// Removes a registration.
    pub(crate) fn remove(
        &mut self,
        mesh: &MeshId,
        token: &str,
        now: Instant,
    ) -> Result<(), RegistryError> {
        let peer_id = self.live_entry(mesh, token, now)?.peer_id;
        self.remove_peer(mesh, peer_id);
        Ok(())
    }

    /// Up to `max` live registrations of `mesh`, chosen uniformly at random, in random order.
    pub(crate) fn sample(
        &self,
        mesh: &MeshId,
        max: usize,
        now: Instant,
        rng: &mut (impl Rng + ?Sized),
    ) -> Vec<PeerEntry> {
        let Some(entries) = self.meshes.get(mesh) else {
            return Vec::new();
        };
        let live: Vec<&Entry> = entries.entries.iter().filter(|e| e.expires > now).collect();
        let amount = max.min(live.len());
        rand::seq::index::sample(rng, live.len(), amount)
            .into_iter()
            .map(|i| PeerEntry {
                peer_id: live[i].peer_id,
                addresses: live[i].addresses.clone(),
            })
            .collect()
    }

    /// Drops every registration that has expired; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let mut expired = Vec::new();
        for (mesh_id, mesh) in &self.meshes {
            for entry in mesh.entries.iter().filter(|e| e.expires <= now) {
                expired.push((mesh_id.clone(), entry.peer_id));
            }
        }
        for (mesh, peer_id) in &expired {
            self.remove_peer(mesh, *peer_id);
        }
        expired.len()
    }

    /// Live and not yet swept registrations.
    pub(crate) fn registrations(&self) -> usize {
        self.total
    }

    /// Meshes with at least one registration.
    pub(crate) fn meshes(&self) -> usize {
        self.meshes.len()
    }

    /// Panics unless the counts and indexes agree with the registrations (for fuzzing and
    /// the unit tests).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_consistent(&self) {
        let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
        let mut total = 0;
        for mesh in self.meshes.values() {
            assert!(!mesh.entries.is_empty(), "an empty mesh is kept");
            assert_eq!(mesh.by_peer.len(), mesh.entries.len());
            assert_eq!(mesh.by_token.len(), mesh.entries.len());
            for (i, entry) in mesh.entries.iter().enumerate() {
                assert_eq!(mesh.by_peer.get(&entry.peer_id), Some(&i));
                assert_eq!(mesh.by_token.get(&entry.token), Some(&entry.peer_id));
                assert!(!entry.addresses.is_empty());
                assert!(entry.addresses.len() <= self.limits.max_addresses);
                *per_source.entry(entry.source).or_default() += 1;
                total += 1;
            }
            assert!(mesh.entries.len() <= self.limits.per_mesh);
        }
        assert_eq!(total, self.total);
        assert_eq!(per_source, self.per_source);
        assert!(self.total <= self.limits.total);
        assert!(self.meshes.len() <= self.limits.meshes);
        assert!(per_source.values().all(|&n| n <= self.limits.per_source));
    }

    fn check_addresses(&self, addresses: &[SocketAddr]) -> Result<(), RegistryError> {
        if addresses.is_empty() {
            return Err(RegistryError::NoAddresses);
        }
        if addresses.len() > self.limits.max_addresses {
            return Err(RegistryError::TooManyAddresses {
                count: addresses.len(),
                limit: self.limits.max_addresses,
            });
        }
        for addr in addresses {
            let why = if addr.port() == 0 {
                "port 0"
            } else if addr.ip().is_unspecified() {
                "an unspecified address; register the addresses of the interfaces"
            } else if addr.ip().is_multicast() {
                "a multicast address"
            } else if addr.ip() == IpAddr::from([255, 255, 255, 255]) {
                "the broadcast address"
            } else {
                continue;
            };
            return Err(RegistryError::BadAddress { addr: *addr, why });
        }
        Ok(())
    }

    /// Whether a registration of `peer_id` from `source` fits in the limits.
    fn check_room(
        &self,
        mesh: &MeshId,
        peer_id: PeerId,
        source: IpAddr,
        now: Instant,
    ) -> Result<(), RegistryError> {
        let entries = self.meshes.get(mesh);
        let previous = entries
            .and_then(|m| m.by_peer.get(&peer_id).map(|&i| &m.entries[i]))
            .filter(|e| e.expires > now);
        // Replacing one's own registration takes no extra room anywhere.
        let frees_source = previous.is_some_and(|e| e.source == source);
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source - usize::from(frees_source) >= self.limits.per_source {
            return Err(RegistryError::TooManyFromSource {
                limit: self.limits.per_source,
            });
        }
        if previous.is_some() {
            return Ok(());
        }
        match entries {
            None if self.meshes.len() >= self.limits.meshes => Err(RegistryError::TooManyMeshes {
                limit: self.limits.meshes,
            }),
            Some(m) if m.entries.len() >= self.limits.per_mesh => Err(RegistryError::MeshFull {
                limit: self.limits.per_mesh,
            }),
            _ if self.total >= self.limits.total => Err(RegistryError::TooManyRegistrations {
                limit: self.limits.total,
            }),
            _ => Ok(()),
        }
    }

    fn live_entry(
        &mut self,
        mesh: &MeshId,
        token: &str,
        now: Instant,
    ) -> Result<&mut Entry, RegistryError> {
        let entries = self.meshes.get_mut(mesh).ok_or(RegistryError::NotFound)?;
        let peer_id = entries.by_token.get(token).ok_or(RegistryError::NotFound)?;
        let index = *entries
            .by_peer
            .get(peer_id)
            .ok_or(RegistryError::NotFound)?;
        let entry = &mut entries.entries[index];
        // Expired but not yet swept: gone as far as anyone can tell.
        if entry.expires <= now {
            return Err(RegistryError::NotFound);
        }
        Ok(entry)
    }

    /// Removes `peer_id`'s registration from `mesh`, if any, keeping every count right.
    fn remove_peer(&mut self, mesh: &MeshId, peer_id: PeerId) -> bool {
        let Some(entries) = self.meshes.get_mut(mesh) else {
            return false;
        };
        let Some(index) = entries.by_peer.remove(&peer_id) else {
            return false;
        };
        let entry = entries.entries.swap_remove(index);
        if let Some(moved) = entries.entries.get(index) {
            entries.by_peer.insert(moved.peer_id, index);
        }
        entries.by_token.remove(&entry.token);
        if entries.entries.is_empty() {
            self.meshes.remove(mesh);
        }
        if let Some(count) = self.per_source.get_mut(&entry.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        self.total -= 1;
        true
    }
}

/// A fresh registration id: [`TOKEN_BYTES`] random bytes in lowercase base32.
fn new_token(rng: &mut (impl CryptoRng + ?Sized)) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rng.fill_bytes(&mut bytes);
    BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const LIFETIME: Duration = Duration::from_secs(10);

    fn setup(config: ResolverConfig) -> (Registry, StdRng, Instant) {
        let config = ResolverConfig {
            lifetime: LIFETIME,
            ..config
        };
        (
            Registry::new(&config),
            StdRng::seed_from_u64(7),
            Instant::now(),
        )
    }

    fn mesh(name: &str) -> MeshId {
        MeshId::new(name).unwrap()
    }

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn addrs(port: u16) -> Vec<SocketAddr> {
        vec![SocketAddr::from(([127, 0, 0, 1], port))]
    }

    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn register_refresh_update_remove() {
        let (mut registry, mut rng, now) = setup(ResolverConfig::default());
        let m = mesh("m");
        let r = registry
            .register(&m, peer(1), addrs(1), SOURCE, now, &mut rng)
            .unwrap();
        assert_eq!(r.token.len(), 32);
        assert!(!r.replaced);
        assert_eq!(
            registry.refresh(&m, &r.token, now + LIFETIME / 2),
            Ok(LIFETIME)
        );
        // The refresh moved the expiry: still alive after the first lifetime.
        let later = now + LIFETIME + Duration::from_secs(1);
        assert_eq!(registry.update(&m, &r.token, addrs(2), later), Ok(LIFETIME));
        assert_eq!(
            registry.sample(&m, 10, later, &mut rng)[0].addresses,
            addrs(2)
        );
        assert_eq!(
            registry.refresh(&mesh("other"), &r.token, later),
            Err(RegistryError::NotFound)
        );
        assert_eq!(
            registry.refresh(&m, "guess", later),
            Err(RegistryError::NotFound)
        );
        assert_eq!(registry.remove(&m, &r.token, later), Ok(()));
        assert_eq!(
            registry.remove(&m, &r.token, later),
            Err(RegistryError::NotFound)
        );
        assert_eq!((registry.registrations(), registry.meshes()), (0, 0));
        assert!(registry.per_source.is_empty());
        registry.check_consistent();
    }

    #[test]
    fn the_same_peer_registering_again_replaces_itself() {
        let (mut registry, mut rng, now) = setup(ResolverConfig::default());
        let m = mesh("m");
        let first = registry
            .register(&m, peer(1), addrs(1), SOURCE, now, &mut rng)
            .unwrap();
        let second = registry
            .register(&m, peer(1), addrs(2), SOURCE, now, &mut rng)
            .unwrap();
        assert!(second.replaced);
        assert_ne!(first.token, second.token);
        assert_eq!(
            registry.refresh(&m, &first.token, now),
            Err(RegistryError::NotFound)
        );
        assert_eq!(registry.registrations(), 1);
        assert_eq!(
            registry.sample(&m, 10, now, &mut rng)[0].addresses,
            addrs(2)
        );
        registry.check_consistent();
    }

    #[test]
    fn expired_registrations_are_neither_served_nor_refreshable() {
        let (mut registry, mut rng, now) = setup(ResolverConfig::default());
        let m = mesh("m");
        let r = registry
            .register(&m, peer(1), addrs(1), SOURCE, now, &mut rng)
            .unwrap();
        registry
            .register(&m, peer(2), addrs(2), SOURCE, now + LIFETIME / 2, &mut rng)
            .unwrap();
        let after = now + LIFETIME;
        assert_eq!(registry.sample(&m, 10, after, &mut rng).len(), 1);
        assert_eq!(
            registry.refresh(&m, &r.token, after),
            Err(RegistryError::NotFound)
        );
        assert_eq!(registry.expire(after), 1);
        assert_eq!(registry.registrations(), 1);
        registry.check_consistent();
        assert_eq!(registry.expire(after + LIFETIME), 1);
        assert_eq!((registry.registrations(), registry.meshes()), (0, 0));
        registry.check_consistent();
    }

    #[test]
    fn samples_are_bounded_distinct_and_cover_the_mesh() {
        let (mut registry, mut rng, now) = setup(ResolverConfig::default());
        let m = mesh("m");
        for n in 0..50 {
            registry
                .register(&m, peer(n), addrs(u16::from(n) + 1), SOURCE, now, &mut rng)
                .unwrap();
        }
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let sample = registry.sample(&m, 5, now, &mut rng);
            assert_eq!(sample.len(), 5);
            let ids: HashSet<_> = sample.iter().map(|p| p.peer_id).collect();
            assert_eq!(ids.len(), 5, "no duplicates within a sample");
            seen.extend(ids);
        }
        // 1000 draws of 50: every member shows up (missing one has probability ~50 * 0.9^200).
        assert_eq!(seen.len(), 50);
        assert!(
            registry
                .sample(&mesh("unknown"), 5, now, &mut rng)
                .is_empty()
        );
    }

    #[test]
    fn limits_hold_and_expired_registrations_make_room() {
        let config = ResolverConfig {
            max_registrations_per_mesh: 2,
            max_registrations_per_ip: 3,
            max_meshes: 2,
            max_registrations: 4,
            max_addresses: 2,
            ..Default::default()
        };
        let (mut registry, mut rng, now) = setup(config);
        let other = IpAddr::from([127, 0, 0, 2]);
        let (a, b, c) = (mesh("a"), mesh("b"), mesh("c"));
        registry
            .register(&a, peer(1), addrs(1), SOURCE, now, &mut rng)
            .unwrap();
        registry
            .register(&a, peer(2), addrs(2), SOURCE, now, &mut rng)
            .unwrap();
        let full = registry.register(&a, peer(3), addrs(3), other, now, &mut rng);
        assert_eq!(full.unwrap_err(), RegistryError::MeshFull { limit: 2 });
        // Replacing oneself in a full mesh is fine.
        registry
            .register(&a, peer(2), addrs(4), SOURCE, now, &mut rng)
            .unwrap();
        registry
            .register(&b, peer(1), addrs(1), SOURCE, now, &mut rng)
            .unwrap();
        let per_ip = registry.register(&b, peer(2), addrs(2), SOURCE, now, &mut rng);
        assert_eq!(
            per_ip.unwrap_err(),
            RegistryError::TooManyFromSource { limit: 3 }
        );
        let meshes = registry.register(&c, peer(1), addrs(1), other, now, &mut rng);
        assert_eq!(
            meshes.unwrap_err(),
            RegistryError::TooManyMeshes { limit: 2 }
        );
        registry
            .register(&b, peer(5), addrs(5), other, now, &mut rng)
            .unwrap();
        let total = registry.register(&b, peer(6), addrs(6), other, now, &mut rng);
        assert_eq!(total.unwrap_err().code(), error_code::MESH_FULL);
        registry.check_consistent();
        let too_many = registry.register(
            &c,
            peer(1),
            [addrs(1), addrs(2), addrs(3)].concat(),
            other,
            now,
            &mut rng,
        );
        assert_eq!(
            too_many.unwrap_err(),
            RegistryError::TooManyAddresses { count: 3, limit: 2 }
        );
        // Once everything has expired (not yet swept), there is room again.
        let later = now + LIFETIME;
        registry
            .register(&c, peer(1), addrs(1), SOURCE, later, &mut rng)
            .unwrap();
        assert_eq!(registry.registrations(), 1);
        registry.check_consistent();
    }

    #[test]
    fn total_limit() {
        let config = ResolverConfig {
            max_registrations: 1,
            ..Default::default()
        };
        let (mut registry, mut rng, now) = setup(config);
        registry
            .register(&mesh("a"), peer(1), addrs(1), SOURCE, now, &mut rng)
            .unwrap();
        let err = registry
            .register(&mesh("a"), peer(2), addrs(1), SOURCE, now, &mut rng)
            .unwrap_err();
        assert_eq!(err, RegistryError::TooManyRegistrations { limit: 1 });
    }

    #[test]
    fn unusable_addresses_are_refused() {
        let (mut registry, mut rng, now) = setup(ResolverConfig::default());
        for bad in [
            "0.0.0.0:1",
            "127.0.0.1:0",
            "[::]:5",
            "224.0.0.1:5",
            "255.255.255.255:5",
        ] {
            let addr: SocketAddr = bad.parse().unwrap();
            let err = registry.register(&mesh("a"), peer(1), vec![addr], SOURCE, now, &mut rng);
            assert!(
                matches!(err, Err(RegistryError::BadAddress { .. })),
                "{bad}: {err:?}"
            );
        }
        let err = registry.register(&mesh("a"), peer(1), vec![], SOURCE, now, &mut rng);
        assert_eq!(err.unwrap_err(), RegistryError::NoAddresses);
    }
}
