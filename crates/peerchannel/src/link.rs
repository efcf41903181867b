//! Links: one QUIC connection per pair of nodes, carrying the mesh protocol of every mesh the
//! two have in common.
//!
//! Each side sends its mesh traffic on one long-lived unidirectional stream, opened on first
//! use, with frames batched into large writes (a stream per message would cost about four
//! times the message rate). Frames wait in two queues: a **control** lane (membership,
//! announcements, grafts, prunes: small and never dropped) and a bounded **data** lane (full
//! messages), so a link that cannot keep up can be routed around without losing the protocol's
//! own traffic. Answers to a peer's requests that find the data lane full wait beside it,
//! bounded, and are fed in as it drains. Reading checks each frame's length against the
//! maximum before allocating, and a malformed frame closes the link: nothing a peer sends can
//! take the node down.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use peerchannel_proto::wire::{self, FrameError};
use peerchannel_proto::{BroadcastMessage, MeshMessage, Message};
use quinn::VarInt;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use crate::PeerId;
use crate::limits::Limits;

/// Frames waiting in a link's data lane before it counts as slow.
pub(crate) const DATA_QUEUE_FRAMES: usize = 512;

/// How long a link being closed waits for the peer to acknowledge the last frames.
pub(crate) const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A batched write is cut at about this many bytes. 256 KiB against 64 KiB, five alternating
/// `peerchannel-bench --secs 3` pairs: CPU per delivery 6.2-6.9 against 6.0-6.5 us, slowest
/// receiver 31,600-34,700 against 34,800-35,800 msg/s, each pair in favour; latency at 1,000
/// msg/s and the pause phase the same within their spread. The block is sized to what waits,
/// so a quiet link does not allocate a batch's worth per frame.
const WRITE_BATCH: usize = 256 * 1024;

/// The most bytes taken off a stream at once.
const READ_CHUNK: usize = 64 * 1024;

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
    /// The peer exceeded a limit (its message rate, or what waits to be sent to it).
    pub(crate) const LIMIT_EXCEEDED: VarInt = VarInt::from_u32(5);
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
    /// What the writer reports back.
    accounting: Arc<Accounting>,
    max_queued: usize,
    /// Answers waiting for room in the data lane.
    answers: Backlog,
}

/// A frame refused by a link's queue.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The data lane is full: the frame is given back.
    Full(Bytes),
    /// Even protocol frames pile up past the limit: the peer cannot keep up at all.
    Overloaded,
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
        limits: Limits,
    ) -> Self {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE_FRAMES);
        let accounting = Arc::new(Accounting::default());
        let writer = tokio::spawn(write_loop(
            conn.clone(),
            control_rx,
            data_rx,
            accounting.clone(),
        ));
        let reader = Reader {
            peer,
            conn_id: id,
            conn: conn.clone(),
            events,
            max_frame,
        };
        tokio::spawn(reader.run(RateLimits::new(&limits)));
        Self {
            id,
            conn,
            outgoing,
            control: control_tx,
            data: data_tx,
            writer,
            accounting,
            max_queued: limits.queued_bytes,
            answers: Backlog::new(limits.queued_bytes),
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

    /// Queues a protocol frame. These are small and never dropped; only a peer that lets
    /// them pile up past the queue limit is refused (and should be disconnected).
    pub(crate) fn send_control(&self, frame: Bytes) -> Result<(), Refused> {
        let len = frame.len();
        let queued = &self.accounting.queued;
        if queued.fetch_add(len, Ordering::AcqRel) + len > self.max_queued {
            queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Refused::Overloaded);
        }
        if self.control.send(frame).is_err() {
            // The writer has stopped: the connection is gone and the reader reports it.
            queued.fetch_sub(len, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Queues a data frame if there is room; gives it back if the lane is full.
    pub(crate) fn try_send_data(&self, frame: Bytes) -> Result<(), Refused> {
        let len = frame.len();
        if !self.has_room(len) {
            return Err(Refused::Full(frame));
        }
        let queued = &self.accounting.queued;
        queued.fetch_add(len, Ordering::AcqRel);
        self.data.try_send(frame).map_err(|e| {
            queued.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f) => {
                    Refused::Full(f)
                }
            }
        })
    }

    /// Queues an answer to the peer's request (a graft, a fetch or a resume) without waiting:
    /// behind the answers already waiting, which go into the data lane as far as it has room
    /// (now, and again at each [`Link::feed_answers`]). A resume's answer can be a whole store,
    /// thousands of frames, where the lane holds [`DATA_QUEUE_FRAMES`]: dropped, the rest had
    /// to be asked for again, and by then the stores had often moved on (measured with
    /// `peerchannel-bench --pause-one 10 --pause-rate 5000`: 3,000-4,500 frames dropped in one
    /// burst, and runs of 1,700-4,300 messages lost at healthy receivers). The answers waiting
    /// are bounded like the lanes, by [`Limits::queued_bytes`] (16 MiB by default: four
    /// default stores); past it an answer is dropped (false) and the asker asks again.
    /// Messages pushed to the peer meanwhile go ahead of the waiting answers (its copies may
    /// arrive in any order).
    pub(crate) fn queue_answer(&mut self, frame: Bytes) -> bool {
        let queued = self.answers.push(frame);
        self.feed_answers();
        queued
    }

    /// Moves waiting answers into the data lane while it has room; true if some still wait.
    pub(crate) fn feed_answers(&mut self) -> bool {
        while let Some(frame) = self.answers.pop() {
            match self.try_send_data(frame) {
                Ok(()) => {}
                // Full, or closed (the reader reports the close, and the link goes with its
                // answers).
                Err(Refused::Full(frame)) => {
                    self.answers.push_front(frame);
                    break;
                }
                // Only the control lane refuses as overloaded.
                Err(Refused::Overloaded) => break,
            }
        }
        !self.answers.is_empty()
    }

    /// Takes over the answers waiting on `retired` (a duplicate connection about to be
    /// finished), ahead of this link's own: they were queued first.
    pub(crate) fn adopt_answers(&mut self, retired: &mut Link) {
        while let Some(frame) = retired.answers.pop_back() {
            self.answers.push_front(frame);
        }
    }

    /// Whether answers wait for room.
    pub(crate) fn has_answers(&self) -> bool {
        !self.answers.is_empty()
    }

    /// Whether the data lane takes a frame of `len` bytes now: a free place, and the bytes
    /// within the limit.
    fn has_room(&self, len: usize) -> bool {
        self.data.capacity() > 0
            && self.accounting.queued.load(Ordering::Acquire) + len <= self.max_queued
    }

    /// Waits until the data lane takes a frame of `len` bytes (see [`Link::has_room`]), woken
    /// by the writer each time it takes frames off the queues. The node's task is the only one
    /// that queues data frames on a link, so the room is still there when it then sends.
    pub(crate) async fn wait_for_room(&self, len: usize) {
        loop {
            let freed = self.accounting.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a batch taken in between still wakes us.
            freed.as_mut().enable();
            if self.has_room(len) {
                return;
            }
            freed.await;
        }
    }

    /// A counter that moves whenever the writer takes frames off the queues.
    pub(crate) fn progress(&self) -> usize {
        self.accounting.progress.load(Ordering::Acquire)
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

/// What the writer reports back to the node's task.
#[derive(Debug, Default)]
struct Accounting {
    /// Bytes queued in both lanes, not yet taken by the writer.
    queued: AtomicUsize,
    /// Batches the writer has taken so far: whether the link is moving at all.
    progress: AtomicUsize,
    /// Notified each time the writer takes frames: room may have come free.
    freed: Notify,
}

/// Writes queued frames, control first, batched into large writes on one uni stream.
///
/// The frames of a batch are copied into one chunk. The connection keeps every chunk it is
/// given as a segment until the peer acknowledges it, and builds packets segment by segment:
/// handing it the frames as they are (shared by the node's children without a copy) cost more
/// than the copy (`peerchannel-bench --secs 3`, five alternating pairs: CPU per delivery
/// 6.6-7.7 against 5.4-7.3 us, slowest receiver 29,400-33,700 against 31,000-39,600 msg/s,
/// better in every pair).
async fn write_loop(
    conn: quinn::Connection,
    mut control: mpsc::UnboundedReceiver<Bytes>,
    mut data: mpsc::Receiver<Bytes>,
    accounting: Arc<Accounting>,
) {
    let mut stream: Option<quinn::SendStream> = None;
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            Some(f) = control.recv() => f,
            Some(f) = data.recv() => f,
            else => break,
        };
        // The previous batch's memory belongs to the connection now: a new block, as large as
        // what waits (counted until this batch is taken), up to a batch.
        let waiting = accounting.queued.load(Ordering::Acquire);
        batch.reserve(waiting.min(WRITE_BATCH) + first.len());
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
        accounting.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        accounting.progress.fetch_add(1, Ordering::AcqRel);
        accounting.freed.notify_waiters();
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
        if let Err(e) = s.write_chunk(batch.split().freeze()).await {
            debug!("link: write failed: {e}");
            return;
        }
    }
    if let Some(mut s) = stream
        && s.finish().is_ok()
    {
        let _ = tokio::time::timeout(FINISH_WAIT, s.stopped()).await;
    }
}

/// Frames waiting, oldest first, bounded in bytes.
#[derive(Debug)]
struct Backlog {
    frames: std::collections::VecDeque<Bytes>,
    bytes: usize,
    max_bytes: usize,
}

impl Backlog {
    fn new(max_bytes: usize) -> Self {
        Self {
            frames: std::collections::VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Appends `frame` if it fits within the bound; false (and the frame dropped) if not.
    fn push(&mut self, frame: Bytes) -> bool {
        if self.bytes + frame.len() > self.max_bytes {
            return false;
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        true
    }

    /// Puts a frame ahead of the others, whatever the bound: one just taken, or one of a
    /// retired link's (whose bytes were within the same bound there).
    fn push_front(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_front(frame);
    }

    fn pop(&mut self) -> Option<Bytes> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        Some(frame)
    }

    fn pop_back(&mut self) -> Option<Bytes> {
        let frame = self.frames.pop_back()?;
        self.bytes -= frame.len();
        Some(frame)
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Per-link rate limits on what the peer sends (see [`Limits`]).
struct RateLimits {
    frames: governor::DefaultDirectRateLimiter,
    grafts: governor::DefaultDirectRateLimiter,
}

impl RateLimits {
    fn new(limits: &Limits) -> Arc<Self> {
        let quota = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
            governor::Quota::per_second(rate).allow_burst(burst)
        };
        Arc::new(Self {
            frames: governor::RateLimiter::direct(quota(
                limits.frames_per_second,
                limits.frames_burst,
            )),
            grafts: governor::RateLimiter::direct(quota(
                limits.grafts_per_second,
                limits.grafts_per_second.saturating_mul(2),
            )),
        })
    }

    /// Whether the peer stays within its limits with this message.
    fn admit(&self, message: &Message<PeerId>) -> Result<(), &'static str> {
        if self.frames.check().is_err() {
            return Err("too many messages per second");
        }
        if message.body.is_request() && self.grafts.check().is_err() {
            return Err("too many graft requests per second");
        }
        Ok(())
    }
}

/// Reads what the peer sends on one connection.
#[derive(Clone)]
struct Reader {
    peer: PeerId,
    conn_id: u64,
    conn: quinn::Connection,
    events: mpsc::Sender<LinkEvent>,
    max_frame: usize,
}

impl Reader {
    /// Accepts the peer's streams until the connection ends, then reports it closed.
    async fn run(self, limits: Arc<RateLimits>) {
        let reason = loop {
            match self.conn.accept_uni().await {
                Ok(stream) => {
                    tokio::spawn(self.clone().read_stream(stream, limits.clone()));
                }
                Err(e) => break e.to_string(),
            }
        };
        let closed = LinkEvent::Closed {
            peer: self.peer,
            conn_id: self.conn_id,
            reason,
        };
        let _ = self.events.send(closed).await;
    }

    /// Reads frames from one stream and hands the messages to the node.
    ///
    /// The stream is read in chunks as they arrive (one lock of the connection per chunk, not
    /// two per frame), and frames are cut out of the buffer. The buffer never holds more than
    /// one frame of at most `max_frame` bytes plus one chunk: a frame's length is checked as
    /// soon as its prefix is in.
    ///
    /// The chunks are copied into blocks of at least [`READ_CHUNK`] bytes, and the messages'
    /// payloads are slices of those blocks (`wire::decode_frame_shared`): a block is freed when
    /// the last message read into it has been forwarded, stored (the store copies) and read by
    /// the application. Copying each payload out instead cost two allocations per message.
    async fn read_stream(self, mut stream: quinn::RecvStream, limits: Arc<RateLimits>) {
        let peer = self.peer;
        let mut buf = BytesMut::new();
        loop {
            loop {
                let message =
                    match wire::decode_frame_shared::<Message<PeerId>>(&mut buf, self.max_frame) {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(e) => return violation(&self.conn, peer, &e),
                    };
                if let Err(reason) = limits.admit(&message) {
                    warn!(peer = %peer.fmt_short(), "disconnecting a peer: {reason}");
                    self.conn
                        .close(close_code::LIMIT_EXCEEDED, reason.as_bytes());
                    return;
                }
                if self
                    .events
                    .send(LinkEvent::Message { peer, message })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            match stream.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => {
                    // A block shared with messages still alive is not grown in place: room for
                    // a whole block, not for this chunk alone, so that the next chunks fill it.
                    if buf.capacity() - buf.len() < chunk.bytes.len() {
                        buf.reserve(chunk.bytes.len().max(READ_CHUNK));
                    }
                    buf.extend_from_slice(&chunk.bytes);
                }
                // The peer finished the stream, or the connection ended: the connection's
                // reader reports the end.
                Ok(None) | Err(_) => return,
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_keeps_frames_in_order_within_its_bytes() {
        let mut backlog = Backlog::new(10);
        assert!(backlog.push(Bytes::from_static(b"aaaa")));
        assert!(backlog.push(Bytes::from_static(b"bbbb")));
        assert!(
            !backlog.push(Bytes::from_static(b"ccc")),
            "11 bytes do not fit in 10"
        );
        assert!(backlog.push(Bytes::from_static(b"cc")));
        let first = backlog.pop().unwrap();
        assert_eq!(first, Bytes::from_static(b"aaaa"));
        // Put back, it comes out first again, and its bytes count again.
        backlog.push_front(first);
        assert!(!backlog.push(Bytes::from_static(b"d")));
        let order: Vec<Bytes> = std::iter::from_fn(|| backlog.pop()).collect();
        assert_eq!(order, [&b"aaaa"[..], b"bbbb", b"cc"]);
        assert!(backlog.is_empty());
        assert!(
            backlog.push(Bytes::from(vec![0; 10])),
            "emptied, it takes its bound"
        );
    }
}
