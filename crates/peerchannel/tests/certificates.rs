//! Certificate meshes over real QUIC links: members with certificates from the mesh CA link
//! and deliver; a certificate from another CA, an expired one, none, or one for another key is
//! refused with its reason, on a link that stays up for anything else.

use crate::common;

use std::time::{Duration, SystemTime};

use common::security::*;
use common::*;
use peerchannel::resolver::StaticResolver;
use peerchannel::security::certificate::MeshCa;
use peerchannel::security::{AuthFailure, MemberCertificate, MeshSecurity, SecurityMode};
use peerchannel::{Identity, Mesh, MeshId, MeshOptions, Node, NodeConfig};

const MESH: &str = "plant";

fn ca() -> MeshCa {
    MeshCa::generate(&MeshId::new(MESH).unwrap()).unwrap()
}

/// A node with `identity` on loopback, bootstrapping from `peers`.
async fn node_with(identity: Identity, peers: &[&Node]) -> Node {
    let mut config = NodeConfig::default().listen("127.0.0.1:0".parse().unwrap());
    if !peers.is_empty() {
        let addrs = peers.iter().map(|p| (p.peer_id(), p.local_addr()));
        config = config.resolver(std::sync::Arc::new(StaticResolver::from_peers(addrs)));
    }
    Node::bind(identity, config).await.unwrap()
}

fn member(ca: &MeshCa, certificate: rustls::pki_types::CertificateDer<'static>) -> MeshOptions {
    MeshOptions::default().with_security(MeshSecurity::Certificate(MemberCertificate::new(
        ca.certificate().clone(),
        certificate,
    )))
}

/// Joins `a` with a good certificate and `b` with `b_options`; returns both meshes' first
/// authentication failures.
async fn refused(
    b_options: impl FnOnce(&MeshCa, &Identity) -> MeshOptions,
) -> ((Mesh, AuthFailure), (Mesh, AuthFailure)) {
    let ca = ca();
    let (ka, kb) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let options_b = b_options(&ca, &kb);
    let a = node_with(ka.clone(), &[]).await;
    let b = node_with(kb.clone(), &[&a]).await;
    let am = a
        .join(MESH, member(&ca, ca.issue(ka.peer_id(), 1).unwrap()))
        .await
        .unwrap();
    let mut ae = am.events();
    let bm = b.join(MESH, options_b).await.unwrap();
    let mut be = bm.events();
    let (peer, ra) = auth_failure(&am, &mut ae).await;
    assert_eq!(peer, b.peer_id());
    let (peer, rb) = auth_failure(&bm, &mut be).await;
    assert_eq!(peer, a.peer_id());
    assert!(am.neighbors().await.unwrap().is_empty());
    assert!(bm.neighbors().await.unwrap().is_empty());
    ((am, ra), (bm, rb))
}

#[tokio::test]
async fn members_of_the_same_ca_link_and_deliver() {
    let ca = ca();
    let (ka, kb) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let a = node_with(ka.clone(), &[]).await;
    let b = node_with(kb.clone(), &[&a]).await;
    let am = a
        .join(MESH, member(&ca, ca.issue(ka.peer_id(), 1).unwrap()))
        .await
        .unwrap();
    let bm = b
        .join(MESH, member(&ca, ca.issue(kb.peer_id(), 1).unwrap()))
        .await
        .unwrap();
    let mut ac = am.raw_channel("telemetry").unwrap();
    let bc = bm.raw_channel("telemetry").unwrap();
    neighbors_at_least(&am, 1).await;
    neighbors_at_least(&bm, 1).await;
    bc.send(&b"42"[..]).await.unwrap();
    let got = within("b's message at a", ac.recv()).await.unwrap();
    assert_eq!((&got.body[..], got.from), (&b"42"[..], b.peer_id()));
    assert!(am.security_stats().admitted >= 1);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ((_, at_a), (_, at_b)) = refused(|_, kb| {
        let other = MeshCa::generate(&MeshId::new(MESH).unwrap()).unwrap();
        member(&other, other.issue(kb.peer_id(), 1).unwrap())
    })
    .await;
    // Each side refuses the other's certificate: neither trusts the other's CA.
    assert_eq!(at_a, AuthFailure::UnknownIssuer, "at a: {at_a}");
    assert!(
        matches!(
            &at_b,
            AuthFailure::UnknownIssuer | AuthFailure::RefusedByPeer(_)
        ),
        "at b: {at_b}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    // b's certificate expires two seconds after it is issued; b joins once it has (the node's
    // own check at join would refuse it first, which is not what this test is about).
    let ((_, at_a), (_, at_b)) = refused(|ca, kb| {
        let now = SystemTime::now();
        let not_after = now + Duration::from_secs(2);
        let cert = ca
            .issue_valid(kb.peer_id(), now - Duration::from_secs(3600), not_after)
            .unwrap();
        while SystemTime::now() < not_after + Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let MeshSecurity::Certificate(m) = member(ca, cert).security else {
            unreachable!()
        };
        MeshOptions::default().with_security(MeshSecurity::Certificate(m.danger_skip_own_check()))
    })
    .await;
    assert!(
        matches!(at_a, AuthFailure::CertificateExpired(_)),
        "at a: {at_a}"
    );
    match &at_b {
        AuthFailure::RefusedByPeer(reason) => assert!(reason.contains("validity"), "{reason}"),
        other => panic!("at b: {other}"),
    }
}

#[tokio::test]
async fn a_node_without_a_certificate_is_refused() {
    let ((_, at_a), (_, at_b)) = refused(|_, _| MeshOptions::default()).await;
    assert_eq!(
        at_a,
        AuthFailure::ModeMismatch {
            ours: SecurityMode::Certificate,
            theirs: SecurityMode::Open
        }
    );
    assert_eq!(
        at_b,
        AuthFailure::ModeMismatch {
            ours: SecurityMode::Open,
            theirs: SecurityMode::Certificate
        }
    );
}

#[tokio::test]
async fn a_certificate_for_another_key_is_refused() {
    let thief_victim = Identity::generate().unwrap().peer_id();
    let ((_, at_a), (_, at_b)) = refused(|ca, _| {
        // A valid member certificate, but of another node: b cannot prove it holds that key.
        let MeshSecurity::Certificate(m) = member(ca, ca.issue(thief_victim, 1).unwrap()).security
        else {
            unreachable!()
        };
        MeshOptions::default().with_security(MeshSecurity::Certificate(m.danger_skip_own_check()))
    })
    .await;
    assert_eq!(
        at_a,
        AuthFailure::CertificateKeyMismatch {
            certified: thief_victim
        }
    );
    assert!(
        matches!(at_b, AuthFailure::RefusedByPeer(_)),
        "at b: {at_b}"
    );
}

#[tokio::test]
async fn joining_with_an_unusable_own_certificate_fails_at_once() {
    let ca = ca();
    let key = Identity::generate().unwrap();
    let n = node_with(key.clone(), &[]).await;
    let other = Identity::generate().unwrap().peer_id();
    let err = n
        .join(MESH, member(&ca, ca.issue(other, 1).unwrap()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}
