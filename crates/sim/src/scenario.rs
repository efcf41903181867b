//! Scenarios: bootstrap a mesh, break it in some way, send rounds of messages and measure.

use std::time::Duration;

use peerchannel_proto::MessageId;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::Serialize;

use crate::network::{NetConfig, Network, NodeId};

/// How long a round waits for every live node to deliver.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a round keeps running after full delivery, so late duplicates are counted.
pub const ROUND_SETTLE: Duration = Duration::from_secs(1);

/// After the heal, how long a partition scenario waits for the mesh to become one again.
pub const MERGE_LIMIT: Duration = Duration::from_secs(120);

/// How often connectivity is checked while waiting for a merge.
pub const MERGE_CHECK: Duration = Duration::from_millis(50);

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One sender per round.
    Single,
    /// Several senders per round.
    Multi,
    /// Kill a fraction of the nodes at once, then rounds from survivors.
    Churn,
    /// Split the mesh in two, heal, then rounds from both sides.
    Partition,
}

impl Kind {
    /// The scenario's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Single => "single",
            Kind::Multi => "multi",
            Kind::Churn => "churn",
            Kind::Partition => "partition",
        }
    }
}

/// A scenario and its parameters.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What to do.
    pub kind: Kind,
    /// Number of nodes.
    pub nodes: usize,
    /// The seed: the same seed gives the same output.
    pub seed: u64,
    /// Measured rounds.
    pub rounds: usize,
    /// Unmeasured broadcasts before the rounds, which settle the broadcast tree.
    pub warmup: usize,
    /// Senders per round in `multi`.
    pub senders: usize,
    /// Fraction of nodes killed in `churn`.
    pub kill_fraction: f64,
    /// How long the mesh stays split in `partition`.
    pub partition: Duration,
    /// Fraction of nodes made slow (their links get extra latency).
    pub slow_fraction: f64,
    /// Contacts each node is given when it joins (from the simulated resolver).
    pub join_contacts: usize,
    /// Time to let the mesh settle after the last join.
    pub stabilize: Duration,
    /// The network.
    pub net: NetConfig,
}

impl Scenario {
    /// A scenario with the defaults of the `peerchannel-sim` binary.
    pub fn new(kind: Kind, nodes: usize, seed: u64) -> Self {
        Self {
            kind,
            nodes,
            seed,
            rounds: 10,
            warmup: 5,
            senders: 4,
            kill_fraction: 0.5,
            partition: Duration::from_secs(60),
            slow_fraction: 0.0,
            join_contacts: 5,
            stabilize: Duration::from_secs(10),
            net: NetConfig::default(),
        }
    }
}

/// The measurements of one round: one line of the simulator's JSON output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundReport {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Nodes in the simulation, dead or alive.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Round number, from 1.
    pub round: usize,
    /// Live nodes.
    pub alive: usize,
    /// Messages sent this round.
    pub messages: usize,
    /// Deliveries to live nodes other than the sender.
    pub delivered: usize,
    /// Deliveries that should have happened and did not.
    pub missed: usize,
    /// delivered / (live receivers x messages).
    pub reliability: f64,
    /// Relative message redundancy: full copies received per delivery, minus one.
    pub rmr: f64,
    /// Last delivery hop: the most links any delivery took.
    pub ldh: u16,
    /// Simulated milliseconds until every live node had every message of the round; `null` if
    /// that never happened within the round.
    pub time_to_full_ms: Option<u64>,
    /// Partition only: whether the mesh was one connected graph again after the heal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<bool>,
    /// Partition only: milliseconds from the heal until the mesh was connected (`null` if it
    /// never was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_time_ms: Option<Option<u64>>,
}

/// What a whole run did, beyond its rounds.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every round.
    pub rounds: Vec<RoundReport>,
    /// The first broadcast's redundancy, before the tree settled (warm-up round 1).
    pub first_rmr: Option<f64>,
    /// Simulated time of the whole run.
    pub simulated: Duration,
    /// Events processed.
    pub events: u64,
    /// The live nodes' protocol counters, summed, at the end.
    pub totals: peerchannel_proto::MeshStats,
}

/// Runs a scenario, calling `on_round` after each measured round.
pub fn run(s: &Scenario, mut on_round: impl FnMut(&RoundReport)) -> Summary {
    let mut net = Network::new(s.nodes, s.seed, s.net.clone());
    mark_slow(&mut net, s.slow_fraction);
    bootstrap(&mut net, s);
    let mut first_rmr = None;
    for i in 0..s.warmup {
        let Some(&sender) = net.live().choose(net.rng()) else {
            break;
        };
        let r = round(&mut net, &[sender]);
        if i == 0 {
            first_rmr = Some(r.rmr);
        }
    }
    let mut merge: Option<(bool, Option<u64>)> = None;
    let mut sides: Vec<u8> = Vec::new();
    match s.kind {
        Kind::Churn => {
            let mut live = net.live();
            live.shuffle(net.rng());
            let kill = ((s.nodes as f64) * s.kill_fraction).round() as usize;
            for n in live.into_iter().take(kill.min(s.nodes.saturating_sub(1))) {
                net.kill(n);
            }
        }
        Kind::Partition => {
            let mut order: Vec<NodeId> = (0..s.nodes as NodeId).collect();
            order.shuffle(net.rng());
            sides = vec![0; s.nodes];
            for n in &order[..s.nodes / 2] {
                sides[*n as usize] = 1;
            }
            net.partition(sides.clone());
            net.run_for(s.partition);
            net.heal();
            let healed = net.now();
            let limit = healed + MERGE_LIMIT;
            let merged_at = loop {
                if net.connected() {
                    break Some(net.now());
                }
                if net.now() >= limit {
                    break None;
                }
                net.run_for(MERGE_CHECK);
            };
            let ms = merged_at.map(|t| (t - healed).as_millis() as u64);
            merge = Some((merged_at.is_some(), ms));
        }
        Kind::Single | Kind::Multi => {}
    }
    let mut rounds = Vec::new();
    for number in 1..=s.rounds {
        let live = net.live();
        if live.is_empty() {
            break;
        }
        let senders: Vec<NodeId> = match s.kind {
            Kind::Multi => live.sample(net.rng(), s.senders.max(1)).copied().collect(),
            Kind::Partition => [0u8, 1]
                .iter()
                .filter_map(|side| {
                    let mine: Vec<NodeId> = live
                        .iter()
                        .copied()
                        .filter(|n| sides[*n as usize] == *side)
                        .collect();
                    mine.choose(net.rng()).copied()
                })
                .collect(),
            _ => live.choose(net.rng()).copied().into_iter().collect(),
        };
        if std::env::var_os("PEERCHANNEL_SIM_DEBUG").is_some() {
            let (asym, eager) = net.tree_asymmetry();
            let t = net.total_stats();
            eprintln!(
                "before round {number} at {:?}: {asym} asymmetric of {eager} eager link ends; {} beacons, {} grafts, {} evictions so far",
                net.elapsed(),
                t.beacons_sent,
                t.broadcast.grafts_sent,
                t.membership.evictions
            );
        }
        let r = round(&mut net, &senders);
        let report = RoundReport {
            scenario: s.kind.name(),
            nodes: s.nodes,
            seed: s.seed,
            round: number,
            alive: r.alive,
            messages: senders.len(),
            delivered: r.delivered,
            missed: r.missed,
            reliability: r.reliability,
            rmr: r.rmr,
            ldh: r.ldh,
            time_to_full_ms: r.time_to_full_ms,
            merged: merge.map(|(m, _)| m),
            merge_time_ms: merge.map(|(_, t)| t),
        };
        on_round(&report);
        rounds.push(report);
    }
    Summary {
        rounds,
        first_rmr,
        simulated: net.elapsed(),
        events: net.stats().events,
        totals: net.total_stats(),
    }
}

/// Marks a random `fraction` of the nodes slow (see [`Network::set_slow`]), drawing them from
/// the network's random source as [`run`] does.
pub fn mark_slow(net: &mut Network, fraction: f64) {
    if fraction <= 0.0 {
        return;
    }
    let count = ((net.len() as f64) * fraction).round() as usize;
    let mut all: Vec<NodeId> = (0..net.len() as NodeId).collect();
    all.shuffle(net.rng());
    for n in all.into_iter().take(count) {
        net.set_slow(n, true);
    }
}

/// Nodes join one after another through the simulated resolver, then the mesh settles.
pub fn bootstrap(net: &mut Network, s: &Scenario) {
    let spacing = (Duration::from_secs(20) / s.nodes.max(1) as u32).min(Duration::from_millis(10));
    for n in 0..s.nodes as NodeId {
        net.join(n, s.join_contacts);
        net.run_for(spacing);
    }
    net.run_for(s.stabilize);
}

/// The measurements of one round, before they are labelled.
#[derive(Debug, Clone)]
pub struct RoundStats {
    /// Live nodes.
    pub alive: usize,
    /// Deliveries to live nodes other than the sender.
    pub delivered: usize,
    /// Deliveries missing.
    pub missed: usize,
    /// delivered / expected.
    pub reliability: f64,
    /// Relative message redundancy.
    pub rmr: f64,
    /// Last delivery hop.
    pub ldh: u16,
    /// Milliseconds to full delivery.
    pub time_to_full_ms: Option<u64>,
}

/// Sends one message from each sender and runs until all live nodes have them all or the
/// round times out, then lets duplicates settle.
pub fn round(net: &mut Network, senders: &[NodeId]) -> RoundStats {
    let start = net.now();
    let ids: Vec<MessageId<NodeId>> = senders
        .iter()
        .filter_map(|s| net.broadcast(*s, b"round"))
        .collect();
    let live = net.live();
    let target = live.len().saturating_sub(1);
    let full = net.run_until_or(start + ROUND_TIMEOUT, |net| {
        ids.iter()
            .all(|id| net.tracked(id).is_some_and(|t| t.deliveries >= target))
    });
    // Deliveries count only within the round's window: measure them before settling.
    let live = net.live();
    let mut delivered = 0;
    let mut expected = 0;
    let mut ldh = 0;
    for id in &ids {
        let Some(t) = net.tracked(id) else { continue };
        for &n in &live {
            if n == t.origin {
                continue;
            }
            expected += 1;
            if t.delivered_by(n) {
                delivered += 1;
            }
        }
        ldh = ldh.max(t.max_hops);
    }
    // Duplicates still in flight belong to this round's redundancy.
    let settle_from = full.unwrap_or(net.now()).max(net.now());
    net.run_until(settle_from + ROUND_SETTLE);
    let receptions: u64 = ids
        .iter()
        .filter_map(|id| net.tracked(id))
        .map(|t| t.receptions)
        .sum();
    let rmr = if delivered > 0 {
        receptions as f64 / delivered as f64 - 1.0
    } else {
        0.0
    };
    RoundStats {
        alive: live.len(),
        delivered,
        missed: expected - delivered,
        reliability: if expected > 0 {
            delivered as f64 / expected as f64
        } else {
            1.0
        },
        rmr,
        ldh,
        time_to_full_ms: full.map(|t| (t - start).as_millis() as u64),
    }
}
