//! Publishing while offline: a message sent before the node has any neighbor waits in the
//! offline queue and reaches the whole mesh once the node is linked in.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use peerchannel_proto::{BroadcastOptions, BroadcastStatus, MessageId};
use peerchannel_sim::{NetConfig, Network, NodeId};

const NODES: usize = 500;

/// Generous: the resolver, a join round trip, and then a broadcast across the mesh.
const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn messages_published_before_joining_reach_everyone() {
    let seed = common::seed();
    let ctx = common::rerun("offline", seed);
    let mut net = common::settled_mesh(NODES, 1, seed, NetConfig::default());
    let late = NODES as NodeId;
    // No contacts: the node asks the resolver, so it stays offline for a while.
    net.join(late, 0);
    assert!(!net.state(late).is_online(net.mesh()), "{ctx}");
    let ids = publish(&mut net, late, 3, &ctx);
    assert!(
        common::run_until_delivered(&mut net, &ids, LIMIT),
        "the queued messages did not reach everyone within {LIMIT:?}: missing {:?}; {ctx}",
        ids.iter()
            .map(|id| common::missing(&net, id))
            .collect::<Vec<_>>()
    );
    assert_eq!(net.state(late).mesh_stats(net.mesh()).unwrap().queued, 0);
}

#[test]
fn messages_published_while_cut_off_reach_everyone_after_the_link_returns() {
    let seed = common::seed();
    let ctx = common::rerun("offline", seed);
    let mut net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    let lonely = net.live()[NODES / 2];
    let mut side = vec![0u8; NODES];
    side[lonely as usize] = 1;
    net.partition(side);
    // Past the idle timeout, the node knows it has lost every link.
    let offline = net.run_until_or(net.now() + Duration::from_secs(10), |net| {
        !net.state(lonely).is_online(net.mesh())
    });
    assert!(
        offline.is_some(),
        "node {lonely} never noticed it was cut off; {ctx}"
    );
    let ids = publish(&mut net, lonely, 2, &ctx);
    net.run_for(Duration::from_secs(5));
    net.heal();
    // The node retries with backoff (up to 30 s between requests to the resolver).
    let limit = Duration::from_secs(60);
    assert!(
        common::run_until_delivered(&mut net, &ids, limit),
        "the queued messages did not reach everyone within {limit:?} of the heal: missing \
         {:?}; {ctx}",
        ids.iter()
            .map(|id| common::missing(&net, id))
            .collect::<Vec<_>>()
    );
}

/// Publishes `count` messages from an offline node: each must be queued.
fn publish(net: &mut Network, node: NodeId, count: usize, ctx: &str) -> Vec<MessageId<NodeId>> {
    (0..count)
        .map(|i| {
            let payload = Bytes::from(format!("offline {i}"));
            match net.broadcast_with(node, payload, BroadcastOptions::default()) {
                Ok((id, BroadcastStatus::Queued)) => id,
                other => panic!("message {i} from offline node {node}: {other:?}; {ctx}"),
            }
        })
        .collect()
}
