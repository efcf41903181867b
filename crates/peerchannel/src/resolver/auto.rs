//! The default way to find members: [`AutoResolver`], the resolver service when it answers,
//! mDNS otherwise.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    BoxFuture, MultiResolver, PeerAddr, Registration, RegistrationId, Resolver, ResolverError,
};
use crate::{MeshId, PeerId};

/// How long a resolve waits for the resolver service before it asks mDNS instead. A service
/// that takes longer is treated as down.
pub const AUTO_SERVICE_TIMEOUT: Duration = Duration::from_secs(3);

/// After the service failed to answer, resolves use mDNS alone for this long; then the service
/// is asked again, and used again if it answers. Bounds both the delay a dead service adds to
/// resolves and how long a service that came back goes unused.
pub const AUTO_SERVICE_RECHECK: Duration = Duration::from_secs(10);

/// Where an [`AutoResolver`] takes contacts from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AutoSource {
    /// The resolver service: it answered the last time it was asked.
    Service,
    /// mDNS: no service is configured, or it did not answer the last time it was asked.
    Mdns,
}

/// The resolver service if one is configured and answers, otherwise mDNS: the default.
///
/// - **Register, update, refresh, unregister**: with both (through a [`MultiResolver`]), so
///   that LAN peers see this node on mDNS even while the service is up, and the service learns
///   of it again as soon as it comes back. A call succeeds when either holds the registration.
/// - **Resolve**: asks the service, waiting at most [`AUTO_SERVICE_TIMEOUT`], and returns its
///   answer, even an empty one (an empty mesh on the service is a new mesh, not a reason to
///   merge with strangers who happen to use the same mesh id on the LAN). When the service
///   fails, the answer comes from mDNS, and mDNS alone is used for
///   [`AUTO_SERVICE_RECHECK`]; then the service is tried again and, when it answers, used
///   again. Each switch is logged once.
///
/// ```no_run
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
///
/// use peerchannel::resolver::{AutoResolver, MdnsResolver, ServiceResolver};
///
/// let service = Arc::new(ServiceResolver::new("http://127.0.0.1:7700")?);
/// let auto = AutoResolver::new(Some(service), Arc::new(MdnsResolver::new()?));
/// # Ok(())
/// # }
/// ```
pub struct AutoResolver {
    service: Option<Arc<dyn Resolver>>,
    mdns: Arc<dyn Resolver>,
    registrar: MultiResolver,
    health: Mutex<Health>,
}

#[derive(Clone, Copy, Debug)]
enum Health {
    Answering,
    Down { retry_at: Instant },
}

impl AutoResolver {
    /// Uses `service` (usually a [`ServiceResolver`](super::ServiceResolver), or a
    /// [`MultiResolver`] over several) when given and answering, `mdns` (usually an
    /// [`MdnsResolver`](super::MdnsResolver)) otherwise.
    pub fn new(service: Option<Arc<dyn Resolver>>, mdns: Arc<dyn Resolver>) -> Self {
        let all: Vec<Arc<dyn Resolver>> = service.iter().cloned().chain([mdns.clone()]).collect();
        Self {
            service,
            mdns,
            registrar: MultiResolver::new(all),
            health: Mutex::new(Health::Answering),
        }
    }

    /// Where contacts come from now.
    pub fn source(&self) -> AutoSource {
        match (&self.service, *self.lock()) {
            (Some(_), Health::Answering) => AutoSource::Service,
            _ => AutoSource::Mdns,
        }
    }

    async fn resolve_inner(
        &self,
        mesh: &MeshId,
        max: usize,
    ) -> Result<Vec<PeerAddr>, ResolverError> {
        let mut errors = Vec::new();
        if let Some(service) = &self.service
            && self.service_due()
        {
            match tokio::time::timeout(AUTO_SERVICE_TIMEOUT, service.resolve(mesh, max)).await {
                Ok(Ok(peers)) => {
                    self.answered(service);
                    return Ok(peers);
                }
                Ok(Err(err)) => errors.push(err),
                Err(_) => errors.push(ResolverError::Unreachable {
                    url: service.name(),
                    reason: format!("no answer within {} s", AUTO_SERVICE_TIMEOUT.as_secs()),
                }),
            }
            if let Some(err) = errors.last() {
                self.failed(service, err);
            }
        }
        match self.mdns.resolve(mesh, max).await {
            Ok(peers) => Ok(peers),
            Err(err) => {
                errors.push(err);
                Err(ResolverError::AllFailed { errors })
            }
        }
    }

    /// Whether to ask the service now: it answered last time, or its pause is over.
    fn service_due(&self) -> bool {
        match *self.lock() {
            Health::Answering => true,
            Health::Down { retry_at } => Instant::now() >= retry_at,
        }
    }

    fn answered(&self, service: &Arc<dyn Resolver>) {
        let mut health = self.lock();
        if matches!(*health, Health::Down { .. }) {
            tracing::info!(resolver = %service.name(), "the resolver service answers again; using it");
        }
        *health = Health::Answering;
    }

    fn failed(&self, service: &Arc<dyn Resolver>, err: &ResolverError) {
        let mut health = self.lock();
        if matches!(*health, Health::Answering) {
            tracing::warn!(
                resolver = %service.name(),
                "the resolver service does not answer ({err}); finding members with mDNS \
                 until it does"
            );
        }
        *health = Health::Down {
            retry_at: Instant::now() + AUTO_SERVICE_RECHECK,
        };
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        // A plain value, always whole: a poisoned lock is safe to keep using.
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Resolver for AutoResolver {
    fn register<'a>(
        &'a self,
        mesh: &'a MeshId,
        peer_id: PeerId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
        self.registrar.register(mesh, peer_id, addresses)
    }

    fn update<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
        addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        self.registrar.update(mesh, id, addresses)
    }

    fn refresh<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        self.registrar.refresh(mesh, id)
    }

    fn unregister<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<(), ResolverError>> {
        self.registrar.unregister(mesh, id)
    }

    fn resolve<'a>(
        &'a self,
        mesh: &'a MeshId,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>> {
        Box::pin(self.resolve_inner(mesh, max))
    }

    fn name(&self) -> String {
        match &self.service {
            Some(service) => format!("auto ({}, else {})", service.name(), self.mdns.name()),
            None => format!("auto ({})", self.mdns.name()),
        }
    }
}

impl fmt::Debug for AutoResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoResolver")
            .field("service", &self.service)
            .field("mdns", &self.mdns)
            .field("source", &self.source())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::resolver::NEVER_EXPIRES;

    /// A resolver that answers with one fixed member, can be switched off or made to hang, and
    /// counts what it was asked.
    #[derive(Debug)]
    struct Fake {
        name: &'static str,
        member: PeerAddr,
        down: AtomicBool,
        hang: AtomicBool,
        resolves: AtomicUsize,
        registered: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(name: &'static str, n: u8) -> Arc<Self> {
            Arc::new(Self {
                name,
                member: PeerAddr::new(
                    PeerId::from_bytes([n; 32]),
                    vec![SocketAddr::from(([10, 0, 0, n], 1))],
                ),
                down: AtomicBool::new(false),
                hang: AtomicBool::new(false),
                resolves: AtomicUsize::new(0),
                registered: Mutex::new(Vec::new()),
            })
        }

        async fn check(&self) -> Result<(), ResolverError> {
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(ResolverError::Unreachable {
                    url: self.name.into(),
                    reason: "down".into(),
                });
            }
            Ok(())
        }

        fn registrations(&self) -> usize {
            self.registered.lock().unwrap().len()
        }
    }

    impl Resolver for Fake {
        fn register<'a>(
            &'a self,
            _: &'a MeshId,
            _: PeerId,
            _: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
            Box::pin(async move {
                self.check().await?;
                let id = format!("{}-reg", self.name);
                self.registered.lock().unwrap().push(id.clone());
                Ok(Registration {
                    id: RegistrationId::new(id),
                    lifetime: NEVER_EXPIRES,
                })
            })
        }

        fn update<'a>(
            &'a self,
            _: &'a MeshId,
            _: &'a RegistrationId,
            _: &'a [SocketAddr],
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            Box::pin(async move {
                self.check().await?;
                Ok(NEVER_EXPIRES)
            })
        }

        fn refresh<'a>(
            &'a self,
            _: &'a MeshId,
            _: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
            Box::pin(async move {
                self.check().await?;
                Ok(NEVER_EXPIRES)
            })
        }

        fn unregister<'a>(
            &'a self,
            _: &'a MeshId,
            id: &'a RegistrationId,
        ) -> BoxFuture<'a, Result<(), ResolverError>> {
            Box::pin(async move {
                self.check().await?;
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
                self.resolves.fetch_add(1, Ordering::SeqCst);
                self.check().await?;
                Ok(vec![self.member.clone()])
            })
        }
    }

    fn mesh() -> MeshId {
        MeshId::new("m").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn uses_the_service_while_it_answers_and_mdns_while_it_does_not() {
        let service = Fake::new("service", 1);
        let mdns = Fake::new("mdns", 2);
        let auto = AutoResolver::new(Some(service.clone()), mdns.clone());

        assert_eq!(
            auto.resolve(&mesh(), 8).await.unwrap(),
            vec![service.member.clone()]
        );
        assert_eq!(auto.source(), AutoSource::Service);
        assert_eq!(mdns.resolves.load(Ordering::SeqCst), 0, "mDNS not asked");

        service.down.store(true, Ordering::SeqCst);
        assert_eq!(
            auto.resolve(&mesh(), 8).await.unwrap(),
            vec![mdns.member.clone()]
        );
        assert_eq!(auto.source(), AutoSource::Mdns);

        // Within the pause the service is not asked again, even though it is back.
        service.down.store(false, Ordering::SeqCst);
        let asked = service.resolves.load(Ordering::SeqCst);
        assert_eq!(
            auto.resolve(&mesh(), 8).await.unwrap(),
            vec![mdns.member.clone()]
        );
        assert_eq!(service.resolves.load(Ordering::SeqCst), asked);

        // After it, the service is asked, answers, and is used again.
        tokio::time::advance(AUTO_SERVICE_RECHECK).await;
        assert_eq!(
            auto.resolve(&mesh(), 8).await.unwrap(),
            vec![service.member.clone()]
        );
        assert_eq!(auto.source(), AutoSource::Service);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_hangs_counts_as_down() {
        let service = Fake::new("service", 1);
        let mdns = Fake::new("mdns", 2);
        let auto = AutoResolver::new(Some(service.clone()), mdns.clone());
        service.hang.store(true, Ordering::SeqCst);
        let started = Instant::now();
        assert_eq!(
            auto.resolve(&mesh(), 8).await.unwrap(),
            vec![mdns.member.clone()]
        );
        assert_eq!(started.elapsed(), AUTO_SERVICE_TIMEOUT);
        assert_eq!(auto.source(), AutoSource::Mdns);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_service_it_is_mdns_and_fails_only_when_mdns_fails() {
        let mdns = Fake::new("mdns", 2);
        let auto = AutoResolver::new(None, mdns.clone());
        assert_eq!(auto.source(), AutoSource::Mdns);
        assert_eq!(
            auto.resolve(&mesh(), 8).await.unwrap(),
            vec![mdns.member.clone()]
        );
        mdns.down.store(true, Ordering::SeqCst);
        let err = auto.resolve(&mesh(), 8).await.unwrap_err();
        assert!(err.is_unreachable(), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn registers_with_both_and_comes_back_to_a_service_that_was_down() {
        let service = Fake::new("service", 1);
        let mdns = Fake::new("mdns", 2);
        let auto = AutoResolver::new(Some(service.clone()), mdns.clone());

        service.down.store(true, Ordering::SeqCst);
        let registration = auto
            .register(&mesh(), PeerId::from_bytes([9; 32]), &[])
            .await
            .unwrap();
        assert_eq!((service.registrations(), mdns.registrations()), (0, 1));
        assert!(
            registration.lifetime < NEVER_EXPIRES,
            "comes back for the service"
        );

        service.down.store(false, Ordering::SeqCst);
        auto.refresh(&mesh(), &registration.id).await.unwrap();
        assert_eq!((service.registrations(), mdns.registrations()), (1, 1));

        auto.unregister(&mesh(), &registration.id).await.unwrap();
        assert_eq!((service.registrations(), mdns.registrations()), (0, 0));
    }
}
