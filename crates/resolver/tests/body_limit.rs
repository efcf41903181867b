//! A request body larger than `max_body_bytes` gets 413 with a JSON error.

use crate::common;

use std::net::SocketAddr;

use common::*;
use peerchannel::resolver::api::{ErrorBody, error_code};
use peerchannel_resolver::{ResolverConfig, config};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let server = start_relaxed().await;
    let http = raw();
    let url = format!("{}/v1/meshes/m/registrations", server.url());
    // Valid JSON, just too big: a peer id followed by a long run of spaces.
    let padding = " ".repeat(config::MAX_BODY_BYTES);
    let body = format!(
        r#"{{"peer_id": "{}", {padding} "addresses": ["127.0.0.1:1"]}}"#,
        peer(1)
    );
    expect_error(
        post_json(&url, body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        error_code::BODY_TOO_LARGE,
    )
    .await;

    // Without a length announced up front (chunked), the limit holds as well.
    let (status, body) =
        post_chunked(server.local_addr(), "/v1/meshes/m/registrations", 4000).await;
    assert_eq!(status, 413, "{body}");
    let error: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(error.code, error_code::BODY_TOO_LARGE);

    // A body under the limit still works.
    let response = http
        .post(&url)
        .json(&registration(1, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_limit_is_configurable() {
    let server = start(ResolverConfig {
        max_body_bytes: 1024,
        ..ResolverConfig::relaxed()
    })
    .await;
    let url = format!("{}/v1/meshes/m/registrations", server.url());
    let padded = |size: usize| {
        let body = registration(1, 1).to_string();
        format!("{body}{}", " ".repeat(size - body.len()))
    };
    let send = |body: String| post_json(&url, body);
    assert_eq!(send(padded(1024)).await.status(), StatusCode::CREATED);
    assert_eq!(
        error_of(send(padded(1025)).await).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

/// Posts `chunks` chunks of 16 bytes with chunked transfer encoding, by hand (the test client
/// has no streaming bodies); returns the status and the body of the answer.
async fn post_chunked(server: SocketAddr, path: &str, chunks: usize) -> (u16, String) {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {server}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        // The server may answer and close before reading everything: stop writing then.
        if stream
            .write_all(b"10\r\n{\"peer_id\": \"aaa\r\n")
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    // The answer has a content-length (not chunked), so the body is the JSON as is.
    (status, body.to_owned())
}
