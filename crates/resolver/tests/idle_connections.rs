//! Connections that make no progress are closed, and the number open at once is capped, so
//! that idle or slow clients cannot hold the service's file descriptors.

use crate::common;

use std::time::Duration;

use common::*;
use peerchannel::resolver::Resolver;
use peerchannel_resolver::ResolverConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let config = ResolverConfig {
        idle_timeout: Duration::from_millis(300),
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    // Half a request line, then nothing.
    silent.write_all(b"GET /heal").await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("the server closed the connection");
    // Closed: end of stream, or a reset.
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let config = ResolverConfig {
        max_connections: 2,
        idle_timeout: Duration::from_millis(500),
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let client = client(&server);
    // Two idle connections take both slots...
    let _first = TcpStream::connect(server.local_addr()).await.unwrap();
    let _second = TcpStream::connect(server.local_addr()).await.unwrap();
    // ...so a real request is served only once the idle timeout frees one.
    let started = tokio::time::Instant::now();
    tokio::time::timeout(DEADLINE, client.resolve(&mesh("m"), 5))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "served before a slot was free"
    );
}
