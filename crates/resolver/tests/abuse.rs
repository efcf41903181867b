//! Hostile clients: slow clients holding connections open, JSON with duplicated, huge or deeply
//! nested keys. The service refuses what is wrong with a 4xx, changes nothing it should not,
//! and keeps serving everyone else.
//!
//! (Floods from one address are in `limit_per_ip.rs` and `rate_limit.rs`, silent connections in
//! `idle_connections.rs`, oversized bodies in `body_limit.rs`, guessed registration ids in
//! `bad_input.rs`.)

use crate::common;

use std::time::Duration;

use common::*;
use peerchannel::resolver::Resolver;
use peerchannel::resolver::api::error_code;
use peerchannel_resolver::ResolverConfig;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a request may take while slow clients hold connections: far below the idle
/// timeout they would otherwise hold the service for.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn slow_clients_do_not_hold_up_others() {
    let server = start(ResolverConfig::relaxed()).await;
    let addr = server.local_addr();
    // Slowloris: connections that send a request a byte at a time, never finishing it, each
    // byte well within the idle timeout so that the service cannot tell them from a slow link.
    let request = b"POST /v1/meshes/slow/registrations HTTP/1.1\r\nHost: x\r\n\
                    Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"peer_id\":";
    let mut slow = Vec::new();
    for _ in 0..32 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        slow.push(tokio::spawn(async move {
            for byte in request.iter().cycle() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    let client = client(&server);
    let m = mesh("prompt");
    for n in 1..=10 {
        tokio::time::timeout(PROMPT, client.register(&m, peer(n), &[common::addr(1)]))
            .await
            .expect("a registration is served while slow clients dribble")
            .unwrap();
        let members = tokio::time::timeout(PROMPT, client.resolve(&m, 100))
            .await
            .expect("a lookup is served while slow clients dribble")
            .unwrap();
        assert_eq!(members.len(), usize::from(n));
    }
    for task in slow {
        task.abort();
    }
}

#[tokio::test]
async fn duplicated_and_huge_keys() {
    let server = start_relaxed().await;
    let url = format!("{}/v1/meshes/keys/registrations", server.url());
    let post = |body: String| post_json(&url, body);
    let id = peer(1).to_string();
    let other = peer(2).to_string();

    // A key given twice is refused, whichever value would have won.
    let twice = format!(r#"{{"peer_id":"{id}","peer_id":"{other}","addresses":["127.0.0.1:1"]}}"#);
    let body = expect_error(
        post(twice).await,
        StatusCode::BAD_REQUEST,
        error_code::INVALID_BODY,
    )
    .await;
    assert!(body.error.contains("duplicate field"), "{}", body.error);
    let twice =
        format!(r#"{{"peer_id":"{id}","addresses":["127.0.0.1:1"],"addresses":["127.0.0.1:2"]}}"#);
    let (status, _) = error_of(post(twice).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Unknown keys are ignored (newer clients may send more), even a 12 KiB one, or many.
    let huge_key = format!(
        r#"{{"{}":1,"peer_id":"{id}","addresses":["127.0.0.1:1"]}}"#,
        "k".repeat(12 * 1024)
    );
    assert_eq!(post(huge_key).await.status(), StatusCode::CREATED);
    let many: String = (0..1000).map(|i| format!(r#""k{i}":0,"#)).collect();
    let many_keys = format!(r#"{{{many}"peer_id":"{other}","addresses":["127.0.0.1:2"]}}"#);
    assert_eq!(post(many_keys).await.status(), StatusCode::CREATED);
    assert_eq!(
        client(&server)
            .resolve(&mesh("keys"), 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_harm() {
    let server = start_relaxed().await;
    let url = format!("{}/v1/meshes/nested/registrations", server.url());
    let id = peer(1).to_string();
    let depth = 6000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // In an unknown key, it is skipped without recursing (the body limit bounds its size).
    let ignored = format!(r#"{{"extra":{nested},"peer_id":"{id}","addresses":["127.0.0.1:1"]}}"#);
    assert_eq!(post_json(&url, ignored).await.status(), StatusCode::CREATED);
    for body in [
        // Where the addresses go.
        format!(r#"{{"peer_id":"{id}","addresses":{nested}}}"#),
        // Objects instead of arrays, unterminated.
        format!(
            r#"{{"peer_id":"{id}","addresses":{}"#,
            r#"{"a":"#.repeat(depth / 2)
        ),
    ] {
        expect_error(
            post_json(&url, body).await,
            StatusCode::BAD_REQUEST,
            error_code::INVALID_BODY,
        )
        .await;
    }
    // Still serving.
    let client = client(&server);
    client
        .register(&mesh("nested"), peer(2), &[addr(2)])
        .await
        .unwrap();
    assert_eq!(client.resolve(&mesh("nested"), 10).await.unwrap().len(), 2);
}
