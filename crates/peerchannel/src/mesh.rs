//! A mesh as the application sees it: channels to send and receive on, and events.
//!
//! # Sending and receiving
//!
//! A [`Mesh`] hands out channels, one per path. A [`Channel<T>`] carries any serde type
//! (encoded with postcard); a [`RawChannel`] carries bytes. A message sent on a path reaches
//! every other member's channels on that path, and the other channels on the same path in
//! this node, but never the channel that sent it.
//!
//! ```no_run
//! # async fn demo(mesh: peerchannel::Mesh) -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! struct Score { home: u8, away: u8 }
//!
//! let mut scores = mesh.channel::<Score>("scores")?;
//! scores.send(&Score { home: 2, away: 1 }).await?;
//! while let Ok((from, score)) = scores.recv().await {
//!     println!("{from}: {score:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! # Online, offline, neighbors
//!
//! [`Mesh::events`] streams [`Event`]s: the mesh going online (a first neighbor) and offline
//! (the last one gone), and neighbors coming and going. A message sent while offline waits in
//! a bounded queue ([`SendStatus::Queued`]) and goes out when the mesh is online again.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use peerchannel_proto::{DisconnectReason, MeshId, MeshStats, Propagation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::PeerId;
use crate::actor::Command;
use crate::error::{ChannelError, NodeClosed, RecvError, SendError};
use crate::security::{AuthFailure, Counters, MeshSecurity, SIGNATURE_WINDOW, SecurityStats};

/// Events kept for a slow reader of [`Mesh::events`] before it starts to lag.
pub const EVENT_CAPACITY: usize = 256;

/// Messages kept for paths no channel is open on yet (see [`Mesh::channel`]).
pub const BACKLOG_MESSAGES: usize = 256;

/// How long such a message is kept.
pub const BACKLOG_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Something that happened to a mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The mesh has a first neighbor: messages flow.
    Online,
    /// The mesh lost its last neighbor: messages wait in the offline queue.
    Offline,
    /// A link to a neighbor came up.
    NeighborUp(PeerId),
    /// A link to a neighbor went down, and why.
    NeighborDown(PeerId, DisconnectReason),
    /// A peer was not admitted to this closed mesh (a wrong password, a refused certificate,
    /// a node without the mesh's security, a handshake that timed out). Nothing from it is
    /// delivered in this mesh, and nothing of this mesh is sent to it; other meshes on the same
    /// link are not affected. See [`crate::security`].
    AuthenticationFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: AuthFailure,
    },
}

/// Options for a mesh, given to [`crate::Node::join`].
#[derive(Clone)]
#[non_exhaustive]
pub struct MeshOptions {
    /// The protocol's parameters (views, timers, queues); the defaults are documented with
    /// the simulation runs that chose them.
    pub protocol: peerchannel_proto::Config,
    /// Decides, for each new message, whether to deliver it here and whether to pass it on.
    pub filter: Option<PropagationFilter>,
    /// Who may take part: open (the default), a password, or member certificates. Every node
    /// of a mesh must use the same kind. See [`crate::security`].
    pub security: MeshSecurity,
    /// Sign each message sent with this node's key (see [`crate::security`]). Default off.
    pub sign: bool,
    /// Refuse unsigned messages (signed ones are always checked). Default off.
    pub require_signed: bool,
    /// How far a signed message's timestamp may be from this node's clock. Default
    /// [`crate::security::SIGNATURE_WINDOW`] (60 s); must be shorter than the protocol's
    /// `broadcast.seen_retention`, or a replay could outlive the duplicate cache.
    pub signature_window: Duration,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            protocol: peerchannel_proto::Config::default(),
            filter: None,
            security: MeshSecurity::Open,
            sign: false,
            require_signed: false,
            signature_window: SIGNATURE_WINDOW,
        }
    }
}

impl MeshOptions {
    /// Installs a propagation filter.
    pub fn with_filter(
        mut self,
        filter: impl Fn(&FilterInput<'_>) -> Propagation + Send + Sync + 'static,
    ) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Sets who may take part in the mesh.
    pub fn with_security(mut self, security: MeshSecurity) -> Self {
        self.security = security;
        self
    }

    /// Signs every message sent.
    pub fn signed(mut self) -> Self {
        self.sign = true;
        self
    }

    /// Refuses unsigned messages.
    pub fn require_signed(mut self) -> Self {
        self.require_signed = true;
        self
    }
}

impl fmt::Debug for MeshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshOptions")
            .field("protocol", &self.protocol)
            .field("filter", &self.filter.as_ref().map(|_| "..."))
            .field("security", &self.security)
            .field("sign", &self.sign)
            .field("require_signed", &self.require_signed)
            .field("signature_window", &self.signature_window)
            .finish()
    }
}

/// A propagation filter: see [`MeshOptions::filter`].
pub type PropagationFilter = Arc<dyn Fn(&FilterInput<'_>) -> Propagation + Send + Sync>;

/// What a propagation filter sees of a message.
#[derive(Debug)]
#[non_exhaustive]
pub struct FilterInput<'a> {
    /// The node that sent it first.
    pub origin: PeerId,
    /// The neighbor it arrived from.
    pub from: PeerId,
    /// Links it travelled.
    pub hops: u16,
    /// Its channel path.
    pub path: &'a str,
    /// Its body.
    pub body: &'a [u8],
}

/// Options for one send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// The most links the message may travel: 1 reaches only this node's neighbors. `None`
    /// reaches the whole mesh.
    pub hop_limit: Option<u16>,
}

impl SendOptions {
    /// Options with a hop limit.
    pub fn hop_limit(limit: u16) -> Self {
        Self {
            hop_limit: Some(limit),
        }
    }
}

/// What became of a message sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// It went out to the neighbors.
    Sent,
    /// The mesh is offline: it waits in the offline queue and goes out once online.
    Queued,
}

/// A message received on a [`RawChannel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The node that sent it (the origin, not the neighbor that passed it on).
    pub from: PeerId,
    /// Its body. It may share memory with the other messages its link read in the same block
    /// (64 KiB, more for a larger message), which stays allocated while any of them is held:
    /// to keep a few bodies out of many for long, copy them (`Bytes::copy_from_slice`). A
    /// channel nobody reads thus holds at most its capacity in blocks (each at most 64 KiB
    /// plus the largest frame: about twice what full-size messages would take), in practice
    /// far less, since consecutive messages share their blocks. What a mesh keeps for a path
    /// with no channel yet is copied (it may wait for [`BACKLOG_AGE`]).
    pub body: Bytes,
    /// Links it travelled (0 when sent by another channel of this node).
    pub hops: u16,
}

impl Received {
    /// The same message with a body of its own, not a slice of a larger block.
    fn detached(&self) -> Received {
        Received {
            from: self.from,
            body: Bytes::copy_from_slice(&self.body),
            hops: self.hops,
        }
    }
}

/// What became of a mesh left with [`Mesh::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaveReport {
    /// Messages still in the offline queue, never sent.
    pub unsent: usize,
}

/// One mesh this node is in. Cheap to clone; every clone is the same membership.
///
/// Leaving is explicit ([`Mesh::leave`]) or happens when the node shuts down; dropping the
/// handles does not leave.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<MeshShared>,
}

impl Mesh {
    pub(crate) fn new(shared: Arc<MeshShared>) -> Self {
        Self { shared }
    }

    /// The mesh's id.
    pub fn id(&self) -> &MeshId {
        &self.shared.id
    }

    /// The channel path of the address the mesh was joined with (`chat` for
    /// `net.p2p://soccerpals/chat`), possibly empty.
    pub fn path(&self) -> &str {
        &self.shared.path
    }

    /// This node's peer id.
    pub fn me(&self) -> PeerId {
        self.shared.me
    }

    /// A typed channel on `path`.
    ///
    /// Messages that arrived on `path` before any channel was open on it (for example between
    /// [`crate::Node::join`] returning and this call) are not lost: the mesh keeps up to
    /// [`BACKLOG_MESSAGES`] of them for [`BACKLOG_AGE`], and the first channel opened on the path
    /// receives them first.
    pub fn channel<T: Serialize + DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Channel<T>, ChannelError> {
        Ok(Channel {
            raw: self.raw_channel(path)?,
            _type: PhantomData,
        })
    }

    /// A bytes channel on `path`.
    pub fn raw_channel(&self, path: &str) -> Result<RawChannel, ChannelError> {
        peerchannel_proto::id::validate_path(path)?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(ChannelError::Left);
        }
        let id = self.shared.next_channel.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.shared.channel_capacity);
        let lagged = Arc::new(AtomicU64::new(0));
        let path: Arc<str> = Arc::from(path);
        {
            let mut inner = self.shared.lock();
            // Registered and replayed under one lock: nothing slips in between.
            for (_, message, _) in inner.take_backlog(&path) {
                let _ = tx.try_send(message);
            }
            let subscriber = Subscriber {
                id,
                tx,
                lagged: lagged.clone(),
            };
            inner.subs.entry(path.clone()).or_default().push(subscriber);
        }
        Ok(RawChannel {
            mesh: self.clone(),
            path,
            id,
            rx,
            lagged,
        })
    }

    /// The mesh's events, from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The current neighbors.
    pub async fn neighbors(&self) -> Result<Vec<PeerId>, NodeClosed> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Neighbors {
            mesh: self.shared.id.clone(),
            reply,
        })
        .await?;
        Ok(rx.await.map_err(|_| NodeClosed)?.unwrap_or_default())
    }

    /// Whether the mesh has at least one neighbor.
    pub async fn is_online(&self) -> Result<bool, NodeClosed> {
        Ok(!self.neighbors().await?.is_empty())
    }

    /// The protocol's counters for this mesh.
    pub async fn stats(&self) -> Result<Option<MeshStats>, NodeClosed> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Stats {
            mesh: self.shared.id.clone(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| NodeClosed)
    }

    /// The mesh's security counters: messages refused for their signature or because their
    /// sender was not admitted, and admission handshakes.
    pub fn security_stats(&self) -> SecurityStats {
        self.shared.security.snapshot()
    }

    /// Leaves the mesh: says goodbye to every neighbor, unregisters from the resolvers, and
    /// closes this mesh's channels (their `recv` returns [`RecvError::Closed`]).
    pub async fn leave(&self) -> Result<LeaveReport, NodeClosed> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Leave {
            mesh: self.shared.id.clone(),
            reply,
        })
        .await?;
        let unsent = rx.await.map_err(|_| NodeClosed)?;
        Ok(LeaveReport { unsent })
    }

    async fn command(&self, command: Command) -> Result<(), NodeClosed> {
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| NodeClosed)
    }

    async fn send(
        &self,
        path: &Arc<str>,
        channel: u64,
        body: Bytes,
        options: SendOptions,
    ) -> Result<SendStatus, SendError> {
        if body.len() > self.shared.max_message_size {
            return Err(SendError::TooLarge {
                size: body.len(),
                max: self.shared.max_message_size,
            });
        }
        if options.hop_limit == Some(0) {
            return Err(SendError::ZeroHopLimit);
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Left);
        }
        let (reply, rx) = oneshot::channel();
        let command = Command::Send {
            mesh: self.shared.id.clone(),
            path: path.clone(),
            body,
            options,
            channel,
            reply,
        };
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| SendError::NodeClosed)?;
        rx.await.map_err(|_| SendError::NodeClosed)?
    }
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// A channel of bytes on one path of a mesh.
pub struct RawChannel {
    mesh: Mesh,
    path: Arc<str>,
    id: u64,
    rx: mpsc::Receiver<Received>,
    lagged: Arc<AtomicU64>,
}

impl RawChannel {
    /// The channel's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The mesh it belongs to.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Sends to every other member (and the other channels on this path in this node).
    ///
    /// Waits while the links are full (backpressure). Fails for a body over the node's maximum
    /// message size, when offline with a full offline queue, or after leaving.
    pub async fn send(&self, body: impl Into<Bytes>) -> Result<SendStatus, SendError> {
        self.send_with(body, SendOptions::default()).await
    }

    /// Sends with options (a hop limit).
    pub async fn send_with(
        &self,
        body: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<SendStatus, SendError> {
        self.mesh
            .send(&self.path, self.id, body.into(), options)
            .await
    }

    /// The next message. [`RecvError::Lagged`] reports messages dropped because this channel
    /// was not read fast enough; [`RecvError::Closed`] that the mesh was left or the node
    /// stopped.
    pub async fn recv(&mut self) -> Result<Received, RecvError> {
        let lagged = self.lagged.swap(0, Ordering::AcqRel);
        if lagged > 0 {
            return Err(RecvError::Lagged(lagged));
        }
        self.rx.recv().await.ok_or(RecvError::Closed)
    }
}

impl Stream for RawChannel {
    type Item = Result<Received, RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let lagged = self.lagged.swap(0, Ordering::AcqRel);
        if lagged > 0 {
            return Poll::Ready(Some(Err(RecvError::Lagged(lagged))));
        }
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Drop for RawChannel {
    fn drop(&mut self) {
        let mut inner = self.mesh.shared.lock();
        if let Some(list) = inner.subs.get_mut(&self.path) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                inner.subs.remove(&self.path);
            }
        }
    }
}

impl fmt::Debug for RawChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawChannel")
            .field("mesh", self.mesh.id())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A typed channel on one path of a mesh: messages are `T`, encoded with postcard.
pub struct Channel<T> {
    raw: RawChannel,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Channel<T> {
    /// The channel's path.
    pub fn path(&self) -> &str {
        self.raw.path()
    }

    /// Sends `message` to every other member; see [`RawChannel::send`].
    pub async fn send(&self, message: &T) -> Result<SendStatus, SendError> {
        self.send_with(message, SendOptions::default()).await
    }

    /// Sends with options (a hop limit).
    pub async fn send_with(
        &self,
        message: &T,
        options: SendOptions,
    ) -> Result<SendStatus, SendError> {
        let body = postcard::to_allocvec(message).map_err(|e| SendError::Encode(e.to_string()))?;
        self.raw.send_with(body, options).await
    }

    /// The next message and its origin. A message that is not a `T` is reported as
    /// [`RecvError::Decode`] and skipped by the next call.
    pub async fn recv(&mut self) -> Result<(PeerId, T), RecvError> {
        let received = self.raw.recv().await?;
        decode(received)
    }

    /// The underlying bytes channel.
    pub fn into_raw(self) -> RawChannel {
        self.raw
    }
}

fn decode<T: DeserializeOwned>(received: Received) -> Result<(PeerId, T), RecvError> {
    postcard::from_bytes(&received.body)
        .map(|m| (received.from, m))
        .map_err(|e| RecvError::Decode {
            from: received.from,
            reason: e.to_string(),
        })
}

impl<T: DeserializeOwned> Stream for Channel<T> {
    type Item = Result<(PeerId, T), RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.raw)
            .poll_next(cx)
            .map(|o| o.map(|r| r.and_then(decode)))
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("raw", &self.raw).finish()
    }
}

/// State shared between the mesh handles and the node's actor.
pub(crate) struct MeshShared {
    pub(crate) id: MeshId,
    pub(crate) path: String,
    pub(crate) me: PeerId,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) max_message_size: usize,
    pub(crate) channel_capacity: usize,
    pub(crate) security: Arc<Counters>,
    subscriptions: Mutex<Subscriptions>,
    next_channel: AtomicU64,
    closed: AtomicBool,
}

/// The channels open on each path, and messages that came while none was.
#[derive(Default)]
struct Subscriptions {
    subs: HashMap<Arc<str>, Vec<Subscriber>>,
    backlog: VecDeque<(Arc<str>, Received, Instant)>,
}

impl Subscriptions {
    fn keep(&mut self, path: &str, message: Received) {
        let now = Instant::now();
        while self.backlog.len() >= BACKLOG_MESSAGES
            || self
                .backlog
                .front()
                .is_some_and(|(_, _, at)| now.duration_since(*at) > BACKLOG_AGE)
        {
            self.backlog.pop_front();
        }
        self.backlog
            .push_back((Arc::from(path), message.detached(), now));
    }

    fn take_backlog(&mut self, path: &str) -> Vec<(Arc<str>, Received, Instant)> {
        let now = Instant::now();
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.backlog)
            .into_iter()
            .filter(|(_, _, at)| now.duration_since(*at) <= BACKLOG_AGE)
            .partition(|(p, _, _)| &**p == path);
        self.backlog = rest.into();
        mine
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Received>,
    lagged: Arc<AtomicU64>,
}

impl MeshShared {
    pub(crate) fn new(
        id: MeshId,
        path: String,
        me: PeerId,
        commands: mpsc::Sender<Command>,
        max_message_size: usize,
        channel_capacity: usize,
    ) -> Self {
        Self {
            id,
            path,
            me,
            commands,
            events: broadcast::channel(EVENT_CAPACITY).0,
            max_message_size,
            channel_capacity,
            security: Arc::new(Counters::default()),
            subscriptions: Mutex::new(Subscriptions::default()),
            next_channel: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Hands a message to every channel on `path` but `except`. Never waits: a channel whose
    /// queue is full loses the message and is told so ([`RecvError::Lagged`]).
    pub(crate) fn deliver(&self, path: &str, message: Received, except: Option<u64>) -> usize {
        let mut inner = self.lock();
        let Some(list) = inner.subs.get(path) else {
            // No channel on this path yet: keep it for the first one opened (only messages from
            // others; a node's own sends are not replayed to itself).
            if except.is_none() {
                inner.keep(path, message);
            }
            return 0;
        };
        let mut delivered = 0;
        for s in list.iter().filter(|s| Some(s.id) != except) {
            match s.tx.try_send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lagged.fetch_add(1, Ordering::AcqRel);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        delivered
    }

    pub(crate) fn emit(&self, event: Event) {
        // No receiver is fine: nobody is listening.
        let _ = self.events.send(event);
    }

    /// The mesh was left: channels end.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut inner = self.lock();
        inner.subs.clear();
        inner.backlog.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removals), so a poisoned lock is still usable.
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mesh handle with nothing behind it: enough for its channels.
    fn mesh(capacity: usize) -> Mesh {
        let (commands, _) = mpsc::channel(1);
        let id = MeshId::new("soccerpals").expect("a valid mesh id");
        let me = PeerId::from_bytes([1; 32]);
        let shared = MeshShared::new(id, String::new(), me, commands, 1024, capacity);
        Mesh::new(Arc::new(shared))
    }

    /// Whether `body` lies within `block`'s memory.
    fn within(body: &Bytes, block: &Bytes) -> bool {
        let (b, r) = (block.as_ptr_range(), body.as_ptr_range());
        b.start <= r.start && r.end <= b.end
    }

    #[test]
    fn messages_kept_for_a_later_channel_do_not_hold_their_link_s_block() {
        let mesh = mesh(64);
        let mut channel = mesh.raw_channel("chat").expect("a valid path");
        // One link's read block, and messages that are slices of it, as the links make them.
        let block = Bytes::from(vec![7u8; 64 * 1024]);
        let message = |i: usize| Received {
            from: PeerId::from_bytes([2; 32]),
            body: block.slice(i * 100..(i + 1) * 100),
            hops: 1,
        };
        // An open channel gets the slice itself: no copy on the way.
        assert_eq!(mesh.shared.deliver("chat", message(0), None), 1);
        let got = channel.rx.try_recv().expect("delivered");
        assert_eq!(got, message(0));
        assert!(within(&got.body, &block));
        // Nobody reads the other path yet: what it keeps (up to 30 s) is copied at once.
        assert_eq!(mesh.shared.deliver("scores", message(1), None), 0);
        let mut late = mesh.raw_channel("scores").expect("a valid path");
        let kept = late.rx.try_recv().expect("kept for the first channel");
        assert_eq!(kept, message(1), "the same message, bytes and all");
        assert!(!within(&kept.body, &block));
    }
}
