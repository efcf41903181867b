//! Propagation filters: an application decides per message whether to deliver it and pass it
//! on. Nodes that do not pass messages on must not cut anyone off; nodes that reject a message
//! never deliver it, and everyone else still does.

use crate::common;

use std::collections::BTreeSet;

use peerchannel_proto::{Propagation, State};
use peerchannel_sim::scenario::ROUND_TIMEOUT;
use peerchannel_sim::{NetConfig, Network, NodeId};
use rand::seq::SliceRandom;

const NODES: usize = 500;

#[test]
fn nodes_that_deliver_only_do_not_cut_anyone_off() {
    let seed = common::seed();
    let ctx = common::rerun("filter", seed);
    let mut net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    let (sender, filtered) = pick(&mut net, NODES / 10);
    let inner = filtered
        .iter()
        .filter(|n| net.eager_peers(**n).len() > 1)
        .count();
    assert!(
        inner > 0,
        "no deliver-only node is inside the broadcast tree: the test proves nothing; {ctx}"
    );
    for &n in &filtered {
        net.set_filter(n, Some(Box::new(|_, _| Propagation::DeliverOnly)));
    }
    for round in 0..3 {
        let id = net
            .broadcast(sender, b"filtered")
            .unwrap_or_else(|| panic!("node {sender} could not send; {ctx}"));
        common::run_until_delivered(&mut net, &[id], ROUND_TIMEOUT);
        assert_eq!(
            common::missing(&net, &id),
            Vec::<NodeId>::new(),
            "round {round}: nodes that never got the message, with {} of {NODES} nodes \
             delivering only; {ctx}",
            filtered.len()
        );
    }
}

#[test]
fn rejected_messages_are_not_delivered_and_still_reach_everyone_else() {
    let seed = common::seed();
    let ctx = common::rerun("filter", seed);
    let mut net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    let (sender, rejecting) = pick(&mut net, NODES / 10);
    for &n in &rejecting {
        net.set_filter(n, Some(Box::new(|_, _| Propagation::Reject)));
    }
    let id = net
        .broadcast(sender, b"forged")
        .unwrap_or_else(|| panic!("node {sender} could not send; {ctx}"));
    net.run_for(ROUND_TIMEOUT);
    let missing: BTreeSet<NodeId> = common::missing(&net, &id).into_iter().collect();
    let rejecting_set: BTreeSet<NodeId> = rejecting.iter().copied().collect();
    assert_eq!(
        missing, rejecting_set,
        "the nodes that did not deliver, against those that reject; {ctx}"
    );
    for &n in &rejecting {
        let rejected = stats(net.state(n)).rejected;
        assert!(
            rejected >= 1,
            "node {n} never saw a copy to reject: the test proves nothing; {ctx}"
        );
    }
}

#[test]
fn nodes_that_forward_only_pass_messages_on_without_delivering() {
    let seed = common::seed();
    let ctx = common::rerun("filter", seed);
    let mut net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    let (sender, relays) = pick(&mut net, NODES / 10);
    for &n in &relays {
        net.set_filter(n, Some(Box::new(|_, _| Propagation::ForwardOnly)));
    }
    let id = net
        .broadcast(sender, b"relayed")
        .unwrap_or_else(|| panic!("node {sender} could not send; {ctx}"));
    net.run_for(ROUND_TIMEOUT);
    let missing: BTreeSet<NodeId> = common::missing(&net, &id).into_iter().collect();
    let relays: BTreeSet<NodeId> = relays.into_iter().collect();
    assert_eq!(
        missing, relays,
        "the nodes that did not deliver, against the relays; {ctx}"
    );
}

/// A sender, and `count` other nodes for a filter, drawn with the network's seeded random source.
fn pick(net: &mut Network, count: usize) -> (NodeId, Vec<NodeId>) {
    let mut live = net.live();
    live.shuffle(net.rng());
    let sender = live.pop().expect("a live node");
    live.truncate(count);
    (sender, live)
}

fn stats<R: rand::Rng>(state: &State<NodeId, R>) -> peerchannel_proto::BroadcastStats {
    let mesh = state
        .meshes()
        .next()
        .expect("the node is in the mesh")
        .clone();
    state.mesh_stats(&mesh).expect("joined").broadcast
}
