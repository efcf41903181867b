//! Runs a test in a network namespace of its own, so that its mDNS traffic reaches nothing
//! else: not the host's network, not the other tests running in parallel.
//!
//! The test binary runs itself again under `unshare --user --map-root-user --net` (which needs
//! no root, only unprivileged user namespaces), with only that test selected. In the new
//! namespace the only interface is loopback: it is brought up and given a route for multicast,
//! which is all mDNS needs. When no namespace can be created the test fails, loudly: it never
//! passes without having run.

use std::process::Command;

/// Set, to the test's name, in the re-run that is inside the namespace.
const INSIDE: &str = "PEERCHANNEL_TEST_NETNS";

/// Brings loopback up (multicast on, and 224.0.0.0/4 routed to it), then runs the command.
const SETUP: &str =
    "ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo && exec \"$@\"";

/// Runs `body` in a fresh network namespace with only loopback. Call it first thing in the
/// `#[test]` function named `test` (its full path in the test binary, e.g. `mdns::two_nodes`);
/// `body` runs in a child process, whose output is shown when it fails.
pub fn isolated(test: &str, body: impl FnOnce()) {
    if std::env::var_os(INSIDE).is_some() {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--net",
            "--",
            "sh",
            "-c",
            SETUP,
            "sh",
        ])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `unshare` ({e}): these tests need util-linux and iproute2")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success(),
        "{test} failed in its network namespace ({}). If the lines above say that `unshare` \
         or `ip` failed, this machine does not allow unprivileged user and network namespaces \
         (sysctl kernel.unprivileged_userns_clone=1, or user.max_user_namespaces > 0) or lacks \
         iproute2; the test cannot run without them.",
        output.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run in its network namespace"
    );
}
