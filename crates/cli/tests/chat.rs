//! Five `peerchannel chat` processes and a resolver: every line reaches the four others
//! exactly once, with the right nick and no echo; after one is killed the others carry on;
//! `q` and the end of input leave and exit 0.

use crate::common;

use common::*;

fn chat(nick: &str, url: &str) -> Proc {
    let mut command = peerchannel();
    command.args([
        "chat",
        "--mesh",
        "net.p2p://e2e/room",
        "--nick",
        nick,
        "--resolver",
        url,
    ]);
    command.args(["--listen", "127.0.0.1:0"]);
    Proc::spawn(nick, command)
}

#[test]
fn five_chat_processes_talk_then_one_dies_and_the_rest_carry_on() {
    let (_resolver, url) = resolver();
    let nicks = ["ann", "ben", "cat", "dan", "eve"];
    let mut procs: Vec<Proc> = nicks.iter().map(|n| chat(n, &url)).collect();
    for p in &mut procs {
        p.expect_line("** Online");
    }
    for (i, p) in procs.iter_mut().enumerate() {
        for (j, other) in nicks.iter().enumerate() {
            if i != j {
                p.expect_line(&format!("* {other} joined"));
            }
        }
    }

    for (i, nick) in nicks.iter().enumerate() {
        for k in 0..3 {
            procs[i].say(&format!("{nick} says hello #{k}"));
        }
    }
    for (i, p) in procs.iter_mut().enumerate() {
        for (j, nick) in nicks.iter().enumerate() {
            for k in 0..3 {
                let line = format!("{nick}: {nick} says hello #{k}");
                if i == j {
                    assert_eq!(
                        p.count(&line),
                        0,
                        "{}: its own line must not be echoed",
                        p.name
                    );
                } else {
                    p.expect_line(&line);
                }
            }
        }
    }

    // eve dies without a goodbye; the other four keep talking.
    procs[4].kill();
    for (i, nick) in nicks.iter().enumerate().take(4) {
        procs[i].say(&format!("{nick} after the crash"));
    }
    for (i, p) in procs.iter_mut().enumerate().take(4) {
        for (j, nick) in nicks.iter().enumerate().take(4) {
            if i != j {
                p.expect_line(&format!("{nick}: {nick} after the crash"));
            }
        }
    }

    // ann leaves with `q`; the others see her go. ben ends his input instead.
    procs[0].say("q");
    assert_eq!(procs[0].wait(), Some(0), "q exits 0");
    for p in procs.iter_mut().skip(1).take(3) {
        p.expect_line("* ann left");
    }
    procs[1].close_stdin();
    assert_eq!(procs[1].wait(), Some(0), "the end of input exits 0");
    for p in procs.iter_mut().skip(2).take(2) {
        p.expect_line("* ben left");
    }

    // Exactly once: every line seen by every live process, no copies.
    for p in procs.iter_mut().take(4) {
        p.pump();
        for line in p.seen.clone() {
            if line.starts_with("** ") {
                continue;
            }
            assert_eq!(
                p.count(&line),
                1,
                "{}: {line:?} printed more than once: {:?}",
                p.name,
                p.seen
            );
        }
    }
    for p in procs.iter_mut().skip(2).take(2) {
        p.say("q");
        assert_eq!(p.wait(), Some(0));
    }
}
