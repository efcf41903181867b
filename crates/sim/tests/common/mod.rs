//! Shared helpers of the scenario tests: the seed, a settled mesh, and how to replay a failure.
//!
//! Every test takes its seed from `PEERCHANNEL_SIM_SEED` (default [`DEFAULT_SEED`]) and names
//! it, with the command that replays the run, in every assertion message.

use std::time::Duration;

use peerchannel_sim::scenario::{self, RoundStats};
use peerchannel_sim::{Kind, NetConfig, Network, NodeId, RoundReport, Scenario, Summary};

/// The seed used when `PEERCHANNEL_SIM_SEED` is not set.
pub const DEFAULT_SEED: u64 = 1;

/// The seed of this run: `PEERCHANNEL_SIM_SEED`, or [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    match std::env::var("PEERCHANNEL_SIM_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PEERCHANNEL_SIM_SEED={s:?} is not a number")),
        Err(_) => DEFAULT_SEED,
    }
}

/// A scenario with the simulator's defaults and `rounds` measured rounds.
pub fn scenario(kind: Kind, nodes: usize, seed: u64, rounds: usize) -> Scenario {
    let mut s = Scenario::new(kind, nodes, seed);
    s.rounds = rounds;
    s
}

/// Runs a scenario; each round's JSON line goes to stderr, which the test harness shows when
/// the test fails.
pub fn run(s: &Scenario) -> Summary {
    eprintln!("{}", replay(s));
    scenario::run(s, |r| {
        eprintln!(
            "{}",
            serde_json::to_string(r).expect("a round report serialises")
        );
    })
}

/// Names a scenario run and the command line that replays it, for assertion messages.
pub fn replay(s: &Scenario) -> String {
    let mut cmd = format!(
        "cargo run --release -p peerchannel-sim -- --scenario {} --nodes {} --seed {} --rounds {} \
         --warmup {}",
        s.kind.name(),
        s.nodes,
        s.seed,
        s.rounds,
        s.warmup
    );
    match s.kind {
        Kind::Multi => cmd += &format!(" --senders {}", s.senders),
        Kind::Churn => cmd += &format!(" --kill-fraction {}", s.kill_fraction),
        Kind::Partition => cmd += &format!(" --partition-secs {}", s.partition.as_secs()),
        Kind::Single => {}
    }
    let default = NetConfig::default();
    if s.slow_fraction > 0.0 {
        cmd += &format!(
            " --slow-fraction {} --slow-ms {}",
            s.slow_fraction,
            s.net.slow_extra.as_millis()
        );
    }
    if s.net.latency != default.latency {
        cmd += &format!(
            " --latency-ms {}..{}",
            s.net.latency.0.as_millis(),
            s.net.latency.1.as_millis()
        );
    }
    if s.net.loss > 0.0 {
        cmd += &format!(" --loss {}", s.net.loss);
    }
    format!(
        "{} scenario, {} nodes, seed {} (replay: {cmd} --json)",
        s.kind.name(),
        s.nodes,
        s.seed
    )
}

/// Names a test-specific simulation and how to run it again with the same seed.
pub fn rerun(test: &str, seed: u64) -> String {
    format!(
        "seed {seed} (replay: PEERCHANNEL_SIM_SEED={seed} cargo test -p peerchannel-sim --test integration {test}::)"
    )
}

/// A mesh of `nodes` nodes bootstrapped as the scenarios do it (joins through the resolver,
/// then 10 s to settle), with a few unmeasured broadcasts to settle the broadcast tree. The
/// network holds `extra` more nodes that have not joined.
pub fn settled_mesh(nodes: usize, extra: usize, seed: u64, net: NetConfig) -> Network {
    let mut s = Scenario::new(Kind::Single, nodes, seed);
    s.net = net.clone();
    let mut network = Network::new(nodes + extra, seed, net);
    scenario::bootstrap(&mut network, &s);
    for i in 0..s.warmup {
        let sender = (i * 7919 % nodes) as NodeId;
        scenario::round(&mut network, &[sender]);
    }
    network
}

/// Runs until every live node but the origin has delivered `ids`, or `limit` passes.
pub fn run_until_delivered(
    net: &mut Network,
    ids: &[peerchannel_proto::MessageId<NodeId>],
    limit: Duration,
) -> bool {
    let until = net.now() + limit;
    net.run_until_or(until, |net| {
        let target = net.live().len() - 1;
        ids.iter()
            .all(|id| net.tracked(id).is_some_and(|t| t.deliveries >= target))
    })
    .is_some()
}

/// Live nodes, other than the origin, that did not deliver a tracked message.
pub fn missing(net: &Network, id: &peerchannel_proto::MessageId<NodeId>) -> Vec<NodeId> {
    let t = net.tracked(id).expect("the message is tracked");
    net.live()
        .into_iter()
        .filter(|n| *n != t.origin && !t.delivered_by(*n))
        .collect()
}

/// Live nodes that delivered a tracked message.
pub fn delivered(net: &Network, id: &peerchannel_proto::MessageId<NodeId>) -> Vec<NodeId> {
    let t = net.tracked(id).expect("the message is tracked");
    net.live()
        .into_iter()
        .filter(|n| t.delivered_by(*n))
        .collect()
}

/// The mean of some numbers (0 for none).
pub fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// One line per round, for assertion messages.
pub fn table(rounds: &[RoundReport]) -> String {
    rounds
        .iter()
        .map(|r| {
            format!(
                "round {}: alive {} missed {} reliability {:.4} rmr {:.4} ldh {} full {:?} ms",
                r.round, r.alive, r.missed, r.reliability, r.rmr, r.ldh, r.time_to_full_ms
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One round of `senders`, as the scenarios measure it.
pub fn round(net: &mut Network, senders: &[NodeId]) -> RoundStats {
    scenario::round(net, senders)
}
