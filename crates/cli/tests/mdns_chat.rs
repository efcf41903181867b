//! `peerchannel chat --discovery mdns` with no resolver and no peer list: two, then five
//! processes on one host find each other with mDNS alone and every line reaches every other
//! process exactly once. Each test runs in a network namespace of its own with only loopback.

use crate::mdns_common;
use crate::netns;

use std::time::Instant;

use mdns_common::*;

fn mdns_chats(mesh: &str, nicks: &[&str]) {
    let started = Instant::now();
    let mut procs: Vec<Proc> = nicks
        .iter()
        .map(|nick| Proc::chat(nick, mesh, &["--discovery", "mdns"]))
        .collect();
    for p in &mut procs {
        p.expect_line("** Online");
    }
    println!(
        "{} processes online after {:?}",
        nicks.len(),
        started.elapsed()
    );
    for p in &mut procs {
        let me = p.name.clone();
        for other in nicks.iter().filter(|n| **n != me) {
            p.expect_line(&format!("* {other} joined"));
        }
    }
    println!("every join seen after {:?}", started.elapsed());

    everyone_says(&mut procs, 3);
    everyone_heard_everyone(&mut procs, 3);

    for p in &mut procs {
        p.say("q");
    }
    for p in &mut procs {
        assert_eq!(p.wait(), Some(0), "{}: {:?}", p.name, p.errors);
    }
}

#[test]
fn two_chat_processes_talk_with_mdns_alone() {
    netns::isolated("mdns_chat::two_chat_processes_talk_with_mdns_alone", || {
        mdns_chats("soccerpals", &["alice", "bob"]);
    });
}

#[test]
fn five_chat_processes_talk_with_mdns_alone() {
    netns::isolated(
        "mdns_chat::five_chat_processes_talk_with_mdns_alone",
        || {
            mdns_chats(
                "net.p2p://soccerpals/chat",
                &["ann", "ben", "cat", "dan", "eve"],
            );
        },
    );
}

#[test]
fn zero_configuration_is_mdns() {
    netns::isolated("mdns_chat::zero_configuration_is_mdns", || {
        // No --discovery, no --resolver, no --peer: the default finds the other with mDNS.
        let mut a = Proc::chat("alice", "soccerpals", &[]);
        let mut b = Proc::chat("bob", "soccerpals", &[]);
        a.expect_line("* bob joined");
        b.expect_line("* alice joined");
        a.say("hello");
        b.expect_line("alice: hello");
        drop((a, b));
    });
}
