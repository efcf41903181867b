//! `peerchannel-bench`: how fast a peerchannel mesh carries messages, measured against what
//! one raw QUIC link carries on the same machine in the same run.
//!
//! ```text
//! cargo run --release -p peerchannel-bench -- [--nodes 10] [--size 1024] [--secs 10]
//!     [--rate 1000] [--processes] [--json] [--pause-one SECS] [--pause-rate RATE] [--sign]
//! ```
//!
//! Phases, in order: the mesh forms through an embedded resolver and settles; `resources`
//! reads idle memory; `raw` measures one QUIC link configured as peerchannel's links are
//! (the baseline); `ceiling` joins as many endpoints as nodes into a fixed tree of such links
//! that relays the bytes unparsed (what the links alone allow, with no protocol), then message
//! by message through tasks and queues built as a node's (what the runtime's structure
//! allows); a one-second warm-up at 1,000 messages/s forms the broadcast tree;
//! `latency` sends at a fixed rate and measures one-way latency at every receiver on one
//! clock (`CLOCK_MONOTONIC`, shared by all processes on a Linux host); `throughput` sends
//! from node 0 as fast as backpressure allows and counts distinct deliveries at every other
//! node (with the redundancy and CPU time over that phase); `resources` reads memory under
//! load; `pause` (with `--pause-one`) lets the mesh settle again, then stops one receiver dead
//! for SECS while the sender goes on.
//!
//! Every figure is reported beside the raw baseline as a ratio, because these machines are
//! noisy. Release builds only: a debug build measures the compiler, not the mesh.

mod agent;
mod child;
mod clock;
mod cluster;
mod payload;
mod phases;
mod procstat;
mod raw;
mod record;
mod relay;
mod report;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::cluster::{Cluster, Mode};
use crate::report::{Printer, RunInfo};

/// The largest message the harness sends: peerchannel's default maximum.
const MAX_SIZE: usize = peerchannel::node::DEFAULT_MAX_MESSAGE_SIZE;

/// How long background tasks get to stop when the harness exits.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// Benchmark a peerchannel mesh on loopback against one raw QUIC link.
#[derive(Parser, Debug)]
#[command(name = "peerchannel-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One node of a `--processes` run (started by the harness itself).
    #[command(hide = true)]
    Node(child::NodeArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Nodes in the mesh: node 0 sends, the others receive.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Message size in bytes (at least 17: the harness's header).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds of sending in each measured phase.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Messages per second in the latency phase.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Run every node in a process of its own (per-process memory and CPU).
    #[arg(long)]
    processes: bool,
    /// One JSON object per phase per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Pause one receiver for SECS during a throughput run (SIGSTOP with --processes, its
    /// runtime blocked otherwise) and report how the others fare.
    #[arg(long, value_name = "SECS")]
    pause_one: Option<f64>,
    /// The sender's rate in the pause phase, messages per second (default: as fast as
    /// backpressure allows). A rate the mesh can carry shows what a slow receiver costs the
    /// others when the mesh is not saturated.
    #[arg(long, value_name = "RATE", requires = "pause_one")]
    pause_rate: Option<f64>,
    /// Sign every message end to end (every receiver checks every signature): measures what
    /// signing costs. Compare with a run without it.
    #[arg(long)]
    sign: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Node(args)) => child::serve(args).await,
            None => run(cli.run).await,
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let mode = if args.processes {
        Mode::Processes
    } else {
        Mode::InProcess
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut printer = Printer::new(
        args.json,
        RunInfo {
            nodes: args.nodes,
            size: args.size,
            secs: args.secs,
            mode: match mode {
                Mode::InProcess => "in-process",
                Mode::Processes => "processes",
            },
            cores,
        },
    );
    // In-process, the node to pause gets a runtime of its own so that it can be stopped
    // whole; the others share the harness's runtime.
    let freezable = match (mode, args.pause_one) {
        (Mode::InProcess, Some(_)) => Some(args.nodes - 1),
        _ => None,
    };
    progress(&format!("starting {} nodes", args.nodes));
    let cluster = Cluster::start(args.nodes, args.size, mode, freezable, args.sign).await?;
    let result = measure(&args, &cluster, &mut printer).await;
    progress("stopping the nodes");
    cluster.shutdown().await;
    result?;
    printer.finish();
    Ok(())
}

async fn measure(args: &RunArgs, cluster: &Cluster, printer: &mut Printer) -> anyhow::Result<()> {
    progress("waiting for the mesh to settle");
    let (neighbors, took) = cluster.settle().await?;
    printer.settled(&neighbors, took.as_secs_f64());
    let idle = cluster.samples()?;

    progress("raw: one QUIC link");
    let raw = raw::run(args.size, args.secs).await?;
    printer.raw(&raw);
    progress("ceiling: the same links as relay trees");
    let ceiling = relay::run(args.nodes, args.size, args.secs, raw.msgs_per_sec).await?;
    printer.ceiling(&ceiling);

    // Latency first, on the settled mesh: the throughput phase saturates it, and what a
    // saturated mesh does afterwards is not the steady state the latency target is about.
    progress("warm-up");
    phases::warm_up(cluster).await?;
    progress("latency");
    let latency = phases::latency(cluster, args.secs, args.rate).await?;

    progress("throughput");
    let throughput = phases::throughput(cluster, args.size, args.secs, raw.msgs_per_sec).await?;
    printer.throughput(&throughput);
    printer.latency(&latency);

    let load = cluster.samples()?;
    let resources = phases::resources(cluster, &idle, &load, throughput.cpu_us_per_delivery);
    printer.resources(&resources);

    if let Some(pause_secs) = args.pause_one {
        // The same start for the pause phase: a settled mesh with a formed tree.
        progress("waiting for the mesh to settle again");
        cluster.settle().await?;
        phases::warm_up(cluster).await?;
        progress(&format!("pause: one receiver stops for {pause_secs} s"));
        let pause = phases::pause(cluster, pause_secs, args.pause_rate).await?;
        printer.pause(&pause);
    }
    Ok(())
}

fn validate(args: &RunArgs) -> anyhow::Result<()> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (a sender and a receiver)");
    }
    if args.pause_one.is_some() && args.nodes < 3 {
        bail!("--pause-one needs at least 3 nodes (a sender, the paused one and another)");
    }
    if !(payload::HEADER_LEN..=MAX_SIZE).contains(&args.size) {
        bail!(
            "--size must be between {} and {MAX_SIZE} bytes",
            payload::HEADER_LEN
        );
    }
    if !(args.secs > 0.0 && args.secs.is_finite()) {
        bail!("--secs must be more than zero");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be more than zero");
    }
    if args.pause_one.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        bail!("--pause-one must be more than zero seconds");
    }
    if args.pause_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--pause-rate must be more than zero");
    }
    Ok(())
}

/// Progress goes to stderr, so that stdout holds only the results.
fn progress(what: &str) {
    eprintln!("peerchannel-bench: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `validate` says of a command line, or what clap refuses in it.
    fn check(args: &[&str]) -> Result<(), String> {
        let cli =
            Cli::try_parse_from(std::iter::once("peerchannel-bench").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        validate(&cli.run).map_err(|e| e.to_string())
    }

    #[test]
    fn command_lines_are_checked_before_anything_starts() {
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["--pause-one", "2", "--pause-rate", "5000"]), Ok(()));
        let refused = [
            (&["--nodes", "1"][..], "--nodes must be at least 2"),
            (
                &["--nodes", "2", "--pause-one", "1"],
                "needs at least 3 nodes",
            ),
            (&["--size", "3"], "--size must be between"),
            (&["--secs", "0"], "--secs must be more than zero"),
            (&["--rate", "NaN"], "--rate must be more than zero"),
            (&["--pause-one=-1"], "--pause-one must be more than zero"),
            (
                &["--pause-one", "1", "--pause-rate", "0"],
                "--pause-rate must be more",
            ),
            // A rate for a pause phase that does not run is a mistake, not a no-op.
            (&["--pause-rate", "100"], "--pause-one"),
        ];
        for (args, expected) in refused {
            let err = check(args).expect_err(&format!("{args:?} accepted"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }
}
