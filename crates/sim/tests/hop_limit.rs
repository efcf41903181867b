//! Hop limits: a message with a hop limit of 1 reaches exactly the sender's neighbors; with 2,
//! its neighbors' neighbors too, and no one further.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use peerchannel_proto::BroadcastOptions;
use peerchannel_sim::{NetConfig, Network, NodeId};

const NODES: usize = 500;

/// Far longer than a hop-limited message needs: it is flooded over open links, no grafts.
const WAIT: Duration = Duration::from_secs(2);

#[test]
fn a_hop_limit_of_one_reaches_exactly_the_neighbors() {
    let seed = common::seed();
    let ctx = common::rerun("hop_limit", seed);
    let mut net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    for sender in senders(&mut net) {
        let expected: BTreeSet<NodeId> = net.neighbors(sender).iter().copied().collect();
        let reached = send(&mut net, sender, 1, &ctx);
        assert_eq!(
            reached, expected,
            "hop limit 1 from node {sender}: reached vs its neighbors; {ctx}"
        );
    }
}

#[test]
fn a_hop_limit_of_two_reaches_the_neighbors_of_neighbors_and_no_further() {
    let seed = common::seed();
    let ctx = common::rerun("hop_limit", seed);
    let mut net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    for sender in senders(&mut net) {
        let mut expected = BTreeSet::new();
        for &n in net.neighbors(sender) {
            expected.insert(n);
            expected.extend(net.neighbors(n).iter().copied());
        }
        expected.remove(&sender);
        let reached = send(&mut net, sender, 2, &ctx);
        assert_eq!(
            reached, expected,
            "hop limit 2 from node {sender}: reached vs neighbors and theirs; {ctx}"
        );
        assert!(
            reached.len() < NODES - 1,
            "two hops reached the whole mesh: the test proves nothing; {ctx}"
        );
    }
}

/// A few senders, drawn with the network's seeded random source.
fn senders(net: &mut Network) -> Vec<NodeId> {
    use rand::seq::IndexedRandom;
    let live = net.live();
    live.sample(net.rng(), 5).copied().collect()
}

/// Sends a hop-limited message and returns who delivered it, checking the hop counts.
fn send(net: &mut Network, sender: NodeId, limit: u16, ctx: &str) -> BTreeSet<NodeId> {
    let (id, _) = net
        .broadcast_with(
            sender,
            Bytes::from_static(b"near"),
            BroadcastOptions::hop_limit(limit),
        )
        .unwrap_or_else(|e| panic!("node {sender} could not send: {e}; {ctx}"));
    net.run_for(WAIT);
    let t = net.tracked(&id).expect("tracked");
    assert!(
        t.max_hops <= limit,
        "a delivery took {} hops, above the limit {limit}; {ctx}",
        t.max_hops
    );
    common::delivered(net, &id).into_iter().collect()
}
