//! The baseline: one QUIC link between two endpoints configured exactly as peerchannel's
//! links are (the same rustls provider, TLS and transport configuration from
//! [`peerchannel::tls`]), one long-lived unidirectional stream, length-prefixed messages
//! written in large batches as the links write them. Messages per second received is the
//! most one link carries on this machine, measured in the same run as the mesh.

use anyhow::Context;
use peerchannel::Identity;
use peerchannel::tls::{self, ExpectedPeer, LinkConfig};
use serde::Serialize;

use crate::clock::{now_ns, secs_to_ns};
use crate::record::{FrameCounter, per_sec};

/// A batched write is cut at about this many bytes, as the links cut theirs.
pub(crate) const WRITE_BATCH: usize = 64 * 1024;

/// The receiver reads up to this many bytes at a time.
const READ_BUFFER: usize = 64 * 1024;

/// Bytes of the length prefix, as on the links.
pub(crate) const LEN_PREFIX: usize = 4;

/// One batched write of length-prefixed messages of `size` bytes: at least
/// [`WRITE_BATCH`] bytes of whole frames.
pub(crate) fn batch_of(size: usize) -> anyhow::Result<Vec<u8>> {
    let frame_len = u32::try_from(size).context("--size too large")?;
    let mut frame = Vec::with_capacity(LEN_PREFIX + size);
    frame.extend_from_slice(&frame_len.to_le_bytes());
    frame.resize(LEN_PREFIX + size, 0xa5);
    let mut batch = Vec::with_capacity(WRITE_BATCH + frame.len());
    while batch.len() < WRITE_BATCH {
        batch.extend_from_slice(&frame);
    }
    Ok(batch)
}

/// What the baseline measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawResult {
    /// Messages received per second of sending.
    pub msgs_per_sec: f64,
    /// The same in megabits of message bodies per second.
    pub mbit_per_sec: f64,
    /// Messages received.
    pub received: u64,
}

/// Sends messages of `size` bytes as fast as the link takes them for `secs`.
pub async fn run(size: usize, secs: f64) -> anyhow::Result<RawResult> {
    let server_id = Identity::generate()?;
    let client_id = Identity::generate()?;
    let link = LinkConfig::default();
    let loopback = "127.0.0.1:0".parse()?;
    let server = tls::bind_endpoint(&server_id, loopback, &link)?;
    let client = tls::bind_endpoint(&client_id, loopback, &link)?;
    let addr = server.local_addr()?;

    let receiver = tokio::spawn({
        let server = server.clone();
        async move {
            let incoming = server.accept().await.context("the endpoint closed")?;
            let conn = incoming.await?;
            let mut stream = conn.accept_uni().await?;
            let mut counter = FrameCounter::default();
            let mut buf = vec![0u8; READ_BUFFER];
            while let Some(n) = stream.read(&mut buf).await? {
                counter.feed(&buf[..n]);
            }
            anyhow::Ok(counter.frames())
        }
    });

    let (conn, _) = tls::connect(&client, addr, ExpectedPeer::Id(server_id.peer_id())).await?;
    let mut stream = conn.open_uni().await?;
    // Built once: quinn copies each write (as the baseline of length-prefixed
    // messages does), and refilling the batch every time only slowed the baseline down.
    let batch = batch_of(size)?;
    let start = now_ns();
    let deadline = start + secs_to_ns(secs);
    while now_ns() < deadline {
        stream.write_all(&batch).await?;
    }
    let window = now_ns() - start;
    stream.finish()?;
    let received = receiver.await??;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    let msgs_per_sec = per_sec(received, window);
    Ok(RawResult {
        msgs_per_sec,
        mbit_per_sec: msgs_per_sec * size as f64 * 8.0 / 1e6,
        received,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_whole_frames_of_the_size_asked() {
        for size in [17, 1024, 50_000, 70_000] {
            let batch = batch_of(size).unwrap();
            let frames = (batch.len() / (LEN_PREFIX + size)) as u64;
            assert!(batch.len() >= WRITE_BATCH, "{size}");
            assert_eq!(batch.len() % (LEN_PREFIX + size), 0, "{size}");
            let mut counter = FrameCounter::default();
            counter.feed(&batch);
            assert_eq!(counter.frames(), frames, "{size}");
        }
    }
}
