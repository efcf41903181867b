//! Nodes find each other through the resolver service, as users run it.

use crate::common;

use std::sync::Arc;

use common::*;
use peerchannel::resolver::ServiceResolver;
use peerchannel::{Identity, MeshOptions, Node, NodeConfig};
use peerchannel_resolver::{ResolverConfig, ResolverServer};

#[tokio::test]
async fn five_nodes_meet_through_the_resolver() {
    let server = ResolverServer::bind("127.0.0.1:0".parse().unwrap(), ResolverConfig::relaxed())
        .await
        .unwrap();
    let mut nodes = Vec::new();
    let mut meshes = Vec::new();
    for _ in 0..5 {
        let config = NodeConfig::default()
            .listen("127.0.0.1:0".parse().unwrap())
            .resolver(Arc::new(ServiceResolver::new(&server.url()).unwrap()));
        let node = Node::bind(Identity::generate().unwrap(), config)
            .await
            .unwrap();
        meshes.push(
            node.join("net.p2p://meet/room", MeshOptions::default())
                .await
                .unwrap(),
        );
        nodes.push(node);
    }
    let mut channels: Vec<_> = meshes
        .iter()
        .map(|m| m.raw_channel("room").unwrap())
        .collect();
    for m in &meshes {
        neighbors_at_least(m, 1).await;
    }
    channels[4].send(&b"found you all"[..]).await.unwrap();
    for (i, ch) in channels.iter_mut().enumerate().take(4) {
        let got = within(&format!("node {i}'s copy"), ch.recv())
            .await
            .unwrap();
        assert_eq!(&got.body[..], b"found you all");
        assert_eq!(got.from, nodes[4].peer_id());
    }
    for n in &nodes {
        n.shutdown().await;
    }
    server.shutdown().await.unwrap();
}
