//! The ceilings: the same number of nodes joined as a fixed tree of plain QUIC links, each
//! configured as [`crate::raw`]'s (and so as peerchannel's), every inner node relaying what
//! it reads to its children. No protocol, no duplicate check, no store, no repair.
//!
//! - [`Relay::Chunks`]: the bytes are passed on as read, unparsed and uncopied: what the links
//!   alone cost when every message must reach every node.
//! - [`Relay::Messages`]: each node is built as a peerchannel node is: a reader task cuts the
//!   stream into frames and copies each message out (as decoding does), hands it to the
//!   node's task over a bounded queue, which frames it anew (one allocation and copy, shared by
//!   the children) and queues it for each child's writer task (bounded lanes, waited on when
//!   full), which batches frames into large writes. What the runtime's structure costs,
//!   without the protocol's work.
//!
//! The mesh's efficiency can approach these figures, not exceed them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use peerchannel::Identity;
use peerchannel::tls::{self, ExpectedPeer, LinkConfig};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::{now_ns, secs_to_ns};
use crate::raw::{LEN_PREFIX, WRITE_BATCH, batch_of};
use crate::record::{FrameCounter, per_sec};

/// Children per inner node: ten nodes make a tree two links deep. (The mesh's own tree has
/// whatever shape its links' speeds gave it; any tree of these links costs the same per
/// delivery, one link crossed.)
pub const FANOUT: usize = 3;

/// The most bytes a reader takes off a stream at once, as the links' readers do.
const READ_CHUNK: usize = 64 * 1024;

/// How long the tree may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames the node's queue holds in [`Relay::Messages`], as a node's link-event queue does.
const NODE_QUEUE: usize = 4096;

/// Frames a writer's lane holds in [`Relay::Messages`], as a link's data lane does.
const LANE: usize = 512;

/// How the inner nodes pass messages on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// The bytes as read.
    Chunks,
    /// Message by message, through the same tasks and queues as a node's.
    Messages,
}

/// What the relay trees measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RelayResult {
    /// The slowest receiver's messages per second, bytes passed on as read.
    pub slowest_msgs_per_sec: f64,
    /// `(nodes - 1) x slowest / raw`: the mesh's efficiency, were its nodes free.
    pub efficiency: f64,
    /// The slowest receiver's messages per second, message by message.
    pub per_message_slowest_msgs_per_sec: f64,
    /// The same as an efficiency: the mesh's, were its protocol free.
    pub per_message_efficiency: f64,
    /// Children per inner node.
    pub fanout: usize,
}

/// Measures both trees, one after the other, for `secs` each.
pub async fn run(nodes: usize, size: usize, secs: f64, raw: f64) -> anyhow::Result<RelayResult> {
    let chunks = slowest_rate(nodes, size, secs, Relay::Chunks).await?;
    let messages = slowest_rate(nodes, size, secs, Relay::Messages).await?;
    let efficiency = |rate: f64| (nodes - 1) as f64 * rate / raw;
    Ok(RelayResult {
        slowest_msgs_per_sec: chunks,
        efficiency: efficiency(chunks),
        per_message_slowest_msgs_per_sec: messages,
        per_message_efficiency: efficiency(messages),
        fanout: FANOUT,
    })
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

/// Sends from node 0 for `secs` through a tree of `nodes` relaying nodes: the slowest
/// receiver's messages per second.
async fn slowest_rate(nodes: usize, size: usize, secs: f64, how: Relay) -> anyhow::Result<f64> {
    let link = LinkConfig::default();
    let loopback = "127.0.0.1:0".parse()?;
    let mut ids = Vec::with_capacity(nodes);
    let mut endpoints = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        let id = Identity::generate()?;
        endpoints.push(tls::bind_endpoint(&id, loopback, &link)?);
        ids.push(id.peer_id());
    }

    // Messages count until the root's sending ends (set when it starts): what is still
    // queued along the tree then is not part of the rate.
    let until = Arc::new(AtomicU64::new(u64::MAX));
    // Every node but the root: accept the parent's link and stream, open one per child.
    let mut receivers = Vec::with_capacity(nodes - 1);
    for i in 1..nodes {
        let endpoint = endpoints[i].clone();
        let outgoing: Vec<_> = children(i, nodes)
            .map(|c| (endpoints[i].clone(), endpoints[c].local_addr(), ids[c]))
            .collect();
        let until = until.clone();
        receivers.push(tokio::spawn(async move {
            let incoming = endpoint.accept().await.context("the endpoint closed")?;
            let conn = incoming.await?;
            let input = conn.accept_uni().await?;
            let mut outputs = Vec::with_capacity(outgoing.len());
            let mut conns = Vec::with_capacity(outgoing.len());
            for (from, addr, id) in outgoing {
                let (conn, _) = tls::connect(&from, addr?, ExpectedPeer::Id(id)).await?;
                outputs.push(conn.open_uni().await?);
                conns.push(conn);
            }
            let frames = match how {
                Relay::Chunks => relay_chunks(input, outputs, &until).await?,
                Relay::Messages => relay_messages(input, outputs, &until).await?,
            };
            // The links stay open until every node has read everything.
            anyhow::Ok((frames, conns))
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
    let batch = Bytes::from(batch_of(size)?);
    let start = now_ns();
    let deadline = start + secs_to_ns(secs);
    until.store(deadline, Ordering::Release);
    while now_ns() < deadline {
        for out in &mut roots {
            out.write_chunk(batch.clone()).await?;
        }
    }
    let window = deadline - start;
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
    Ok(per_sec(slowest, window))
}

/// Whether it is still time to count what arrives.
fn counting(until: &AtomicU64) -> bool {
    now_ns() < until.load(Ordering::Acquire)
}

/// Passes every chunk read on to every child as it is; the frames read in time.
async fn relay_chunks(
    mut input: quinn::RecvStream,
    mut outputs: Vec<quinn::SendStream>,
    until: &AtomicU64,
) -> anyhow::Result<u64> {
    let mut counter = FrameCounter::default();
    while let Some(chunk) = input.read_chunk(usize::MAX, true).await? {
        if counting(until) {
            counter.feed(&chunk.bytes);
        }
        for out in &mut outputs {
            out.write_chunk(chunk.bytes.clone()).await?;
        }
    }
    for out in &mut outputs {
        out.finish()?;
    }
    Ok(counter.frames())
}

/// Passes every message on through a reader, a node task and a writer per child, as a
/// peerchannel node does; the messages read in time.
async fn relay_messages(
    mut input: quinn::RecvStream,
    outputs: Vec<quinn::SendStream>,
    until: &AtomicU64,
) -> anyhow::Result<u64> {
    let (to_node, mut node) = mpsc::channel::<Bytes>(NODE_QUEUE);
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(chunk) = input.read_chunk(READ_CHUNK, true).await? {
            buf.extend_from_slice(&chunk.bytes);
            while let Some(len) = buf.get(..LEN_PREFIX).map(frame_len) {
                if buf.len() < LEN_PREFIX + len {
                    break;
                }
                let frame = buf.split_to(LEN_PREFIX + len);
                // Decoding copies the message out of the read buffer.
                let message = Bytes::copy_from_slice(&frame[LEN_PREFIX..]);
                if to_node.send(message).await.is_err() {
                    // The node task stopped: a writer failed, and says why.
                    return anyhow::Ok(());
                }
            }
        }
        anyhow::Ok(())
    });
    let mut lanes = Vec::with_capacity(outputs.len());
    let mut writers = Vec::with_capacity(outputs.len());
    for out in outputs {
        let (lane, queued) = mpsc::channel::<Bytes>(LANE);
        lanes.push(lane);
        writers.push(tokio::spawn(write_batches(out, queued)));
    }
    let mut messages = 0;
    'relay: while let Some(message) = node.recv().await {
        if counting(until) {
            messages += 1;
        }
        // Encoding: a new frame, shared by the children.
        let mut frame = Vec::with_capacity(LEN_PREFIX + message.len());
        frame.extend_from_slice(&(message.len() as u32).to_le_bytes());
        frame.extend_from_slice(&message);
        let frame = Bytes::from(frame);
        for lane in &lanes {
            if lane.send(frame.clone()).await.is_err() {
                break 'relay;
            }
        }
    }
    // A writer that failed ends the relay; its error is the one to report.
    drop((lanes, node));
    for writer in writers {
        writer.await??;
    }
    reader.await??;
    Ok(messages)
}

/// Writes what a lane holds, batched into writes of up to [`WRITE_BATCH`] bytes, then finishes
/// the stream.
async fn write_batches(
    mut out: quinn::SendStream,
    mut queued: mpsc::Receiver<Bytes>,
) -> anyhow::Result<()> {
    while let Some(first) = queued.recv().await {
        let mut len = first.len();
        let mut batch = vec![first];
        while len < WRITE_BATCH {
            let Ok(next) = queued.try_recv() else { break };
            len += next.len();
            batch.push(next);
        }
        out.write_all_chunks(&mut batch).await?;
    }
    out.finish()?;
    Ok(())
}

/// The length a frame's prefix gives.
fn frame_len(prefix: &[u8]) -> usize {
    let mut bytes = [0; LEN_PREFIX];
    bytes.copy_from_slice(prefix);
    u32::from_le_bytes(bytes) as usize
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
