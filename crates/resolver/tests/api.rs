//! Every path of the API, through the real client where it has a call for it.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use peerchannel::resolver::api::{self, error_code};
use peerchannel::resolver::{PeerAddr, Resolver, ResolverError};
use peerchannel_resolver::{ResolverConfig, config};
use reqwest::StatusCode;

#[tokio::test]
async fn register_resolve_update_refresh_unregister() {
    let server = start_relaxed().await;
    let client = client(&server);
    let m = mesh("soccerpals");

    let registration = client.register(&m, peer(1), &[addr(1)]).await.unwrap();
    assert_eq!(registration.lifetime, config::DEFAULT_LIFETIME);
    assert_eq!(registration.id.as_str().len(), 32, "160 bits in base32");
    assert_eq!(
        client.resolve(&m, 10).await.unwrap(),
        vec![PeerAddr::new(peer(1), vec![addr(1)])]
    );

    let lifetime = client
        .update(&m, &registration.id, &[addr(2), addr(3)])
        .await
        .unwrap();
    assert_eq!(lifetime, config::DEFAULT_LIFETIME);
    assert_eq!(
        client.resolve(&m, 10).await.unwrap()[0].addresses,
        vec![addr(2), addr(3)]
    );

    assert_eq!(
        client.refresh(&m, &registration.id).await.unwrap(),
        config::DEFAULT_LIFETIME
    );

    client.unregister(&m, &registration.id).await.unwrap();
    assert!(client.resolve(&m, 10).await.unwrap().is_empty());
    let again = client.unregister(&m, &registration.id).await.unwrap_err();
    assert!(
        matches!(again, ResolverError::RegistrationNotFound { .. }),
        "{again}"
    );
    let refresh = client.refresh(&m, &registration.id).await.unwrap_err();
    assert!(refresh.is_registration_not_found(), "{refresh}");
    let update = client
        .update(&m, &registration.id, &[addr(1)])
        .await
        .unwrap_err();
    assert!(update.is_registration_not_found(), "{update}");
}

#[tokio::test]
async fn raw_statuses_and_bodies_are_as_documented() {
    let server = start_relaxed().await;
    let http = raw();
    let base = server.url();

    let created = http
        .post(format!("{base}/v1/meshes/SoccerPals/registrations"))
        .json(&registration(1, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: api::RegisterResponse = created.json().await.unwrap();
    assert_eq!(created.lifetime_s, 60);
    let id = created.registration_id;
    // Mesh ids are case-insensitive: the same registration under the lowercase name.
    let registration_url = format!("{base}/v1/meshes/soccerpals/registrations/{id}");

    let updated = http
        .put(&registration_url)
        .json(&serde_json::json!({"addresses": ["[::1]:9"]}));
    let updated = updated.send().await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(
        updated
            .json::<api::LifetimeResponse>()
            .await
            .unwrap()
            .lifetime_s,
        60
    );

    let refreshed = http
        .post(format!("{registration_url}/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(
        refreshed
            .json::<api::LifetimeResponse>()
            .await
            .unwrap()
            .lifetime_s,
        60
    );

    let peers = http
        .get(format!("{base}/v1/meshes/soccerpals/peers"))
        .send()
        .await
        .unwrap();
    assert_eq!(peers.status(), StatusCode::OK);
    let peers: serde_json::Value = peers.json().await.unwrap();
    assert_eq!(
        peers,
        serde_json::json!({"peers": [{"peer_id": peer(1).to_string(), "addresses": ["[::1]:9"]}]})
    );

    let deleted = http.delete(&registration_url).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, body) = error_of(http.delete(&registration_url).send().await.unwrap()).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::NOT_FOUND, error_code::REGISTRATION_NOT_FOUND)
    );
    let (status, body) = error_of(
        http.post(format!("{registration_url}/refresh"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::NOT_FOUND, error_code::REGISTRATION_NOT_FOUND)
    );
}

#[tokio::test]
async fn registering_the_same_peer_again_replaces_it() {
    let server = start_relaxed().await;
    let client = client(&server);
    let m = mesh("m");
    let first = client.register(&m, peer(1), &[addr(1)]).await.unwrap();
    let second = client.register(&m, peer(1), &[addr(2)]).await.unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(
        client.resolve(&m, 10).await.unwrap(),
        vec![PeerAddr::new(peer(1), vec![addr(2)])]
    );
    assert!(
        client
            .refresh(&m, &first.id)
            .await
            .unwrap_err()
            .is_registration_not_found()
    );
    client.refresh(&m, &second.id).await.unwrap();
    // The same peer in another mesh is another registration.
    client
        .register(&mesh("other"), peer(1), &[addr(3)])
        .await
        .unwrap();
    assert_eq!(client.resolve(&m, 10).await.unwrap().len(), 1);
    assert_eq!(
        metric(&server, "peerchannel_resolver_replaced_total").await,
        1.0
    );
}

#[tokio::test]
async fn a_registration_id_only_works_in_its_own_mesh() {
    let server = start_relaxed().await;
    let client = client(&server);
    let registration = client
        .register(&mesh("a"), peer(1), &[addr(1)])
        .await
        .unwrap();
    let err = client
        .refresh(&mesh("b"), &registration.id)
        .await
        .unwrap_err();
    assert!(err.is_registration_not_found(), "{err}");
    let err = client
        .unregister(&mesh("b"), &registration.id)
        .await
        .unwrap_err();
    assert!(err.is_registration_not_found(), "{err}");
    assert_eq!(client.resolve(&mesh("a"), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn peers_are_a_bounded_random_sample() {
    let server = start_relaxed().await;
    let client = client(&server);
    let m = mesh("big");
    for n in 0..120u8 {
        client
            .register(&m, peer(n), &[addr(1000 + u16::from(n))])
            .await
            .unwrap();
    }
    let http = raw();
    let peers_url = format!("{}/v1/meshes/big/peers", server.url());
    let count = |body: serde_json::Value| body["peers"].as_array().map_or(0, Vec::len);
    let default: serde_json::Value = http
        .get(&peers_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count(default), config::DEFAULT_PEERS);
    let capped: serde_json::Value = http
        .get(format!("{peers_url}?max=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count(capped), config::MAX_PEERS);
    let none: serde_json::Value = http
        .get(format!("{peers_url}?max=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count(none), 0);

    let mut seen = HashSet::new();
    for _ in 0..20 {
        let sample = client.resolve(&m, 10).await.unwrap();
        assert_eq!(sample.len(), 10);
        let ids: HashSet<_> = sample.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids.len(), 10, "no duplicates in a sample");
        seen.extend(ids);
    }
    // 200 draws from 120: a fixed or sliding window would show 10 or 20 distinct peers.
    assert!(
        seen.len() > 60,
        "only {} distinct peers in 20 samples",
        seen.len()
    );
}

#[tokio::test]
async fn settings_health_and_metrics() {
    let config = ResolverConfig {
        lifetime: Duration::from_secs(42),
        ..ResolverConfig::default()
    };
    let server = start(config.clone()).await;
    let client = client(&server);
    assert_eq!(client.settings().await.unwrap(), config.to_api());

    let http = raw();
    let health = http
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<api::Health>().await.unwrap().status, "ok");

    client
        .register(&mesh("m"), peer(1), &[addr(1)])
        .await
        .unwrap();
    client
        .register(&mesh("n"), peer(1), &[addr(1)])
        .await
        .unwrap();
    let _ = http
        .get(format!("{}/nowhere", server.url()))
        .send()
        .await
        .unwrap();
    let metrics = http
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let content_type = metrics.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = metrics.text().await.unwrap();
    for line in [
        "peerchannel_resolver_registrations 2",
        "peerchannel_resolver_meshes 2",
        "peerchannel_resolver_registered_total 2",
        r#"peerchannel_resolver_requests_total{route="/v1/meshes/{mesh}/registrations",method="POST",status="201"} 2"#,
        r#"peerchannel_resolver_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"peerchannel_resolver_rejections_total{reason="not_found"} 1"#,
        "peerchannel_resolver_expirations_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn binding_a_port_in_use_says_so() {
    let server = start_relaxed().await;
    let err =
        peerchannel_resolver::ResolverServer::bind(server.local_addr(), ResolverConfig::default())
            .await
            .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot listen on {}", server.local_addr())),
        "{text}"
    );
    assert!(
        text.contains("is another resolver running there?"),
        "{text}"
    );
}
