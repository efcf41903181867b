//! The node's task: it owns the protocol core ([`peerchannel_proto::State`]) and drives it
//! from commands, link events, incoming connections, timers and resolver answers, carrying
//! out what the core asks (sending, dialing, resolving, delivering).
//!
//! Everything the core decides happens here, on one task, so the core needs no locks; link
//! reading, writing, dialing and resolving run on tasks of their own and report back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::select_ok;
use peerchannel_proto::{
    BroadcastError, BroadcastMessage, BroadcastOptions, BroadcastStatus, FrameError, Gossip,
    InEvent, MeshAddress, MeshEvent, MeshId, MeshMessage, MeshStats, Message, MessageId, OutEvent,
    PeerInfo, Propagation, State,
};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use ring::rand::SecureRandom;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{Instrument, debug, info, warn};

use crate::envelope::{Envelope, EnvelopeRef};
use crate::error::{JoinError, SendError};
use crate::identity::Identity;
use crate::link::{self, Lane, Link, LinkEvent, Refused, close_code};
use crate::mesh::{Event, FilterInput, MeshOptions, MeshShared, Received, SendOptions, SendStatus};
use crate::node::NodeConfig;
use crate::resolver::{MultiResolver, PeerAddr, RegistrationHandle, Resolver, spawn_registration};
use crate::socket::KillableSocket;
use crate::tls::{self, ExpectedPeer};
use crate::{PeerId, addresses};

// Security hooks (closed meshes, signatures): see `actor/admission.rs`.
mod admission;

/// Link events waiting for the node's task; when full, link readers wait, and QUIC flow
/// control slows the senders.
///
/// Its depth is latency for a saturated node (every link feeds it, and each message waits
/// behind the whole queue), and slack for a node held up for a moment. Measured with
/// `peerchannel-bench` on 2026-12-07 (10 nodes in one process, the sender flat out): at 4,096
/// messages waited a median 316-366 ms in the throughput phase (`load_p50_us`), at 512 56-125
/// ms, with the same throughput; but with 512 the pause phase's others kept less than 80% of
/// their rate in 2 of 5 runs (none of 6 at 4,096): a node waiting on a stalled neighbor
/// (up to [`SLOW_WAIT`]) fills a short queue sooner, and its own parent then takes it for
/// stuck and routes around it. Shorter only once the node's task no longer waits on one
/// neighbor.
const LINK_EVENT_QUEUE: usize = 4096;

/// Frames kept for a peer while its link is being dialed.
const PENDING_FRAMES: usize = 1024;

/// Handshakes of incoming connections under way at once; more are refused.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// How long a link no mesh uses stays open, in case a mesh needs it again.
const LINGER: Duration = Duration::from_secs(5);

/// A neighbor whose full queue does not move for this long is routed around (it becomes lazy).
const SLOW_WAIT: Duration = Duration::from_millis(100);

/// The longest a message waits for room in a neighbor's queue that does move, before that
/// neighbor is routed around anyway.
const BACKPRESSURE_LIMIT: Duration = Duration::from_secs(2);

/// A neighbor whose queue stays full this long is disconnected.
const SLOW_DISCONNECT: Duration = Duration::from_secs(10);

/// How often answers waiting for room in a link's data lane are moved into it (while any
/// wait; see [`Link::queue_answer`]). A lane holds [`link::DATA_QUEUE_FRAMES`] frames, which a
/// busy link sends in tens of milliseconds: it does not run dry between two feeds.
const ANSWER_FEED: Duration = Duration::from_millis(5);

/// Link events handled in one round of the run loop, when that many are waiting.
const LINK_BATCH: usize = 64;

/// Link events handled before timers fire, when some are waiting (see the run loop).
const TIMER_CATCH_UP: usize = 4096;

/// How often links are checked for disuse and slowness.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Peers whose addresses are remembered.
const ADDRESS_BOOK: usize = 10_000;

/// How long a dial may take before it counts as failed (QUIC gives up on a silent address
/// after its idle timeout, 3 s by default).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutting down waits for goodbyes to be written and acknowledged.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// What handles ask of the node's task.
pub(crate) enum Command {
    Join {
        address: MeshAddress,
        options: Box<MeshOptions>,
        reply: oneshot::Sender<Result<Arc<MeshShared>, JoinError>>,
    },
    Leave {
        mesh: MeshId,
        reply: oneshot::Sender<usize>,
    },
    Send {
        mesh: MeshId,
        path: Arc<str>,
        body: Bytes,
        options: SendOptions,
        channel: u64,
        reply: oneshot::Sender<Result<SendStatus, SendError>>,
    },
    Neighbors {
        mesh: MeshId,
        reply: oneshot::Sender<Option<Vec<PeerId>>>,
    },
    Stats {
        mesh: MeshId,
        reply: oneshot::Sender<Option<MeshStats>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    Crash,
}

/// Results of the node's own background work.
enum Internal {
    Connected {
        peer: PeerId,
        conn: quinn::Connection,
        outgoing: bool,
    },
    DialFailed {
        peer: PeerId,
        reason: String,
    },
    Resolved {
        mesh: MeshId,
        result: Result<Vec<PeerAddr>, String>,
    },
    Identified {
        mesh: MeshId,
        peer: PeerId,
        addr: SocketAddr,
        conn: quinn::Connection,
    },
    /// An admission handshake's progress (closed meshes).
    Admission(crate::security::admission::AdmissionEvent),
}

/// Everything the task starts with.
pub(crate) struct Setup {
    pub(crate) peer_id: PeerId,
    /// Signs messages in meshes that sign.
    pub(crate) identity: Identity,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) config: NodeConfig,
    pub(crate) addresses: Vec<SocketAddr>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) rx: mpsc::Receiver<Command>,
    pub(crate) socket: Arc<KillableSocket>,
}

pub(crate) fn spawn(setup: Setup) {
    let Setup {
        peer_id,
        identity,
        endpoint,
        config,
        addresses,
        commands,
        rx,
        socket,
    } = setup;
    let resolver: Option<Arc<dyn Resolver>> = match config.resolvers.len() {
        0 => None,
        1 => Some(config.resolvers[0].clone()),
        _ => Some(Arc::new(MultiResolver::new(config.resolvers.clone()))),
    };
    let my_data = addresses::encode(&addresses);
    let (links_tx, links_rx) = mpsc::channel(LINK_EVENT_QUEUE);
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let actor = Actor {
        me: peer_id,
        identity,
        admission: admission::Admissions::default(),
        state: State::new(peer_id, my_data, protocol_rng()),
        endpoint,
        max_frame: config.max_message_size + peerchannel_proto::wire::DEFAULT_MAX_FRAME
            - crate::node::DEFAULT_MAX_MESSAGE_SIZE,
        config,
        addresses,
        resolver,
        commands: commands.downgrade(),
        links_tx,
        internal_tx,
        peers: HashMap::new(),
        book: HashMap::new(),
        meshes: BTreeMap::new(),
        next_conn: 0,
        handshakes: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
        deferred: VecDeque::new(),
        answering: None,
        answers_waiting: false,
        last_gossip: None,
        _socket: socket,
    };
    drop(commands);
    let span = tracing::info_span!("node", me = %peer_id.fmt_short());
    tokio::spawn(actor.run(rx, links_rx, internal_rx).instrument(span));
}

/// The protocol core's random source, seeded from the operating system.
fn protocol_rng() -> ChaCha12Rng {
    let mut seed = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut seed).is_err() {
        // ring's system source only fails where the OS has none; the protocol then still
        // works, with choices a peer could predict.
        warn!("no system randomness; the protocol's random choices are predictable");
    }
    ChaCha12Rng::from_seed(seed)
}

/// One peer's links, as the node keeps them.
#[derive(Default)]
struct Peer {
    links: Vec<Link>,
    dialing: bool,
    pending: Vec<(Bytes, Lane)>,
    unused_since: Option<Instant>,
    slow_since: Option<Instant>,
}

impl Peer {
    /// The link to send on: of two (both sides dialed at once), the one dialed by the peer
    /// with the smaller id, so that both sides pick the same.
    fn current(&self, me: PeerId, peer: PeerId) -> Option<&Link> {
        self.links.get(self.current_index(me, peer)?)
    }

    fn current_mut(&mut self, me: PeerId, peer: PeerId) -> Option<&mut Link> {
        let i = self.current_index(me, peer)?;
        self.links.get_mut(i)
    }

    fn current_index(&self, me: PeerId, peer: PeerId) -> Option<usize> {
        let preferred_outgoing = me < peer;
        let preferred = self
            .links
            .iter()
            .position(|l| l.outgoing == preferred_outgoing);
        preferred.or((!self.links.is_empty()).then_some(0))
    }
}

struct MeshRuntime {
    shared: Arc<MeshShared>,
    registrations: Vec<RegistrationHandle>,
    resolving: bool,
}

struct Actor {
    me: PeerId,
    identity: Identity,
    /// Closed meshes: who is admitted where, frames held meanwhile.
    admission: admission::Admissions,
    state: State<PeerId, ChaCha12Rng>,
    endpoint: quinn::Endpoint,
    config: NodeConfig,
    max_frame: usize,
    addresses: Vec<SocketAddr>,
    resolver: Option<Arc<dyn Resolver>>,
    commands: mpsc::WeakSender<Command>,
    links_tx: mpsc::Sender<LinkEvent>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    peers: HashMap<PeerId, Peer>,
    book: HashMap<PeerId, Vec<SocketAddr>>,
    meshes: BTreeMap<MeshId, MeshRuntime>,
    next_conn: u64,
    handshakes: Arc<Semaphore>,
    /// Inputs for the core that arose while carrying out its outputs.
    deferred: VecDeque<InEvent<PeerId>>,
    /// The peer whose request (graft, fetch or resume) is being answered, while its outputs are
    /// carried out (set and cleared by [`Actor::on_link_event`]).
    answering: Option<PeerId>,
    /// Whether some link has answers waiting for room (see [`Link::queue_answer`]).
    answers_waiting: bool,
    /// The frame of the last message pushed (see [`Actor::encode`]).
    last_gossip: Option<(MeshId, MessageId<PeerId>, u16, Bytes)>,
    /// Kept so the socket lives as long as the task.
    _socket: Arc<KillableSocket>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut links: mpsc::Receiver<LinkEvent>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        info!(peer = %self.me, addresses = ?self.addresses, "node started");
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With no timer due, the timer sleeps until the far future (the sweep still ticks).
        let never = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let timer = tokio::time::sleep_until(never);
        tokio::pin!(timer);
        let mut answer_feed = tokio::time::interval(ANSWER_FEED);
        answer_feed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = self
                .state
                .poll_timeout()
                .map_or(never, tokio::time::Instant::from_std);
            // Resetting touches the runtime's timer wheel: only when the deadline moved.
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(Command::Crash) => {
                        debug!("node crashed on purpose");
                        return;
                    }
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                Some(event) = links.recv() => {
                    self.on_link_event(event).await;
                    // Take what else has arrived in one go, rather than a round of this loop
                    // (timer, select over every source) per frame.
                    for _ in 0..LINK_BATCH {
                        let Ok(event) = links.try_recv() else { break };
                        self.on_link_event(event).await;
                    }
                }
                Some(event) = internal.recv() => self.on_internal(event),
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => self.on_incoming(incoming),
                    None => return,
                },
                () = &mut timer => {
                    // Act on timers (grafts above all) only with what has already arrived:
                    // when this task is behind, the eager copy a graft would fetch may be
                    // waiting in its own queue.
                    for _ in 0..TIMER_CATCH_UP {
                        let Ok(event) = links.try_recv() else { break };
                        self.on_link_event(event).await;
                    }
                    self.state.handle_timeout(Instant::now());
                }
                _ = sweep.tick() => self.sweep(),
                _ = answer_feed.tick(), if self.answers_waiting => {}
            }
            self.drain().await;
            if self.answers_waiting {
                self.feed_answers();
            }
        }
    }

    // --- commands ---------------------------------------------------------------------------

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Join {
                address,
                options,
                reply,
            } => {
                let _ = reply.send(self.join(address, *options));
            }
            Command::Leave { mesh, reply } => self.leave(mesh, reply),
            Command::Send {
                mesh,
                path,
                body,
                options,
                channel,
                reply,
            } => {
                let result = self.send(&mesh, &path, body, options, channel).await;
                let _ = reply.send(result);
            }
            Command::Neighbors { mesh, reply } => {
                let _ = reply.send(self.state.neighbors(&mesh).map(|n| n.to_vec()));
            }
            Command::Stats { mesh, reply } => {
                let _ = reply.send(self.state.mesh_stats(&mesh));
            }
            // Handled in the loop.
            Command::Shutdown { .. } | Command::Crash => {}
        }
    }

    fn join(
        &mut self,
        address: MeshAddress,
        options: MeshOptions,
    ) -> Result<Arc<MeshShared>, JoinError> {
        let mesh = address.mesh;
        if self.meshes.contains_key(&mesh) {
            return Err(JoinError::AlreadyJoined(mesh));
        }
        let commands = self.commands.upgrade().ok_or(crate::error::NodeClosed)?;
        let shared = Arc::new(MeshShared::new(
            mesh.clone(),
            address.path,
            self.me,
            commands,
            self.config.max_message_size,
            self.config.channel_capacity,
        ));
        // Security: refuses unusable options before anything is joined.
        let verifier = self.admission_join(&mesh, &options, shared.security.clone())?;
        self.state
            .join(
                mesh.clone(),
                options.protocol.clone(),
                Vec::new(),
                Instant::now(),
            )
            .map_err(|_| JoinError::AlreadyJoined(mesh.clone()))?;
        // Every message is checked before it is delivered or passed on: a payload that is not
        // an envelope is rejected (not forwarded), then the application's filter decides.
        let user = options.filter.clone();
        let mut verifier = verifier;
        let filter = move |gossip: &Gossip<PeerId>, from: &PeerId| {
            let Ok(envelope) = EnvelopeRef::decode(&gossip.payload) else {
                return Propagation::Reject;
            };
            // Security: signatures are checked before delivering or forwarding.
            if let Some(verifier) = &mut verifier
                && verifier.check(gossip, &envelope).is_err()
            {
                return Propagation::Reject;
            }
            match &user {
                Some(user) => user(&FilterInput {
                    origin: gossip.id.origin,
                    from: *from,
                    hops: gossip.hops,
                    path: envelope.path,
                    body: envelope.body,
                }),
                None => Propagation::DeliverAndForward,
            }
        };
        // The mesh was joined just above.
        let _ = self.state.set_filter(&mesh, Some(Box::new(filter)));
        let registrations = self
            .resolver
            .iter()
            .map(|r| spawn_registration(r.clone(), mesh.clone(), self.me, self.addresses.clone()))
            .collect();
        info!(mesh = %mesh, "joined");
        self.meshes.insert(
            mesh,
            MeshRuntime {
                shared: shared.clone(),
                registrations,
                resolving: false,
            },
        );
        Ok(shared)
    }

    fn leave(&mut self, mesh: MeshId, reply: oneshot::Sender<usize>) {
        let unsent = self.state.leave(&mesh, Instant::now()).unwrap_or(0);
        self.admission_leave(&mesh);
        let Some(runtime) = self.meshes.remove(&mesh) else {
            let _ = reply.send(unsent);
            return;
        };
        runtime.shared.close();
        info!(mesh = %mesh, "left");
        // Unregistering waits on the network: do it off the node's task.
        tokio::spawn(async move {
            futures_util::future::join_all(
                runtime
                    .registrations
                    .into_iter()
                    .map(RegistrationHandle::unregister),
            )
            .await;
            let _ = reply.send(unsent);
        });
    }

    async fn send(
        &mut self,
        mesh: &MeshId,
        path: &Arc<str>,
        body: Bytes,
        options: SendOptions,
        channel: u64,
    ) -> Result<SendStatus, SendError> {
        let Some(runtime) = self.meshes.get(mesh) else {
            return Err(SendError::Left);
        };
        let shared = runtime.shared.clone();
        let opts = match options.hop_limit {
            Some(limit) => BroadcastOptions::hop_limit(limit),
            None => BroadcastOptions::default(),
        };
        // Security: a signing mesh signs the message together with its id.
        let signer = self.admission_signer(mesh);
        let result = self
            .state
            .broadcast_with(mesh, opts, Instant::now(), |id| match &signer {
                Some(signer) => signer.envelope(id, path, &body),
                None => Envelope {
                    path,
                    body: &body,
                    auth: None,
                }
                .encode(),
            });
        let status = match result {
            Ok((_, BroadcastStatus::Sent)) => SendStatus::Sent,
            Ok((_, BroadcastStatus::Queued)) => SendStatus::Queued,
            Err(BroadcastError::OfflineQueueFull { messages, bytes }) => {
                return Err(SendError::OfflineQueueFull { messages, bytes });
            }
            Err(BroadcastError::ZeroHopLimit) => return Err(SendError::ZeroHopLimit),
            Err(_) => return Err(SendError::Left),
        };
        // The other channels on this path in this node get it too, but not the sender.
        let local = Received {
            from: self.me,
            body,
            hops: 0,
        };
        shared.deliver(path, local, Some(channel));
        // Carry out the sends now, so that a full link holds this sender back.
        self.drain().await;
        Ok(status)
    }

    // --- links ------------------------------------------------------------------------------

    fn on_incoming(&mut self, incoming: quinn::Incoming) {
        let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
            debug!("refusing a connection: too many handshakes under way");
            incoming.refuse();
            return;
        };
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    debug!("incoming handshake failed: {e}");
                    return;
                }
            };
            match tls::peer_id(&conn) {
                Ok(peer) => {
                    let _ = internal.send(Internal::Connected {
                        peer,
                        conn,
                        outgoing: false,
                    });
                }
                Err(e) => {
                    debug!("incoming connection without a usable identity: {e}");
                    conn.close(close_code::PROTOCOL_VIOLATION, b"no usable identity");
                }
            }
        });
    }

    fn on_internal(&mut self, event: Internal) {
        match event {
            Internal::Connected {
                peer,
                conn,
                outgoing,
            } => self.add_link(peer, conn, outgoing),
            Internal::DialFailed { peer, reason } => {
                debug!(peer = %peer.fmt_short(), "dial failed: {reason}");
                self.admission_dial_failed(peer);
                let entry = self.peers.entry(peer).or_default();
                entry.dialing = false;
                entry.pending.clear();
                if entry.links.is_empty() {
                    self.peers.remove(&peer);
                    self.state
                        .handle(InEvent::PeerDisconnected { peer }, Instant::now());
                }
            }
            Internal::Resolved { mesh, result } => self.on_resolved(mesh, result),
            Internal::Admission(event) => self.on_admission(event),
            Internal::Identified {
                mesh,
                peer,
                addr,
                conn,
            } => {
                self.add_link(peer, conn, true);
                self.remember(peer, vec![addr]);
                let contact = PeerInfo {
                    id: peer,
                    data: addresses::encode(&[addr]),
                };
                self.state.handle(
                    InEvent::Contacts {
                        mesh,
                        contacts: vec![contact],
                    },
                    Instant::now(),
                );
            }
        }
    }

    fn add_link(&mut self, peer: PeerId, conn: quinn::Connection, outgoing: bool) {
        if peer == self.me {
            conn.close(close_code::DUPLICATE, b"connected to itself");
            return;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let link = Link::spawn(
            id,
            peer,
            conn,
            outgoing,
            self.links_tx.clone(),
            self.max_frame,
            self.config.limits,
        );
        debug!(peer = %peer.fmt_short(), outgoing, "link up");
        self.admission_link_up(peer, id, link.conn.clone());
        let me = self.me;
        let entry = self.peers.entry(peer).or_default();
        entry.links.push(link);
        if outgoing {
            entry.dialing = false;
        }
        // Both sides dialed at once: keep the connection dialed by the smaller peer id (both
        // sides pick the same), and retire the other once what is queued on it is delivered.
        let preferred = me < peer;
        if entry.links.len() > 1 && entry.links.iter().any(|l| l.outgoing == preferred) {
            let (keep, retire): (Vec<Link>, Vec<Link>) = std::mem::take(&mut entry.links)
                .into_iter()
                .partition(|l| l.outgoing == preferred);
            entry.links = keep;
            for mut link in retire {
                if let Some(kept) = entry.links.first_mut() {
                    kept.adopt_answers(&mut link);
                    self.answers_waiting |= kept.has_answers();
                }
                let conn = link.conn.clone();
                let writer = link.finish();
                tokio::spawn(async move {
                    let _ = writer.await;
                    conn.close(close_code::DUPLICATE, b"duplicate connection");
                });
            }
        }
        let pending = std::mem::take(&mut entry.pending);
        if let Some(link) = entry.current(me, peer) {
            for (frame, lane) in pending {
                // Pending frames are few (bounded); a refusal here is handled like any full
                // queue on the next send.
                let _ = match lane {
                    Lane::Control => link.send_control(frame),
                    Lane::Data => link.try_send_data(frame),
                };
            }
        }
        self.admission_link_ready(peer);
    }

    /// Hands a link event to the core and carries out what it asks.
    async fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Message { peer, message } => {
                if !self.gate_incoming(peer, &message) {
                    return;
                }
                let request = message.body.is_request();
                self.state.handle(
                    InEvent::Message {
                        from: peer,
                        message,
                    },
                    Instant::now(),
                );
                // What a graft, a fetch or a resume makes the core send back to its sender
                // answers it: never waited for (see `send_frame`).
                self.answering = request.then_some(peer);
                self.drain().await;
                self.answering = None;
            }
            LinkEvent::Closed {
                peer,
                conn_id,
                reason,
            } => {
                let Some(entry) = self.peers.get_mut(&peer) else {
                    return;
                };
                entry.links.retain(|l| l.id != conn_id);
                debug!(peer = %peer.fmt_short(), "link closed: {reason}");
                if entry.links.is_empty() && !entry.dialing {
                    self.peers.remove(&peer);
                    self.state
                        .handle(InEvent::PeerDisconnected { peer }, Instant::now());
                    self.drain().await;
                }
            }
        }
    }

    fn dial(&mut self, peer: PeerId) -> bool {
        let Some(addrs) = self.book.get(&peer).cloned() else {
            return false;
        };
        let endpoint = self.endpoint.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let attempts = addrs
                .iter()
                .map(|addr| Box::pin(tls::connect(&endpoint, *addr, ExpectedPeer::Id(peer))));
            let result = tokio::time::timeout(DIAL_TIMEOUT, select_ok(attempts)).await;
            let event = match result {
                Ok(Ok(((conn, _), _))) => Internal::Connected {
                    peer,
                    conn,
                    outgoing: true,
                },
                Ok(Err(e)) => Internal::DialFailed {
                    peer,
                    reason: e.to_string(),
                },
                Err(_) => Internal::DialFailed {
                    peer,
                    reason: "timed out".into(),
                },
            };
            let _ = internal.send(event);
        });
        true
    }

    /// Closes links no mesh uses, and slow ones.
    fn sweep(&mut self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        for (peer, entry) in &mut self.peers {
            if self.state.uses(peer) || entry.dialing {
                entry.unused_since = None;
            } else {
                let since = *entry.unused_since.get_or_insert(now);
                if now.duration_since(since) >= LINGER {
                    for l in &entry.links {
                        l.close(close_code::UNUSED, "unused");
                    }
                    gone.push(*peer);
                    continue;
                }
            }
            let full = entry.links.iter().any(|l| l.data_room() == 0);
            if !full {
                entry.slow_since = None;
            } else if now.duration_since(*entry.slow_since.get_or_insert(now)) >= SLOW_DISCONNECT {
                warn!(peer = %peer.fmt_short(), "disconnecting a neighbor that cannot keep up");
                for l in &entry.links {
                    l.close(close_code::TOO_SLOW, "too slow");
                }
                gone.push(*peer);
            }
        }
        for peer in gone {
            self.peers.remove(&peer);
            self.state.handle(InEvent::PeerDisconnected { peer }, now);
        }
    }

    // --- resolving --------------------------------------------------------------------------

    fn resolve(&mut self, mesh: MeshId, count: usize) {
        let Some(resolver) = self.resolver.clone() else {
            return;
        };
        let Some(runtime) = self.meshes.get_mut(&mesh) else {
            return;
        };
        if runtime.resolving {
            return;
        }
        runtime.resolving = true;
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            // One more than asked: the answer may include this node.
            let result = resolver
                .resolve(&mesh, count + 1)
                .await
                .map_err(|e| e.to_string());
            let _ = internal.send(Internal::Resolved { mesh, result });
        });
    }

    fn on_resolved(&mut self, mesh: MeshId, result: Result<Vec<PeerAddr>, String>) {
        let Some(runtime) = self.meshes.get_mut(&mesh) else {
            return;
        };
        runtime.resolving = false;
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                warn!(mesh = %mesh, "resolver: {e}");
                return;
            }
        };
        let mut contacts = Vec::new();
        for member in found {
            match member.peer_id {
                Some(id) if id == self.me => {}
                Some(id) => {
                    self.remember(id, member.addresses.clone());
                    contacts.push(PeerInfo {
                        id,
                        data: addresses::encode(&member.addresses),
                    });
                }
                None => {
                    for addr in member.addresses {
                        if !self.addresses.contains(&addr) {
                            self.identify(mesh.clone(), addr);
                        }
                    }
                }
            }
        }
        if !contacts.is_empty() {
            self.state
                .handle(InEvent::Contacts { mesh, contacts }, Instant::now());
        }
    }

    /// Dials an address whose peer id is unknown (a static bootstrap peer) to learn it.
    fn identify(&mut self, mesh: MeshId, addr: SocketAddr) {
        let endpoint = self.endpoint.clone();
        let internal = self.internal_tx.clone();
        let me = self.me;
        tokio::spawn(async move {
            let attempt = tls::connect(&endpoint, addr, ExpectedPeer::Unknown);
            match tokio::time::timeout(DIAL_TIMEOUT, attempt).await {
                Ok(Ok((conn, peer))) if peer != me => {
                    let _ = internal.send(Internal::Identified {
                        mesh,
                        peer,
                        addr,
                        conn,
                    });
                }
                Ok(Ok((conn, _))) => conn.close(close_code::DUPLICATE, b"connected to itself"),
                Ok(Err(e)) => debug!("bootstrap peer {addr}: {e}"),
                Err(_) => debug!("bootstrap peer {addr}: timed out"),
            }
        });
    }

    fn remember(&mut self, peer: PeerId, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() {
            return;
        }
        if self.book.len() >= ADDRESS_BOOK
            && !self.book.contains_key(&peer)
            && let Some(victim) = self.book.keys().next().copied()
        {
            self.book.remove(&victim);
        }
        self.book.insert(peer, addrs);
    }

    // --- the core's outputs -----------------------------------------------------------------

    /// Carries out everything the core asks, until it asks nothing more.
    async fn drain(&mut self) {
        loop {
            while let Some(event) = self.state.poll_event() {
                self.on_out(event).await;
            }
            let Some(input) = self.deferred.pop_front() else {
                break;
            };
            self.state.handle(input, Instant::now());
        }
    }

    async fn on_out(&mut self, event: OutEvent<PeerId>) {
        match event {
            OutEvent::SendMessage { to, message } => {
                let lane = Lane::of(&message);
                match self.encode(&message) {
                    // Security: a closed mesh's frames wait for the peer's admission.
                    Ok(frame) => {
                        if let Some(frame) = self.gate_outgoing(to, &message.mesh, frame, lane) {
                            self.send_frame(to, frame, lane).await;
                        }
                    }
                    Err(e) => warn!("cannot encode a message: {e}"),
                }
            }
            OutEvent::DisconnectPeer { peer } => {
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.unused_since.get_or_insert(Instant::now());
                }
            }
            OutEvent::PeerData { peer, data } => {
                if let Some(addrs) = addresses::decode(&data) {
                    self.remember(peer, addrs);
                }
            }
            OutEvent::WantContacts { mesh, count } => self.resolve(mesh, count),
            OutEvent::Deliver { mesh, delivery } => {
                let Some(runtime) = self.meshes.get(&mesh) else {
                    return;
                };
                // The filter already rejected payloads that are not envelopes.
                let Ok(envelope) = EnvelopeRef::decode(&delivery.payload) else {
                    return;
                };
                let body = delivery.payload.slice_ref(envelope.body);
                let received = Received {
                    from: delivery.id.origin,
                    body,
                    hops: delivery.hops,
                };
                runtime.shared.deliver(envelope.path, received, None);
            }
            OutEvent::Event { mesh, event } => {
                let Some(runtime) = self.meshes.get(&mesh) else {
                    return;
                };
                debug!(mesh = %mesh, event = ?event, "mesh event");
                let event = match event {
                    MeshEvent::Online => Event::Online,
                    MeshEvent::Offline => Event::Offline,
                    MeshEvent::NeighborUp(p) => Event::NeighborUp(p),
                    MeshEvent::NeighborDown(p, reason) => Event::NeighborDown(p, reason),
                    _ => return,
                };
                runtime.shared.emit(event);
            }
            _ => {}
        }
    }

    /// Encodes a message as a frame. A message pushed to several neighbors in a row (the
    /// same id with the same hop count) is encoded once and the frame shared.
    fn encode(&mut self, message: &Message<PeerId>) -> Result<Bytes, FrameError> {
        let MeshMessage::Broadcast(BroadcastMessage::Gossip(gossip)) = &message.body else {
            return link::encode(message, self.max_frame);
        };
        if let Some((mesh, id, hops, frame)) = &self.last_gossip
            && (*id, *hops) == (gossip.id, gossip.hops)
            && *mesh == message.mesh
        {
            return Ok(frame.clone());
        }
        let frame = link::encode(message, self.max_frame)?;
        self.last_gossip = Some((message.mesh.clone(), gossip.id, gossip.hops, frame.clone()));
        Ok(frame)
    }

    async fn send_frame(&mut self, to: PeerId, frame: Bytes, lane: Lane) {
        let me = self.me;
        // The answer to a request goes against the tree's flow (or, for a resume, may be the
        // whole store): waiting for room for it could make two nodes wait on each other, or
        // hold this node up. What the queue does not take waits beside it, bounded, and is fed
        // in as room comes (`Link::queue_answer`). Every data frame to a neighbor found stuck
        // in this same round is sent best effort: the core routes around it once the outputs
        // are carried out, and each frame would wait again.
        let found_stuck = || {
            self.deferred
                .iter()
                .any(|e| matches!(e, InEvent::PeerSlow { peer } if *peer == to))
        };
        let answer = lane == Lane::Data && self.answering == Some(to);
        let best_effort = lane == Lane::Data && found_stuck();
        let entry = self.peers.entry(to).or_default();
        entry.unused_since = None;
        if answer && let Some(link) = entry.current_mut(me, to) {
            if !link.queue_answer(frame) {
                debug!(peer = %to.fmt_short(), "an answer dropped: the link's queues are full");
            }
            self.answers_waiting |= link.has_answers();
            return;
        }
        let Some(link) = entry.current(me, to) else {
            if entry.pending.len() < PENDING_FRAMES {
                entry.pending.push((frame, lane));
            }
            if !entry.dialing {
                if self.dial(to) {
                    if let Some(entry) = self.peers.get_mut(&to) {
                        entry.dialing = true;
                    }
                } else {
                    // No address for this peer: it cannot be reached.
                    self.peers.remove(&to);
                    self.deferred
                        .push_back(InEvent::PeerDisconnected { peer: to });
                }
            }
            return;
        };
        let result = match lane {
            Lane::Control => link.send_control(frame),
            Lane::Data => link.try_send_data(frame),
        };
        match result {
            Ok(()) => {}
            Err(Refused::Overloaded) => {
                // Even the protocol's small frames pile up: the peer is not reading at all.
                warn!(peer = %to.fmt_short(), "disconnecting a neighbor that does not read");
                link.close(close_code::LIMIT_EXCEEDED, "too much waiting to be sent");
            }
            Err(Refused::Full(_)) if best_effort => {}
            Err(Refused::Full(frame)) => {
                // The neighbor's queue is full. While its link keeps moving, wait (this holds
                // the sender back, and through it the whole mesh: backpressure, not loss);
                // route around it only when it has not moved for a while or the wait grows
                // too long.
                let started = Instant::now();
                let mut moved = link.progress();
                let sent = loop {
                    let room = link.wait_for_room(frame.len());
                    if tokio::time::timeout(SLOW_WAIT, room).await.is_ok() {
                        // Only a closed link refuses now.
                        break link.try_send_data(frame).is_ok();
                    }
                    let now_moved = link.progress();
                    if now_moved == moved || started.elapsed() >= BACKPRESSURE_LIMIT {
                        break false;
                    }
                    moved = now_moved;
                };
                if !sent {
                    debug!(peer = %to.fmt_short(), "neighbor stuck: routing around it");
                    if let Some(entry) = self.peers.get_mut(&to) {
                        entry.slow_since.get_or_insert_with(Instant::now);
                    }
                    self.deferred.push_back(InEvent::PeerSlow { peer: to });
                }
            }
        }
    }

    /// Moves waiting answers into the links' data lanes as far as they have room.
    fn feed_answers(&mut self) {
        let mut waiting = false;
        for entry in self.peers.values_mut() {
            for link in &mut entry.links {
                if link.has_answers() {
                    waiting |= link.feed_answers();
                }
            }
        }
        self.answers_waiting = waiting;
    }

    async fn shutdown(&mut self) {
        let meshes: Vec<MeshId> = self.meshes.keys().cloned().collect();
        let mut unregistering = Vec::new();
        for mesh in meshes {
            let _ = self.state.leave(&mesh, Instant::now());
            if let Some(runtime) = self.meshes.remove(&mesh) {
                runtime.shared.close();
                unregistering.extend(runtime.registrations);
            }
        }
        self.drain().await;
        // Let the goodbyes (and every frame still queued) go out and be acknowledged before
        // closing: closing a QUIC connection throws away what it has not sent.
        let writers: Vec<_> = std::mem::take(&mut self.peers)
            .into_values()
            .flat_map(|p| p.links)
            .map(Link::finish)
            .collect();
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, async {
            tokio::join!(
                futures_util::future::join_all(writers),
                futures_util::future::join_all(
                    unregistering
                        .into_iter()
                        .map(RegistrationHandle::unregister)
                )
            )
        })
        .await;
        self.endpoint.close(close_code::SHUTDOWN, b"shutdown");
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, self.endpoint.wait_idle()).await;
        info!("node stopped");
    }
}
