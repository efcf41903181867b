//! Bad input gets one clear line on stderr and a non-zero exit code.

use crate::common;

use common::*;

#[test]
fn a_bad_mesh_id_is_refused() {
    let (code, _, err) = run(&[
        "chat",
        "--mesh",
        "no_underscores",
        "--nick",
        "x",
        "--peer",
        "127.0.0.1:9",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not allowed in a mesh id"), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn an_unreachable_resolver_is_an_error() {
    // Port 9 on loopback: nothing listens there. (With the default `auto` discovery a silent
    // resolver is only a warning, and mDNS takes over.)
    let (code, _, err) = run(&[
        "chat",
        "--mesh",
        "m",
        "--nick",
        "x",
        "--discovery",
        "resolver",
        "--resolver",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot reach the resolver at http://127.0.0.1:9"),
        "stderr: {err}"
    );
}

#[test]
fn a_port_in_use_is_an_error() {
    let (mut resolver, url) = resolver();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(&[
        "chat",
        "--mesh",
        "m",
        "--nick",
        "x",
        "--resolver",
        &url,
        "--listen",
        &addr,
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("cannot listen on {addr}")),
        "stderr: {err}"
    );
    resolver.kill();
}

#[test]
fn a_discovery_mode_without_its_inputs_is_an_error() {
    let (code, _, err) = run(&[
        "chat",
        "--mesh",
        "m",
        "--nick",
        "x",
        "--discovery",
        "static",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--discovery static needs at least one --peer"),
        "stderr: {err}"
    );
    let (code, _, err) = run(&[
        "chat",
        "--mesh",
        "m",
        "--nick",
        "x",
        "--discovery",
        "resolver",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--discovery resolver needs at least one --resolver"),
        "stderr: {err}"
    );
}

#[test]
fn a_resolver_that_cannot_listen_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(&["resolver", "--listen", &addr]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("cannot listen on {addr}")),
        "stderr: {err}"
    );
}

#[test]
fn every_command_explains_itself() {
    for args in [
        &["--help"][..],
        &["chat", "--help"],
        &["resolver", "--help"],
        &["identity", "--help"],
        &["demo", "--help"],
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, Some(0), "{args:?}");
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unrecognized subcommand"), "{err}");
}
