//! Slow nodes: a tenth of the nodes have 200 ms more latency on every link. Messages still
//! reach everyone, and the broadcast tree routes around the slow nodes: they end up as its
//! leaves, because their copies arrive late and are pruned.

use crate::common;

use peerchannel_sim::scenario::{self, Scenario};
use peerchannel_sim::{Kind, NetConfig, Network, NodeId};

const NODES: usize = 1_000;
const SLOW_FRACTION: f64 = 0.1;

#[test]
fn every_message_reaches_everyone_with_slow_nodes() {
    let mut s = common::scenario(Kind::Single, NODES, common::seed(), 10);
    s.slow_fraction = SLOW_FRACTION;
    let ctx = common::replay(&s);
    let summary = common::run(&s);
    let table = common::table(&summary.rounds);
    assert_eq!(summary.rounds.len(), s.rounds, "{ctx}");
    for r in &summary.rounds {
        assert_eq!(r.missed, 0, "round {}: {ctx}\n{table}", r.round);
    }
}

#[test]
fn the_broadcast_tree_routes_around_slow_nodes() {
    let seed = common::seed();
    let ctx = common::rerun("slow_node", seed);
    let s = Scenario::new(Kind::Single, NODES, seed);
    let mut net = Network::new(NODES, seed, NetConfig::default());
    scenario::mark_slow(&mut net, SLOW_FRACTION);
    scenario::bootstrap(&mut net, &s);
    for _ in 0..10 {
        let sender = *net.live().first().expect("a live node");
        scenario::round(&mut net, &[sender]);
    }
    let (slow, fast): (Vec<NodeId>, Vec<NodeId>) =
        net.live().into_iter().partition(|n| net.is_slow(*n));
    let degree =
        |nodes: &[NodeId]| common::mean(nodes.iter().map(|n| net.eager_peers(*n).len() as f64));
    // A node with more than one eager link passes messages on to someone.
    let interior = |nodes: &[NodeId]| {
        nodes
            .iter()
            .filter(|n| net.eager_peers(**n).len() > 1)
            .count() as f64
            / nodes.len() as f64
    };
    let (slow_degree, fast_degree) = (degree(&slow), degree(&fast));
    let (slow_interior, fast_interior) = (interior(&slow), interior(&fast));
    eprintln!(
        "eager links per node: slow {slow_degree:.2}, others {fast_degree:.2}; \
         passing messages on: slow {slow_interior:.3}, others {fast_interior:.3}"
    );
    assert!(
        slow_degree < 0.6 * fast_degree,
        "slow nodes keep {slow_degree:.2} eager links on average, others {fast_degree:.2}; {ctx}"
    );
    assert!(
        slow_interior < 0.25 * fast_interior,
        "{:.1}% of slow nodes pass messages on, against {:.1}% of the others; {ctx}",
        slow_interior * 100.0,
        fast_interior * 100.0
    );
}
