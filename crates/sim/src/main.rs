//! `peerchannel-sim`: runs a scenario and prints one JSON object per round.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use peerchannel_proto::BroadcastMode;
use peerchannel_sim::{Kind, Scenario, run};

/// Simulate a peerchannel mesh of N nodes and measure how messages spread.
///
/// The same seed gives the same output, byte for byte. With --json, each round prints one
/// JSON object on its own line; otherwise a short table and a summary. Wall time and memory go
/// to stderr (they vary between runs).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// single: one sender per round; multi: several; churn: kill a fraction of the nodes at
    /// once, then rounds from survivors; partition: split in two halves, heal, then rounds from
    /// both sides.
    #[arg(long, value_enum, default_value = "single")]
    scenario: ScenarioArg,
    /// Number of nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measured rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Unmeasured broadcasts first, to let the broadcast tree settle.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Senders per round in the multi scenario.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Fraction of nodes killed at once in the churn scenario.
    #[arg(long, default_value_t = 0.5)]
    kill_fraction: f64,
    /// One-way link latency range in milliseconds, LO..HI.
    #[arg(long, default_value = "10..50", value_parser = parse_range)]
    latency_ms: (u64, u64),
    /// Probability that a message needs a retransmission.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Seconds the partition scenario keeps the halves apart.
    #[arg(long, default_value_t = 60)]
    partition_secs: u64,
    /// Fraction of slow nodes (extra latency on all their links).
    #[arg(long, default_value_t = 0.0)]
    slow_fraction: f64,
    /// Extra one-way latency of a slow node's links, in milliseconds.
    #[arg(long, default_value_t = 200)]
    slow_ms: u64,
    /// Broadcast mode.
    #[arg(long, value_enum, default_value = "plumtree")]
    mode: ModeArg,
    /// Override the active view's lower bound.
    #[arg(long)]
    active_min: Option<usize>,
    /// Override the active view's ideal size.
    #[arg(long)]
    active_ideal: Option<usize>,
    /// Override the active view's upper bound.
    #[arg(long)]
    active_max: Option<usize>,
    /// Override the first graft timeout, in milliseconds.
    #[arg(long)]
    graft_timeout_ms: Option<u64>,
    /// Override the second graft timeout (between grafts, and before a catch-up graft), in
    /// milliseconds.
    #[arg(long)]
    graft_timeout_2_ms: Option<u64>,
    /// Turn on Plumtree's optimisation with this threshold, in hops (off by default).
    #[arg(long)]
    optimization_threshold: Option<u16>,
    /// Override how many of the contact's neighbors a join walks out to.
    #[arg(long)]
    join_walks: Option<usize>,
    /// Turn beacons off (no tree rebuild after neighbor changes; partition probes then have
    /// nothing to compare).
    #[arg(long)]
    no_beacons: bool,
    /// Print one JSON object per round.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScenarioArg {
    Single,
    Multi,
    Churn,
    Partition,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Plumtree,
    Flood,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or("expected LO..HI, for example 10..50")?;
    let lo: u64 = lo
        .trim()
        .parse()
        .map_err(|_| format!("`{lo}` is not a number of milliseconds"))?;
    let hi: u64 = hi
        .trim()
        .parse()
        .map_err(|_| format!("`{hi}` is not a number of milliseconds"))?;
    if hi < lo {
        return Err(format!("the range {lo}..{hi} is empty"));
    }
    Ok((lo, hi))
}

fn main() -> ExitCode {
    match run_main() {
        Ok(()) => ExitCode::SUCCESS,
        // `peerchannel-sim ... | head` closes the pipe early: that is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    if !(0.0..1.0).contains(&args.kill_fraction) {
        bail!("--kill-fraction must be at least 0 and below 1");
    }
    if !(0.0..=1.0).contains(&args.loss) || !(0.0..=1.0).contains(&args.slow_fraction) {
        bail!("--loss and --slow-fraction are probabilities between 0 and 1");
    }
    let kind = match args.scenario {
        ScenarioArg::Single => Kind::Single,
        ScenarioArg::Multi => Kind::Multi,
        ScenarioArg::Churn => Kind::Churn,
        ScenarioArg::Partition => Kind::Partition,
    };
    let mut s = Scenario::new(kind, args.nodes, args.seed);
    s.rounds = args.rounds;
    s.warmup = args.warmup;
    s.senders = args.senders;
    s.kill_fraction = args.kill_fraction;
    s.partition = Duration::from_secs(args.partition_secs);
    s.slow_fraction = args.slow_fraction;
    s.net.latency = (
        Duration::from_millis(args.latency_ms.0),
        Duration::from_millis(args.latency_ms.1),
    );
    s.net.loss = args.loss;
    s.net.slow_extra = Duration::from_millis(args.slow_ms);
    let p = &mut s.net.proto;
    p.broadcast.mode = match args.mode {
        ModeArg::Plumtree => BroadcastMode::Plumtree,
        ModeArg::Flood => BroadcastMode::Flood,
    };
    if let Some(v) = args.active_min {
        p.membership.active_min = v;
    }
    if let Some(v) = args.active_ideal {
        p.membership.active_ideal = v;
    }
    if let Some(v) = args.active_max {
        p.membership.active_max = v;
    }
    let m = &p.membership;
    if !(1 <= m.active_min && m.active_min <= m.active_ideal && m.active_ideal <= m.active_max) {
        bail!("the active view bounds must satisfy 1 <= min <= ideal <= max");
    }
    if let Some(v) = args.graft_timeout_ms {
        p.broadcast.graft_timeout_1 = Duration::from_millis(v);
    }
    if let Some(v) = args.graft_timeout_2_ms {
        p.broadcast.graft_timeout_2 = Duration::from_millis(v);
    }
    if let Some(v) = args.optimization_threshold {
        p.broadcast.optimization_threshold = Some(v);
    }
    if let Some(v) = args.join_walks {
        p.membership.join_walks = v;
    }
    if args.no_beacons {
        p.mesh.beacons = false;
    }

    let rss_before = rss_bytes();
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_err = None;
    if !args.json {
        writeln!(
            out,
            "{:>5} {:>6} {:>9} {:>7} {:>11} {:>7} {:>4} {:>12}",
            "round", "alive", "delivered", "missed", "reliability", "rmr", "ldh", "full_ms"
        )?;
    }
    let summary = run(&s, |r| {
        let line = if args.json {
            serde_json::to_string(r).map_err(anyhow::Error::from)
        } else {
            Ok(format!(
                "{:>5} {:>6} {:>9} {:>7} {:>11.4} {:>7.4} {:>4} {:>12}",
                r.round,
                r.alive,
                r.delivered,
                r.missed,
                r.reliability,
                r.rmr,
                r.ldh,
                r.time_to_full_ms.map_or("-".to_string(), |t| t.to_string())
            ))
        };
        if let Err(e) = line.and_then(|l| writeln!(out, "{l}").map_err(Into::into))
            && write_err.is_none()
        {
            write_err = Some(e);
        }
    });
    if let Some(e) = write_err {
        return Err(e);
    }
    let wall = started.elapsed();
    if !args.json {
        let rounds = &summary.rounds;
        let min_rel = rounds.iter().map(|r| r.reliability).fold(1.0, f64::min);
        let max_rmr = rounds.iter().map(|r| r.rmr).fold(0.0, f64::max);
        let max_ldh = rounds.iter().map(|r| r.ldh).max().unwrap_or(0);
        let missed: usize = rounds.iter().map(|r| r.missed).sum();
        writeln!(
            out,
            "\n{} scenario, {} nodes, seed {}: {} rounds, {} missed, min reliability {:.4}, max rmr {:.4}, max ldh {}",
            kind.name(),
            args.nodes,
            args.seed,
            rounds.len(),
            missed,
            min_rel,
            max_rmr,
            max_ldh
        )?;
        if let Some(first) = summary.first_rmr {
            writeln!(
                out,
                "first broadcast (before the tree settled): rmr {first:.3}"
            )?;
        }
        if let Some(r) = rounds.first()
            && let Some(merged) = r.merged
        {
            let t = r
                .merge_time_ms
                .flatten()
                .map_or("never".into(), |t| format!("{t} ms"));
            writeln!(out, "merged after the heal: {merged} ({t})")?;
        }
        writeln!(
            out,
            "simulated {:.1} s, {} events",
            summary.simulated.as_secs_f64(),
            summary.events
        )?;
        let t = &summary.totals;
        writeln!(
            out,
            "totals: {} evictions, {} request timeouts, {} contact requests, {} probes, {} splits \
             detected, {} beacons, {} grafts, {} prunes, {} ihave ids",
            t.membership.evictions,
            t.membership.request_timeouts,
            t.membership.contact_requests,
            t.probes_sent,
            t.splits_detected,
            t.beacons_sent,
            t.broadcast.grafts_sent,
            t.broadcast.prunes_sent,
            t.broadcast.ihave_sent
        )?;
    }
    let rss_after = rss_bytes();
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        eprintln!(
            "wall {:.2} s; memory {:.1} MiB resident, about {} bytes per simulated node",
            wall.as_secs_f64(),
            after as f64 / (1024.0 * 1024.0),
            after.saturating_sub(before) / args.nodes as u64
        );
    } else {
        eprintln!("wall {:.2} s", wall.as_secs_f64());
    }
    Ok(())
}

/// Resident memory of this process, from /proc (Linux only).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
