//! The service holds at most `max_meshes` meshes and `max_registrations` registrations.

use crate::common;

use common::*;
use peerchannel::resolver::api::error_code;
use peerchannel::resolver::{Resolver, ResolverError};
use peerchannel_resolver::ResolverConfig;

fn code_of(err: ResolverError) -> String {
    match err {
        ResolverError::Rejected {
            status: 429, code, ..
        } => code,
        other => panic!("expected a 429 rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn meshes_in_total() {
    let config = ResolverConfig {
        max_meshes: 2,
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let client = client(&server);
    let first = client
        .register(&mesh("a"), peer(1), &[addr(1)])
        .await
        .unwrap();
    client
        .register(&mesh("b"), peer(1), &[addr(1)])
        .await
        .unwrap();
    // More members in an existing mesh are fine.
    client
        .register(&mesh("b"), peer(2), &[addr(2)])
        .await
        .unwrap();
    let err = client
        .register(&mesh("c"), peer(1), &[addr(1)])
        .await
        .unwrap_err();
    assert_eq!(code_of(err), error_code::TOO_MANY_MESHES);
    // A mesh whose last member left no longer counts.
    client.unregister(&mesh("a"), &first.id).await.unwrap();
    client
        .register(&mesh("c"), peer(1), &[addr(1)])
        .await
        .unwrap();
}

#[tokio::test]
async fn registrations_in_total() {
    let config = ResolverConfig {
        max_registrations: 3,
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let client = client(&server);
    for n in 1..=3 {
        client
            .register(&mesh("a"), peer(n), &[addr(1)])
            .await
            .unwrap();
    }
    let err = client
        .register(&mesh("b"), peer(9), &[addr(1)])
        .await
        .unwrap_err();
    assert_eq!(code_of(err), error_code::TOO_MANY_REGISTRATIONS);
}
