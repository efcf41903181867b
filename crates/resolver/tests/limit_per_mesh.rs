//! A mesh holds at most `max_registrations_per_mesh` registrations.

use crate::common;

use common::*;
use peerchannel::resolver::api::error_code;
use peerchannel::resolver::{Resolver, ResolverError};
use peerchannel_resolver::ResolverConfig;
use reqwest::StatusCode;

#[tokio::test]
async fn a_full_mesh_refuses_newcomers_until_someone_leaves() {
    let config = ResolverConfig {
        max_registrations_per_mesh: 3,
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let client = client(&server);
    let m = mesh("small");
    let mut registrations = Vec::new();
    for n in 1..=3 {
        registrations.push(
            client
                .register(&m, peer(n), &[addr(n.into())])
                .await
                .unwrap(),
        );
    }

    let err = client.register(&m, peer(4), &[addr(4)]).await.unwrap_err();
    match &err {
        ResolverError::Rejected {
            status: 429,
            code,
            message,
            ..
        } => {
            assert_eq!(code, error_code::MESH_FULL);
            assert!(message.contains("3 registrations"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let (status, body) = error_of(
        raw()
            .post(format!("{}/v1/meshes/small/registrations", server.url()))
            .json(&registration(4, 4))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.code.as_str(), body.limit),
        (
            StatusCode::TOO_MANY_REQUESTS,
            error_code::MESH_FULL,
            Some(3)
        )
    );

    // A member registering again replaces itself: no extra room needed.
    client.register(&m, peer(2), &[addr(22)]).await.unwrap();
    // Other meshes are not affected.
    client
        .register(&mesh("other"), peer(4), &[addr(4)])
        .await
        .unwrap();
    // Once someone leaves, there is room.
    client.unregister(&m, &registrations[0].id).await.unwrap();
    client.register(&m, peer(4), &[addr(4)]).await.unwrap();
    assert_eq!(client.resolve(&m, 10).await.unwrap().len(), 3);
    assert_eq!(
        metric(
            &server,
            r#"peerchannel_resolver_rejections_total{reason="mesh_full"}"#
        )
        .await,
        2.0
    );
}
