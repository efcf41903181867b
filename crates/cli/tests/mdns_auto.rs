//! `--discovery auto` (the default): with a live resolver service the nodes use it, even when
//! mDNS cannot bring them together; when it dies, new nodes still find the mesh with mDNS;
//! when it comes back, the nodes register with it again and it is used again. Each test runs
//! in a network namespace of its own with only loopback.

use crate::mdns_common;
use crate::netns;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mdns_common::*;

/// The resolver's address inside the test's own namespace, where every port is free.
const RESOLVER: &str = "127.0.0.1:7700";

/// A node that leaves the resolver comes back to it within the registration keeper's retry
/// interval while the resolver is missing (30 s), plus slack.
const REREGISTER_DEADLINE: Duration = Duration::from_secs(60);

/// How often the resolver is asked whether the nodes are back.
const POLL: Duration = Duration::from_millis(250);

/// A chat with `--resolver` and a DNS-SD type of its own: mDNS cannot link it to anyone, so
/// whoever it meets, it met through the resolver service.
fn chat_without_mdns_peers(nick: &str, url: &str) -> Proc {
    let service = format!("_pc-{nick}._udp");
    Proc::chat(
        nick,
        "soccerpals",
        &["--resolver", url, "--mdns-service", &service],
    )
}

#[test]
fn auto_uses_a_live_resolver() {
    netns::isolated("mdns_auto::auto_uses_a_live_resolver", || {
        let (_resolver, url) = resolver(RESOLVER, 60);
        let nicks = ["ann", "ben", "cat"];
        let mut procs: Vec<Proc> = nicks
            .iter()
            .map(|n| chat_without_mdns_peers(n, &url))
            .collect();
        for p in &mut procs {
            let me = p.name.clone();
            for other in nicks.iter().filter(|n| **n != me) {
                p.expect_line(&format!("* {other} joined"));
            }
        }
        everyone_says(&mut procs, 2);
        everyone_heard_everyone(&mut procs, 2);
        for p in &mut procs {
            p.pump();
            assert!(
                !p.errors.iter().any(|l| l.contains("warning")),
                "{}: {:?}",
                p.name,
                p.errors
            );
        }
    });
}

#[test]
fn auto_falls_back_to_mdns_and_returns_to_the_resolver() {
    netns::isolated(
        "mdns_auto::auto_falls_back_to_mdns_and_returns_to_the_resolver",
        || {
            let (mut resolver_proc, url) = resolver(RESOLVER, 10);
            let mut ann = Proc::chat("ann", "soccerpals", &["--resolver", &url]);
            let mut ben = Proc::chat("ben", "soccerpals", &["--resolver", &url]);
            ann.expect_line("* ben joined");
            ben.expect_line("* ann joined");

            // The resolver dies. A new node is warned, and finds the mesh with mDNS.
            resolver_proc.kill();
            let mut cat = Proc::chat("cat", "soccerpals", &["--resolver", &url]);
            cat.expect_stderr("cannot reach the resolver");
            for p in [&mut ann, &mut ben] {
                p.expect_line("* cat joined");
            }
            cat.say("found you without the resolver");
            for p in [&mut ann, &mut ben] {
                p.expect_line("cat: found you without the resolver");
            }

            // The resolver comes back, empty. The nodes register with it again...
            let (_resolver, url) = resolver(RESOLVER, 10);
            let started = Instant::now();
            while registered(&url) < 3 {
                assert!(
                    started.elapsed() < REREGISTER_DEADLINE,
                    "the nodes did not register again with the resolver within {REREGISTER_DEADLINE:?}"
                );
                std::thread::sleep(POLL);
            }
            println!(
                "the nodes were back in the resolver {:?} after it restarted",
                started.elapsed()
            );

            // ...and a node that mDNS cannot link to anyone finds them through it.
            let mut dan = chat_without_mdns_peers("dan", &url);
            for p in [&mut ann, &mut ben, &mut cat] {
                p.expect_line("* dan joined");
            }
            dan.say("found you through the resolver");
            for p in [&mut ann, &mut ben, &mut cat] {
                p.expect_line("dan: found you through the resolver");
            }
        },
    );
}

/// How many members of `soccerpals` the resolver at `url` lists (0 when it does not answer).
fn registered(url: &str) -> usize {
    let addr = url.trim_start_matches("http://");
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "GET /v1/meshes/soccerpals/peers?max=100 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.matches("\"peer_id\"").count()
}
