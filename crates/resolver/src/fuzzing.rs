//! Entry points for the fuzz target in `fuzz/` and for the tests that replay its corpus on a
//! stable toolchain (`tests/fuzz_equivalents.rs`). Only with the `fuzzing` feature; not a
//! stable API.
//!
//! [`requests`] serves a fuzzer-chosen session of HTTP requests with the service's real router
//! (routes, extractors, JSON parsing, mesh id validation, limits, rate limiting, registry),
//! without a socket: each request comes from one of a few source addresses, with a method, a
//! path (well-formed or not), a content type and a body (well-formed JSON, JSON with made-up
//! values, or any bytes). It checks that:
//!
//! - no request gets a 5xx answer, and every error answer is the JSON error body with a code;
//! - a registration id only works if the service issued it, in its own mesh, and not after it
//!   was deleted (guessing fails);
//! - the registry's counts stay consistent with its contents.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use axum::body::Body as HttpBody;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use peerchannel::resolver::api::{ErrorBody, RegisterRequest, RegisterResponse};
use tower_service::Service;

use crate::config::{RateLimit, ResolverConfig};
use crate::http::{Shared, router};
use crate::listener::ClientAddr;

/// The most bytes of an answer read back.
const MAX_ANSWER: usize = 1 << 20;

/// Serves one fuzzer-chosen session of requests; panics if an invariant breaks.
pub fn requests(data: &[u8]) {
    let Ok(session) = Session::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    runtime.block_on(run(session));
}

/// What the fuzzer chooses.
#[derive(Arbitrary, Debug)]
struct Session {
    /// Small limits (registrations, addresses, body size, request rate) that a short session
    /// can hit.
    tight: bool,
    /// The requests, in order.
    requests: Vec<Req>,
}

/// One request.
#[derive(Arbitrary, Debug)]
struct Req {
    source: u8,
    method: u8,
    target: Target,
    json: bool,
    body: BodyChoice,
}

/// Where a request goes.
#[derive(Arbitrary, Debug)]
enum Target {
    Register(MeshChoice),
    Update(MeshChoice, IdChoice),
    Refresh(MeshChoice, IdChoice),
    Peers(MeshChoice, Option<String>),
    Settings,
    Health,
    Metrics,
    Raw(String),
}

/// A mesh id in a path: a few valid ones (in several spellings), or any text.
#[derive(Arbitrary, Debug)]
enum MeshChoice {
    Known(u8),
    Raw(String),
}

/// A registration id in a path: one the service issued, or a guess.
#[derive(Arbitrary, Debug)]
enum IdChoice {
    Issued(u8),
    Guess(String),
}

/// A request body.
#[derive(Arbitrary, Debug)]
enum BodyChoice {
    Empty,
    Raw(Vec<u8>),
    Register {
        peer: u8,
        addresses: Vec<Addr>,
    },
    Update {
        addresses: Vec<Addr>,
    },
    /// A registration with extra, repeated or nested keys.
    Odd {
        peer: u8,
        addresses: Vec<Addr>,
        repeat: u8,
        nest: u8,
    },
}

/// An address in a body.
#[derive(Arbitrary, Debug)]
enum Addr {
    V4([u8; 4], u16),
    V6(u128, u16),
    Raw(String),
}

const MESHES: [&str; 4] = ["a", "b", "A", "a."];

const SOURCES: [IpAddr; 5] = [
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xffff, 0, 0, 2)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 1)),
];

/// A registration the service issued: the mesh it is in (normalised), its id and the peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Issued {
    mesh: String,
    id: String,
    peer: peerchannel::PeerId,
}

async fn run(session: Session) {
    let config = if session.tight {
        ResolverConfig {
            max_body_bytes: 1024,
            max_addresses: 2,
            max_registrations_per_mesh: 3,
            max_registrations_per_ip: 2,
            max_registrations: 5,
            max_meshes: 2,
            rate_limit: RateLimit::new(1, 8),
            lifetime: Duration::from_secs(1),
            ..ResolverConfig::default()
        }
    } else {
        ResolverConfig::default()
    };
    config.validate().expect("the fuzzing settings are valid");
    let shared = Arc::new(Shared::new(config));
    let mut app = router(shared.clone());
    let mut issued: Vec<Issued> = Vec::new();
    let mut deleted: BTreeSet<Issued> = BTreeSet::new();
    for req in session.requests {
        let Some((request, expect)) = build(req, &issued) else {
            continue;
        };
        // Answers to HEAD have no body.
        let head = request.method() == Method::HEAD;
        let what = format!("{} {}", request.method(), request.uri());
        std::future::poll_fn(|cx| Service::<Request<HttpBody>>::poll_ready(&mut app, cx))
            .await
            .expect("the router is always ready");
        let response = app.call(request).await.expect("the router never fails");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
            .await
            .expect("an answer's body is read");
        assert!(
            !status.is_server_error(),
            "{what}: {status} for {expect:?}: {}",
            String::from_utf8_lossy(&body)
        );
        if status.is_client_error() && !head {
            assert!(
                content_type.starts_with("application/json"),
                "{what}: {status} with {content_type:?}: {}",
                String::from_utf8_lossy(&body)
            );
            let error: ErrorBody = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{what}: {status}: not an error body ({e})"));
            assert!(
                !error.error.is_empty() && !error.code.is_empty(),
                "{error:?}"
            );
        }
        match expect {
            Expect::Register { mesh, peer } if status == StatusCode::CREATED => {
                let answer: RegisterResponse =
                    serde_json::from_slice(&body).expect("a registration answer");
                let mesh = mesh.expect("a valid mesh id was registered in");
                let peer = peer.expect("an accepted registration parses");
                // A new registration of the same peer in the same mesh replaces the old one.
                for old in issued.iter().filter(|i| i.mesh == mesh && i.peer == peer) {
                    deleted.insert(old.clone());
                }
                issued.push(Issued {
                    mesh,
                    id: answer.registration_id,
                    peer,
                });
            }
            Expect::UseId { issued: id, method } if status.is_success() => {
                let id = id.unwrap_or_else(|| {
                    panic!("{method} with an id the service never issued got {status}")
                });
                assert!(
                    !deleted.contains(&id),
                    "{method} with a deleted registration id got {status}"
                );
                if method == Method::DELETE {
                    deleted.insert(id);
                }
            }
            _ => {}
        }
        shared.registry().check_consistent();
    }
}

/// What a request should do to the model.
#[derive(Debug)]
enum Expect {
    /// A registration in this mesh (normalised; `None` if the id is not valid).
    Register {
        mesh: Option<String>,
        peer: Option<peerchannel::PeerId>,
    },
    /// A request on a registration id: the one the service issued that it names, if any.
    UseId {
        issued: Option<Issued>,
        method: Method,
    },
    Other,
}

fn build(req: Req, issued: &[Issued]) -> Option<(Request<HttpBody>, Expect)> {
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ];
    let mut method = methods[usize::from(req.method) % methods.len()].clone();
    let body = body_bytes(req.body);
    let (path, expect) = match req.target {
        Target::Register(mesh) => {
            let mesh = mesh_text(mesh);
            method = Method::POST;
            let expect = Expect::Register {
                mesh: peerchannel::MeshId::new(&mesh)
                    .ok()
                    .map(|m| m.as_str().to_owned()),
                // The same parse as the service's: a registration that succeeds names this
                // peer.
                peer: serde_json::from_slice::<RegisterRequest>(&body)
                    .ok()
                    .map(|r| r.peer_id),
            };
            (format!("/v1/meshes/{mesh}/registrations"), expect)
        }
        Target::Update(mesh, id) => {
            if method != Method::DELETE {
                method = Method::PUT;
            }
            use_id(mesh, id, issued, "", &method)
        }
        Target::Refresh(mesh, id) => {
            method = Method::POST;
            use_id(mesh, id, issued, "/refresh", &method)
        }
        Target::Peers(mesh, query) => {
            let mesh = mesh_text(mesh);
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            (format!("/v1/meshes/{mesh}/peers{query}"), Expect::Other)
        }
        Target::Settings => ("/v1/settings".to_owned(), Expect::Other),
        Target::Health => ("/healthz".to_owned(), Expect::Other),
        Target::Metrics => ("/metrics".to_owned(), Expect::Other),
        Target::Raw(path) => (path, Expect::Other),
    };
    let source = SOURCES[usize::from(req.source) % SOURCES.len()];
    let mut builder = Request::builder().method(method).uri(path);
    if req.json {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let mut request = builder.body(HttpBody::from(body)).ok()?;
    request
        .extensions_mut()
        .insert(ConnectInfo(ClientAddr(SocketAddr::new(source, 40000))));
    Some((request, expect))
}

fn mesh_text(mesh: MeshChoice) -> String {
    match mesh {
        MeshChoice::Known(n) => MESHES[usize::from(n) % MESHES.len()].to_owned(),
        MeshChoice::Raw(s) => s,
    }
}

/// A request on a registration: its path, and which issued registration it names (only a
/// path built from an issued id and the same mesh can).
fn use_id(
    mesh: MeshChoice,
    id: IdChoice,
    issued: &[Issued],
    suffix: &str,
    method: &Method,
) -> (String, Expect) {
    let mesh = mesh_text(mesh);
    let id = match id {
        IdChoice::Issued(n) if !issued.is_empty() => {
            issued[usize::from(n) % issued.len()].id.clone()
        }
        IdChoice::Issued(_) => String::new(),
        IdChoice::Guess(s) => s,
    };
    let normalised = peerchannel::MeshId::new(&mesh).ok();
    let names = issued
        .iter()
        .find(|i| i.id == id && normalised.as_ref().is_some_and(|m| m.as_str() == i.mesh))
        .cloned();
    let expect = Expect::UseId {
        issued: names,
        method: method.clone(),
    };
    (
        format!("/v1/meshes/{mesh}/registrations/{id}{suffix}"),
        expect,
    )
}

fn body_bytes(body: BodyChoice) -> Vec<u8> {
    match body {
        BodyChoice::Empty => Vec::new(),
        BodyChoice::Raw(bytes) => bytes,
        BodyChoice::Register { peer, addresses } => serde_json::json!({
            "peer_id": peer_id(peer),
            "addresses": addresses.into_iter().map(addr).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes(),
        BodyChoice::Update { addresses } => serde_json::json!({
            "addresses": addresses.into_iter().map(addr).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes(),
        BodyChoice::Odd {
            peer,
            addresses,
            repeat,
            nest,
        } => {
            // Keys repeated, unknown keys, and a deeply nested unknown value: written by hand,
            // since a JSON map cannot hold a key twice.
            let addresses =
                serde_json::Value::from(addresses.into_iter().map(addr).collect::<Vec<_>>());
            let mut text = String::from("{");
            for n in 0..=u32::from(repeat % 8) {
                text.push_str(&format!(
                    "\"peer_id\":\"{}\",\"addresses\":{addresses},",
                    peer_id(peer.wrapping_add(n as u8))
                ));
            }
            let depth = usize::from(nest) * 4;
            text.push_str("\"extra\":");
            text.push_str(&"[".repeat(depth));
            text.push_str(&"]".repeat(depth));
            if depth == 0 {
                text.push_str("null");
            }
            text.push('}');
            text.into_bytes()
        }
    }
}

fn peer_id(n: u8) -> String {
    peerchannel::PeerId::from_bytes([n; 32]).to_string()
}

fn addr(a: Addr) -> String {
    match a {
        Addr::V4(ip, port) => SocketAddr::from((ip, port)).to_string(),
        Addr::V6(ip, port) => SocketAddr::from((Ipv6Addr::from(ip), port)).to_string(),
        Addr::Raw(s) => s,
    }
}
