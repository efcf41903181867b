//! Helpers for the end-to-end tests: `peerchannel` processes with piped stdio, lines read on
//! threads, and waits with deadlines. Processes are ended by their own pid (`Child::kill`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

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
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
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

    /// Types a line.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the process");
        stdin.flush().expect("flush");
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
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

    /// Waits until a stdout line equal to `line` has been seen.
    pub fn expect_line(&mut self, line: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pump();
            if self.seen.iter().any(|l| l == line) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no line {line:?} within {DEADLINE:?}; stdout: {:?}; stderr: {:?}",
                    self.name, self.seen, self.errors
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a stderr line containing `text` has been seen.
    pub fn expect_stderr(&mut self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pump();
            if let Some(l) = self.errors.iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no stderr containing {text:?}; stderr: {:?}",
                    self.name, self.errors
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many stdout lines equal `line`.
    pub fn count(&mut self, line: &str) -> usize {
        self.pump();
        self.seen.iter().filter(|l| *l == line).count()
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.pump();
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{}: did not exit within {DEADLINE:?}; stderr: {:?}",
                    self.name, self.errors
                );
            }
            std::thread::sleep(Duration::from_millis(20));
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
        // With PEERCHANNEL_TEST_LOGS=DIR (and RUST_LOG for the children), each process's
        // stderr is kept there for a post-mortem.
        if let Some(dir) = std::env::var_os("PEERCHANNEL_TEST_LOGS") {
            self.pump();
            let path = std::path::Path::new(&dir).join(format!("{}.log", self.name));
            let _ = std::fs::write(path, self.errors.join("\n"));
        }
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

/// Starts `peerchannel resolver` on a free loopback port; returns it and its URL.
pub fn resolver() -> (Proc, String) {
    let mut command = peerchannel();
    command.args(["resolver", "--listen", "127.0.0.1:0", "--relaxed"]);
    let mut p = Proc::spawn("resolver", command);
    let line = p.expect_stderr("resolver listening on ");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the resolver prints its URL")
        .to_owned();
    (p, url)
}

/// Runs `peerchannel` to completion with no stdin; its exit code, stdout and stderr.
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = peerchannel()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run peerchannel");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
