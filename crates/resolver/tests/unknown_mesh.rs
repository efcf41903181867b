//! A mesh nobody registered in is an empty list, not an error: every mesh starts that way.

use crate::common;

use common::*;
use peerchannel::resolver::Resolver;
use reqwest::StatusCode;

#[tokio::test]
async fn an_unknown_mesh_has_no_peers() {
    let server = start_relaxed().await;
    let response = raw()
        .get(format!("{}/v1/meshes/never-seen/peers", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"peers": []})
    );
    assert!(
        client(&server)
            .resolve(&mesh("never-seen"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_mesh_whose_last_member_left_is_unknown_again() {
    let server = start_relaxed().await;
    let client = client(&server);
    let m = mesh("brief");
    let registration = client.register(&m, peer(1), &[addr(1)]).await.unwrap();
    assert_eq!(metric(&server, "peerchannel_resolver_meshes").await, 1.0);
    client.unregister(&m, &registration.id).await.unwrap();
    assert!(client.resolve(&m, 10).await.unwrap().is_empty());
    assert_eq!(metric(&server, "peerchannel_resolver_meshes").await, 0.0);
}
