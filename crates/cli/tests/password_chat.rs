//! `peerchannel chat --password-file`: two processes with the same password chat; a third with
//! a wrong password prints one clear line and gets nothing from the mesh; the password is in
//! no output.

use crate::common;

use common::*;

const SECRET: &str = "swordfish-in-a-file";

fn chat(nick: &str, url: &str, password_file: &std::path::Path) -> Proc {
    let mut command = peerchannel();
    command.args(["chat", "--mesh", "net.p2p://closed/room", "--nick", nick]);
    command.args([
        "--discovery",
        "resolver",
        "--resolver",
        url,
        "--listen",
        "127.0.0.1:0",
    ]);
    command.arg("--password-file").arg(password_file);
    command.env_remove("PEERCHANNEL_PASSWORD");
    Proc::spawn(nick, command)
}

#[test]
fn the_same_password_chats_and_a_wrong_one_gets_one_clear_line_and_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right");
    let wrong = dir.path().join("wrong");
    std::fs::write(&right, format!("{SECRET}\n")).unwrap();
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let (_resolver, url) = resolver();

    let mut ann = chat("ann", &url, &right);
    let mut ben = chat("ben", &url, &right);
    ann.expect_line("** Online");
    ben.expect_line("** Online");
    ben.expect_line("* ann joined");
    ben.say("hello ann");
    ann.expect_line("ben: hello ann");

    let mut eve = chat("eve", &url, &wrong);
    let line = eve.expect_stderr("authentication failed");
    assert!(line.contains("wrong password"), "{line}");
    ann.say("after eve");
    ben.expect_line("ann: after eve");
    eve.pump();
    assert!(
        !eve.seen
            .iter()
            .any(|l| l.starts_with("ann:") || l.starts_with("ben:") || l.contains("joined")),
        "eve must get nothing from the mesh: {:?}",
        eve.seen
    );
    let failures = eve
        .errors
        .iter()
        .filter(|l| l.contains("authentication failed"))
        .count();
    assert!(failures <= 2, "one line per peer: {:?}", eve.errors);
    for p in [&mut ann, &mut ben, &mut eve] {
        p.pump();
        let all = p.seen.join("\n") + &p.errors.join("\n");
        assert!(
            !all.contains(SECRET),
            "{}: the password was printed",
            p.name
        );
    }
    ann.say("q");
    ben.say("q");
    assert_eq!(ann.wait(), Some(0));
    assert_eq!(ben.wait(), Some(0));
}
