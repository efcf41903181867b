//! Printing: a table for people, or one JSON object per phase per line (`--json`).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::phases::{LatencyResult, PauseResult, ResourcesResult, ThroughputResult};
use crate::raw::RawResult;
use crate::relay::RelayResult;

/// Bytes in a mebibyte.
const MIB: f64 = 1024.0 * 1024.0;

/// The targets (10 nodes, 1 KiB messages, loopback, one process).
pub mod target {
    /// Smallest efficiency.
    pub const EFFICIENCY: f64 = 0.7;
    /// Largest p99 latency to every node at 1,000 messages/s, in microseconds.
    pub const P99_US: f64 = 2_000.0;
    /// Share of the messages delivered to every node.
    pub const FULL_DELIVERY: f64 = 1.0;
    /// Largest relative message redundancy in steady state.
    pub const RMR: f64 = 0.05;
    /// Largest idle resident memory per node.
    pub const IDLE_RSS_BYTES: u64 = 8 * 1024 * 1024;
    /// Smallest share of their rate the other receivers keep while one is paused.
    pub const KEPT_DURING_PAUSE: f64 = 0.8;
}

/// What every line says about the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Seconds per phase.
    pub secs: f64,
    /// `in-process` or `processes`.
    pub mode: &'static str,
    /// CPU cores this process may use.
    pub cores: usize,
}

/// Prints the results as they come.
pub struct Printer {
    json: bool,
    info: RunInfo,
    raw_per_sec: f64,
    verdicts: Vec<(String, bool)>,
}

impl Printer {
    /// A printer for a table (`json == false`) or JSON lines.
    pub fn new(json: bool, info: RunInfo) -> Self {
        if !json {
            println!(
                "peerchannel-bench: {} nodes, {}-byte messages, {} s phases, {}, loopback, {} cores",
                info.nodes, info.size, info.secs, info.mode, info.cores
            );
            println!("{:<11} {:<50} {:>22}  vs raw", "phase", "figure", "value");
        }
        Self {
            json,
            info,
            raw_per_sec: 0.0,
            verdicts: Vec::new(),
        }
    }

    /// The settled mesh (table only).
    pub fn settled(&self, neighbors: &[usize], secs: f64) {
        if !self.json {
            let (min, max) = (
                neighbors.iter().min().unwrap_or(&0),
                neighbors.iter().max().unwrap_or(&0),
            );
            row(
                "mesh",
                "settled after (neighbors per node)",
                &format!("{secs:.1} s"),
                &format!("{min}-{max} neighbors"),
            );
        }
    }

    /// The baseline.
    pub fn raw(&mut self, r: &RawResult) {
        self.raw_per_sec = r.msgs_per_sec;
        if self.json {
            return self.line("raw", r);
        }
        row(
            "raw",
            "messages/s over one QUIC link",
            &count(r.msgs_per_sec),
            &format!("1.00  ({:.0} Mbit/s of bodies)", r.mbit_per_sec),
        );
    }

    /// The ceilings: the same links as fixed relay trees, without the protocol.
    pub fn ceiling(&mut self, r: &RelayResult) {
        if self.json {
            return self.line("ceiling", r);
        }
        row(
            "ceiling",
            &format!(
                "relay tree of raw links (fan-out {}), slowest msgs/s",
                r.fanout
            ),
            &count(r.slowest_msgs_per_sec),
            &format!("{:.2}  = its efficiency", r.efficiency),
        );
        row(
            "ceiling",
            "the same, message by message through node-like tasks",
            &count(r.per_message_slowest_msgs_per_sec),
            &format!("{:.2}  = its efficiency", r.per_message_efficiency),
        );
    }

    /// The throughput phase.
    pub fn throughput(&mut self, t: &ThroughputResult) {
        let nodes = self.info.nodes;
        self.verdict(
            format!("efficiency {:.2} >= {}", t.efficiency, target::EFFICIENCY),
            t.efficiency >= target::EFFICIENCY,
        );
        self.verdict(
            format!("RMR {:.4} <= {}", t.rmr, target::RMR),
            t.rmr <= target::RMR,
        );
        if self.json {
            return self.line("throughput", t);
        }
        row(
            "throughput",
            "slowest receiver, messages/s",
            &count(t.slowest_msgs_per_sec),
            &format!("{:.3}", self.vs_raw(t.slowest_msgs_per_sec)),
        );
        row(
            "throughput",
            "deliveries/s, all receivers (nodes-1 x slowest)",
            &count(t.slowest_msgs_per_sec * (nodes - 1) as f64),
            &format!("{:.2}  = efficiency", t.efficiency),
        );
        row(
            "throughput",
            "sent by node 0, messages",
            &count(t.sent as f64),
            &format!("{:.1}% reached every receiver", t.full_delivery * 100.0),
        );
        row(
            "throughput",
            "RMR (duplicate copies per delivery)",
            &format!("{:.4}", t.rmr),
            &format!("{} duplicates", t.counters.duplicates),
        );
        row(
            "throughput",
            "lazy-push overhead, bytes per delivery",
            &format!("{:.1}", t.ihave_bytes_per_delivery),
            &format!("{:.2}% of payload bytes", t.lazy_overhead * 100.0),
        );
        row(
            "throughput",
            "p50 / p99 one-way under load (queueing)",
            &format!("{:.1}/{:.1} ms", t.load_p50_us / 1e3, t.load_p99_us / 1e3),
            "",
        );
        row(
            "throughput",
            "CPU time per delivery (all nodes)",
            &format!("{:.2} us", t.cpu_us_per_delivery),
            "",
        );
        if t.lagged > 0 {
            row(
                "throughput",
                "dropped by a slow channel reader (lagged)",
                &count(t.lagged as f64),
                "",
            );
        }
    }

    /// The latency phase.
    pub fn latency(&mut self, l: &LatencyResult) {
        self.verdict(
            format!(
                "latency p99 {:.0} us (worst node) <= {:.0} us",
                l.p99_worst_node_us,
                target::P99_US
            ),
            l.p99_worst_node_us <= target::P99_US,
        );
        self.verdict(
            format!("delivered to every node {:.2}%", l.full_delivery * 100.0),
            l.full_delivery >= target::FULL_DELIVERY,
        );
        if self.json {
            return self.line("latency", l);
        }
        let rate = format!("at {} msg/s", count(l.rate));
        row(
            "latency",
            &format!("p50 / p99 / max one-way, {rate}"),
            &format!(
                "{:.0}/{:.0}/{:.0} us",
                l.all.p50_us, l.all.p99_us, l.all.max_us
            ),
            &format!("worst node p99 {:.0} us", l.p99_worst_node_us),
        );
        row(
            "latency",
            "delivered to every receiver",
            &format!("{:.2}%", l.full_delivery * 100.0),
            &format!("of {} sent", l.sent),
        );
    }

    /// The resources.
    pub fn resources(&mut self, r: &ResourcesResult) {
        self.verdict(
            format!(
                "idle RSS per node {:.1} MiB <= {:.0} MiB ({})",
                r.rss_idle_bytes as f64 / MIB,
                target::IDLE_RSS_BYTES as f64 / MIB,
                r.mode
            ),
            r.rss_idle_bytes <= target::IDLE_RSS_BYTES,
        );
        if self.json {
            return self.line("resources", r);
        }
        let how = match r.mode {
            "processes" => "largest node process",
            _ => "process growth / nodes",
        };
        row(
            "resources",
            &format!("RSS per node, idle ({how})"),
            &mib(r.rss_idle_bytes),
            &format!("total {}", mib(r.total_idle_bytes)),
        );
        row(
            "resources",
            &format!("peak RSS per node, under load ({how})"),
            &mib(r.rss_load_bytes),
            &format!("total {}", mib(r.total_load_bytes)),
        );
    }

    /// The pause phase.
    pub fn pause(&mut self, p: &PauseResult) {
        self.verdict(
            format!(
                "others keep {:.0}% of their rate during a {} s pause (>= {:.0}%)",
                p.others_kept * 100.0,
                p.pause_secs,
                target::KEPT_DURING_PAUSE * 100.0
            ),
            p.others_kept >= target::KEPT_DURING_PAUSE,
        );
        if self.json {
            return self.line("pause", p);
        }
        let sender = match p.rate {
            Some(rate) => format!("{} msg/s", count(rate)),
            None => "flat out".to_owned(),
        };
        row("pause", "node 0 sends", &sender, "");
        row(
            "pause",
            &format!("others' msgs/s before / during ({})", p.how),
            &format!(
                "{} / {}",
                count(p.others_before_msgs_per_sec),
                count(p.others_during_msgs_per_sec)
            ),
            &format!("kept {:.0}%", p.others_kept * 100.0),
        );
        row(
            "pause",
            "others' msgs/s after the pause",
            &count(p.others_after_msgs_per_sec),
            &format!("{:.1}% reached every other", p.others_full_delivery * 100.0),
        );
        let runs = p.others_missing_runs.iter().flatten();
        let (count_runs, longest) = runs.fold((0, 0), |(n, max), (_, len)| (n + 1, max.max(*len)));
        row(
            "pause",
            "others' runs of messages missed (all receivers)",
            &count(count_runs as f64),
            &format!("longest {}; where: --json", count(longest as f64)),
        );
        if p.others_lagged > 0 {
            row(
                "pause",
                "dropped by a slow channel reader (lagged, most of one node)",
                &count(p.others_lagged as f64),
                "",
            );
        }
        if p.how == "SIGSTOP" {
            row(
                "pause",
                "sender RSS before / peak",
                &format!(
                    "{} / {}",
                    mib(p.sender_rss_before_bytes),
                    mib(p.sender_rss_peak_bytes)
                ),
                "",
            );
            row(
                "pause",
                "paused node RSS before / peak",
                &format!(
                    "{} / {}",
                    mib(p.paused_rss_before_bytes),
                    mib(p.paused_rss_peak_bytes)
                ),
                "",
            );
        } else {
            row(
                "pause",
                "process RSS before / peak (all nodes together)",
                &format!(
                    "{} / {}",
                    mib(p.sender_rss_before_bytes),
                    mib(p.sender_rss_peak_bytes)
                ),
                "per node: use --processes",
            );
        }
        let fate = match (p.paused_disconnected, p.paused_rejoined_after_secs) {
            (_, Some(s)) => format!("disconnected, online again {s:.1} s after resuming"),
            (true, None) if p.paused_online_at_end => "lost links, stayed online".to_owned(),
            (true, None) => "disconnected, not back yet".to_owned(),
            (false, _) => "kept its links".to_owned(),
        };
        row(
            "pause",
            "paused node got before / during / after",
            &format!(
                "{:.0}/{:.0}/{:.0}%",
                p.paused_share_before * 100.0,
                p.paused_share_during * 100.0,
                p.paused_share_after * 100.0
            ),
            &fate,
        );
    }

    /// The verdicts against the targets (table only; the JSON lines carry the
    /// figures).
    pub fn finish(&self) {
        if self.json {
            return;
        }
        println!("targets ({} cores, loopback):", self.info.cores);
        for (what, met) in &self.verdicts {
            println!("  [{}] {what}", if *met { "met" } else { "NOT met" });
        }
    }

    fn verdict(&mut self, what: String, met: bool) {
        self.verdicts.push((what, met));
    }

    fn vs_raw(&self, per_sec: f64) -> f64 {
        if self.raw_per_sec > 0.0 {
            per_sec / self.raw_per_sec
        } else {
            0.0
        }
    }

    fn line(&self, phase: &str, figures: &impl Serialize) {
        let mut object = Map::new();
        object.insert("phase".into(), Value::from(phase));
        if let Ok(Value::Object(info)) = serde_json::to_value(&self.info) {
            object.extend(info);
        }
        if let Ok(Value::Object(figures)) = serde_json::to_value(figures) {
            object.extend(figures);
        }
        if phase != "raw" {
            object.insert("raw_msgs_per_sec".into(), Value::from(self.raw_per_sec));
        }
        println!("{}", Value::Object(object));
    }
}

fn row(phase: &str, figure: &str, value: &str, note: &str) {
    println!("{phase:<11} {figure:<50} {value:>22}  {note}");
}

/// A count with thousands separators.
fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_separators() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1_000.0), "1,000");
        assert_eq!(count(1_234_567.0), "1,234,567");
    }
}
