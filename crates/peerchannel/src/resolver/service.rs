//! The client of the resolver service: [`ServiceResolver`].

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Method, Response, StatusCode, Url, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::{self, ErrorBody};
use super::{
    BoxFuture, NEVER_EXPIRES, PeerAddr, Registration, RegistrationId, Resolver, ResolverError,
};
use crate::{MeshId, PeerId};

/// How long one request to the resolver service may take, from connecting to the end of the
/// answer. A resolver is a small lookup: when it takes this long it is as good as down.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to the resolver service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle connection to the service is kept for reuse. Below the service's own idle
/// timeout (30 s), so that the client never sends on a connection the service is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest answer read from the service. The biggest legitimate one (100 peers with 16
/// addresses each) is under 100 KiB; anything larger is not a resolver talking.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The longest registration id accepted from the service (it sends 32 characters).
const MAX_REGISTRATION_ID_LEN: usize = 256;

/// The HTTP client of one `peerchannel resolver` service.
///
/// Cloning is cheap and shares the connection pool.
///
/// ```
/// use peerchannel::resolver::ServiceResolver;
///
/// let resolver = ServiceResolver::new("http://127.0.0.1:7700").unwrap();
/// assert_eq!(resolver.url(), "http://127.0.0.1:7700");
/// // Without a scheme, http:// is assumed.
/// assert_eq!(ServiceResolver::new("localhost:7700").unwrap().url(), "http://localhost:7700");
/// ```
#[derive(Clone)]
pub struct ServiceResolver {
    /// The base URL, with a path that ends in `/` or is empty.
    base: Url,
    /// The URL as errors and logs show it: without a trailing slash.
    label: String,
    client: Client,
}

impl ServiceResolver {
    /// A client of the service at `url`, e.g. `http://127.0.0.1:7700`, with the default
    /// [`REQUEST_TIMEOUT`].
    ///
    /// `http://` is assumed when no scheme is given. The URL may carry a path prefix (a
    /// resolver behind a reverse proxy at `http://example.com/resolver`). Nothing is sent
    /// until the first call.
    pub fn new(url: &str) -> Result<Self, InvalidResolverUrl> {
        Self::with_timeout(url, REQUEST_TIMEOUT)
    }

    /// Like [`ServiceResolver::new`], with another per-request timeout.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<Self, InvalidResolverUrl> {
        let trimmed = url.trim();
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let base = Url::parse(&with_scheme).map_err(|err| InvalidResolverUrl::Syntax {
            url: url.to_owned(),
            reason: err.to_string(),
        })?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(InvalidResolverUrl::HttpsUnsupported {
                    url: url.to_owned(),
                });
            }
            other => {
                return Err(InvalidResolverUrl::Scheme {
                    url: url.to_owned(),
                    scheme: other.to_owned(),
                });
            }
        }
        if base.host().is_none() || base.cannot_be_a_base() {
            return Err(InvalidResolverUrl::Syntax {
                url: url.to_owned(),
                reason: "it has no host".to_owned(),
            });
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(InvalidResolverUrl::Syntax {
                url: url.to_owned(),
                reason: "a resolver URL has no query (?) or fragment (#)".to_owned(),
            });
        }
        let label = base.as_str().trim_end_matches('/').to_owned();
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("peerchannel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| InvalidResolverUrl::Client {
                reason: error_chain(&err),
            })?;
        Ok(Self {
            base,
            label,
            client,
        })
    }

    /// The service's URL, as given (normalised, without a trailing slash).
    pub fn url(&self) -> &str {
        &self.label
    }

    /// The service's lifetime and limits (`GET /v1/settings`).
    pub async fn settings(&self) -> Result<api::Settings, ResolverError> {
        let response = self
            .send(Method::GET, &["v1", "settings"], None, None::<&()>)
            .await?;
        self.expect_json(response, Call::Other).await
    }

    async fn register_inner(
        &self,
        mesh: &MeshId,
        peer_id: PeerId,
        addresses: &[SocketAddr],
    ) -> Result<Registration, ResolverError> {
        let body = api::RegisterRequest {
            peer_id,
            addresses: addresses.to_vec(),
        };
        let path = ["v1", "meshes", mesh.as_str(), "registrations"];
        let response = self.send(Method::POST, &path, None, Some(&body)).await?;
        let answer: api::RegisterResponse = self.expect_json(response, Call::Other).await?;
        let id = answer.registration_id;
        if id.is_empty() || id.len() > MAX_REGISTRATION_ID_LEN {
            return Err(self.invalid(format!("a registration id of {} characters", id.len())));
        }
        Ok(Registration {
            id: RegistrationId(id),
            lifetime: lifetime(answer.lifetime_s),
        })
    }

    async fn update_inner(
        &self,
        mesh: &MeshId,
        id: &RegistrationId,
        addresses: &[SocketAddr],
    ) -> Result<Duration, ResolverError> {
        let body = api::UpdateRequest {
            addresses: addresses.to_vec(),
        };
        let path = ["v1", "meshes", mesh.as_str(), "registrations", id.as_str()];
        let response = self.send(Method::PUT, &path, None, Some(&body)).await?;
        let answer: api::LifetimeResponse =
            self.expect_json(response, Call::OnRegistration).await?;
        Ok(lifetime(answer.lifetime_s))
    }

    async fn refresh_inner(
        &self,
        mesh: &MeshId,
        id: &RegistrationId,
    ) -> Result<Duration, ResolverError> {
        let path = [
            "v1",
            "meshes",
            mesh.as_str(),
            "registrations",
            id.as_str(),
            "refresh",
        ];
        let response = self.send(Method::POST, &path, None, None::<&()>).await?;
        let answer: api::LifetimeResponse =
            self.expect_json(response, Call::OnRegistration).await?;
        Ok(lifetime(answer.lifetime_s))
    }

    async fn unregister_inner(
        &self,
        mesh: &MeshId,
        id: &RegistrationId,
    ) -> Result<(), ResolverError> {
        let path = ["v1", "meshes", mesh.as_str(), "registrations", id.as_str()];
        let response = self.send(Method::DELETE, &path, None, None::<&()>).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = self.read_body(response).await?;
        Err(self.error_from_status(status, &body, None, Call::OnRegistration))
    }

    async fn resolve_inner(
        &self,
        mesh: &MeshId,
        max: usize,
    ) -> Result<Vec<PeerAddr>, ResolverError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max_text = max.to_string();
        let path = ["v1", "meshes", mesh.as_str(), "peers"];
        let response = self
            .send(Method::GET, &path, Some(("max", &max_text)), None::<&()>)
            .await?;
        let answer: api::PeersResponse = self.expect_json(response, Call::Other).await?;
        Ok(answer
            .peers
            .into_iter()
            .filter(|peer| !peer.addresses.is_empty())
            .take(max)
            .map(|peer| PeerAddr::new(peer.peer_id, peer.addresses))
            .collect())
    }

    /// Sends one request; any answer with a status comes back, only transport failures are
    /// errors here.
    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &[&str],
        query: Option<(&str, &str)>,
        body: Option<&B>,
    ) -> Result<Response, ResolverError> {
        let url = self.url_for(path, query);
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .map_err(|err| self.transport_error(&err))
    }

    fn url_for(&self, path: &[&str], query: Option<(&str, &str)>) -> Url {
        let mut url = self.base.clone();
        // `new` checked that the URL can be a base, so the segments are always there.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        if let Some((key, value)) = query {
            url.query_pairs_mut().append_pair(key, value);
        }
        url
    }

    /// Decodes a 2xx answer as JSON, or turns any other status into its error.
    async fn expect_json<T: DeserializeOwned>(
        &self,
        response: Response,
        call: Call,
    ) -> Result<T, ResolverError> {
        let status = response.status();
        let retry_after = retry_after_header(&response);
        let body = self.read_body(response).await?;
        if !status.is_success() {
            return Err(self.error_from_status(status, &body, retry_after, call));
        }
        serde_json::from_slice(&body).map_err(|err| {
            self.invalid(format!(
                "HTTP {status} with a body that is not the expected JSON: {err}"
            ))
        })
    }

    async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, ResolverError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.transport_error(&err))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(
                    self.invalid(format!("an answer larger than {MAX_RESPONSE_BYTES} bytes"))
                );
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn error_from_status(
        &self,
        status: StatusCode,
        body: &[u8],
        retry_after: Option<Duration>,
        call: Call,
    ) -> ResolverError {
        let url = self.label.clone();
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let message = match &parsed {
            Some(parsed) => parsed.error.clone(),
            None => summarise(body),
        };
        match status {
            StatusCode::NOT_FOUND if call == Call::OnRegistration => {
                ResolverError::RegistrationNotFound { url }
            }
            StatusCode::NOT_FOUND if parsed.is_none() => self.invalid(
                "HTTP 404 without a resolver's error body: no resolver API at this URL".to_owned(),
            ),
            StatusCode::TOO_MANY_REQUESTS
                if parsed
                    .as_ref()
                    .is_none_or(|p| p.code == api::error_code::RATE_LIMITED) =>
            {
                let from_body = parsed
                    .as_ref()
                    .and_then(|p| p.retry_after_s)
                    .map(Duration::from_secs);
                ResolverError::RateLimited {
                    url,
                    retry_after: from_body.or(retry_after),
                }
            }
            status if status.is_client_error() => ResolverError::Rejected {
                url,
                status: status.as_u16(),
                code: parsed.map(|p| p.code).unwrap_or_default(),
                message,
            },
            status if status.is_server_error() => ResolverError::Service {
                url,
                status: status.as_u16(),
                message,
            },
            status => self.invalid(format!("unexpected HTTP status {status}")),
        }
    }

    fn transport_error(&self, err: &reqwest::Error) -> ResolverError {
        let url = self.label.clone();
        if err.is_decode() {
            return self.invalid(error_chain(err));
        }
        let reason = if err.is_timeout() {
            "no answer within the timeout".to_owned()
        } else {
            innermost(err)
        };
        ResolverError::Unreachable { url, reason }
    }

    fn invalid(&self, reason: String) -> ResolverError {
        ResolverError::InvalidResponse {
            url: self.label.clone(),
            reason,
        }
    }
}

impl fmt::Debug for ServiceResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServiceResolver").field(&self.label).finish()
    }
}

impl Resolver for ServiceResolver {
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
        Box::pin(self.update_inner(mesh, id, addresses))
    }

    fn refresh<'a>(
        &'a self,
        mesh: &'a MeshId,
        id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        Box::pin(self.refresh_inner(mesh, id))
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
        self.label.clone()
    }
}

/// Why a resolver URL cannot be used. Raised before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidResolverUrl {
    /// The URL does not parse, or has no host.
    ///
    /// Fix: give it as `http://host:port`, e.g. `http://127.0.0.1:7700`.
    #[error("`{url}` is not a resolver URL ({reason}); give it as http://host:port")]
    Syntax {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https://` URL: this build speaks plain HTTP to resolvers only.
    ///
    /// Fix: use `http://`, or put the resolver behind a local TLS-terminating proxy.
    #[error("`{url}`: HTTPS resolvers are not supported yet; use http://")]
    HttpsUnsupported {
        /// The URL as given.
        url: String,
    },
    /// A scheme other than `http`.
    ///
    /// Fix: resolver URLs start with `http://`.
    #[error("`{url}`: unknown scheme `{scheme}://`; resolver URLs start with http://")]
    Scheme {
        /// The URL as given.
        url: String,
        /// The scheme given.
        scheme: String,
    },
    /// The HTTP client could not be set up (this points at the system, not at the URL).
    #[error("cannot set up the HTTP client: {reason}")]
    Client {
        /// What failed.
        reason: String,
    },
}

/// Which kind of call an answer belongs to: a 404 means "registration not found" only for
/// calls that name a registration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    OnRegistration,
    Other,
}

fn lifetime(seconds: u64) -> Duration {
    Duration::from_secs(seconds).min(NEVER_EXPIRES)
}

fn retry_after_header(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of a body that is not the service's JSON, for an error message.
fn summarise(body: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    let text = text.trim();
    if text.is_empty() {
        "no explanation given".to_owned()
    } else {
        text.to_owned()
    }
}

/// The most specific cause of an error: for a refused connection, the OS's "Connection
/// refused" rather than reqwest's "error sending request".
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(next) = cause {
        parts.push(next.to_string());
        cause = next.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_normalised() {
        assert_eq!(
            ServiceResolver::new("http://127.0.0.1:7700/")
                .unwrap()
                .url(),
            "http://127.0.0.1:7700"
        );
        assert_eq!(
            ServiceResolver::new(" 10.0.0.1:80 ").unwrap().url(),
            "http://10.0.0.1"
        );
        assert!(matches!(
            ServiceResolver::new("https://example.com"),
            Err(InvalidResolverUrl::HttpsUnsupported { .. })
        ));
        assert!(matches!(
            ServiceResolver::new("ftp://x"),
            Err(InvalidResolverUrl::Scheme { .. })
        ));
        assert!(matches!(
            ServiceResolver::new("http://"),
            Err(InvalidResolverUrl::Syntax { .. })
        ));
        assert!(matches!(
            ServiceResolver::new("http://x/?a=b"),
            Err(InvalidResolverUrl::Syntax { .. })
        ));
    }

    #[test]
    fn paths_are_built_under_the_base_and_escaped() {
        let resolver = ServiceResolver::new("http://r:1/prefix").unwrap();
        let url = resolver.url_for(&["v1", "meshes", "m", "registrations", "a/b"], None);
        assert_eq!(
            url.as_str(),
            "http://r:1/prefix/v1/meshes/m/registrations/a%2Fb"
        );
        let resolver = ServiceResolver::new("http://r:1").unwrap();
        let url = resolver.url_for(&["v1", "meshes", "m", "peers"], Some(("max", "5")));
        assert_eq!(url.as_str(), "http://r:1/v1/meshes/m/peers?max=5");
    }

    fn error_body(code: &str, retry_after_s: Option<u64>) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: "nope".into(),
            code: code.into(),
            retry_after_s,
            limit: None,
        })
        .unwrap()
    }

    #[test]
    fn statuses_map_to_errors() {
        let r = ServiceResolver::new("http://r:1").unwrap();
        let body = error_body(api::error_code::REGISTRATION_NOT_FOUND, None);
        assert!(matches!(
            r.error_from_status(StatusCode::NOT_FOUND, &body, None, Call::OnRegistration),
            ResolverError::RegistrationNotFound { .. }
        ));
        // A 404 on register from something that is not a resolver.
        assert!(matches!(
            r.error_from_status(StatusCode::NOT_FOUND, b"<html>", None, Call::Other),
            ResolverError::InvalidResponse { .. }
        ));
        let body = error_body(api::error_code::RATE_LIMITED, Some(3));
        assert!(matches!(
            r.error_from_status(StatusCode::TOO_MANY_REQUESTS, &body, None, Call::Other),
            ResolverError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        let body = error_body(api::error_code::MESH_FULL, None);
        match r.error_from_status(StatusCode::TOO_MANY_REQUESTS, &body, None, Call::Other) {
            ResolverError::Rejected {
                status: 429,
                code,
                message,
                ..
            } => {
                assert_eq!(code, "mesh_full");
                assert_eq!(message, "nope");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.error_from_status(StatusCode::BAD_GATEWAY, b"upstream down\n", None, Call::Other),
            ResolverError::Service { status: 502, message, .. } if message == "upstream down"
        ));
    }
}
