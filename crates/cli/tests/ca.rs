//! `peerchannel ca init` and `peerchannel cert issue`: the files they write, their modes, and
//! that they are ordinary X.509 (`openssl verify` accepts a member certificate, when openssl is
//! installed).

use crate::common;

use std::process::Command;

use common::*;

#[test]
fn ca_init_and_cert_issue_write_certificates_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let key = dir.path().join("node.key");
    let cert = dir.path().join("node.pem");
    let (code, out, err) = run(&[
        "ca",
        "init",
        "--mesh",
        "plant",
        "--out",
        ca_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "stdout: {out}; stderr: {err}");
    assert!(out.contains("mesh CA for plant"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    }
    // A second init does not overwrite the CA.
    let (code, _, err) = run(&[
        "ca",
        "init",
        "--mesh",
        "plant",
        "--out",
        ca_dir.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("overwrite") || err.contains("exists"), "{err}");

    let (code, out, err) = run(&["identity", "new", "--out", key.to_str().unwrap()]);
    assert_eq!(code, Some(0), "stdout: {out}; stderr: {err}");
    let (code, out, err) = run(&[
        "cert",
        "issue",
        "--ca",
        ca_dir.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
        "--out",
        cert.to_str().unwrap(),
        "--days",
        "30",
    ]);
    assert_eq!(code, Some(0), "stdout: {out}; stderr: {err}");
    assert!(out.contains("valid 30 days"), "{out}");
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl is not installed: skipping `openssl verify`");
        return;
    }
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca_dir.join("ca.pem"))
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && text.contains(": OK"),
        "openssl verify: {text}"
    );
    // And a certificate from another CA is not accepted by openssl either.
    let other = dir.path().join("other");
    run(&[
        "ca",
        "init",
        "--mesh",
        "plant",
        "--out",
        other.to_str().unwrap(),
    ]);
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(other.join("ca.pem"))
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!verify.status.success(), "another CA must not verify it");
}

#[test]
fn cert_issue_explains_a_missing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    run(&["identity", "new", "--out", key.to_str().unwrap()]);
    let (code, _, err) = run(&[
        "cert",
        "issue",
        "--ca",
        dir.path().join("nowhere").to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
        "--out",
        dir.path().join("x.pem").to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("ca.key"), "{err}");
}
