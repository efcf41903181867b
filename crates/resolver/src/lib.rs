//! The peerchannel resolver service: nodes register in a mesh, and ask for a few of its
//! members to connect to.
//!
//! # Design
//!
//! Registrations are soft state. Each lives for a lifetime (60 s by default) unless its holder
//! refreshes it; the client (`peerchannel::resolver::ServiceResolver`, kept alive by
//! `peerchannel::resolver::spawn_registration`) refreshes at half the lifetime and registers
//! again when told the registration is unknown. So a node that crashes disappears within a
//! lifetime, and a resolver that restarts with empty memory is refilled within half a
//! lifetime, with nothing to persist.
//!
//! The API (HTTP/JSON, described in `peerchannel::resolver::api`):
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /v1/meshes/{mesh}/registrations` `{peer_id, addresses}` | `201 {registration_id, lifetime_s}` |
//! | `PUT /v1/meshes/{mesh}/registrations/{id}` `{addresses}` | `200 {lifetime_s}`, also refreshes |
//! | `POST /v1/meshes/{mesh}/registrations/{id}/refresh` | `200 {lifetime_s}` or `404` |
//! | `DELETE /v1/meshes/{mesh}/registrations/{id}` | `204` or `404` |
//! | `GET /v1/meshes/{mesh}/peers?max=N` | `200 {peers: [{peer_id, addresses}]}` |
//! | `GET /v1/settings` | the lifetime and limits |
//! | `GET /healthz` | `200 {"status": "ok"}` |
//! | `GET /metrics` | Prometheus (OpenMetrics) text |
//!
//! - A registration id is 160 random bits: only its holder can refresh, change or delete the
//!   registration. A second registration of the same peer id in the same mesh replaces the
//!   first (a node that restarted has lost its id).
//! - `peers` returns a uniformly random sample of the mesh's live registrations, so that
//!   joining nodes spread their connections over the mesh; `max` defaults to 32 and is capped
//!   at 100. A mesh nobody registered in is an empty list: every mesh starts that way.
//! - Every bad request gets a 4xx status with a JSON body `{"error": "...", "code": "..."}`,
//!   including malformed JSON, a wrong content type, an invalid mesh id, an unknown path and
//!   an oversized body.
//! - Limits, each with a named default in [`config`]: body size, addresses per
//!   registration, registrations per mesh, per source address (IPv6: per /64) and in total,
//!   meshes, and a request rate per source address (a token bucket; `429` with
//!   `Retry-After`). The source address is the TCP peer's: behind a reverse proxy, every
//!   client counts as the proxy.
//!
//! Known limitation: registering does not prove possession of the peer id's key, so anyone
//! may register (and so replace) any peer id in a mesh they know. The harm is bounded: a
//! wrong address fails the TLS check (the certificate's key must be the peer id), and the
//! evicted node registers again at its next refresh.
//!
//! # Getting started
//!
//! Run a resolver on a free port, register through the client and look the mesh up:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use peerchannel::resolver::{Resolver, ServiceResolver};
//! use peerchannel::{MeshId, PeerId};
//! use peerchannel_resolver::{ResolverConfig, ResolverServer};
//!
//! let server = ResolverServer::bind("127.0.0.1:0".parse()?, ResolverConfig::default()).await?;
//! let client = ServiceResolver::new(&server.url())?;
//! let mesh = MeshId::new("soccerpals")?;
//! let me = PeerId::from_bytes([7; 32]);
//! client.register(&mesh, me, &["127.0.0.1:4433".parse()?]).await?;
//! let members = client.resolve(&mesh, 8).await?;
//! assert_eq!(members[0].peer_id, Some(me));
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! A command-line front end serves until Ctrl-C with [`serve`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7700").await?;
//! peerchannel_resolver::serve(listener, Default::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod listener;
mod metrics;
mod registry;

pub use config::{InvalidConfig, RateLimit, ResolverConfig};

use crate::listener::{ClientAddr, GuardedListener};

/// How long [`ResolverServer::shutdown`] lets requests in flight finish before cutting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the resolver API on `listener` until `shutdown` completes, then finishes the
/// requests in flight and returns.
///
/// Expired registrations are swept every [`ResolverConfig::cleanup_interval`] meanwhile.
pub async fn serve(
    listener: TcpListener,
    config: ResolverConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let local_addr = listener.local_addr().ok();
    let shared = Arc::new(http::Shared::new(config));
    let cleanup = tokio::spawn(clean_up_periodically(shared.clone()));
    let listener = GuardedListener::new(
        listener,
        shared.config.max_connections,
        shared.config.idle_timeout,
    );
    let app = http::router(shared).into_make_service_with_connect_info::<ClientAddr>();
    if let Some(addr) = local_addr {
        tracing::info!("resolver listening on http://{addr}");
    }
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    cleanup.abort();
    result.map_err(ServerError::Serve)
}

/// A resolver service running in the background on the current tokio runtime: for tests,
/// demos and programs that embed one.
///
/// Dropping it stops the service at once; [`ResolverServer::shutdown`] lets requests in
/// flight finish first.
#[derive(Debug)]
pub struct ResolverServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl ResolverServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn bind(addr: SocketAddr, config: ResolverConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Self::start(listener, config)
    }

    /// Starts serving on a listener bound by the caller.
    pub fn start(listener: TcpListener, config: ResolverConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let local_addr = listener.local_addr().map_err(ServerError::Serve)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async {
            // A dropped sender (the server handle dropped) stops the service too.
            let _ = stopped.await;
        }));
        Ok(Self {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients use: `http://<local address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections, lets requests in flight finish (at most
    /// [`SHUTDOWN_GRACE`]), and returns once the port is free.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(ServerError::Serve(io::Error::other(join.to_string()))),
            Err(_) => {
                task.abort();
                // Wait for the abort to take effect so that the listener is closed on return.
                let _ = task.await;
                Ok(())
            }
        }
    }
}

impl Drop for ResolverServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The settings do not make sense together.
    ///
    /// Fix: see the message; start from `ResolverConfig::default()`.
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    /// The listening address could not be bound: another process (another resolver?) uses
    /// the port, the address is not one of this host's, or the port is privileged.
    ///
    /// Fix: pick another address or port.
    #[error("cannot listen on {addr}: {source}{}", bind_hint(source))]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Serving failed.
    #[error("the resolver stopped: {0}")]
    Serve(#[source] io::Error),
}

fn bind_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrInUse => "; is another resolver running there? Pick another port",
        io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges: pick a higher one",
        io::ErrorKind::AddrNotAvailable => "; that address is not one of this host's",
        _ => "",
    }
}

async fn clean_up_periodically(shared: Arc<http::Shared>) {
    let mut ticks = tokio::time::interval(shared.config.cleanup_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.clean_up();
    }
}
