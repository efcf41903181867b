//! `--processes`: every node in a process of its own. The harness runs its own binary again
//! with the hidden `node` subcommand; the node process runs one [`Agent`] and answers the
//! coordinator's requests, one JSON object per line on stdin and stdout (logs go to stderr).

use std::process::Stdio;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::agent::{Agent, Counters, Health, SendPlan, SendReport};
use crate::payload::Phase;
use crate::record::ReceiverReport;

/// Arguments of the hidden `node` subcommand.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The resolver to find the mesh through.
    #[arg(long)]
    resolver: String,
    /// Message size.
    #[arg(long)]
    size: usize,
    /// Record the messages that arrive.
    #[arg(long)]
    receive: bool,
    /// Sign every message (and so check every signature).
    #[arg(long)]
    sign: bool,
}

/// What the coordinator asks a node process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// How many neighbors?
    Neighbors,
    /// The protocol counters.
    Counters,
    /// Mesh events so far.
    Health,
    /// Distinct messages of a phase received so far.
    Count(Phase),
    /// Send, then answer with what was sent.
    Send(SendPlan),
    /// What arrived in a phase.
    Report(Phase),
    /// Leave the mesh and exit.
    Quit,
}

/// What a node process answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The node is up (first line).
    Ready,
    /// See [`Request::Neighbors`].
    Neighbors(usize),
    /// See [`Request::Counters`].
    Counters(Counters),
    /// See [`Request::Health`].
    Health(Health),
    /// See [`Request::Count`].
    Count(u64),
    /// See [`Request::Send`].
    Sent(SendReport),
    /// See [`Request::Report`].
    Report(Box<ReceiverReport>),
    /// See [`Request::Quit`].
    Bye,
    /// The request failed.
    Error(String),
}

/// The `node` subcommand: serves requests until told to quit or stdin closes.
pub async fn serve(args: NodeArgs) -> anyhow::Result<()> {
    let agent = Agent::start(&args.resolver, args.size, args.receive, args.sign).await?;
    let mut stdout = tokio::io::stdout();
    write_line(&mut stdout, &Response::Ready).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let request: Request = serde_json::from_str(&line).context("a bad request")?;
        let response = match request {
            Request::Neighbors => agent.neighbors().await.map(Response::Neighbors),
            Request::Counters => agent.counters().await.map(Response::Counters),
            Request::Health => Ok(Response::Health(agent.health())),
            Request::Count(phase) => Ok(Response::Count(agent.count(phase))),
            Request::Send(plan) => Ok(Response::Sent(agent.send(plan).await)),
            Request::Report(phase) => Ok(Response::Report(Box::new(agent.report(phase)))),
            Request::Quit => {
                agent.shutdown().await;
                write_line(&mut stdout, &Response::Bye).await?;
                return Ok(());
            }
        };
        let response = response.unwrap_or_else(|e| Response::Error(format!("{e:#}")));
        write_line(&mut stdout, &response).await?;
    }
    agent.shutdown().await;
    Ok(())
}

async fn write_line(out: &mut tokio::io::Stdout, response: &Response) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(response)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// A node process, as the coordinator holds it.
pub struct NodeProcess {
    pid: u32,
    child: Mutex<Child>,
    io: Mutex<(ChildStdin, Lines<BufReader<ChildStdout>>)>,
}

impl NodeProcess {
    /// Starts a node process and waits until its node is up.
    pub async fn spawn(
        resolver: &str,
        size: usize,
        receive: bool,
        sign: bool,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the harness's own binary")?;
        let mut command = Command::new(exe);
        command
            .arg("node")
            .arg("--resolver")
            .arg(resolver)
            .arg("--size")
            .arg(size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if receive {
            command.arg("--receive");
        }
        if sign {
            command.arg("--sign");
        }
        let mut child = command.spawn().context("cannot start a node process")?;
        let pid = child.id().context("the node process exited at once")?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let process = Self {
            pid,
            child: Mutex::new(child),
            io: Mutex::new((stdin, BufReader::new(stdout).lines())),
        };
        let ready = read_response(pid, &mut *process.io.lock().await).await?;
        match ready {
            Response::Ready => Ok(process),
            other => bail!("node process {pid} started with {other:?}"),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a request and waits for the answer (one request at a time per process).
    pub async fn call(&self, request: &Request) -> anyhow::Result<Response> {
        let mut io = self.io.lock().await;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        io.0.write_all(&line)
            .await
            .with_context(|| format!("node process {} is gone", self.pid))?;
        io.0.flush().await?;
        match read_response(self.pid, &mut io).await? {
            Response::Error(e) => bail!("node process {}: {e}", self.pid),
            response => Ok(response),
        }
    }

    /// Asks the process to leave and exit; kills it (by its own pid) if it does not.
    pub async fn quit(&self) {
        let _ = tokio::time::timeout(QUIT_GRACE, self.call(&Request::Quit)).await;
        let mut child = self.child.lock().await;
        if tokio::time::timeout(QUIT_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// How long a node process gets to leave the mesh and exit.
const QUIT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

async fn read_response(
    pid: u32,
    io: &mut (ChildStdin, Lines<BufReader<ChildStdout>>),
) -> anyhow::Result<Response> {
    let line =
        io.1.next_line()
            .await?
            .with_context(|| format!("node process {pid} closed its output"))?;
    serde_json::from_str(&line).with_context(|| format!("node process {pid}: {line}"))
}
