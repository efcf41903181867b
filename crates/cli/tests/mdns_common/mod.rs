//! Helpers for the mDNS end-to-end tests: `peerchannel` processes with piped stdio whose lines
//! are read on threads, and waits with deadlines. Each test runs in a network namespace of its
//! own (see `netns`), so processes are started with plain `Command`s and inherit it. Processes
//! end by their own pid (`Child::kill`), and are killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long an ordinary wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often a wait looks at the output again.
const POLL: Duration = Duration::from_millis(20);

/// The `peerchannel` binary under test.
pub fn peerchannel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peerchannel"))
}

/// A running `peerchannel` process whose output lines are collected.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
    /// Every stderr line seen so far.
    pub errors: Vec<String>,
}

impl Proc {
    /// Starts `peerchannel` with `args`.
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        let mut command = peerchannel();
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start peerchannel");
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take();
        Self {
            name: name.into(),
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// `peerchannel chat --mesh <mesh> --nick <nick>` plus `extra`.
    pub fn chat(nick: &str, mesh: &str, extra: &[&str]) -> Self {
        let mut args = vec!["chat", "--mesh", mesh, "--nick", nick];
        args.extend(extra);
        Self::spawn(nick, &args)
    }

    /// Types a line.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the process");
        stdin.flush().expect("flush");
    }

    /// Collects whatever output has arrived.
    pub fn pump(&mut self) {
        while let Ok(l) = self.stdout.try_recv() {
            self.seen.push(l);
        }
        while let Ok(l) = self.stderr.try_recv() {
            self.errors.push(l);
        }
    }

    /// Waits up to `deadline` for a stdout line that `want` accepts; returns it.
    pub fn wait_line(
        &mut self,
        deadline: Duration,
        what: &str,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let until = Instant::now() + deadline;
        loop {
            self.pump();
            if let Some(line) = self.seen.iter().find(|l| want(l)) {
                return line.clone();
            }
            if Instant::now() > until {
                panic!(
                    "{}: no {what} within {deadline:?}; stdout: {:?}; stderr: {:?}",
                    self.name, self.seen, self.errors
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until a stdout line equal to `line` has been seen.
    pub fn expect_line(&mut self, line: &str) {
        self.wait_line(DEADLINE, &format!("line {line:?}"), |l| l == line);
    }

    /// Waits until a stderr line containing `text` has been seen; returns it.
    pub fn expect_stderr(&mut self, text: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            self.pump();
            if let Some(l) = self.errors.iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            if Instant::now() > until {
                panic!(
                    "{}: no stderr containing {text:?}; stderr: {:?}",
                    self.name, self.errors
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// How many stdout lines equal `line`.
    pub fn count(&mut self, line: &str) -> usize {
        self.pump();
        self.seen.iter().filter(|l| *l == line).count()
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.pump();
                return status.code();
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "{}: did not exit within {DEADLINE:?}; stderr: {:?}",
                    self.name, self.errors
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills the process (SIGKILL, by its pid): no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `peerchannel resolver` on `listen` (a fixed port is free in a fresh namespace, and
/// lets a restarted resolver come back at the same URL); returns it and its URL.
pub fn resolver(listen: &str, lifetime_s: u64) -> (Proc, String) {
    let lifetime = lifetime_s.to_string();
    let mut p = Proc::spawn(
        "resolver",
        &[
            "resolver",
            "--listen",
            listen,
            "--relaxed",
            "--lifetime",
            &lifetime,
        ],
    );
    p.expect_stderr("resolver listening on ");
    (p, format!("http://{listen}"))
}

/// Checks that every process saw every other's lines exactly once, and not its own.
pub fn everyone_heard_everyone(procs: &mut [Proc], lines_each: usize) {
    let nicks: Vec<String> = procs.iter().map(|p| p.name.clone()).collect();
    for p in procs.iter_mut() {
        for nick in &nicks {
            for k in 0..lines_each {
                let line = format!("{nick}: line {k} from {nick}");
                if *nick == p.name {
                    assert_eq!(p.count(&line), 0, "{} echoed its own line", p.name);
                } else {
                    p.expect_line(&line);
                    assert_eq!(p.count(&line), 1, "{}: {line:?} not exactly once", p.name);
                }
            }
        }
    }
}

/// Has each process say `lines_each` lines.
pub fn everyone_says(procs: &mut [Proc], lines_each: usize) {
    for p in procs.iter_mut() {
        for k in 0..lines_each {
            let line = format!("line {k} from {}", p.name);
            p.say(&line);
        }
    }
}
