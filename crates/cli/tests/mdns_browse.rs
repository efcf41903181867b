//! `peerchannel browse`: nodes appear as they join, a node that leaves goes at once, a node that
//! is killed goes within the record's TTL (in practice within the browser's verification
//! interval), and `--once --mesh` prints a snapshot of one mesh. Runs in a network namespace
//! of its own with only loopback.

use crate::mdns_common;
use crate::netns;

use std::time::{Duration, Instant};

use mdns_common::*;

/// How long a killed node may stay listed: the records' TTL (two minutes, see
/// `peerchannel::resolver::RECORD_TTL`), plus slack for the last refresh and the check.
const KILLED_DEADLINE: Duration = Duration::from_secs(135);

/// How long a node that left with a goodbye may stay listed.
const LEFT_DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn browse_follows_nodes_as_they_come_and_go() {
    netns::isolated(
        "mdns_browse::browse_follows_nodes_as_they_come_and_go",
        || {
            let mut browse = Proc::spawn("browse", &["browse"]);
            browse.expect_stderr("browsing _peerchannel._udp.local.");

            let started = Instant::now();
            let mut ann = Proc::chat("ann", "alpha", &["--discovery", "mdns"]);
            let mut ben = Proc::chat("ben", "beta", &["--discovery", "mdns"]);
            let ann_line = browse.wait_line(DEADLINE, "ann listed", |l| l.starts_with("+ alpha "));
            let ben_line = browse.wait_line(DEADLINE, "ben listed", |l| l.starts_with("+ beta "));
            println!("both listed {:?} after they started", started.elapsed());
            for line in [&ann_line, &ben_line] {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields.len(), 4, "+ mesh peer addresses: {line}");
                assert_eq!(fields[2].len(), 52, "a base32 peer id: {line}");
                assert!(fields[3].starts_with("127.0.0.1:"), "{line}");
            }

            // A snapshot of one mesh, for scripts.
            let once = peerchannel()
                .args(["browse", "--once", "--mesh", "alpha"])
                .output()
                .expect("run browse --once");
            assert!(once.status.success());
            let listed = String::from_utf8_lossy(&once.stdout).into_owned();
            assert_eq!(
                listed.lines().collect::<Vec<_>>(),
                [&ann_line[2..]],
                "{listed}"
            );

            // A node that leaves says goodbye: it goes at once.
            let leaving = Instant::now();
            ben.say("q");
            assert_eq!(ben.wait(), Some(0));
            let gone = format!("- {}", &ben_line[2..]);
            browse.wait_line(LEFT_DEADLINE, "ben gone", |l| l == gone);
            println!(
                "a node that left went {:?} after it was told to",
                leaving.elapsed()
            );

            // A node that is killed sends nothing: it goes when its records are found stale.
            let killed = Instant::now();
            ann.kill();
            let gone = format!("- {}", &ann_line[2..]);
            browse.wait_line(KILLED_DEADLINE, "ann gone", |l| l == gone);
            println!(
                "a killed node went {:?} after it was killed",
                killed.elapsed()
            );
        },
    );
}
