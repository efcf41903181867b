//! Several resolvers as one: [`MultiResolver`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;

use super::{BoxFuture, PeerAddr, Registration, RegistrationId, Resolver, ResolverError};
use crate::{MeshId, PeerId};

/// How long a [`MultiResolver`] waits for each of its resolvers, per call. Those that have not
/// answered by then count as failed; the others' answers are used.
pub const MULTI_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// While one of the resolvers lacks the registration, the lifetime reported to the caller is
/// at most this, so that the keeper comes back (at half of it) to try that resolver again.
const RETRY_MISSING_LIFETIME: Duration = Duration::from_secs(60);

/// The name used in errors about the multi resolver's own registration ids.
const NAME: &str = "the configured resolvers";

/// Several resolvers used together: registers with all of them, resolves from all of them.
///
/// - **Register, update, refresh**: done with every resolver concurrently. The call succeeds
///   when at least one resolver accepted it. A resolver that failed, or that answers a refresh
///   with "registration not found", is registered with again at the next refresh, so after a
///   resolver comes back or restarts the node reappears in it without the caller's help. The
///   lifetime returned is the shortest of the resolvers' (capped while one of them is missing
///   the registration, so that the retry comes soon).
/// - **Resolve**: asks every resolver concurrently, waits at most [`MULTI_RESOLVE_TIMEOUT`], and
///   returns the union of the answers, de-duplicated by peer id, taking from each resolver in
///   turn so that each contributes when `max` cuts the list. An address without a peer id that
///   another resolver names with an id is dropped as a duplicate.
/// - **Errors**: only when no resolver answered, as [`ResolverError::AllFailed`] listing each
///   resolver's error.
#[derive(Debug)]
pub struct MultiResolver {
    resolvers: Vec<Arc<dyn Resolver>>,
    registrations: Mutex<HashMap<String, MultiRegistration>>,
    next_id: AtomicU64,
}

/// What the multi resolver remembers of one registration, to register again where needed.
#[derive(Clone, Debug)]
struct MultiRegistration {
    mesh: MeshId,
    peer_id: PeerId,
    addresses: Vec<SocketAddr>,
    /// One slot per resolver: its registration, or `None` while it has none.
    children: Vec<Option<RegistrationId>>,
}

impl MultiResolver {
    /// A resolver over `resolvers`, in order of preference.
    pub fn new(resolvers: Vec<Arc<dyn Resolver>>) -> Self {
        Self {
            resolvers,
            registrations: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The resolvers, in the order given.
    pub fn resolvers(&self) -> &[Arc<dyn Resolver>] {
        &self.resolvers
    }

    async fn register_inner(
        &self,
        mesh: &MeshId,
        peer_id: PeerId,
        addresses: &[SocketAddr],
    ) -> Result<Registration, ResolverError> {
        let mut entry = MultiRegistration {
            mesh: mesh.clone(),
            peer_id,
            addresses: addresses.to_vec(),
            children: vec![None; self.resolvers.len()],
        };
        let lifetime = self.bring_up_to_date(&mut entry, Action::Register).await?;
        let id = format!("multi-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock().insert(id.clone(), entry);
        Ok(Registration {
            id: RegistrationId::new(id),
            lifetime,
        })
    }

    async fn refresh_inner(
        &self,
        mesh: &MeshId,
        id: &RegistrationId,
        new_addresses: Option<&[SocketAddr]>,
    ) -> Result<Duration, ResolverError> {
        let mut entry = self.entry(mesh, id)?;
        let action = match new_addresses {
            Some(addresses) => {
                entry.addresses = addresses.to_vec();
                Action::Update
            }
            None => Action::Refresh,
        };
        let result = self.bring_up_to_date(&mut entry, action).await;
        // Keep what changed (new child ids, addresses) even when every resolver failed: the
        // next refresh starts from there. Unless the caller unregistered meanwhile.
        if let Some(slot) = self.lock().get_mut(id.as_str()) {
            *slot = entry;
        }
        result
    }

    async fn unregister_inner(
        &self,
        mesh: &MeshId,
        id: &RegistrationId,
    ) -> Result<(), ResolverError> {
        let entry = self.entry(mesh, id)?;
        self.lock().remove(id.as_str());
        let calls =
            self.resolvers
                .iter()
                .zip(&entry.children)
                .map(|(resolver, child)| async move {
                    match child {
                        Some(child) => {
                            with_timeout(resolver, resolver.unregister(mesh, child)).await
                        }
                        None => Ok(()),
                    }
                });
        let results = join_all(calls).await;
        let mut errors = Vec::new();
        let mut any_ok = false;
        for result in results {
            match result {
                Ok(()) => any_ok = true,
                // Already gone is as good as removed.
                Err(err) if err.is_registration_not_found() => any_ok = true,
                Err(err) => errors.push(err),
            }
        }
        if any_ok || errors.is_empty() {
            Ok(())
        } else {
            Err(ResolverError::AllFailed { errors })
        }
    }

    async fn resolve_inner(
        &self,
        mesh: &MeshId,
        max: usize,
    ) -> Result<Vec<PeerAddr>, ResolverError> {
        let calls = self
            .resolvers
            .iter()
            .map(|resolver| with_timeout(resolver, resolver.resolve(mesh, max)));
        let mut answers = Vec::new();
        let mut errors = Vec::new();
        for (resolver, result) in self.resolvers.iter().zip(join_all(calls).await) {
            match result {
                Ok(peers) => answers.push(peers),
                Err(err) => {
                    tracing::debug!(resolver = %resolver.name(), "resolve failed: {err}");
                    errors.push(err);
                }
            }
        }
        if answers.is_empty() {
            return Err(ResolverError::AllFailed { errors });
        }
        Ok(merge(answers, max))
    }

    /// Makes every resolver hold the registration described by `entry`, returning the
    /// lifetime to report. Fails only when no resolver holds it afterwards.
    async fn bring_up_to_date(
        &self,
        entry: &mut MultiRegistration,
        action: Action,
    ) -> Result<Duration, ResolverError> {
        let shared: &MultiRegistration = entry;
        let calls =
            self.resolvers
                .iter()
                .zip(&shared.children)
                .map(|(resolver, child)| async move {
                    let (mesh, addresses) = (&shared.mesh, &shared.addresses[..]);
                    let existing = match (child, action) {
                        (Some(id), Action::Refresh) => {
                            Some(with_timeout(resolver, resolver.refresh(mesh, id)).await)
                        }
                        (Some(id), Action::Update) => {
                            Some(with_timeout(resolver, resolver.update(mesh, id, addresses)).await)
                        }
                        (Some(_), Action::Register) | (None, _) => None,
                    };
                    match existing {
                        Some(Ok(lifetime)) => Ok((child.clone(), lifetime)),
                        Some(Err(err)) if !err.is_registration_not_found() => Err(err),
                        // Not registered there yet, or that resolver forgot us: register again.
                        _ => with_timeout(
                            resolver,
                            resolver.register(mesh, shared.peer_id, addresses),
                        )
                        .await
                        .map(|r| (Some(r.id), r.lifetime)),
                    }
                });
        let results = join_all(calls).await;
        let mut shortest: Option<Duration> = None;
        let mut errors = Vec::new();
        for ((resolver, slot), result) in
            self.resolvers.iter().zip(&mut entry.children).zip(results)
        {
            match result {
                Ok((id, lifetime)) => {
                    *slot = id;
                    shortest = Some(shortest.map_or(lifetime, |s| s.min(lifetime)));
                }
                Err(err) => {
                    if err.is_registration_not_found() {
                        *slot = None;
                    }
                    tracing::warn!(resolver = %resolver.name(), "registration not renewed: {err}");
                    errors.push(err);
                }
            }
        }
        match shortest {
            None => Err(ResolverError::AllFailed { errors }),
            Some(lifetime) if errors.is_empty() => Ok(lifetime),
            Some(lifetime) => Ok(lifetime.min(RETRY_MISSING_LIFETIME)),
        }
    }

    fn entry(
        &self,
        mesh: &MeshId,
        id: &RegistrationId,
    ) -> Result<MultiRegistration, ResolverError> {
        match self.lock().get(id.as_str()) {
            Some(entry) if entry.mesh == *mesh => Ok(entry.clone()),
            _ => Err(ResolverError::RegistrationNotFound {
                url: NAME.to_owned(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MultiRegistration>> {
        // A panic while holding this lock leaves the map consistent (every update is a single
        // insert or remove), so a poisoned lock is safe to keep using.
        self.registrations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Resolver for MultiResolver {
    fn register<'a>(
        &'a self,
        mesh: &'a MeshId,
        peer_id: PeerId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
        Box::pin(self.register_inner(mesh, peer_id, addresses))
    }

    fn update<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        Box::pin(self.refresh_inner(mesh, id, Some(addresses)))
    }

    fn refresh<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        Box::pin(self.refresh_inner(mesh, id, None))
    }

    fn unregister<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<(), ResolverError>> {
        Box::pin(self.unregister_inner(mesh, id))
    }

    fn resolve<'a>(
        &'a self,
        mesh: &'a MeshId,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>> {
        Box::pin(self.resolve_inner(mesh, max))
    }

    fn name(&self) -> String {
        let names: Vec<String> = self.resolvers.iter().map(|r| r.name()).collect();
        names.join(", ")
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Register,
    Update,
    Refresh,
}

async fn with_timeout<T>(
    resolver: &Arc<dyn Resolver>,
    call: BoxFuture<'_, Result<T, ResolverError>>,
) -> Result<T, ResolverError> {
    match tokio::time::timeout(MULTI_RESOLVE_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(ResolverError::Unreachable {
            url: resolver.name(),
            reason: format!("no answer within {} s", MULTI_RESOLVE_TIMEOUT.as_secs()),
        }),
    }
}

/// The union of several answers: one entry per peer id (addresses merged), addresses without
/// an id dropped when an entry with an id covers them, taken from each answer in turn, at most
/// `max`.
fn merge(answers: Vec<Vec<PeerAddr>>, max: usize) -> Vec<PeerAddr> {
    let longest = answers.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = answers.into_iter().map(Vec::into_iter).collect();
    let mut merged: Vec<PeerAddr> = Vec::new();
    let mut index_of_id: HashMap<PeerId, usize> = HashMap::new();
    for _ in 0..longest {
        for peer in iters.iter_mut().filter_map(Iterator::next) {
            match peer.peer_id.and_then(|id| index_of_id.get(&id).copied()) {
                Some(at) => {
                    for addr in peer.addresses {
                        if !merged[at].addresses.contains(&addr) {
                            merged[at].addresses.push(addr);
                        }
                    }
                }
                None => {
                    if let Some(id) = peer.peer_id {
                        index_of_id.insert(id, merged.len());
                    }
                    merged.push(peer);
                }
            }
        }
    }
    let known: HashSet<SocketAddr> = merged
        .iter()
        .filter(|p| p.peer_id.is_some())
        .flat_map(|p| p.addresses.iter().copied())
        .collect();
    let mut unknown_seen: HashSet<SocketAddr> = HashSet::new();
    merged.retain(|peer| {
        peer.peer_id.is_some()
            || peer
                .addresses
                .iter()
                .any(|a| !known.contains(a) && unknown_seen.insert(*a))
    });
    merged.truncate(max);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::StaticResolver;

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn merge_takes_turns_and_removes_duplicates() {
        let a = vec![
            PeerAddr::new(id(1), vec![addr(1)]),
            PeerAddr::new(id(2), vec![addr(2)]),
        ];
        let b = vec![
            PeerAddr::new(id(1), vec![addr(11)]),
            PeerAddr::without_id(vec![addr(2)]),
            PeerAddr::without_id(vec![addr(3)]),
            PeerAddr::without_id(vec![addr(3)]),
        ];
        let merged = merge(vec![a, b], 10);
        assert_eq!(
            merged,
            vec![
                PeerAddr::new(id(1), vec![addr(1), addr(11)]),
                PeerAddr::new(id(2), vec![addr(2)]),
                PeerAddr::without_id(vec![addr(3)]),
            ]
        );
        let a = vec![
            PeerAddr::new(id(1), vec![addr(1)]),
            PeerAddr::new(id(2), vec![addr(2)]),
        ];
        let b = vec![PeerAddr::new(id(3), vec![addr(3)])];
        let merged = merge(vec![a, b], 2);
        let ids: Vec<_> = merged.iter().map(|p| p.peer_id).collect();
        assert_eq!(
            ids,
            vec![Some(id(1)), Some(id(3))],
            "each resolver contributes"
        );
    }

    /// A resolver that forgets registrations on demand and fails on demand.
    #[derive(Debug, Default)]
    struct Flaky {
        down: std::sync::atomic::AtomicBool,
        registered: Mutex<Vec<String>>,
        registrations: AtomicU64,
    }

    impl Flaky {
        fn check(&self) -> Result<(), ResolverError> {
            if self.down.load(Ordering::SeqCst) {
                Err(ResolverError::Unreachable {
                    url: "flaky".into(),
                    reason: "down".into(),
                })
            } else {
                Ok(())
            }
        }
    }

    impl Resolver for Flaky {
        fn register<'a>(
            &'a self,
            _: &'a MeshId,
            _: PeerId,
            _: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
            Box::pin(async move {
                self.check()?;
                let n = self.registrations.fetch_add(1, Ordering::SeqCst);
                let id = format!("r{n}");
                self.registered.lock().unwrap().push(id.clone());
                Ok(Registration {
                    id: RegistrationId::new(id),
                    lifetime: Duration::from_secs(30),
                })
            })
        }

        fn update<'a>(
            &'a self,
            mesh: &'a MeshId,
            id: &'a RegistrationId,
            _: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            self.refresh(mesh, id)
        }

        fn refresh<'a>(
            &'a self,
            _: &'a MeshId,
            id: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            Box::pin(async move {
                self.check()?;
                if self
                    .registered
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|r| r == id.as_str())
                {
                    Ok(Duration::from_secs(30))
                } else {
                    Err(ResolverError::RegistrationNotFound {
                        url: "flaky".into(),
                    })
                }
            })
        }

        fn unregister<'a>(
            &'a self,
            _: &'a MeshId,
            id: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<(), ResolverError>> {
            Box::pin(async move {
                self.check()?;
                self.registered.lock().unwrap().retain(|r| r != id.as_str());
                Ok(())
            })
        }

        fn resolve<'a>(
            &'a self,
            _: &'a MeshId,
            _: usize,
        ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>> {
            Box::pin(async move {
                self.check()?;
                Ok(vec![PeerAddr::new(id(7), vec![addr(7)])])
            })
        }
    }

    #[tokio::test]
    async fn registers_again_where_missing_and_fails_only_when_all_fail() {
        let mesh = MeshId::new("m").unwrap();
        let flaky = Arc::new(Flaky::default());
        let fixed = Arc::new(StaticResolver::from_addrs(vec![addr(9)]));
        let multi = MultiResolver::new(vec![flaky.clone(), fixed.clone()]);

        flaky.down.store(true, Ordering::SeqCst);
        let registration = multi.register(&mesh, id(1), &[addr(1)]).await.unwrap();
        assert_eq!(
            registration.lifetime, RETRY_MISSING_LIFETIME,
            "comes back soon for the one that failed"
        );
        assert!(flaky.registered.lock().unwrap().is_empty());

        flaky.down.store(false, Ordering::SeqCst);
        assert_eq!(
            multi.refresh(&mesh, &registration.id).await.unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            flaky.registered.lock().unwrap().len(),
            1,
            "registered on refresh"
        );

        // The flaky resolver restarts and forgets: the next refresh registers again.
        flaky.registered.lock().unwrap().clear();
        multi.refresh(&mesh, &registration.id).await.unwrap();
        assert_eq!(flaky.registered.lock().unwrap().len(), 1);

        let found = multi.resolve(&mesh, 10).await.unwrap();
        assert_eq!(found.len(), 2);

        multi.unregister(&mesh, &registration.id).await.unwrap();
        assert!(flaky.registered.lock().unwrap().is_empty());
        let err = multi.refresh(&mesh, &registration.id).await.unwrap_err();
        assert!(err.is_registration_not_found());

        let only_flaky = MultiResolver::new(vec![flaky.clone()]);
        flaky.down.store(true, Ordering::SeqCst);
        let err = only_flaky.resolve(&mesh, 10).await.unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(matches!(err, ResolverError::AllFailed { ref errors } if errors.len() == 1));
    }
}
