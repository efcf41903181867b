//! The measured phases over a settled mesh: throughput (with redundancy and CPU time),
//! latency at a fixed rate, resources, and a paused receiver.

use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use serde::Serialize;

use crate::agent::{Counters, Health, SendPlan};
use crate::clock::{now_ns, ns_to_secs, secs_to_ns};
use crate::cluster::{Cluster, Member, Mode};
use crate::payload::Phase;
use crate::procstat::ProcSample;
use crate::record::{
    Percentiles, ReceiverReport, efficiency, full_delivery, merged_latency, per_sec, rmr,
};

/// How long the sender sends before a measured phase, so that the broadcast tree has formed
/// (duplicates prune links to lazy) and allocators and windows have warmed up.
pub const WARMUP_SECS: f64 = 1.0;

/// The warm-up's rate, messages per second: well below saturation, so that it forms the tree
/// without overloading the mesh.
pub const WARMUP_RATE: f64 = 1_000.0;

/// How often receivers are polled while the last messages of a phase arrive.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A phase is over when no receiver got anything new for this long (a message announced
/// lazily is fetched after 300 ms), or when every receiver has every message.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// The longest wait for the last messages of a phase.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// How long the sender runs before the receiver is paused.
const PAUSE_LEAD_SECS: f64 = 3.0;

/// The first second of sending is left out of the "before the pause" rate (ramp-up).
const PAUSE_RAMP_SECS: f64 = 1.0;

/// How long the sender goes on after the receiver resumes (to see it rejoin or catch up).
const PAUSE_TAIL_SECS: f64 = 8.0;

/// How often memory is read during the pause phase.
const PAUSE_SAMPLE: Duration = Duration::from_millis(250);

/// What the throughput phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    /// Messages node 0 sent.
    pub sent: u64,
    /// How long it sent.
    pub window_secs: f64,
    /// Distinct messages per second at the slowest receiver.
    pub slowest_msgs_per_sec: f64,
    /// ... at the fastest.
    pub fastest_msgs_per_sec: f64,
    /// (nodes - 1) x slowest / raw.
    pub efficiency: f64,
    /// Share of the messages that reached every receiver.
    pub full_delivery: f64,
    /// Relative message redundancy from the protocol counters.
    pub rmr: f64,
    /// The protocol counters, summed over the nodes, for the phase.
    pub counters: Counters,
    /// Bytes of lazy announcements per delivered message.
    pub ihave_bytes_per_delivery: f64,
    /// Bytes of lazy announcements per byte of message delivered.
    pub lazy_overhead: f64,
    /// Deliveries the harness counted (distinct messages x receivers).
    pub deliveries: u64,
    /// Messages channels dropped because the harness read too slowly.
    pub lagged: u64,
    /// CPU time per delivered message, every node and the harness included.
    pub cpu_us_per_delivery: f64,
    /// Median one-way latency at saturation, over every delivery at every receiver: how long
    /// messages wait in the queues along the tree when every queue is full.
    pub load_p50_us: f64,
    /// ... its 99th percentile.
    pub load_p99_us: f64,
}

/// Sends as fast as possible for `secs` and measures what the receivers got.
pub async fn throughput(
    cluster: &Cluster,
    size: usize,
    secs: f64,
    raw_per_sec: f64,
) -> anyhow::Result<ThroughputResult> {
    let before = cluster.counters().await?;
    let cpu_before = cpu_ns(&cluster.samples()?);
    let plan = SendPlan {
        phase: Phase::Throughput,
        secs,
        rate: None,
    };
    let sent = cluster.sender().send(plan).await?;
    let reports = drain_and_report(cluster.receivers(), Phase::Throughput, sent.sent).await?;
    let cpu_after = cpu_ns(&cluster.samples()?);
    let after = cluster.counters().await?;
    let counters = after
        .iter()
        .zip(&before)
        .fold(Counters::default(), |sum, (a, b)| sum.plus(&a.since(b)));

    let window = sent.end_ns - sent.start_ns;
    let got: Vec<u64> = reports
        .iter()
        .map(|r| r.seqs.count_below(sent.sent))
        .collect();
    let rates: Vec<f64> = got.iter().map(|n| per_sec(*n, window)).collect();
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let fastest = rates.iter().copied().fold(0.0, f64::max);
    let deliveries: u64 = got.iter().sum();
    let seqs: Vec<_> = reports.iter().map(|r| &r.seqs).collect();
    let (load, _) = merged_latency(&reports)?;
    Ok(ThroughputResult {
        sent: sent.sent,
        window_secs: ns_to_secs(window),
        slowest_msgs_per_sec: slowest,
        fastest_msgs_per_sec: fastest,
        efficiency: efficiency(cluster.receivers().len(), slowest, raw_per_sec),
        full_delivery: full_delivery(&seqs, sent.sent),
        rmr: rmr(counters.received, counters.duplicates),
        counters,
        ihave_bytes_per_delivery: ratio(counters.ihave_bytes, deliveries),
        lazy_overhead: ratio(counters.ihave_bytes, deliveries * size as u64),
        deliveries,
        lagged: reports.iter().map(|r| r.lagged).max().unwrap_or(0),
        cpu_us_per_delivery: ratio(cpu_after.saturating_sub(cpu_before), deliveries) / 1_000.0,
        load_p50_us: load.p50_us,
        load_p99_us: load.p99_us,
    })
}

/// Sends for the warm-up and waits for it to arrive.
pub async fn warm_up(cluster: &Cluster) -> anyhow::Result<()> {
    let plan = SendPlan {
        phase: Phase::Warmup,
        secs: WARMUP_SECS,
        rate: Some(WARMUP_RATE),
    };
    let sent = cluster.sender().send(plan).await?;
    drain_and_report(cluster.receivers(), Phase::Warmup, sent.sent).await?;
    Ok(())
}

/// What the latency phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// Messages per second asked for.
    pub rate: f64,
    /// Messages sent.
    pub sent: u64,
    /// Over every delivery at every receiver.
    #[serde(flatten)]
    pub all: Percentiles,
    /// The worst receiver's 99th percentile.
    pub p99_worst_node_us: f64,
    /// Share of the messages that reached every receiver.
    pub full_delivery: f64,
}

/// Sends at `rate` for `secs` and measures one-way latencies at every receiver.
pub async fn latency(cluster: &Cluster, secs: f64, rate: f64) -> anyhow::Result<LatencyResult> {
    let plan = SendPlan {
        phase: Phase::Latency,
        secs,
        rate: Some(rate),
    };
    let sent = cluster.sender().send(plan).await?;
    let reports = drain_and_report(cluster.receivers(), Phase::Latency, sent.sent).await?;
    let (all, p99_worst_node_us) = merged_latency(&reports)?;
    let seqs: Vec<_> = reports.iter().map(|r| &r.seqs).collect();
    Ok(LatencyResult {
        rate,
        sent: sent.sent,
        all,
        p99_worst_node_us,
        full_delivery: full_delivery(&seqs, sent.sent),
    })
}

/// What the resources phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct ResourcesResult {
    /// `processes` (each node measured on its own) or `in-process` (the process's memory
    /// beyond what it held before the nodes started, divided by the nodes).
    pub mode: &'static str,
    /// Resident memory of a node when the mesh is settled and idle: the largest over the
    /// node processes, or the in-process share per node.
    pub rss_idle_bytes: u64,
    /// The most resident memory of a node after the load phases (its high-water mark): the
    /// largest over the node processes, or the in-process share per node.
    pub rss_load_bytes: u64,
    /// The whole process (in-process) or the sum over node processes, idle.
    pub total_idle_bytes: u64,
    /// The same, high-water mark after the load.
    pub total_load_bytes: u64,
    /// CPU time per delivered message in the throughput phase.
    pub cpu_us_per_delivery: f64,
}

/// Resources from samples taken idle (after settling) and after the load phases.
pub fn resources(
    cluster: &Cluster,
    idle: &[ProcSample],
    load: &[ProcSample],
    cpu_us_per_delivery: f64,
) -> ResourcesResult {
    let nodes = cluster.members.len() as u64;
    let total_idle = idle.iter().map(|s| s.rss_bytes).sum();
    let total_load = load.iter().map(|s| s.hwm_bytes).sum();
    match cluster.mode {
        Mode::Processes => ResourcesResult {
            mode: "processes",
            rss_idle_bytes: idle.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
            rss_load_bytes: load.iter().map(|s| s.hwm_bytes).max().unwrap_or(0),
            total_idle_bytes: total_idle,
            total_load_bytes: total_load,
            cpu_us_per_delivery,
        },
        Mode::InProcess => ResourcesResult {
            mode: "in-process",
            rss_idle_bytes: total_idle.saturating_sub(cluster.rss_before_nodes) / nodes,
            rss_load_bytes: total_load.saturating_sub(cluster.rss_before_nodes) / nodes,
            total_idle_bytes: total_idle,
            total_load_bytes: total_load,
            cpu_us_per_delivery,
        },
    }
}

/// What the pause phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct PauseResult {
    /// How long the receiver was paused.
    pub pause_secs: f64,
    /// The sender's rate, messages/s; `None` for as fast as backpressure allows.
    pub rate: Option<f64>,
    /// How: `SIGSTOP` (its process) or `runtime blocked` (its thread, in-process).
    pub how: &'static str,
    /// The other receivers' rate before the pause (the slowest of them), messages/s.
    pub others_before_msgs_per_sec: f64,
    /// Their rate during the pause (the slowest).
    pub others_during_msgs_per_sec: f64,
    /// Their rate after it (the slowest).
    pub others_after_msgs_per_sec: f64,
    /// The smallest ratio during / before over the other receivers.
    pub others_kept: f64,
    /// Share of the messages that reached every other receiver.
    pub others_full_delivery: f64,
    /// The sender's memory (the whole process, in-process) before the pause.
    pub sender_rss_before_bytes: u64,
    /// Its largest memory reading during and after the pause.
    pub sender_rss_peak_bytes: u64,
    /// The paused node's memory before the pause (in-process: the whole process).
    pub paused_rss_before_bytes: u64,
    /// Its largest memory reading during and after the pause.
    pub paused_rss_peak_bytes: u64,
    /// Whether the paused node lost its links (its neighbors gave up on it).
    pub paused_disconnected: bool,
    /// Seconds after it resumed until it was online again, if it went offline.
    pub paused_rejoined_after_secs: Option<f64>,
    /// Whether it had neighbors at the end.
    pub paused_online_at_end: bool,
    /// Share of the messages sent before the pause that it got.
    pub paused_share_before: f64,
    /// ... sent during the pause (a catch-up would fetch them afterwards).
    pub paused_share_during: f64,
    /// ... sent after it resumed.
    pub paused_share_after: f64,
    /// Messages sent.
    pub sent: u64,
    /// The most messages one of the others' channel readers fell behind and missed (counted
    /// as not delivered).
    pub others_lagged: u64,
    /// Per other receiver, the runs of the phase's messages it never got, as (first sequence
    /// number, length): where in the phase the losses fell, and whether receivers lost the
    /// same runs (a node upstream of them all) or runs of their own.
    pub others_missing_runs: Vec<Vec<(u64, u64)>>,
    /// The protocol counters, summed over the nodes, for the phase.
    pub counters: Counters,
}

/// Sends at `rate` (as fast as possible if `None`) while the last receiver is paused for
/// `pause_secs`.
pub async fn pause(
    cluster: &Cluster,
    pause_secs: f64,
    rate: Option<f64>,
) -> anyhow::Result<PauseResult> {
    let victim = cluster
        .members
        .last()
        .expect("a mesh of at least three nodes");
    let health_before = victim.health().await?;
    let counters_before = cluster.counters().await?;
    let plan = SendPlan {
        phase: Phase::Pause,
        secs: PAUSE_LEAD_SECS + pause_secs + PAUSE_TAIL_SECS,
        rate,
    };
    let (sent, control) = tokio::join!(
        cluster.sender().send(plan),
        control_pause(cluster, victim, pause_secs, health_before)
    );
    let (sent, control) = (sent?, control?);
    let reports = drain_and_report(cluster.receivers(), Phase::Pause, sent.sent).await?;
    let (victim_report, other_reports) = reports.split_last().expect("receivers");
    let counters = cluster
        .counters()
        .await?
        .iter()
        .zip(&counters_before)
        .fold(Counters::default(), |sum, (a, b)| sum.plus(&a.since(b)));
    let from = sent.start_ns + secs_to_ns(PAUSE_RAMP_SECS);
    let mut before = f64::INFINITY;
    let mut during = f64::INFINITY;
    let mut after = f64::INFINITY;
    let mut kept = f64::INFINITY;
    for r in other_reports {
        let b = r.rate_between(from, control.paused_at);
        let d = r.rate_between(control.paused_at, control.resumed_at);
        before = before.min(b);
        during = during.min(d);
        after = after.min(r.rate_between(control.resumed_at, sent.end_ns));
        kept = kept.min(if b > 0.0 { d / b } else { 0.0 });
    }
    let seqs: Vec<_> = other_reports.iter().map(|r| &r.seqs).collect();
    let (p0, p1) = (
        sent.seq_at(control.paused_at),
        sent.seq_at(control.resumed_at),
    );
    let share = |from: u64, to: u64| {
        if to <= from {
            1.0
        } else {
            victim_report.seqs.count_between(from, to) as f64 / (to - from) as f64
        }
    };
    Ok(PauseResult {
        pause_secs,
        rate,
        how: match cluster.mode {
            Mode::Processes => "SIGSTOP",
            Mode::InProcess => "runtime blocked",
        },
        others_before_msgs_per_sec: before,
        others_during_msgs_per_sec: during,
        others_after_msgs_per_sec: after,
        others_kept: kept,
        others_full_delivery: full_delivery(&seqs, sent.sent),
        others_lagged: other_reports.iter().map(|r| r.lagged).max().unwrap_or(0),
        others_missing_runs: other_reports
            .iter()
            .map(|r| r.seqs.missing_runs(sent.sent))
            .collect(),
        counters,
        sender_rss_before_bytes: control.sender_before,
        sender_rss_peak_bytes: control.sender_peak,
        paused_rss_before_bytes: control.victim_before,
        paused_rss_peak_bytes: control.victim_peak,
        paused_disconnected: control.disconnected,
        paused_rejoined_after_secs: control.rejoined_after,
        paused_online_at_end: control.online_at_end,
        paused_share_before: share(0, p0),
        paused_share_during: share(p0, p1),
        paused_share_after: share(p1, sent.sent),
        sent: sent.sent,
    })
}

struct PauseControl {
    paused_at: u64,
    resumed_at: u64,
    sender_before: u64,
    sender_peak: u64,
    victim_before: u64,
    victim_peak: u64,
    disconnected: bool,
    rejoined_after: Option<f64>,
    online_at_end: bool,
}

/// Pauses `victim` after the lead, resumes it, and watches memory and the victim's links.
async fn control_pause(
    cluster: &Cluster,
    victim: &Member,
    pause_secs: f64,
    health_before: Health,
) -> anyhow::Result<PauseControl> {
    let sender_pid = cluster.sender().pid();
    let victim_pid = victim.pid();
    let rss = |pid| crate::procstat::sample(pid).map(|s| s.rss_bytes);
    tokio::time::sleep(Duration::from_secs_f64(PAUSE_LEAD_SECS)).await;
    let sender_before = rss(sender_pid)?;
    let victim_before = rss(victim_pid)?;
    let (mut sender_peak, mut victim_peak) = (sender_before, victim_before);
    let paused_at = now_ns();
    victim.pause()?;
    let pause_until = Instant::now() + Duration::from_secs_f64(pause_secs);
    while Instant::now() < pause_until {
        tokio::time::sleep(PAUSE_SAMPLE.min(pause_until - Instant::now())).await;
        sender_peak = sender_peak.max(rss(sender_pid)?);
        victim_peak = victim_peak.max(rss(victim_pid)?);
    }
    victim.resume()?;
    let resumed_at = now_ns();
    let resumed = Instant::now();
    let tail_end = resumed + Duration::from_secs_f64(PAUSE_TAIL_SECS);
    let mut went_offline = false;
    let mut rejoined_after = None;
    let mut disconnected = false;
    let mut online_at_end = false;
    while Instant::now() < tail_end {
        tokio::time::sleep(PAUSE_SAMPLE).await;
        sender_peak = sender_peak.max(rss(sender_pid)?);
        victim_peak = victim_peak.max(rss(victim_pid)?);
        let health = victim.health().await?;
        let neighbors = victim.neighbors().await?;
        disconnected |= health.neighbor_down > health_before.neighbor_down;
        went_offline |= health.offline > health_before.offline;
        if went_offline
            && rejoined_after.is_none()
            && health.online > health_before.online
            && neighbors > 0
        {
            rejoined_after = Some(resumed.elapsed().as_secs_f64());
        }
        online_at_end = neighbors > 0;
    }
    Ok(PauseControl {
        paused_at,
        resumed_at,
        sender_before,
        sender_peak,
        victim_before,
        victim_peak,
        disconnected,
        rejoined_after,
        online_at_end,
    })
}

/// Waits for the last messages of a phase, then collects every receiver's report.
async fn drain_and_report(
    receivers: &[Member],
    phase: Phase,
    sent: u64,
) -> anyhow::Result<Vec<ReceiverReport>> {
    let started = Instant::now();
    let mut last_total = None;
    let mut quiet_since = Instant::now();
    loop {
        let counts = try_join_all(receivers.iter().map(|m| m.count(phase))).await?;
        if counts.iter().all(|c| *c >= sent) {
            break;
        }
        let total: u64 = counts.iter().sum();
        if last_total != Some(total) {
            last_total = Some(total);
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= DRAIN_QUIET {
            break;
        }
        if started.elapsed() >= DRAIN_LIMIT {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    try_join_all(receivers.iter().map(|m| m.report(phase))).await
}

fn cpu_ns(samples: &[ProcSample]) -> u64 {
    samples.iter().map(|s| s.cpu_ns).sum()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
