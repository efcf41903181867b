//! Revival: nodes that died come back (same identity, fresh state) and join again; they get
//! neighbors and every message, and their own messages reach everyone.

use crate::common;

use std::time::Duration;

use peerchannel_proto::MembershipConfig;
use peerchannel_sim::scenario::Scenario;
use peerchannel_sim::{Kind, NetConfig, NodeId};
use rand::seq::SliceRandom;

const NODES: usize = 500;
const KILLED: usize = 100;
const ROUNDS: usize = 5;

#[test]
fn nodes_revived_after_their_death_was_noticed_rejoin_and_receive() {
    let seed = common::seed();
    let ctx = common::rerun("revive", seed);
    // Well past the 3 s idle timeout: every peer has noticed the deaths and repaired.
    revive_after(seed, Duration::from_secs(10), &ctx);
}

#[test]
fn nodes_revived_before_their_death_was_noticed_rejoin_and_receive() {
    let seed = common::seed();
    let ctx = common::rerun("revive", seed);
    // Within the idle timeout: peers still hold the dead links when the nodes come back.
    revive_after(seed, Duration::from_secs(1), &ctx);
}

fn revive_after(seed: u64, dead_for: Duration, ctx: &str) {
    let mut net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    let mut victims = net.live();
    victims.shuffle(net.rng());
    victims.truncate(KILLED);
    for &n in &victims {
        net.kill(n);
    }
    net.run_for(dead_for);
    let s = Scenario::new(Kind::Single, NODES, seed);
    for &n in &victims {
        net.revive(n, s.join_contacts);
    }
    net.run_for(Duration::from_secs(10));

    assert_eq!(net.live().len(), NODES, "{ctx}");
    let min = MembershipConfig::default().active_min;
    for &n in &victims {
        let neighbors = net.neighbors(n).len();
        assert!(
            neighbors >= min,
            "revived node {n} has {neighbors} neighbors, below {min}; {ctx}"
        );
    }
    assert!(
        net.connected(),
        "the mesh is split after the revival; {ctx}"
    );
    // Rounds from revived nodes and from nodes that never died.
    let survivors: Vec<NodeId> = net
        .live()
        .into_iter()
        .filter(|n| !victims.contains(n))
        .collect();
    for round in 0..ROUNDS {
        let senders = [victims[round], survivors[round * 7 % survivors.len()]];
        let r = common::round(&mut net, &senders);
        assert_eq!(
            r.missed, 0,
            "round {round} from {senders:?} (the first revived): reliability {:.4}; {ctx}",
            r.reliability
        );
    }
}
