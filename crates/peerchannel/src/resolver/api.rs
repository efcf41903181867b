//! The HTTP/JSON API of the resolver service, shared by its client ([`super::ServiceResolver`])
//! and its server (the `peerchannel-resolver` crate).
//!
//! | request | body | answer |
//! | --- | --- | --- |
//! | `POST /v1/meshes/{mesh}/registrations` | [`RegisterRequest`] | `201` [`RegisterResponse`] |
//! | `PUT /v1/meshes/{mesh}/registrations/{id}` | [`UpdateRequest`] | `200` [`LifetimeResponse`] |
//! | `POST /v1/meshes/{mesh}/registrations/{id}/refresh` | none | `200` [`LifetimeResponse`] |
//! | `DELETE /v1/meshes/{mesh}/registrations/{id}` | none | `204` |
//! | `GET /v1/meshes/{mesh}/peers?max=N` | none | `200` [`PeersResponse`] |
//! | `GET /v1/settings` | none | `200` [`Settings`] |
//! | `GET /healthz` | none | `200` [`Health`] |
//! | `GET /metrics` | none | `200` Prometheus text |
//!
//! Every error is a 4xx or 5xx status with an [`ErrorBody`]. An unknown registration id is
//! `404` with the code [`error_code::REGISTRATION_NOT_FOUND`]. Peer ids are lowercase base32
//! strings, addresses are `"ip:port"` strings (`"[::1]:4433"` for IPv6).
//!
//! Compatibility: fields are never removed; new ones come with a default, and unknown fields
//! are ignored, so older and newer clients and servers understand each other.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::PeerId;

/// The prefix of every versioned path.
pub const API_PREFIX: &str = "/v1";

/// The body of `POST /v1/meshes/{mesh}/registrations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The registering node's peer id.
    pub peer_id: PeerId,
    /// Where it listens, most preferred first.
    pub addresses: Vec<SocketAddr>,
}

/// The answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The secret token that refreshes, updates or deletes the registration.
    pub registration_id: String,
    /// Seconds until the registration expires unless refreshed.
    pub lifetime_s: u64,
}

/// The body of `PUT /v1/meshes/{mesh}/registrations/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// The new addresses, replacing the old ones.
    pub addresses: Vec<SocketAddr>,
}

/// The answer to an update or a refresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeResponse {
    /// Seconds until the registration expires unless refreshed again.
    pub lifetime_s: u64,
}

/// The answer to `GET /v1/meshes/{mesh}/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersResponse {
    /// A random sample of the mesh's live registrations.
    pub peers: Vec<PeerEntry>,
}

/// One registered member of a mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Where it listens.
    pub addresses: Vec<SocketAddr>,
}

/// The answer to `GET /v1/settings`: the service's lifetime and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Seconds a registration lives unless refreshed.
    pub lifetime_s: u64,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The most addresses one registration may carry.
    pub max_addresses: usize,
    /// The number of peers `GET .../peers` returns when `max` is not given.
    pub default_peers: usize,
    /// The most peers `GET .../peers` returns, whatever `max` says.
    pub max_peers: usize,
    /// The most live registrations in one mesh.
    pub max_registrations_per_mesh: usize,
    /// The most live registrations made from one source address (IPv6: one /64).
    pub max_registrations_per_ip: usize,
    /// The most live registrations in total.
    pub max_registrations: usize,
    /// The most meshes with live registrations.
    pub max_meshes: usize,
    /// Requests per second allowed from one source address, sustained.
    pub requests_per_second: u32,
    /// Requests allowed from one source address in a burst.
    pub request_burst: u32,
}

/// The answer to `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"`.
    pub status: String,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// What went wrong, for a program: one of [`error_code`].
    #[serde(default)]
    pub code: String,
    /// For `429`: seconds to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// For an exceeded limit: the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// The machine-readable codes of [`ErrorBody::code`].
pub mod error_code {
    /// The request body is not valid JSON, or not of the expected shape.
    pub const INVALID_BODY: &str = "invalid_body";
    /// The request body is not declared as `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// The request body is larger than the service accepts.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// The path does not decode (bad percent-encoding or not UTF-8).
    pub const INVALID_PATH: &str = "invalid_path";
    /// The mesh id in the path is not a valid hostname.
    pub const INVALID_MESH_ID: &str = "invalid_mesh_id";
    /// A query parameter is malformed.
    pub const INVALID_QUERY: &str = "invalid_query";
    /// An address is unusable (unspecified, port 0, multicast) or there are none.
    pub const INVALID_ADDRESS: &str = "invalid_address";
    /// More addresses than one registration may carry.
    pub const TOO_MANY_ADDRESSES: &str = "too_many_addresses";
    /// The registration id is unknown: it expired, was deleted, or the service restarted.
    pub const REGISTRATION_NOT_FOUND: &str = "registration_not_found";
    /// No such path.
    pub const NOT_FOUND: &str = "not_found";
    /// The path exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The mesh holds as many registrations as allowed.
    pub const MESH_FULL: &str = "mesh_full";
    /// The source address holds as many registrations as allowed.
    pub const TOO_MANY_REGISTRATIONS_FROM_ADDRESS: &str = "too_many_registrations_from_address";
    /// The service holds as many meshes as allowed.
    pub const TOO_MANY_MESHES: &str = "too_many_meshes";
    /// The service holds as many registrations as allowed.
    pub const TOO_MANY_REGISTRATIONS: &str = "too_many_registrations";
    /// Too many requests from this source address; see `retry_after_s`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The service failed.
    pub const INTERNAL: &str = "internal";
}

/// The path of a mesh's registrations: `/v1/meshes/{mesh}/registrations`.
pub fn registrations_path(mesh: &str) -> String {
    format!("{API_PREFIX}/meshes/{mesh}/registrations")
}

/// The path of a mesh's peers: `/v1/meshes/{mesh}/peers`.
pub fn peers_path(mesh: &str) -> String {
    format!("{API_PREFIX}/meshes/{mesh}/peers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_request_is_plain_json() {
        let request = RegisterRequest {
            peer_id: PeerId::from_bytes([0; 32]),
            addresses: vec![
                "127.0.0.1:4433".parse().unwrap(),
                "[::1]:4433".parse().unwrap(),
            ],
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "peer_id": "a".repeat(52),
                "addresses": ["127.0.0.1:4433", "[::1]:4433"],
            })
        );
        assert_eq!(
            serde_json::from_value::<RegisterRequest>(json).unwrap(),
            request
        );
    }

    #[test]
    fn error_body_tolerates_missing_and_unknown_fields() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error": "no", "from_the_future": 1}"#).unwrap();
        assert_eq!(body.error, "no");
        assert_eq!(body.code, "");
        assert_eq!(body.retry_after_s, None);
        let text = serde_json::to_string(&ErrorBody {
            error: "x".into(),
            code: error_code::MESH_FULL.into(),
            retry_after_s: None,
            limit: Some(3),
        })
        .unwrap();
        assert_eq!(text, r#"{"error":"x","code":"mesh_full","limit":3}"#);
    }
}
