//! Keeping a registration alive: [`spawn_registration`].

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::{RegistrationId, Resolver, ResolverError};
use crate::{MeshId, PeerId};

/// The first wait after a failed attempt.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between attempts while the resolver fails: short enough that a node
/// notices a resolver that came back within a minute.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The shortest time between refreshes, whatever lifetime a resolver announces, so that a
/// resolver answering "0 seconds" cannot make the keeper spin.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// How long [`RegistrationHandle::unregister`] waits, all told, before giving up. The
/// registration then expires by itself.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts keeping this node registered in `mesh` with `resolver`, on the current tokio
/// runtime.
///
/// The task registers `peer_id` at `addresses`, then refreshes at half of each lifetime the
/// resolver announces. When the resolver is unreachable or refuses, it retries with
/// exponential backoff from 1 s up to 30 s (honouring a rate limit's "retry after"). When the
/// resolver answers a refresh with "registration not found" (it restarted, or the
/// registration expired while the node was cut off) it registers again at once.
///
/// The returned handle changes the addresses ([`RegistrationHandle::update_addresses`]),
/// reports progress ([`RegistrationHandle::status`], [`RegistrationHandle::watch_status`]),
/// and ends the task: [`RegistrationHandle::unregister`] removes the registration from the
/// resolver; dropping the handle only stops refreshing, and the registration expires.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn spawn_registration(
    resolver: Arc<dyn Resolver>,
    mesh: MeshId,
    peer_id: PeerId,
    addresses: Vec<SocketAddr>,
) -> RegistrationHandle {
    let (status_tx, status_rx) = watch::channel(RegistrationStatus::Registering);
    let (addresses_tx, addresses_rx) = watch::channel(addresses);
    let (stop_tx, stop_rx) = oneshot::channel();
    let keeper = Keeper {
        resolver: resolver.clone(),
        mesh: mesh.clone(),
        peer_id,
        addresses: addresses_rx,
        status: status_tx,
        backoff: Backoff::new(),
    };
    let task = tokio::spawn(keeper.run(stop_rx));
    RegistrationHandle {
        resolver,
        mesh,
        addresses: addresses_tx,
        status: status_rx,
        stop: Some(stop_tx),
        task: Some(task),
    }
}

/// Controls a registration kept alive by [`spawn_registration`]. Dropping it stops the task
/// without unregistering: the registration then expires after its lifetime.
pub struct RegistrationHandle {
    resolver: Arc<dyn Resolver>,
    mesh: MeshId,
    addresses: watch::Sender<Vec<SocketAddr>>,
    status: watch::Receiver<RegistrationStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<RegistrationId>>>,
}

impl RegistrationHandle {
    /// Publishes new addresses (the node's listening addresses changed). Sent to the resolver
    /// at once if registered, else with the next registration attempt.
    pub fn update_addresses(&self, addresses: Vec<SocketAddr>) {
        self.addresses.send_if_modified(|current| {
            let changed = *current != addresses;
            *current = addresses;
            changed
        });
    }

    /// The registration's state now.
    pub fn status(&self) -> RegistrationStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of state, e.g. to print "resolver unreachable" when
    /// it happens.
    pub fn watch_status(&self) -> watch::Receiver<RegistrationStatus> {
        self.status.clone()
    }

    /// The mesh this registration is in.
    pub fn mesh(&self) -> &MeshId {
        &self.mesh
    }

    /// Stops the task and removes the registration from the resolver: best effort, waiting at
    /// most a few seconds. A failure is logged and not returned: the registration then
    /// expires by itself after its lifetime, and there is nothing else to do about it.
    pub async fn unregister(mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already; then there is nothing to stop.
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else { return };
        let abort = task.abort_handle();
        let mesh = self.mesh.clone();
        // One deadline for both steps: the keeper may be in the middle of a call to the
        // resolver, which it finishes before it sees the stop.
        let unregister = async {
            let registration = match task.await {
                Ok(registration) => registration,
                Err(err) => {
                    tracing::warn!(%mesh, "registration task failed: {err}");
                    None
                }
            };
            let Some(id) = registration else { return };
            match self.resolver.unregister(&mesh, &id).await {
                Ok(()) => tracing::debug!(%mesh, "unregistered"),
                Err(err) if err.is_registration_not_found() => {}
                Err(err) => tracing::info!(%mesh, "could not unregister, it will expire: {err}"),
            }
        };
        if tokio::time::timeout(UNREGISTER_TIMEOUT, unregister)
            .await
            .is_err()
        {
            abort.abort();
            tracing::info!(
                %mesh,
                "the resolver did not answer the unregistration in time; the registration will \
                 expire"
            );
        }
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for RegistrationHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationHandle")
            .field("resolver", &self.resolver.name())
            .field("mesh", &self.mesh)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

/// Where a kept registration stands.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RegistrationStatus {
    /// The first registration attempt is under way.
    Registering,
    /// The resolver holds the registration; the last call to it succeeded.
    Registered {
        /// The lifetime it announced last.
        lifetime: Duration,
    },
    /// The last call to the resolver failed; the keeper tries again after `retry_in`. The
    /// resolver may still hold an earlier registration until it expires.
    Retrying {
        /// Why the last call failed. [`ResolverError::is_unreachable`] tells "the resolver is
        /// down" from "the resolver said no".
        error: Arc<ResolverError>,
        /// Failed calls in a row.
        failures: u32,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// The keeper has stopped: [`RegistrationHandle::unregister`] was called.
    Stopped,
}

impl RegistrationStatus {
    /// Whether the resolver holds the registration as far as the keeper knows.
    pub fn is_registered(&self) -> bool {
        matches!(self, Self::Registered { .. })
    }
}

impl fmt::Display for RegistrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registering => f.write_str("registering"),
            Self::Registered { .. } => f.write_str("registered"),
            Self::Retrying {
                error,
                failures,
                retry_in,
            } => {
                let what = if error.is_unreachable() {
                    "resolver unreachable"
                } else {
                    "failing"
                };
                write!(
                    f,
                    "{what} ({error}); attempt {} in {:.1} s",
                    failures + 1,
                    retry_in.as_secs_f32()
                )
            }
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// The task behind a [`RegistrationHandle`].
struct Keeper {
    resolver: Arc<dyn Resolver>,
    mesh: MeshId,
    peer_id: PeerId,
    addresses: watch::Receiver<Vec<SocketAddr>>,
    status: watch::Sender<RegistrationStatus>,
    backoff: Backoff,
}

/// What the keeper does next.
enum Next {
    /// Register at `at`.
    Register { at: Instant },
    /// Refresh (or send pending new addresses) at `at`.
    Refresh {
        id: RegistrationId,
        at: Instant,
        addresses_pending: bool,
    },
}

impl Keeper {
    /// Runs until stopped; returns the registration the resolver may still hold.
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Option<RegistrationId> {
        let mut next = Next::Register { at: Instant::now() };
        loop {
            next = match next {
                Next::Register { at } => {
                    tokio::select! {
                        _ = &mut stop => return self.stopped(None),
                        _ = sleep_until(at) => self.register().await,
                    }
                }
                Next::Refresh {
                    id,
                    at,
                    addresses_pending,
                } => {
                    tokio::select! {
                        _ = &mut stop => return self.stopped(Some(id)),
                        _ = sleep_until(at) => self.refresh(id, addresses_pending).await,
                        changed = self.addresses.changed() => match changed {
                            Ok(()) => self.refresh(id, true).await,
                            // The handle is gone (its drop also aborts this task).
                            Err(_) => return self.stopped(Some(id)),
                        },
                    }
                }
            };
        }
    }

    async fn register(&mut self) -> Next {
        let addresses = self.addresses.borrow_and_update().clone();
        match self
            .resolver
            .register(&self.mesh, self.peer_id, &addresses)
            .await
        {
            Ok(registration) => {
                tracing::debug!(
                    mesh = %self.mesh,
                    resolver = %self.resolver.name(),
                    "registered for {:?}",
                    registration.lifetime
                );
                Next::Refresh {
                    at: self.succeeded(registration.lifetime),
                    id: registration.id,
                    addresses_pending: false,
                }
            }
            Err(err) => Next::Register {
                at: self.failed(err, "register"),
            },
        }
    }

    async fn refresh(&mut self, id: RegistrationId, addresses_pending: bool) -> Next {
        let result = if addresses_pending {
            let addresses = self.addresses.borrow_and_update().clone();
            self.resolver.update(&self.mesh, &id, &addresses).await
        } else {
            self.resolver.refresh(&self.mesh, &id).await
        };
        match result {
            Ok(lifetime) => Next::Refresh {
                at: self.succeeded(lifetime),
                id,
                addresses_pending: false,
            },
            Err(err) if err.is_registration_not_found() => {
                tracing::info!(
                    mesh = %self.mesh,
                    resolver = %self.resolver.name(),
                    "the resolver forgot this registration (it restarted, or it expired); \
                     registering again"
                );
                Next::Register { at: Instant::now() }
            }
            Err(err) => {
                let at = self.failed(
                    err,
                    if addresses_pending {
                        "update"
                    } else {
                        "refresh"
                    },
                );
                Next::Refresh {
                    id,
                    at,
                    addresses_pending,
                }
            }
        }
    }

    /// Records a success; returns when to refresh.
    fn succeeded(&mut self, lifetime: Duration) -> Instant {
        self.backoff.reset();
        self.status
            .send_replace(RegistrationStatus::Registered { lifetime });
        let interval = (lifetime / 2).max(MIN_REFRESH_INTERVAL);
        let now = Instant::now();
        now.checked_add(interval)
            .unwrap_or_else(|| now + super::NEVER_EXPIRES)
    }

    /// Records a failure; returns when to try again.
    fn failed(&mut self, error: ResolverError, what: &str) -> Instant {
        let mut retry_in = self.backoff.next();
        if let Some(asked) = error.retry_after() {
            retry_in = retry_in.max(asked.min(MAX_BACKOFF));
        }
        let failures = self.backoff.failures;
        let log = format!(
            "{what} failed ({error}); retrying in {:.1} s",
            retry_in.as_secs_f32()
        );
        // The first failure and then every tenth is worth a warning; the rest would flood
        // the log of a node whose resolver is down for long.
        if failures == 1 || failures % 10 == 0 {
            tracing::warn!(mesh = %self.mesh, resolver = %self.resolver.name(), "{log}");
        } else {
            tracing::debug!(mesh = %self.mesh, resolver = %self.resolver.name(), "{log}");
        }
        self.status.send_replace(RegistrationStatus::Retrying {
            error: Arc::new(error),
            failures,
            retry_in,
        });
        Instant::now() + retry_in
    }

    fn stopped(&self, id: Option<RegistrationId>) -> Option<RegistrationId> {
        self.status.send_replace(RegistrationStatus::Stopped);
        id
    }
}

/// Capped exponential backoff with jitter.
struct Backoff {
    failures: u32,
    jitter: RandomState,
}

impl Backoff {
    fn new() -> Self {
        Self {
            failures: 0,
            jitter: RandomState::new(),
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait after one more failure: 1 s, 2 s, 4 s, ... up to [`MAX_BACKOFF`], each less up
    /// to a quarter at random so that nodes cut off together do not come back in lockstep.
    fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        let base = INITIAL_BACKOFF
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF);
        // `RandomState` is seeded from the OS per instance: enough randomness for jitter
        // without a random number generator dependency.
        let random = self.jitter.hash_one(self.failures);
        let fraction = (random % 1000) as f64 / 4000.0;
        base.mul_f64(1.0 - fraction)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::resolver::{BoxFuture, PeerAddr, Registration};

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next()).collect();
        for (i, wait) in waits.iter().enumerate() {
            let base = INITIAL_BACKOFF.saturating_mul(1 << i).min(MAX_BACKOFF);
            assert!(
                *wait <= base && *wait >= base.mul_f64(0.75),
                "{i}: {wait:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next() <= INITIAL_BACKOFF);
    }

    /// A resolver in memory that can be taken down, restarted (forgetting everything), and
    /// that records the calls it gets.
    #[derive(Debug, Default)]
    struct Memory {
        down: AtomicBool,
        next: AtomicU64,
        live: Mutex<HashMap<String, Vec<SocketAddr>>>,
        calls: Mutex<Vec<&'static str>>,
    }

    const LIFETIME: Duration = Duration::from_secs(10);

    impl Memory {
        fn call(&self, name: &'static str) -> Result<(), ResolverError> {
            self.calls.lock().unwrap().push(name);
            if self.down.load(Ordering::SeqCst) {
                return Err(ResolverError::Unreachable {
                    url: "mem".into(),
                    reason: "down".into(),
                });
            }
            Ok(())
        }

        fn live(&self) -> Vec<Vec<SocketAddr>> {
            self.live.lock().unwrap().values().cloned().collect()
        }

        fn count(&self, name: &str) -> usize {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| **c == name)
                .count()
        }
    }

    impl Resolver for Memory {
        fn register<'a>(
            &'a self,
            _: &'a MeshId,
            _: PeerId,
            addresses: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
            Box::pin(async move {
                self.call("register")?;
                let id = format!("id{}", self.next.fetch_add(1, Ordering::SeqCst));
                self.live
                    .lock()
                    .unwrap()
                    .insert(id.clone(), addresses.to_vec());
                Ok(Registration {
                    id: RegistrationId::new(id),
                    lifetime: LIFETIME,
                })
            })
        }

        fn update<'a>(
            &'a self,
            _: &'a MeshId,
            id: &'a RegistrationId,
            addresses: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            Box::pin(async move {
                self.call("update")?;
                match self.live.lock().unwrap().get_mut(id.as_str()) {
                    Some(slot) => {
                        *slot = addresses.to_vec();
                        Ok(LIFETIME)
                    }
                    None => Err(ResolverError::RegistrationNotFound { url: "mem".into() }),
                }
            })
        }

        fn refresh<'a>(
            &'a self,
            _: &'a MeshId,
            id: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            Box::pin(async move {
                self.call("refresh")?;
                if self.live.lock().unwrap().contains_key(id.as_str()) {
                    Ok(LIFETIME)
                } else {
                    Err(ResolverError::RegistrationNotFound { url: "mem".into() })
                }
            })
        }

        fn unregister<'a>(
            &'a self,
            _: &'a MeshId,
            id: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<(), ResolverError>> {
            Box::pin(async move {
                self.call("unregister")?;
                self.live.lock().unwrap().remove(id.as_str());
                Ok(())
            })
        }

        fn resolve<'a>(
            &'a self,
            _: &'a MeshId,
            _: usize,
        ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    async fn wait_for(
        status: &mut watch::Receiver<RegistrationStatus>,
        what: impl Fn(&RegistrationStatus) -> bool,
    ) {
        status
            .wait_for(|s| what(s))
            .await
            .expect("the keeper ended");
    }

    // Virtual time: the paused clock jumps to each timer, so lifetimes of seconds and
    // backoffs of half a minute take no real time.
    #[tokio::test(start_paused = true)]
    async fn registers_refreshes_and_registers_again_after_a_restart() {
        let memory = Arc::new(Memory::default());
        let mesh = MeshId::new("m").unwrap();
        let handle = spawn_registration(
            memory.clone(),
            mesh,
            PeerId::from_bytes([1; 32]),
            vec![addr(1)],
        );
        let mut status = handle.watch_status();
        wait_for(&mut status, RegistrationStatus::is_registered).await;
        assert_eq!(memory.live(), vec![vec![addr(1)]]);

        // Refreshes come at half the lifetime.
        tokio::time::sleep(LIFETIME * 2).await;
        assert!(
            memory.count("refresh") >= 3,
            "{:?}",
            memory.calls.lock().unwrap()
        );
        assert_eq!(memory.count("register"), 1);

        // The resolver restarts: the next refresh is "not found", so the keeper registers again.
        memory.live.lock().unwrap().clear();
        tokio::time::sleep(LIFETIME).await;
        assert_eq!(memory.count("register"), 2);
        assert_eq!(memory.live(), vec![vec![addr(1)]]);

        handle.update_addresses(vec![addr(2)]);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(memory.count("update"), 1);
        assert_eq!(memory.live(), vec![vec![addr(2)]]);

        handle.unregister().await;
        assert!(memory.live().is_empty());
        assert!(matches!(*status.borrow(), RegistrationStatus::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_while_unreachable_and_reports_it() {
        let memory = Arc::new(Memory::default());
        memory.down.store(true, Ordering::SeqCst);
        let mesh = MeshId::new("m").unwrap();
        let handle = spawn_registration(
            memory.clone(),
            mesh,
            PeerId::from_bytes([1; 32]),
            vec![addr(1)],
        );
        let mut status = handle.watch_status();
        wait_for(&mut status, |s| {
            matches!(s, RegistrationStatus::Retrying { failures: 3, .. })
        })
        .await;
        let shown = handle.status().to_string();
        assert!(shown.starts_with("resolver unreachable"), "{shown}");
        // 1 + 2 + 4 + 8 + 16 + 30 + 30 s at most: about 7 attempts in 90 s, not hundreds.
        tokio::time::sleep(Duration::from_secs(90)).await;
        let attempts = memory.count("register");
        assert!((5..=10).contains(&attempts), "{attempts} attempts");

        memory.down.store(false, Ordering::SeqCst);
        wait_for(&mut status, RegistrationStatus::is_registered).await;
        assert_eq!(memory.live().len(), 1);

        // Dropping the handle stops the task without unregistering.
        drop(handle);
        tokio::time::sleep(LIFETIME * 3).await;
        let calls = memory.calls.lock().unwrap().len();
        tokio::time::sleep(LIFETIME * 3).await;
        assert_eq!(
            memory.calls.lock().unwrap().len(),
            calls,
            "no calls after the drop"
        );
        assert_eq!(memory.count("unregister"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_changed_while_down_are_sent_when_back() {
        let memory = Arc::new(Memory::default());
        let mesh = MeshId::new("m").unwrap();
        let handle = spawn_registration(
            memory.clone(),
            mesh,
            PeerId::from_bytes([1; 32]),
            vec![addr(1)],
        );
        let mut status = handle.watch_status();
        wait_for(&mut status, RegistrationStatus::is_registered).await;
        memory.down.store(true, Ordering::SeqCst);
        handle.update_addresses(vec![addr(3)]);
        wait_for(&mut status, |s| {
            matches!(s, RegistrationStatus::Retrying { .. })
        })
        .await;
        memory.down.store(false, Ordering::SeqCst);
        wait_for(&mut status, RegistrationStatus::is_registered).await;
        assert_eq!(memory.live(), vec![vec![addr(3)]]);
        // Unregistering while the resolver is down gives up after the timeout.
        memory.down.store(true, Ordering::SeqCst);
        handle.unregister().await;
        assert_eq!(memory.count("unregister"), 1);
    }

    /// A resolver that never answers.
    #[derive(Debug)]
    struct Silent;

    impl Resolver for Silent {
        fn register<'a>(
            &'a self,
            _: &'a MeshId,
            _: PeerId,
            _: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
            Box::pin(std::future::pending())
        }

        fn update<'a>(
            &'a self,
            _: &'a MeshId,
            _: &'a RegistrationId,
            _: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            Box::pin(std::future::pending())
        }

        fn refresh<'a>(
            &'a self,
            _: &'a MeshId,
            _: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            Box::pin(std::future::pending())
        }

        fn unregister<'a>(
            &'a self,
            _: &'a MeshId,
            _: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<(), ResolverError>> {
            Box::pin(std::future::pending())
        }

        fn resolve<'a>(
            &'a self,
            _: &'a MeshId,
            _: usize,
        ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unregister_gives_up_on_a_resolver_that_never_answers() {
        let mesh = MeshId::new("m").unwrap();
        let handle = spawn_registration(
            Arc::new(Silent),
            mesh,
            PeerId::from_bytes([1; 32]),
            vec![addr(1)],
        );
        // Let the keeper start its (endless) registration call.
        tokio::task::yield_now().await;
        let started = Instant::now();
        handle.unregister().await;
        assert_eq!(started.elapsed(), UNREGISTER_TIMEOUT);
    }
}
