//! Password meshes over real QUIC links: the same password links and delivers; a wrong one is
//! an authentication failure on both sides with nothing delivered; a node with a password and
//! one without never link; other meshes on the same link carry on; the password never shows
//! in Debug output or logs.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::security::*;
use common::*;
use futures_util::FutureExt;
use peerchannel::security::{AuthFailure, SecurityMode};
use peerchannel::{MeshOptions, SendStatus};

#[tokio::test]
async fn the_same_password_links_and_delivers() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let am = a
        .join("net.p2p://club/chat", password("open sesame"))
        .await
        .unwrap();
    let bm = b
        .join("net.p2p://club/chat", password("open sesame"))
        .await
        .unwrap();
    let mut ac = am.raw_channel("chat").unwrap();
    let mut bc = bm.raw_channel("chat").unwrap();
    neighbors_at_least(&am, 1).await;
    neighbors_at_least(&bm, 1).await;

    bc.send(&b"hello a"[..]).await.unwrap();
    let got = within("b's message at a", ac.recv()).await.unwrap();
    assert_eq!((&got.body[..], got.from), (&b"hello a"[..], b.peer_id()));
    ac.send(&b"hello b"[..]).await.unwrap();
    let got = within("a's message at b", bc.recv()).await.unwrap();
    assert_eq!(&got.body[..], b"hello b");
    assert!(
        am.security_stats().admitted >= 1,
        "{:?}",
        am.security_stats()
    );
    assert_eq!(am.security_stats().refused, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_fails_on_both_sides_and_delivers_nothing() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    // An open mesh on the same link, as a control: it keeps working, and its message, sent
    // after the closed mesh's, shows that nothing of the closed mesh came before it.
    let actl = a.join("control", MeshOptions::default()).await.unwrap();
    let am = a.join("club", password("right")).await.unwrap();
    let mut a_events = am.events();
    let bctl = b.join("control", MeshOptions::default()).await.unwrap();
    let bm = b.join("club", password("wrong")).await.unwrap();
    let mut b_events = bm.events();
    let mut ac = am.raw_channel("chat").unwrap();
    let mut actl_c = actl.raw_channel("chat").unwrap();
    let bc = bm.raw_channel("chat").unwrap();
    let bctl_c = bctl.raw_channel("chat").unwrap();

    let (peer, reason) = auth_failure(&bm, &mut b_events).await;
    assert_eq!((peer, reason), (a.peer_id(), AuthFailure::WrongPassword));
    let (peer, reason) = auth_failure(&am, &mut a_events).await;
    assert_eq!((peer, reason), (b.peer_id(), AuthFailure::WrongPassword));
    assert!(am.neighbors().await.unwrap().is_empty());
    assert!(bm.neighbors().await.unwrap().is_empty());

    // b is offline in the closed mesh: its message waits, it is not sent to a.
    assert_eq!(bc.send(&b"secret"[..]).await.unwrap(), SendStatus::Queued);
    neighbors_at_least(&bctl, 1).await;
    bctl_c.send(&b"control"[..]).await.unwrap();
    let got = within("the control message", actl_c.recv()).await.unwrap();
    assert_eq!(&got.body[..], b"control");
    assert!(
        ac.recv().now_or_never().is_none(),
        "nothing of the closed mesh was delivered"
    );
    assert!(am.security_stats().refused >= 1 && bm.security_stats().refused >= 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_with_a_password_and_one_without_never_link() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let am = a.join("club", password("right")).await.unwrap();
    let mut a_events = am.events();
    let bm = b.join("club", MeshOptions::default()).await.unwrap();
    let mut b_events = bm.events();

    let (peer, reason) = auth_failure(&bm, &mut b_events).await;
    assert_eq!(peer, a.peer_id());
    assert_eq!(
        reason,
        AuthFailure::ModeMismatch {
            ours: SecurityMode::Open,
            theirs: SecurityMode::Password
        }
    );
    let (peer, reason) = auth_failure(&am, &mut a_events).await;
    assert_eq!(peer, b.peer_id());
    assert_eq!(
        reason,
        AuthFailure::ModeMismatch {
            ours: SecurityMode::Password,
            theirs: SecurityMode::Open
        }
    );
    assert!(am.neighbors().await.unwrap().is_empty());
    assert!(bm.neighbors().await.unwrap().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

/// Log lines written while the test's node runs (the test runs on one thread, so a
/// thread-local subscriber sees everything its node logs).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_password_never_appears_in_debug_output_or_logs() {
    const SECRET: &str = "pa55-w0rd-in-plain-sight";
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let options = password(SECRET);
    assert!(!format!("{options:?}").contains(SECRET));
    assert!(!format!("{:?}", options.security).contains(SECRET));
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let c = node(&[&a]).await;
    let am = a.join("club", options).await.unwrap();
    let bm = b.join("club", password(SECRET)).await.unwrap();
    let cm = c.join("club", password("not the secret")).await.unwrap();
    let mut c_events = cm.events();
    neighbors_at_least(&bm, 1).await;
    auth_failure(&cm, &mut c_events).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
    drop(am);

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("peer admitted"),
        "the capture saw the handshakes: {logs}"
    );
    assert!(!logs.contains(SECRET), "the password was logged");
}
