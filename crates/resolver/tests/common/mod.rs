//! Helpers shared by the resolver's integration tests: a server on 127.0.0.1, clients, ids,
//! and waiting for a condition with a deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use peerchannel::resolver::ServiceResolver;
use peerchannel::resolver::api::ErrorBody;
use peerchannel::{MeshId, PeerId};
use peerchannel_resolver::{ResolverConfig, ResolverServer};
use reqwest::StatusCode;

/// How long a condition may take to come true before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often a condition is checked while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A resolver on a free port of 127.0.0.1.
pub async fn start(config: ResolverConfig) -> ResolverServer {
    ResolverServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("the resolver starts")
}

/// A resolver with the default settings but no per-address limits, so that a test can send
/// many requests from 127.0.0.1.
pub async fn start_relaxed() -> ResolverServer {
    start(ResolverConfig::relaxed()).await
}

/// The real client of `server`.
pub fn client(server: &ResolverServer) -> ServiceResolver {
    ServiceResolver::new(&server.url()).expect("a valid URL")
}

/// A plain HTTP client, for requests the real client would never send.
pub fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// A plain HTTP client whose requests come from `ip` (any of 127.0.0.0/8 works on Linux), to
/// test limits per source address.
pub fn raw_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from(ip))
        .build()
        .expect("an HTTP client")
}

pub fn peer(n: u8) -> PeerId {
    PeerId::from_bytes([n; 32])
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn mesh(name: &str) -> MeshId {
    MeshId::new(name).expect("a valid mesh id")
}

/// The registration body of `peer` at `port`, as JSON.
pub fn registration(n: u8, port: u16) -> serde_json::Value {
    serde_json::json!({ "peer_id": peer(n).to_string(), "addresses": [addr(port).to_string()] })
}

/// Reads an error answer, checking that it is the service's JSON error body.
pub async fn error_of(response: reqwest::Response) -> (StatusCode, ErrorBody) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("a body");
    assert!(
        content_type.starts_with("application/json"),
        "{status}: {content_type}: {text}"
    );
    let body: ErrorBody = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(!body.error.is_empty() && !body.code.is_empty(), "{text}");
    (status, body)
}

/// Posts `body` as JSON (sent as it is, however malformed) to `url`.
pub async fn post_json(url: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    raw()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the request is sent")
}

/// Reads an error answer (see [`error_of`]) and checks its status and code.
pub async fn expect_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> ErrorBody {
    let (got, body) = error_of(response).await;
    assert_eq!((got, body.code.as_str()), (status, code), "{}", body.error);
    body
}

/// Waits until `check` returns `Some`, polling; fails the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of one metric line (`name{labels} value`) of `GET /metrics`, 0 if absent.
pub async fn metric(server: &ResolverServer, series: &str) -> f64 {
    let text = raw()
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
