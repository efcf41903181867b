//! Bad requests get a 4xx status and a JSON error body that says what is wrong.

use crate::common;

use common::*;
use peerchannel::resolver::api::error_code;
use peerchannel::resolver::{PeerAddr, Resolver};
use reqwest::StatusCode;

/// Posts `body` (raw bytes, as JSON) to the registrations of `mesh`.
async fn post_registration(mesh: &str, body: &'static str) -> reqwest::Response {
    let server = start_relaxed().await;
    let url = format!("{}/v1/meshes/{mesh}/registrations", server.url());
    let response = post_json(&url, body).await;
    // Keep the server until the answer is complete.
    drop(server);
    response
}

async fn expect(response: reqwest::Response, status: StatusCode, code: &str, says: &str) {
    let body = expect_error(response, status, code).await;
    println!("{status} {}: {}", body.code, body.error);
    assert!(
        body.error.contains(says),
        "`{}` does not say `{says}`",
        body.error
    );
}

#[tokio::test]
async fn malformed_json() {
    let response = post_registration("m", r#"{"peer_id": "#).await;
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
        "not valid JSON",
    )
    .await;
}

#[tokio::test]
async fn wrong_types_and_missing_fields() {
    let response = post_registration("m", r#"{"peer_id": 5, "addresses": []}"#).await;
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
        "peer_id",
    )
    .await;
    let response = post_registration("m", r#"{"addresses": ["127.0.0.1:1"]}"#).await;
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
        "peer_id",
    )
    .await;
    let response = post_registration("m", r#"[1, 2]"#).await;
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
        "expected",
    )
    .await;
}

#[tokio::test]
async fn bad_peer_id() {
    let response =
        post_registration("m", r#"{"peer_id": "abc", "addresses": ["127.0.0.1:1"]}"#).await;
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
        "a peer id is 52 base32",
    )
    .await;
    let bad_alphabet = r#"{"peer_id": "1111111111111111111111111111111111111111111111111111", "addresses": ["127.0.0.1:1"]}"#;
    let response = post_registration("m", bad_alphabet).await;
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
        "base32",
    )
    .await;
}

#[tokio::test]
async fn bad_addresses() {
    let server = start_relaxed().await;
    let url = format!("{}/v1/meshes/m/registrations", server.url());
    let http = raw();
    let with = |addresses: serde_json::Value| serde_json::json!({"peer_id": peer(1).to_string(), "addresses": addresses});

    let response = http
        .post(&url)
        .json(&with(serde_json::json!(["not an address"])))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
        "addresses",
    )
    .await;
    let response = http
        .post(&url)
        .json(&with(serde_json::json!([])))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_ADDRESS,
        "at least one address",
    )
    .await;
    let response = http
        .post(&url)
        .json(&with(serde_json::json!(["0.0.0.0:4433"])))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_ADDRESS,
        "unspecified",
    )
    .await;
    let many: Vec<String> = (1..=17).map(|port| addr(port).to_string()).collect();
    let response = http
        .post(&url)
        .json(&with(serde_json::json!(many)))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::TOO_MANY_ADDRESSES,
        "at most 16",
    )
    .await;
    // The same checks apply to an update.
    let created = http
        .post(&url)
        .json(&registration(1, 1))
        .send()
        .await
        .unwrap();
    let id = created.json::<serde_json::Value>().await.unwrap()["registration_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = http
        .put(format!("{url}/{id}"))
        .json(&serde_json::json!({"addresses": many}))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::TOO_MANY_ADDRESSES,
        "at most 16",
    )
    .await;
}

#[tokio::test]
async fn wrong_content_type() {
    let server = start_relaxed().await;
    let response = raw()
        .post(format!("{}/v1/meshes/m/registrations", server.url()))
        .header("content-type", "text/plain")
        .body(registration(1, 1).to_string())
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        error_code::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    )
    .await;
}

#[tokio::test]
async fn invalid_mesh_ids() {
    let server = start_relaxed().await;
    let http = raw();
    let long = "a".repeat(64);
    for mesh in ["bad_mesh", "-x", "a..b", long.as_str(), "caf%C3%A9"] {
        let response = http
            .post(format!("{}/v1/meshes/{mesh}/registrations", server.url()))
            .json(&registration(1, 1))
            .send();
        expect(
            response.await.unwrap(),
            StatusCode::BAD_REQUEST,
            error_code::INVALID_MESH_ID,
            "is not a mesh id",
        )
        .await;
        let response = http
            .get(format!("{}/v1/meshes/{mesh}/peers", server.url()))
            .send();
        expect(
            response.await.unwrap(),
            StatusCode::BAD_REQUEST,
            error_code::INVALID_MESH_ID,
            "is not a mesh id",
        )
        .await;
        let response = http
            .post(format!(
                "{}/v1/meshes/{mesh}/registrations/x/refresh",
                server.url()
            ))
            .send();
        expect(
            response.await.unwrap(),
            StatusCode::BAD_REQUEST,
            error_code::INVALID_MESH_ID,
            "is not a mesh id",
        )
        .await;
    }
}

#[tokio::test]
async fn bad_query() {
    let server = start_relaxed().await;
    let response = raw()
        .get(format!("{}/v1/meshes/m/peers?max=lots", server.url()))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_QUERY,
        "max",
    )
    .await;
    let response = raw()
        .get(format!("{}/v1/meshes/m/peers?max=-1", server.url()))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_QUERY,
        "max",
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let server = start_relaxed().await;
    let http = raw();
    for path in [
        "/",
        "/v2/meshes/m/peers",
        "/v1/meshes/m",
        "/v1/meshes/m/registrations/x/y/z",
    ] {
        let response = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        expect(
            response,
            StatusCode::NOT_FOUND,
            error_code::NOT_FOUND,
            "no such path",
        )
        .await;
    }
    let response = http
        .delete(format!("{}/v1/meshes/m/peers", server.url()))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        error_code::METHOD_NOT_ALLOWED,
        "DELETE is not allowed",
    )
    .await;
    let response = http
        .get(format!("{}/v1/meshes/m/registrations", server.url()))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        error_code::METHOD_NOT_ALLOWED,
        "GET",
    )
    .await;
}

#[tokio::test]
async fn unknown_registration_ids() {
    let server = start_relaxed().await;
    let m = mesh("m");
    let registration = client(&server)
        .register(&m, peer(1), &[addr(1)])
        .await
        .unwrap();
    // Any id, and ids near the real one (ids are looked up whole, case and all).
    let id = registration.id.as_str().to_owned();
    let mut last_changed = id.clone();
    let last = last_changed.pop().unwrap();
    last_changed.push(if last == 'a' { 'b' } else { 'a' });
    let guesses = [
        "a".repeat(32),
        last_changed,
        id[..id.len() - 1].to_owned(),
        format!("{id}a"),
        id.to_ascii_uppercase(),
        peer(1).to_string(),
        "0".to_owned(),
    ];
    let http = raw();
    let base = format!("{}/v1/meshes/m/registrations", server.url());
    for guess in &guesses {
        let refresh = http.post(format!("{base}/{guess}/refresh")).send();
        let update = http
            .put(format!("{base}/{guess}"))
            .json(&serde_json::json!({"addresses": ["127.0.0.1:2"]}))
            .send();
        let delete = http.delete(format!("{base}/{guess}")).send();
        for response in [refresh.await, update.await, delete.await] {
            expect(
                response.unwrap(),
                StatusCode::NOT_FOUND,
                error_code::REGISTRATION_NOT_FOUND,
                "register again",
            )
            .await;
        }
    }
    // Untouched: still there, with its own address, and its id still works.
    assert_eq!(
        client(&server).resolve(&m, 10).await.unwrap(),
        vec![PeerAddr::new(peer(1), vec![addr(1)])]
    );
    client(&server)
        .refresh(&m, &registration.id)
        .await
        .expect("the real id still works");
}

#[tokio::test]
async fn paths_that_do_not_decode() {
    let server = start_relaxed().await;
    let response = raw()
        .get(format!("{}/v1/meshes/%FF/peers", server.url()))
        .send()
        .await
        .unwrap();
    expect(
        response,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_PATH,
        "",
    )
    .await;
    let response = raw()
        .post(format!(
            "{}/v1/meshes/m/registrations/%C3%28/refresh",
            server.url()
        ))
        .send();
    expect(
        response.await.unwrap(),
        StatusCode::BAD_REQUEST,
        error_code::INVALID_PATH,
        "",
    )
    .await;
}
