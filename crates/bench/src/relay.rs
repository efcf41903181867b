//! The ceiling: the same number of nodes joined as a fixed tree of plain QUIC links, each
//! configured as [`crate::raw`]'s (and so as peerchannel's), every inner node relaying the
//! bytes it reads to its children unparsed and uncopied. No protocol, no duplicate check,
//! no store, no repair: what the links alone cost when every message must reach every
//! node. The mesh's efficiency can approach this figure's, not exceed it.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use peerchannel::Identity;
use peerchannel::tls::{self, ExpectedPeer, LinkConfig};
use serde::Serialize;

use crate::clock::{now_ns, secs_to_ns};
use crate::record::{FrameCounter, per_sec};

/// Children per inner node: ten nodes make a tree two links deep. (The mesh's own tree has
/// whatever shape its links' speeds gave it; any tree of these links costs the same per
/// delivery, one link crossed.)
pub const FANOUT: usize = 3;

/// Bytes per batched write at the root, as in the baseline.
const WRITE_BATCH: usize = 64 * 1024;

/// Bytes of the length prefix, as on the links.
const LEN_PREFIX: usize = 4;

/// How long the tree may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the relay tree measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RelayResult {
    /// The slowest receiver's messages per second.
    pub slowest_msgs_per_sec: f64,
    /// `(nodes - 1) x slowest / raw`: the mesh's efficiency, were its nodes free.
    pub efficiency: f64,
    /// Children per inner node.
    pub fanout: usize,
}

/// Index of node `i`'s parent in the tree (node 0 is the root).
#[cfg(test)]
fn parent(i: usize) -> usize {
    (i - 1) / FANOUT
}

/// Node `i`'s children among `nodes`.
fn children(i: usize, nodes: usize) -> impl Iterator<Item = usize> {
    (i * FANOUT + 1..(i * FANOUT + 1 + FANOUT).min(nodes)).filter(move |&c| c < nodes)
}

/// Sends from node 0 for `secs` through a tree of `nodes` relaying nodes.
pub async fn run(nodes: usize, size: usize, secs: f64, raw: f64) -> anyhow::Result<RelayResult> {
    let link = LinkConfig::default();
    let loopback = "127.0.0.1:0".parse()?;
    let mut ids = Vec::with_capacity(nodes);
    let mut endpoints = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        let id = Identity::generate()?;
        endpoints.push(tls::bind_endpoint(&id, loopback, &link)?);
        ids.push(id.peer_id());
    }

    // Every node but the root: accept the parent's link and stream, open one per child.
    let mut receivers = Vec::with_capacity(nodes - 1);
    for i in 1..nodes {
        let endpoint = endpoints[i].clone();
        let outgoing: Vec<_> = children(i, nodes)
            .map(|c| (endpoints[i].clone(), endpoints[c].local_addr(), ids[c]))
            .collect();
        receivers.push(tokio::spawn(async move {
            let incoming = endpoint.accept().await.context("the endpoint closed")?;
            let conn = incoming.await?;
            let mut input = conn.accept_uni().await?;
            let mut outputs = Vec::with_capacity(outgoing.len());
            let mut conns = Vec::with_capacity(outgoing.len());
            for (from, addr, id) in outgoing {
                let (conn, _) = tls::connect(&from, addr?, ExpectedPeer::Id(id)).await?;
                outputs.push(conn.open_uni().await?);
                conns.push(conn);
            }
            let mut counter = FrameCounter::default();
            while let Some(chunk) = input.read_chunk(usize::MAX, true).await? {
                counter.feed(&chunk.bytes);
                for out in &mut outputs {
                    out.write_chunk(chunk.bytes.clone()).await?;
                }
            }
            for out in &mut outputs {
                out.finish()?;
            }
            // The links stay open until every node has read everything.
            anyhow::Ok((counter.frames(), conns))
        }));
    }

    let mut roots = Vec::new();
    let mut conns = Vec::new();
    for c in children(0, nodes) {
        let (conn, _) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tls::connect(
                &endpoints[0],
                endpoints[c].local_addr()?,
                ExpectedPeer::Id(ids[c]),
            ),
        )
        .await
        .context("the relay tree did not connect")??;
        roots.push(conn.open_uni().await?);
        conns.push(conn);
    }
    let frame_len = u32::try_from(size).context("--size too large")?;
    let mut frame = Vec::with_capacity(LEN_PREFIX + size);
    frame.extend_from_slice(&frame_len.to_le_bytes());
    frame.resize(LEN_PREFIX + size, 0xa5);
    let mut batch = Vec::with_capacity(WRITE_BATCH + frame.len());
    while batch.len() < WRITE_BATCH {
        batch.extend_from_slice(&frame);
    }
    let batch = Bytes::from(batch);
    let start = now_ns();
    let deadline = start + secs_to_ns(secs);
    while now_ns() < deadline {
        for out in &mut roots {
            out.write_chunk(batch.clone()).await?;
        }
    }
    let window = now_ns() - start;
    for out in &mut roots {
        out.finish()?;
    }
    let mut slowest = u64::MAX;
    let mut relayed = Vec::new();
    for receiver in receivers {
        let (frames, conns) = receiver.await??;
        slowest = slowest.min(frames);
        relayed.extend(conns);
    }
    for conn in relayed {
        conn.close(0u32.into(), b"done");
    }
    for conn in conns {
        conn.close(0u32.into(), b"done");
    }
    for endpoint in &endpoints {
        endpoint.close(0u32.into(), b"done");
    }
    let slowest_msgs_per_sec = per_sec(slowest, window);
    Ok(RelayResult {
        slowest_msgs_per_sec,
        efficiency: (nodes - 1) as f64 * slowest_msgs_per_sec / raw,
        fanout: FANOUT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_but_the_root_has_one_parent_among_its_parents_children() {
        for nodes in 2..40 {
            for i in 1..nodes {
                assert!(children(parent(i), nodes).any(|c| c == i), "{i} of {nodes}");
            }
            let reached: usize = (0..nodes).map(|i| children(i, nodes).count()).sum();
            assert_eq!(reached, nodes - 1);
        }
    }
}
