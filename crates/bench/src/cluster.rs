//! The benchmark mesh: an embedded resolver and `--nodes` nodes that find each other through
//! it, as users' nodes would; in this process or one process each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::{join_all, try_join_all};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use peerchannel::MeshOptions;
use peerchannel_resolver::{ResolverConfig, ResolverServer};
use tokio::sync::oneshot;

use crate::agent::{Agent, Counters, Health, SendPlan, SendReport};
use crate::child::{NodeProcess, Request, Response};
use crate::payload::Phase;
use crate::procstat::{self, ProcSample};
use crate::record::ReceiverReport;

/// How often the neighbor counts are polled while the mesh settles.
const SETTLE_POLL: Duration = Duration::from_millis(200);

/// The mesh counts as settled when every node has enough neighbors and no count changed for
/// this long.
const SETTLE_QUIET: Duration = Duration::from_secs(2);

/// How long the mesh may take to settle before the harness gives up.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// How the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every node in this process, on one multi-threaded runtime.
    InProcess,
    /// Every node in a process of its own.
    Processes,
}

/// The mesh under test.
pub struct Cluster {
    /// The nodes; node 0 sends, the others receive.
    pub members: Vec<Member>,
    /// How they run.
    pub mode: Mode,
    /// This process's resident memory before the first node started (resolver included).
    pub rss_before_nodes: u64,
    resolver: ResolverServer,
}

impl Cluster {
    /// Starts the resolver and the nodes. Node `freezable` (in-process) gets a runtime of its
    /// own, so that [`Member::pause`] can stop it whole, as SIGSTOP stops a process.
    pub async fn start(
        nodes: usize,
        size: usize,
        mode: Mode,
        freezable: Option<usize>,
        sign: bool,
    ) -> anyhow::Result<Self> {
        let resolver = ResolverServer::bind("127.0.0.1:0".parse()?, ResolverConfig::relaxed())
            .await
            .context("cannot start the embedded resolver")?;
        let url = resolver.url();
        let rss_before_nodes = procstat::sample(None)?.rss_bytes;
        let members = match mode {
            Mode::Processes => {
                try_join_all((0..nodes).map(|i| NodeProcess::spawn(&url, size, i != 0, sign)))
                    .await?
                    .into_iter()
                    .map(|p| Member::Process(Box::new(p)))
                    .collect()
            }
            Mode::InProcess => {
                let mut members = Vec::with_capacity(nodes);
                for i in 0..nodes {
                    let receive = i != 0;
                    let member = if freezable == Some(i) {
                        OwnRuntime::start(&url, size, receive, sign).await?
                    } else {
                        Member::Local(Arc::new(Agent::start(&url, size, receive, sign).await?))
                    };
                    members.push(member);
                }
                members
            }
        };
        Ok(Self {
            members,
            mode,
            rss_before_nodes,
            resolver,
        })
    }

    /// The receivers: every node but the sender.
    pub fn receivers(&self) -> &[Member] {
        &self.members[1..]
    }

    /// The sender.
    pub fn sender(&self) -> &Member {
        &self.members[0]
    }

    /// Waits until every node has at least the protocol's minimum of neighbors (or all the
    /// others, in a smaller mesh) and no neighbor count changed for [`SETTLE_QUIET`]. Returns
    /// the neighbor counts and how long it took.
    pub async fn settle(&self) -> anyhow::Result<(Vec<usize>, Duration)> {
        let started = Instant::now();
        let want = MeshOptions::default()
            .protocol
            .membership
            .active_min
            .min(self.members.len() - 1);
        let mut last: Vec<usize> = Vec::new();
        let mut stable_since = Instant::now();
        loop {
            let counts = try_join_all(self.members.iter().map(Member::neighbors)).await?;
            if counts != last {
                last = counts;
                stable_since = Instant::now();
            } else if last.iter().all(|n| *n >= want) && stable_since.elapsed() >= SETTLE_QUIET {
                return Ok((last, started.elapsed()));
            }
            if started.elapsed() > SETTLE_LIMIT {
                bail!("the mesh did not settle within {SETTLE_LIMIT:?}: neighbor counts {last:?}");
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// The protocol counters of every node, in order.
    pub async fn counters(&self) -> anyhow::Result<Vec<Counters>> {
        try_join_all(self.members.iter().map(Member::counters)).await
    }

    /// Resources of every node process, or of this process once (in-process).
    pub fn samples(&self) -> anyhow::Result<Vec<ProcSample>> {
        match self.mode {
            Mode::InProcess => Ok(vec![procstat::sample(None)?]),
            Mode::Processes => self
                .members
                .iter()
                .map(|m| procstat::sample(m.pid()))
                .collect(),
        }
    }

    /// Stops every node and the resolver.
    pub async fn shutdown(self) {
        join_all(self.members.iter().map(Member::quit)).await;
        let _ = self.resolver.shutdown().await;
    }
}

/// One node of the mesh, wherever it runs.
pub enum Member {
    /// On the harness's runtime.
    Local(Arc<Agent>),
    /// In this process, on a runtime of its own that [`Member::pause`] can block.
    OwnRuntime(OwnRuntime),
    /// In a process of its own.
    Process(Box<NodeProcess>),
}

impl Member {
    fn agent(&self) -> Option<&Agent> {
        match self {
            Member::Local(agent) => Some(agent),
            Member::OwnRuntime(own) => Some(&own.agent),
            Member::Process(_) => None,
        }
    }

    /// The node's process id, if it has a process of its own.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Member::Process(p) => Some(p.pid()),
            _ => None,
        }
    }

    async fn call(&self, request: Request) -> anyhow::Result<Response> {
        match self {
            Member::Process(p) => p.call(&request).await,
            _ => bail!("not a node process"),
        }
    }

    /// How many neighbors the node has.
    pub async fn neighbors(&self) -> anyhow::Result<usize> {
        if let Some(agent) = self.agent() {
            return agent.neighbors().await;
        }
        match self.call(Request::Neighbors).await? {
            Response::Neighbors(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// The protocol counters.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        if let Some(agent) = self.agent() {
            return agent.counters().await;
        }
        match self.call(Request::Counters).await? {
            Response::Counters(c) => Ok(c),
            other => unexpected(other),
        }
    }

    /// Mesh events so far.
    pub async fn health(&self) -> anyhow::Result<Health> {
        if let Some(agent) = self.agent() {
            return Ok(agent.health());
        }
        match self.call(Request::Health).await? {
            Response::Health(h) => Ok(h),
            other => unexpected(other),
        }
    }

    /// Distinct messages of `phase` received so far.
    pub async fn count(&self, phase: Phase) -> anyhow::Result<u64> {
        if let Some(agent) = self.agent() {
            return Ok(agent.count(phase));
        }
        match self.call(Request::Count(phase)).await? {
            Response::Count(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Sends as planned.
    pub async fn send(&self, plan: SendPlan) -> anyhow::Result<SendReport> {
        if let Some(agent) = self.agent() {
            return Ok(agent.send(plan).await);
        }
        match self.call(Request::Send(plan)).await? {
            Response::Sent(r) => Ok(r),
            other => unexpected(other),
        }
    }

    /// What arrived in `phase`.
    pub async fn report(&self, phase: Phase) -> anyhow::Result<ReceiverReport> {
        if let Some(agent) = self.agent() {
            return Ok(agent.report(phase));
        }
        match self.call(Request::Report(phase)).await? {
            Response::Report(r) => Ok(*r),
            other => unexpected(other),
        }
    }

    /// Stops the node dead, as a debugger or an overloaded host would: SIGSTOP for a node
    /// process; for a node on its own runtime, that runtime's only thread is blocked. Nothing
    /// it owns runs (no reading, no acknowledging, no timers) until [`Member::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        match self {
            Member::Process(p) => Ok(kill(pid(p.pid())?, Signal::SIGSTOP)?),
            Member::OwnRuntime(own) => {
                own.pause();
                Ok(())
            }
            Member::Local(_) => bail!("this node shares the harness's runtime: it cannot pause"),
        }
    }

    /// Lets a paused node run again.
    pub fn resume(&self) -> anyhow::Result<()> {
        match self {
            Member::Process(p) => Ok(kill(pid(p.pid())?, Signal::SIGCONT)?),
            Member::OwnRuntime(own) => {
                own.resume();
                Ok(())
            }
            Member::Local(_) => Ok(()),
        }
    }

    async fn quit(&self) {
        match self {
            Member::Local(agent) => agent.shutdown().await,
            Member::OwnRuntime(own) => {
                own.resume();
                own.agent.shutdown().await;
            }
            Member::Process(p) => p.quit().await,
        }
    }
}

fn pid(pid: u32) -> anyhow::Result<Pid> {
    Ok(Pid::from_raw(i32::try_from(pid)?))
}

fn unexpected<T>(response: Response) -> anyhow::Result<T> {
    bail!("unexpected answer from a node process: {response:?}")
}

/// A node in this process on a current-thread runtime of its own thread.
pub struct OwnRuntime {
    agent: Arc<Agent>,
    handle: tokio::runtime::Handle,
    /// Ends the runtime's thread when dropped.
    _stop: oneshot::Sender<()>,
    paused: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl OwnRuntime {
    async fn start(url: &str, size: usize, receive: bool, sign: bool) -> anyhow::Result<Member> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("paused-node".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let url = url.to_owned();
        let agent = handle
            .spawn(async move { Agent::start(&url, size, receive, sign).await })
            .await??;
        Ok(Member::OwnRuntime(Self {
            agent: Arc::new(agent),
            handle,
            _stop: stop,
            paused: std::sync::Mutex::new(None),
        }))
    }

    fn pause(&self) {
        let (resume, resumed) = std::sync::mpsc::channel::<()>();
        // Blocking inside the runtime is the point: its one thread stops, and with it every
        // task of the node (endpoint, links, protocol, receiver).
        self.handle.spawn(async move {
            let _ = resumed.recv();
        });
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = Some(resume);
    }

    fn resume(&self) {
        // Dropping the sender wakes the blocked task.
        self.paused.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
