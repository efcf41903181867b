//! Links: one QUIC connection per pair of nodes, carrying the mesh protocol of every mesh the
//! two have in common.
//!
//! Each side sends its mesh traffic on one long-lived unidirectional stream, opened on first
//! use, with frames batched into large writes (a stream per message would cost about four
//! times the message rate). Frames wait in two queues: a **control** lane (membership,
//! announcements, grafts, prunes: small and never dropped) and a bounded **data** lane (full
//! messages), so a link that cannot keep up can be routed around without losing the protocol's
//! own traffic. Reading checks each frame's length against the maximum before allocating, and
//! a malformed frame closes the link: nothing a peer sends can take the node down.

use std::sync::Arc;

use bytes::Bytes;
use peerchannel_proto::wire::{self, FrameError, LEN_PREFIX};
use peerchannel_proto::{BroadcastMessage, MeshMessage, Message};
use quinn::VarInt;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, trace};

use crate::PeerId;

/// Frames waiting in a link's data lane before it counts as slow.
pub(crate) const DATA_QUEUE_FRAMES: usize = 512;

/// How long a link being closed waits for the peer to acknowledge the last frames.
pub(crate) const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A batched write is cut at about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// Why the node closed a link, as a QUIC application close code.
pub(crate) mod close_code {
    use quinn::VarInt;

    /// No mesh needs the link any more.
    pub(crate) const UNUSED: VarInt = VarInt::from_u32(0);
    /// The node is shutting down.
    pub(crate) const SHUTDOWN: VarInt = VarInt::from_u32(0);
    /// The peer sent something that is not our protocol.
    pub(crate) const PROTOCOL_VIOLATION: VarInt = VarInt::from_u32(2);
    /// The peer could not keep up.
    pub(crate) const TOO_SLOW: VarInt = VarInt::from_u32(3);
    /// A second connection to the same peer, kept by the other one.
    pub(crate) const DUPLICATE: VarInt = VarInt::from_u32(4);
}

/// Which queue a frame waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Protocol traffic: never dropped.
    Control,
    /// Full messages: bounded; a full lane marks the link slow.
    Data,
}

impl Lane {
    /// Full messages go in the data lane, everything else in the control lane.
    pub(crate) fn of(message: &Message<PeerId>) -> Self {
        match message.body {
            MeshMessage::Broadcast(BroadcastMessage::Gossip(_)) => Lane::Data,
            _ => Lane::Control,
        }
    }
}

/// What link tasks tell the node.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A message arrived.
    Message {
        peer: PeerId,
        message: Message<PeerId>,
    },
    /// A connection ended (closed by either side, timed out, or broken by a protocol error).
    Closed {
        peer: PeerId,
        conn_id: u64,
        reason: String,
    },
}

/// A live connection, as the node holds it.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) conn: quinn::Connection,
    /// Whether we dialed it.
    pub(crate) outgoing: bool,
    control: mpsc::UnboundedSender<Bytes>,
    data: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Starts the reader and writer tasks of an established, authenticated connection.
    pub(crate) fn spawn(
        id: u64,
        peer: PeerId,
        conn: quinn::Connection,
        outgoing: bool,
        events: mpsc::Sender<LinkEvent>,
        max_frame: usize,
        capacity_freed: Arc<Notify>,
    ) -> Self {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE_FRAMES);
        let writer = tokio::spawn(write_loop(
            conn.clone(),
            control_rx,
            data_rx,
            capacity_freed,
        ));
        tokio::spawn(read_loop(peer, id, conn.clone(), events, max_frame));
        Self {
            id,
            conn,
            outgoing,
            control: control_tx,
            data: data_tx,
            writer,
        }
    }

    /// Stops taking frames: the writer sends what is queued, finishes the stream and waits
    /// (up to [`FINISH_WAIT`]) for the peer to acknowledge it. The returned task ends then;
    /// closing the connection before that would throw the unsent frames away.
    pub(crate) fn finish(self) -> tokio::task::JoinHandle<()> {
        let Self {
            control,
            data,
            writer,
            ..
        } = self;
        drop((control, data));
        writer
    }

    /// Queues a control frame (never refused while the link lives).
    pub(crate) fn send_control(&self, frame: Bytes) {
        // Fails only when the writer has stopped, i.e. the connection is gone: the reader
        // reports that, and the frame was for a dead link anyway.
        let _ = self.control.send(frame);
    }

    /// Queues a data frame if there is room; gives it back if the lane is full.
    pub(crate) fn try_send_data(&self, frame: Bytes) -> Result<(), Bytes> {
        self.data.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f) => f,
        })
    }

    /// Waits for room in the data lane.
    pub(crate) async fn send_data(&self, frame: Bytes) {
        let _ = self.data.send(frame).await;
    }

    /// Frames the data lane can take now.
    pub(crate) fn data_room(&self) -> usize {
        self.data.capacity()
    }

    /// Closes the connection; the reader reports it as closed.
    pub(crate) fn close(&self, code: VarInt, reason: &str) {
        self.conn.close(code, reason.as_bytes());
    }
}

/// Writes queued frames, control first, batched into large writes on one uni stream.
async fn write_loop(
    conn: quinn::Connection,
    mut control: mpsc::UnboundedReceiver<Bytes>,
    mut data: mpsc::Receiver<Bytes>,
    capacity_freed: Arc<Notify>,
) {
    let mut stream: Option<quinn::SendStream> = None;
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            Some(f) = control.recv() => f,
            Some(f) = data.recv() => f,
            else => break,
        };
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            let next = match control.try_recv() {
                Ok(f) => f,
                Err(_) => match data.try_recv() {
                    Ok(f) => f,
                    Err(_) => break,
                },
            };
            batch.extend_from_slice(&next);
        }
        capacity_freed.notify_waiters();
        let s = match &mut stream {
            Some(s) => s,
            None => match conn.open_uni().await {
                Ok(s) => stream.insert(s),
                Err(e) => {
                    debug!("link: cannot open the mesh stream: {e}");
                    return;
                }
            },
        };
        if let Err(e) = s.write_all(&batch).await {
            debug!("link: write failed: {e}");
            return;
        }
        batch.clear();
    }
    if let Some(mut s) = stream
        && s.finish().is_ok()
    {
        let _ = tokio::time::timeout(FINISH_WAIT, s.stopped()).await;
    }
}

/// Accepts the peer's streams until the connection ends, then reports it closed.
async fn read_loop(
    peer: PeerId,
    conn_id: u64,
    conn: quinn::Connection,
    events: mpsc::Sender<LinkEvent>,
    max_frame: usize,
) {
    let reason = loop {
        match conn.accept_uni().await {
            Ok(stream) => {
                tokio::spawn(read_stream(
                    peer,
                    conn.clone(),
                    stream,
                    events.clone(),
                    max_frame,
                ));
            }
            Err(e) => break e.to_string(),
        }
    };
    let _ = events
        .send(LinkEvent::Closed {
            peer,
            conn_id,
            reason,
        })
        .await;
}

/// Reads frames from one stream and hands the messages to the node.
async fn read_stream(
    peer: PeerId,
    conn: quinn::Connection,
    mut stream: quinn::RecvStream,
    events: mpsc::Sender<LinkEvent>,
    max_frame: usize,
) {
    let mut prefix = [0u8; LEN_PREFIX];
    loop {
        match stream.read_exact(&mut prefix).await {
            Ok(()) => {}
            // The peer finished the stream between frames, or the connection ended: the
            // connection's reader reports the end.
            Err(_) => return,
        }
        let len = match wire::frame_len(prefix, max_frame) {
            Ok(len) => len,
            Err(e) => return violation(&conn, peer, &e),
        };
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let message = match wire::decode_body::<Message<PeerId>>(&body) {
            Ok(m) => m,
            Err(e) => return violation(&conn, peer, &e),
        };
        trace!(peer = %peer.fmt_short(), "link: frame of {len} bytes");
        if events
            .send(LinkEvent::Message { peer, message })
            .await
            .is_err()
        {
            return;
        }
    }
}

fn violation(conn: &quinn::Connection, peer: PeerId, error: &FrameError) {
    debug!(peer = %peer.fmt_short(), "link: closing after a bad frame: {error}");
    let reason = format!("protocol violation: {error}");
    conn.close(close_code::PROTOCOL_VIOLATION, reason.as_bytes());
}

/// Encodes a message as one frame.
pub(crate) fn encode(message: &Message<PeerId>, max_frame: usize) -> Result<Bytes, FrameError> {
    let mut buf = Vec::new();
    wire::encode_frame(message, max_frame, &mut buf)?;
    Ok(Bytes::from(buf))
}
