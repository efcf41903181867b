//! Joining: a thousand nodes join one after another through the simulated resolver, and the
//! mesh they form has the shape membership promises.

use crate::common;

use std::collections::BTreeMap;

use peerchannel_proto::MembershipConfig;
use peerchannel_sim::{NetConfig, NodeId};

const NODES: usize = 1_000;

#[test]
fn a_thousand_nodes_form_one_mesh_within_the_view_bounds() {
    let seed = common::seed();
    let ctx = common::rerun("join", seed);
    let net = common::settled_mesh(NODES, 0, seed, NetConfig::default());
    let bounds = MembershipConfig::default();

    assert_eq!(net.live().len(), NODES, "{ctx}");
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for n in net.live() {
        let active = net.neighbors(n).len();
        *sizes.entry(active).or_default() += 1;
        assert!(
            net.state(n).is_online(net.mesh()),
            "node {n} is offline; {ctx}"
        );
        assert!(
            (bounds.active_min..=bounds.active_max).contains(&active),
            "node {n} has {active} neighbors, outside {}..={}; {ctx}",
            bounds.active_min,
            bounds.active_max
        );
        let passive = net.state(n).passive(net.mesh()).unwrap_or(&[]);
        assert!(
            passive.len() <= bounds.passive_capacity,
            "node {n} knows {} passive peers, above {}; {ctx}",
            passive.len(),
            bounds.passive_capacity
        );
        assert!(
            !passive.contains(&n) && passive.iter().all(|p| !net.neighbors(n).contains(p)),
            "node {n}'s passive view holds itself or a neighbor; {ctx}"
        );
    }
    eprintln!("active view sizes (size: nodes): {sizes:?}");
    assert!(
        net.connected(),
        "the mesh is not one connected graph; {ctx}"
    );
    let one_sided: Vec<(NodeId, NodeId)> = net
        .live()
        .into_iter()
        .flat_map(|n| net.neighbors(n).iter().map(move |p| (n, *p)))
        .filter(|(n, p)| !net.neighbors(*p).contains(n))
        .collect();
    assert_eq!(
        one_sided,
        vec![],
        "links that only one side holds (node, neighbor); {ctx}"
    );
    let mean = common::mean(
        net.live()
            .into_iter()
            .map(|n| net.neighbors(n).len() as f64),
    );
    assert!(
        mean >= bounds.active_ideal as f64 - 1.0,
        "mean active view {mean:.2}, far below the ideal {}; {ctx}",
        bounds.active_ideal
    );
}
