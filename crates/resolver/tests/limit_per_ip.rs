//! One source address holds at most `max_registrations_per_ip` registrations.

use crate::common;

use common::*;
use peerchannel::resolver::api::error_code;
use peerchannel_resolver::ResolverConfig;
use reqwest::StatusCode;

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share() {
    let config = ResolverConfig {
        max_registrations_per_ip: 2,
        ..ResolverConfig::relaxed()
    };
    let server = start(config).await;
    let url = |mesh: &str| format!("{}/v1/meshes/{mesh}/registrations", server.url());
    let first_host = raw_from([127, 0, 0, 1]);
    let second_host = raw_from([127, 0, 0, 2]);

    for (n, mesh) in [(1, "a"), (2, "b")] {
        let response = first_host
            .post(url(mesh))
            .json(&registration(n, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    // The limit counts across meshes.
    let response = first_host
        .post(url("c"))
        .json(&registration(3, 1))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body.code, error_code::TOO_MANY_REGISTRATIONS_FROM_ADDRESS);
    assert_eq!(body.limit, Some(2));
    assert!(
        body.error.contains("your address holds 2 registrations"),
        "{}",
        body.error
    );

    // Replacing one's own registration is fine at the limit.
    let response = first_host
        .post(url("a"))
        .json(&registration(1, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // Another address has its own share.
    for n in 3..=4 {
        let response = second_host
            .post(url("c"))
            .json(&registration(n, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let response = second_host
        .post(url("c"))
        .json(&registration(5, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}
