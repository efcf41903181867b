//! The HTTP API: routes, handlers, the JSON error answers, rate limiting and request metrics.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use peerchannel::MeshId;
use peerchannel::resolver::api::{self, ErrorBody, error_code};
use serde::Deserialize;

use crate::config::ResolverConfig;
use crate::listener::ClientAddr;
use crate::metrics::{self, Metrics, RejectionLabels, RequestLabels};
use crate::registry::{Registry, RegistryError};

/// The route label of requests that matched no route.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The most characters of a request's path quoted back in an error message.
const MAX_ECHOED_CHARS: usize = 80;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ResolverConfig,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Shared {
    pub(crate) fn new(config: ResolverConfig) -> Self {
        let limiter = config.rate_limit.map(|limit| {
            RateLimiter::keyed(Quota::per_second(limit.per_second).allow_burst(limit.burst))
        });
        Self {
            registry: Mutex::new(Registry::new(&config)),
            metrics: Metrics::new(),
            limiter,
            config,
        }
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every registry method leaves it consistent before it can panic (counts are updated
        // together with the maps), so a poisoned lock is still usable.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sweeps expired registrations and forgets idle rate-limit buckets.
    pub(crate) fn clean_up(&self) {
        let now = Instant::now();
        let mut registry = self.registry();
        let expired = registry.expire(now);
        self.metrics.expirations.inc_by(expired as u64);
        self.metrics
            .set_counts(registry.registrations(), registry.meshes());
        drop(registry);
        if expired > 0 {
            tracing::debug!("{expired} registrations expired");
        }
        if let Some(limiter) = &self.limiter {
            // A bucket that has refilled completely is the same as no bucket.
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The service's routes, wrapped in its limits and metrics.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let body_limit = shared.config.max_body_bytes;
    Router::new()
        .route("/v1/meshes/{mesh}/registrations", post(register))
        .route(
            "/v1/meshes/{mesh}/registrations/{id}",
            put(update).delete(unregister),
        )
        .route(
            "/v1/meshes/{mesh}/registrations/{id}/refresh",
            post(refresh),
        )
        .route("/v1/meshes/{mesh}/peers", get(peers))
        .route("/v1/settings", get(settings))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Layers run outside in, from the last added: count every answer, including the
        // rate limiter's.
        .layer(middleware::from_fn_with_state(shared.clone(), rate_limit))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared)
}

/// The source a request is accounted to: its IP address, IPv6 cut to the /64 (one host or
/// one subscriber usually holds a whole /64, and could otherwise pick a new address for each
/// request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source(pub(crate) IpAddr);

impl Source {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

/// An error answer: a status and an [`ErrorBody`].
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        let body = ErrorBody {
            error: error.into(),
            code: code.to_owned(),
            retry_after_s: None,
            limit: None,
        };
        Self { status, body }
    }

    fn invalid_mesh(mesh: &str, err: impl std::fmt::Display) -> Self {
        // The path is echoed back; a long one only in part.
        let mesh = echo(mesh);
        Self::new(
            StatusCode::BAD_REQUEST,
            error_code::INVALID_MESH_ID,
            format!("`{mesh}` is not a mesh id: {err}"),
        )
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let status = match err {
            RegistryError::NoAddresses
            | RegistryError::BadAddress { .. }
            | RegistryError::TooManyAddresses { .. } => StatusCode::BAD_REQUEST,
            RegistryError::NotFound => StatusCode::NOT_FOUND,
            // Full: the limits free up as registrations expire, so "later" is the answer.
            RegistryError::MeshFull { .. }
            | RegistryError::TooManyFromSource { .. }
            | RegistryError::TooManyRegistrations { .. }
            | RegistryError::TooManyMeshes { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        let mut api = Self::new(status, err.code(), err.to_string());
        api.body.limit = err.limit().map(|l| l as u64);
        api
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                error_code::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON, with the header `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(err) => Self::new(
                StatusCode::BAD_REQUEST,
                error_code::INVALID_BODY,
                format!("the body is not valid JSON: {}", innermost(&err)),
            ),
            JsonRejection::JsonDataError(err) => Self::new(
                StatusCode::BAD_REQUEST,
                error_code::INVALID_BODY,
                format!("the body is not of the expected shape: {}", innermost(&err)),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_code::BODY_TOO_LARGE,
                "the body is larger than this resolver accepts (see GET /v1/settings)",
            ),
            other => Self::new(other.status(), error_code::INVALID_BODY, other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            error_code::INVALID_PATH,
            rejection.body_text(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            error_code::INVALID_QUERY,
            format!(
                "bad query: {}; `max` is a whole number",
                innermost(&rejection)
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.body.code.clone();
        let retry_after = self.body.retry_after_s;
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Read by `count_requests` to count rejections by reason.
        response.extensions_mut().insert(Rejected(code));
        response
    }
}

/// Marks an error answer with its code, for the metrics.
#[derive(Clone, Debug)]
struct Rejected(String);

type ApiResult<T> = Result<T, ApiError>;

async fn register(
    State(shared): State<Arc<Shared>>,
    Extension(source): Extension<Source>,
    mesh: Result<Path<String>, PathRejection>,
    body: Result<Json<api::RegisterRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<api::RegisterResponse>)> {
    let mesh = parse_mesh(mesh?.0)?;
    let Json(request) = body?;
    let mut registry = shared.registry();
    let registered = registry.register(
        &mesh,
        request.peer_id,
        request.addresses,
        source.0,
        Instant::now(),
        &mut rand::rng(),
    )?;
    shared
        .metrics
        .set_counts(registry.registrations(), registry.meshes());
    drop(registry);
    shared.metrics.registered.inc();
    if registered.replaced {
        shared.metrics.replaced.inc();
    }
    tracing::debug!(%mesh, peer = %request.peer_id.fmt_short(), "registered");
    let answer = api::RegisterResponse {
        registration_id: registered.token,
        lifetime_s: registered.lifetime.as_secs(),
    };
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn update(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<api::UpdateRequest>, JsonRejection>,
) -> ApiResult<Json<api::LifetimeResponse>> {
    let Path((mesh, id)) = path?;
    let mesh = parse_mesh(mesh)?;
    let Json(request) = body?;
    let lifetime = shared
        .registry()
        .update(&mesh, &id, request.addresses, Instant::now())?;
    Ok(Json(api::LifetimeResponse {
        lifetime_s: lifetime.as_secs(),
    }))
}

async fn refresh(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<api::LifetimeResponse>> {
    let Path((mesh, id)) = path?;
    let mesh = parse_mesh(mesh)?;
    let lifetime = shared.registry().refresh(&mesh, &id, Instant::now())?;
    Ok(Json(api::LifetimeResponse {
        lifetime_s: lifetime.as_secs(),
    }))
}

async fn unregister(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((mesh, id)) = path?;
    let mesh = parse_mesh(mesh)?;
    let mut registry = shared.registry();
    registry.remove(&mesh, &id, Instant::now())?;
    shared
        .metrics
        .set_counts(registry.registrations(), registry.meshes());
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct PeersQuery {
    max: Option<usize>,
}

async fn peers(
    State(shared): State<Arc<Shared>>,
    mesh: Result<Path<String>, PathRejection>,
    query: Result<Query<PeersQuery>, QueryRejection>,
) -> ApiResult<Json<api::PeersResponse>> {
    let mesh = parse_mesh(mesh?.0)?;
    let Query(query) = query?;
    let max = query
        .max
        .unwrap_or(shared.config.default_peers)
        .min(shared.config.max_peers);
    let peers = shared
        .registry()
        .sample(&mesh, max, Instant::now(), &mut rand::rng());
    Ok(Json(api::PeersResponse { peers }))
}

async fn settings(State(shared): State<Arc<Shared>>) -> Json<api::Settings> {
    Json(shared.config.to_api())
}

async fn health() -> Json<api::Health> {
    Json(api::Health {
        status: "ok".to_owned(),
    })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_code::INTERNAL,
            "cannot encode the metrics",
        )
        .into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        error_code::NOT_FOUND,
        format!(
            "no such path: {}; the API lives under /v1 (see GET /v1/settings)",
            echo(request.uri().path())
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        error_code::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            echo(request.uri().path())
        ),
    )
}

/// Refuses requests over the per-source rate, and tells the handlers the request's source.
async fn rate_limit(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Without ConnectInfo (the router served without `into_make_service_with_connect_info`),
    // every request counts as one source.
    let ip = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.0.ip());
    let source = Source::of(ip);
    if let Some(limiter) = &shared.limiter
        && let Err(not_until) = limiter.check_key(&source.0)
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let retry_after_s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            error_code::RATE_LIMITED,
            format!("too many requests from your address; retry in {retry_after_s} s"),
        );
        error.body.retry_after_s = Some(retry_after_s);
        return error.into_response();
    }
    request.extensions_mut().insert(source);
    next.run(request).await
}

/// Counts every answer by route, method and status, and every refusal by reason.
async fn count_requests(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || UNMATCHED_ROUTE.to_owned(),
        |path| path.as_str().to_owned(),
    );
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status,
        })
        .inc();
    if let Some(Rejected(code)) = response.extensions().get::<Rejected>() {
        shared
            .metrics
            .rejections
            .get_or_create(&RejectionLabels {
                reason: code.clone(),
            })
            .inc();
    }
    response
}

fn parse_mesh(mesh: String) -> ApiResult<MeshId> {
    MeshId::new(&mesh).map_err(|err| ApiError::invalid_mesh(&mesh, err))
}

/// A request's text, cut to [`MAX_ECHOED_CHARS`] to be quoted in an error message.
fn echo(text: &str) -> String {
    text.chars().take(MAX_ECHOED_CHARS).collect()
}

/// The most specific message of an extractor's error (serde's, not axum's wrapper).
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_group_ipv6_by_64_and_unmap_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).0, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Source::of(mapped).0, "192.0.2.1".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(Source::of(v4).0, v4);
    }
}
