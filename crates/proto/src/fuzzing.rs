//! Entry points for the fuzz targets in `fuzz/` and for the tests that replay their corpus on
//! a stable toolchain (`tests/fuzz_equivalents.rs`). Only with the `fuzzing` feature; not a
//! stable API.
//!
//! Each entry point takes the fuzzer's raw bytes, so that a corpus file replays the same way
//! under `cargo fuzz` and under `cargo test`, and panics when an invariant breaks.
//!
//! - [`frame_decoder`]: bytes as they come off a link, cut into frames and decoded as the
//!   runtime decodes them (`Message<[u8; 32]>`, the layout of its peer ids); whatever decodes
//!   must encode again within the same limit and decode to the same message.
//! - [`state_machine`]: three honest [`State`]s that talk to each other, plus messages made
//!   up by the fuzzer from peers that do not exist (or that claim anything), lost links, slow
//!   links, contacts, joins, leaves, broadcasts, filters and time steps. After every step the
//!   views, queues and caches stay within their bounds, timers are never left due, every
//!   message a node sends encodes within the default frame limit and decodes back, and (with
//!   the default settings) no message is delivered twice.

pub mod replay;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::broadcast::{MAX_GRAFTS_IN_FLIGHT, MAX_MISSING};
use crate::config::{BroadcastMode, Config};
use crate::id::{MeshId, MessageId};
use crate::mesh::{BroadcastOptions, PROBE_CONTACTS};
use crate::message::{
    Announced, Announcement, BroadcastMessage, DisconnectReason, Gossip, GossipKind,
    MembershipMessage, MeshMessage, Message, PeerData, PeerInfo, Priority, Probe, RecentId,
};
use crate::state::{InEvent, OutEvent, State};
use crate::wire::{self, DEFAULT_MAX_FRAME, FrameError, LEN_PREFIX};
use crate::{Delivery, Propagation};

/// The peer id type of the frame decoder: the runtime's peer ids are 32-byte keys, encoded as
/// a plain byte array.
pub type WirePeer = [u8; 32];

/// Frame limits the decoder is tried with: the first input byte picks one.
const MAX_FRAMES: [usize; 4] = [DEFAULT_MAX_FRAME, 64, 1024, 1 << 20];

/// Decodes `data` as a stream of frames, as a link reader does; checks every decoded message
/// round-trips.
pub fn frame_decoder(data: &[u8]) {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let max = MAX_FRAMES[usize::from(pick) % MAX_FRAMES.len()];
    // The whole input as one body, too (what `decode_body` sees after `frame_len`).
    if let Ok(message) = wire::decode_body::<Message<WirePeer>>(stream) {
        round_trip(&message, stream.len());
    }
    let mut rest = stream;
    while !rest.is_empty() {
        let decoded = wire::decode_frame::<Message<WirePeer>>(rest, max);
        same_as_shared(&decoded, rest, max);
        match decoded {
            Ok(Some((message, used))) => {
                assert!(
                    used > LEN_PREFIX && used <= rest.len() && used - LEN_PREFIX <= max,
                    "a frame of {used} bytes out of {} (max {max})",
                    rest.len()
                );
                round_trip(&message, used - LEN_PREFIX);
                rest = &rest[used..];
            }
            Ok(None) => {
                // More bytes needed: only a short prefix, or a body shorter than announced.
                if let Some(prefix) = rest.get(..LEN_PREFIX) {
                    let mut p = [0; LEN_PREFIX];
                    p.copy_from_slice(prefix);
                    let len = wire::frame_len(p, max).expect("the prefix was accepted");
                    assert!(rest.len() < LEN_PREFIX + len);
                }
                break;
            }
            // A link closes here; to go on exploring, skip a byte as if resynchronising.
            Err(FrameError::TooLarge { len, max: m }) => {
                assert!(len > m && m == max);
                rest = &rest[1..];
            }
            Err(_) => rest = &rest[1..],
        }
    }
}

/// [`wire::decode_frame_shared`] (what the links use) decodes `stream` as
/// [`wire::decode_frame`] did, consuming the same bytes, and leaves the buffer as it was when
/// the frame is incomplete.
fn same_as_shared(
    decoded: &Result<Option<(Message<WirePeer>, usize)>, FrameError>,
    stream: &[u8],
    max: usize,
) {
    let mut buf = bytes::BytesMut::from(stream);
    let shared = wire::decode_frame_shared::<Message<WirePeer>>(&mut buf, max);
    match (decoded, shared) {
        (Ok(Some((message, used))), Ok(Some(again))) => {
            assert_eq!(&again, message);
            assert_eq!(
                buf.len(),
                stream.len() - used,
                "the frame's bytes are taken"
            );
        }
        (Ok(None), Ok(None)) => assert_eq!(&buf[..], stream),
        (Err(e), Err(again)) => assert_eq!(&again, e),
        (decoded, shared) => panic!("decode_frame gave {decoded:?}, the shared one {shared:?}"),
    }
}

/// `message` encodes as one frame of at most `max_body` bytes and decodes back to itself.
///
/// For a decoded message, `max_body` is the body it came in: decoding accepts non-minimal
/// forms, encoding writes minimal ones, so it never grows. For what a node sends, the default
/// frame limit (the payloads in these scenarios are small).
fn round_trip<PI>(message: &Message<PI>, max_body: usize)
where
    PI: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut frame = Vec::new();
    wire::encode_frame(message, max_body, &mut frame)
        .unwrap_or_else(|e| panic!("does not encode within {max_body} bytes: {e}: {message:?}"));
    let (again, used) = wire::decode_frame::<Message<PI>>(&frame, max_body)
        .expect("a frame we encoded decodes")
        .expect("a frame we encoded is whole");
    assert_eq!(used, frame.len());
    assert_eq!(&again, message);
}

/// Sample frames of every message kind: seeds for the frame decoder's corpus.
pub fn frame_seeds() -> Vec<Vec<u8>> {
    let mesh = MeshId::new("soccerpals").expect("a valid mesh id");
    let peer = |n: u8| [n; 32];
    let id = MessageId {
        origin: peer(1),
        seq: 300,
    };
    let info = PeerInfo {
        id: peer(2),
        data: PeerData::new(vec![1, 2, 3]),
    };
    let bodies: Vec<MeshMessage<WirePeer>> = vec![
        MeshMessage::Membership(MembershipMessage::Join {
            data: PeerData::new(vec![9; 20]),
        }),
        MeshMessage::Membership(MembershipMessage::JoinReply {
            accepted: true,
            referrals: vec![info.clone(), PeerInfo::new(peer(3))],
        }),
        MeshMessage::Membership(MembershipMessage::ForwardJoin {
            joiner: info.clone(),
            ttl: 6,
        }),
        MeshMessage::Membership(MembershipMessage::Neighbor {
            priority: Priority::High,
            data: None,
        }),
        MeshMessage::Membership(MembershipMessage::NeighborReply {
            accepted: false,
            referrals: vec![info.clone()],
        }),
        MeshMessage::Membership(MembershipMessage::Disconnect {
            reason: DisconnectReason::Slow,
        }),
        MeshMessage::Membership(MembershipMessage::Shuffle {
            origin: info.clone(),
            ttl: 3,
            nodes: vec![info.clone()],
        }),
        MeshMessage::Membership(MembershipMessage::ShuffleReply { nodes: vec![info] }),
        MeshMessage::Broadcast(BroadcastMessage::Gossip(Gossip {
            id,
            hops: 2,
            hop_limit: Some(3),
            kind: GossipKind::App,
            payload: Bytes::from_static(b"\x04chat\x02hi\x00"),
        })),
        MeshMessage::Broadcast(BroadcastMessage::IHave(Announced::group(&[
            Announcement {
                id,
                hops: 1,
                catch_up: true,
            },
            Announcement {
                id: MessageId { seq: 301, ..id },
                hops: 2,
                catch_up: false,
            },
            Announcement {
                id: MessageId {
                    origin: peer(4),
                    seq: 7,
                },
                hops: 1,
                catch_up: false,
            },
        ]))),
        MeshMessage::Broadcast(BroadcastMessage::Graft { id: Some(id) }),
        MeshMessage::Broadcast(BroadcastMessage::Prune),
        MeshMessage::Broadcast(BroadcastMessage::Parent { beacon: id }),
        MeshMessage::Broadcast(BroadcastMessage::Fetch { id, count: 12 }),
        MeshMessage::Broadcast(BroadcastMessage::Resume { from: id }),
        MeshMessage::Probe(Probe {
            recent: vec![RecentId { id, age_ms: 2500 }],
            data: None,
        }),
        MeshMessage::ProbeReply(Probe {
            recent: vec![],
            data: PeerData::new(vec![7]),
        }),
    ];
    bodies
        .into_iter()
        .map(|body| {
            let mut frame = vec![0]; // picks DEFAULT_MAX_FRAME
            let message = Message {
                mesh: mesh.clone(),
                body,
            };
            wire::encode_frame(&message, DEFAULT_MAX_FRAME, &mut frame)
                .expect("a sample message fits a frame");
            frame
        })
        .collect()
}

// --- the state machine ------------------------------------------------------------------------

type Peer = u32;

/// The honest nodes, driven by the harness. Ids 0 and 4..8 are peers the fuzzer makes up.
const HONEST: [Peer; 3] = [1, 2, 3];

/// Peer ids the fuzzer picks from (modulo).
const PEERS: u8 = 8;

/// The meshes: the honest nodes start in the first; the last one nobody joins unless told to.
const MESHES: [&str; 3] = ["a", "b", "c"];

/// The most outputs one step may cause at one node: far above anything legitimate (a few
/// hundred), low enough to catch amplification.
const MAX_OUT_PER_STEP: usize = 20_000;

/// The most messages waiting on all the simulated links; beyond it the oldest are dropped
/// with their links (as a connection that fails would).
const MAX_IN_FLIGHT: usize = 4_096;

/// Calls of `handle_timeout` at one instant after which no timer may still be due.
const TIMEOUT_ROUNDS: usize = 4;

/// Timers stepped through one by one in one time step; beyond it time jumps.
const MAX_TIMER_STEPS: usize = 200;

/// Ids of messages seen in flight, that made-up messages may refer to.
const KNOWN_IDS: usize = 64;

/// Runs one fuzzer-chosen scenario; panics if an invariant breaks.
pub fn state_machine(data: &[u8]) {
    let Ok(scenario) = Scenario::parse(data) else {
        return;
    };
    Harness::new(&scenario).run(scenario.steps);
}

/// What the fuzzer chooses: the settings and the steps.
#[derive(Debug)]
struct Scenario {
    /// Tiny views, queues and caches, to hit their bounds within a short input.
    tiny: bool,
    /// Flood instead of Plumtree.
    flood: bool,
    /// The RNG seed of the nodes.
    seed: u64,
    /// What happens, in order.
    steps: Vec<Step>,
}

impl Scenario {
    /// The most steps in one scenario.
    pub const MAX_STEPS: usize = 2_000;

    /// Reads a scenario: the settings, then steps until the bytes run out. Collections inside a
    /// step are short (see [`Few`]), so that random bytes make many steps, not one huge one.
    pub fn parse(data: &[u8]) -> arbitrary::Result<Self> {
        let mut u = Unstructured::new(data);
        let mut scenario = Self {
            tiny: u.arbitrary()?,
            flood: u.arbitrary()?,
            seed: u.arbitrary()?,
            steps: Vec::new(),
        };
        while !u.is_empty() && scenario.steps.len() < Self::MAX_STEPS {
            scenario.steps.push(u.arbitrary()?);
        }
        Ok(scenario)
    }
}

/// Up to `N` values, the count read from one byte: mostly a few, now and then exactly `N` (to
/// reach the limits).
#[derive(Debug)]
struct Few<T, const N: usize>(pub Vec<T>);

impl<'a, T: Arbitrary<'a>, const N: usize> Arbitrary<'a> for Few<T, N> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = match u8::arbitrary(u)? {
            250.. => N,
            b => usize::from(b) % (N.min(8) + 1),
        };
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::arbitrary(u)?);
        }
        Ok(Self(v))
    }
}

/// One step.
#[derive(Arbitrary, Debug)]
enum Step {
    /// Deliver the oldest message on one of the busy links between honest nodes.
    Deliver(u16),
    /// Deliver everything in flight, in link order, until quiet (bounded).
    DeliverAll,
    /// A link between honest nodes fails: what was in flight on it is lost, and both ends
    /// hear of it.
    Cut(u16),
    /// A message made up by the fuzzer arrives at an honest node.
    Inject {
        /// The honest node (modulo 3).
        to: u8,
        /// The sender's id (modulo [`PEERS`]; never the receiver itself).
        from: u8,
        /// The mesh (modulo 3).
        mesh: u8,
        /// What it says.
        body: Body,
    },
    /// The driver reports a lost link.
    LinkDown {
        /// The honest node.
        node: u8,
        /// The peer.
        peer: u8,
    },
    /// The driver reports a slow link.
    Slow {
        /// The honest node.
        node: u8,
        /// The peer.
        peer: u8,
    },
    /// The resolver answers with contacts.
    Contacts {
        /// The honest node.
        node: u8,
        /// The mesh.
        mesh: u8,
        /// The contacts.
        peers: Few<Info, 40>,
    },
    /// Time passes; every timer due meanwhile fires.
    Advance {
        /// Milliseconds.
        ms: u16,
        /// Minutes instead (a driver that was stopped), jumping over the timers on the way.
        jump: bool,
    },
    /// The application sends a message.
    Broadcast {
        /// The honest node.
        node: u8,
        /// The mesh.
        mesh: u8,
        /// Payload bytes.
        len: u8,
        /// Hop limit, if any (0 is refused).
        hop_limit: Option<u8>,
    },
    /// The application joins a mesh.
    Join {
        /// The honest node.
        node: u8,
        /// The mesh.
        mesh: u8,
        /// The contacts.
        contacts: Few<Info, 40>,
    },
    /// The application leaves a mesh.
    Leave {
        /// The honest node.
        node: u8,
        /// The mesh.
        mesh: u8,
    },
    /// The application installs (or removes) a propagation filter.
    Filter {
        /// The honest node.
        node: u8,
        /// The mesh.
        mesh: u8,
        /// `None` removes it; otherwise it decides by the payload's first byte and this one.
        rule: Option<u8>,
    },
}

/// A made-up message body; ids and peers are small numbers so that they collide with the
/// honest nodes' and with each other.
#[derive(Arbitrary, Debug)]
enum Body {
    Join(Option<Data>),
    JoinReply(bool, Few<Info, 64>),
    ForwardJoin(Info, u16),
    Neighbor(bool, Option<Data>),
    NeighborReply(bool, Few<Info, 64>),
    Disconnect(u8),
    Shuffle(Info, u16, Few<Info, 64>),
    ShuffleReply(Few<Info, 64>),
    Gossip {
        id: IdChoice,
        hops: u16,
        hop_limit: Option<u16>,
        beacon: bool,
        payload: Few<u8, 300>,
    },
    IHave(Few<(IdChoice, u16, bool), 300>),
    Graft(Option<IdChoice>),
    Prune,
    Parent(IdChoice),
    Fetch(IdChoice, u16),
    Resume(IdChoice),
    Probe(Few<(IdChoice, u32), 8>, Option<Data>),
    ProbeReply(Few<(IdChoice, u32), 8>, Option<Data>),
}

/// A peer and maybe its data.
#[derive(Arbitrary, Debug)]
struct Info(u8, Option<Data>);

/// Peer data: up to [`crate::message::MAX_PEER_DATA_LEN`] bytes (longer is cut).
#[derive(Arbitrary, Debug)]
struct Data(Few<u8, 600>);

/// A message id: one seen in flight, or made up.
#[derive(Arbitrary, Debug)]
enum IdChoice {
    Known(u8),
    Made(u8, u16),
}

/// Something on a simulated link between honest nodes.
#[derive(Debug)]
enum Item {
    Message(Message<Peer>),
    /// The sender dropped the link.
    Down,
}

struct Harness {
    nodes: Vec<State<Peer, ChaCha8Rng>>,
    config: Config,
    meshes: Vec<MeshId>,
    start: Instant,
    now: Instant,
    /// Per link (from, to), in order.
    links: BTreeMap<(Peer, Peer), VecDeque<Item>>,
    known: VecDeque<MessageId<Peer>>,
    /// Per node: what it delivered, and when, to catch a second delivery.
    delivered: Vec<BTreeMap<(MeshId, MessageId<Peer>), Instant>>,
    check_duplicates: bool,
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        let mut config = Config::default();
        if scenario.tiny {
            let m = &mut config.membership;
            m.active_min = 1;
            m.active_ideal = 2;
            m.active_max = 3;
            m.passive_capacity = 4;
            m.referrals = 3;
            m.shuffle_active = 1;
            m.shuffle_passive = 2;
            let b = &mut config.broadcast;
            b.max_ihave_batch = 4;
            b.seen_capacity = 16;
            b.store_bytes = 2048;
            b.store_retention = Duration::from_secs(5);
            b.seen_retention = Duration::from_secs(10);
            let q = &mut config.mesh;
            q.offline_queue_messages = 3;
            q.offline_queue_bytes = 600;
            q.catch_up_messages = 4;
            q.probe_interval = Some(Duration::from_secs(5));
            q.beacon_interval = Some(Duration::from_secs(7));
        }
        if scenario.flood {
            config.broadcast.mode = BroadcastMode::Flood;
        }
        let meshes: Vec<MeshId> = MESHES
            .iter()
            .map(|m| MeshId::new(m).expect("a valid mesh id"))
            .collect();
        let now = Instant::now();
        let mut nodes: Vec<_> = HONEST
            .iter()
            .map(|&me| {
                let rng = ChaCha8Rng::seed_from_u64(scenario.seed ^ u64::from(me));
                let data = PeerData::new(me.to_le_bytes().to_vec());
                State::new(me, data, rng)
            })
            .collect();
        // Everyone in the first mesh, through the first node.
        for (i, node) in nodes.iter_mut().enumerate() {
            let contacts = if i == 0 {
                vec![]
            } else {
                vec![PeerInfo::new(HONEST[0])]
            };
            node.join(meshes[0].clone(), config.clone(), contacts, now)
                .expect("a fresh node joins");
        }
        let mut harness = Self {
            nodes,
            check_duplicates: !scenario.tiny,
            config,
            meshes,
            start: now,
            now,
            links: BTreeMap::new(),
            known: VecDeque::new(),
            delivered: vec![BTreeMap::new(); HONEST.len()],
        };
        for i in 0..HONEST.len() {
            harness.drain(i);
        }
        harness
    }

    fn run(mut self, steps: Vec<Step>) {
        // `PEERCHANNEL_FUZZ_DEBUG=1` prints each step, to read a failing case.
        let debug = std::env::var_os("PEERCHANNEL_FUZZ_DEBUG").is_some();
        for (n, step) in steps.into_iter().enumerate() {
            if debug {
                eprintln!("step {n} at {:?}: {step:?}", self.now - self.start);
            }
            self.step(step);
            // An input may leave a timer overdue (a backoff that ran out while it did not
            // matter, say): a driver's sleep until it returns at once. It must then be done
            // with in a few calls.
            self.fire_timers();
            self.check();
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Deliver(pick) => {
                let busy: Vec<(Peer, Peer)> = self
                    .links
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(k, _)| *k)
                    .collect();
                if !busy.is_empty() {
                    let link = busy[usize::from(pick) % busy.len()];
                    self.deliver_one(link);
                }
            }
            Step::DeliverAll => {
                for _ in 0..500 {
                    let Some(link) = self
                        .links
                        .iter()
                        .find(|(_, q)| !q.is_empty())
                        .map(|(k, _)| *k)
                    else {
                        break;
                    };
                    self.deliver_one(link);
                }
            }
            Step::Cut(pick) => {
                let links: Vec<(Peer, Peer)> = self.links.keys().copied().collect();
                if !links.is_empty() {
                    let (a, b) = links[usize::from(pick) % links.len()];
                    self.cut(a, b);
                }
            }
            Step::Inject {
                to,
                from,
                mesh,
                body,
            } => {
                let i = node_index(to);
                let mut from = Peer::from(from % PEERS);
                if from == HONEST[i] {
                    from = 0;
                }
                let message = Message {
                    mesh: self.mesh(mesh),
                    body: self.body(body),
                };
                self.nodes[i].handle(InEvent::Message { from, message }, self.now);
                self.drain(i);
            }
            Step::LinkDown { node, peer } => {
                let i = node_index(node);
                let peer = Peer::from(peer % PEERS);
                self.nodes[i].handle(InEvent::PeerDisconnected { peer }, self.now);
                self.drain(i);
            }
            Step::Slow { node, peer } => {
                let i = node_index(node);
                let peer = Peer::from(peer % PEERS);
                self.nodes[i].handle(InEvent::PeerSlow { peer }, self.now);
                self.drain(i);
            }
            Step::Contacts { node, mesh, peers } => {
                let i = node_index(node);
                let contacts = peers.0.into_iter().map(info).collect();
                let mesh = self.mesh(mesh);
                self.nodes[i].handle(InEvent::Contacts { mesh, contacts }, self.now);
                self.drain(i);
            }
            Step::Advance { ms, jump } => {
                let by = if jump {
                    Duration::from_secs(60) * u32::from(ms % 128)
                } else {
                    Duration::from_millis(u64::from(ms))
                };
                self.advance(by, jump);
            }
            Step::Broadcast {
                node,
                mesh,
                len,
                hop_limit,
            } => {
                let i = node_index(node);
                let mesh = self.mesh(mesh);
                let options = BroadcastOptions {
                    hop_limit: hop_limit.map(u16::from),
                };
                let payload = Bytes::from(vec![len; usize::from(len)]);
                // Refusals (not joined, offline queue full, hop limit 0) are answers too.
                let _ = self.nodes[i].broadcast(&mesh, payload, options, self.now);
                self.drain(i);
            }
            Step::Join {
                node,
                mesh,
                contacts,
            } => {
                let i = node_index(node);
                let mesh = self.mesh(mesh);
                let contacts = contacts.0.into_iter().map(info).collect();
                let config = self.config.clone();
                let _ = self.nodes[i].join(mesh, config, contacts, self.now);
                self.drain(i);
            }
            Step::Leave { node, mesh } => {
                let i = node_index(node);
                let mesh = self.mesh(mesh);
                if self.nodes[i].leave(&mesh, self.now).is_ok() {
                    // A member again later starts afresh: it may get old messages again.
                    self.delivered[i].retain(|(m, _), _| *m != mesh);
                }
                self.drain(i);
            }
            Step::Filter { node, mesh, rule } => {
                let i = node_index(node);
                let mesh = self.mesh(mesh);
                let filter = rule.map(|rule| {
                    Box::new(move |gossip: &Gossip<Peer>, _: &Peer| {
                        match (gossip.payload.first().copied().unwrap_or(0) ^ rule) % 5 {
                            0 => Propagation::DeliverAndForward,
                            1 => Propagation::DeliverOnly,
                            2 => Propagation::ForwardOnly,
                            3 => Propagation::Neither,
                            _ => Propagation::Reject,
                        }
                    }) as crate::Filter<Peer>
                });
                let _ = self.nodes[i].set_filter(&mesh, filter);
            }
        }
    }

    fn mesh(&self, pick: u8) -> MeshId {
        self.meshes[usize::from(pick) % self.meshes.len()].clone()
    }

    fn id(&self, choice: IdChoice) -> MessageId<Peer> {
        match choice {
            IdChoice::Known(n) if !self.known.is_empty() => {
                self.known[usize::from(n) % self.known.len()]
            }
            IdChoice::Known(n) => MessageId {
                origin: Peer::from(n % PEERS),
                seq: 0,
            },
            IdChoice::Made(origin, seq) => MessageId {
                origin: Peer::from(origin % PEERS),
                seq: u64::from(seq),
            },
        }
    }

    fn recent(&self, Few(recent): Few<(IdChoice, u32), 8>) -> Vec<RecentId<Peer>> {
        recent
            .into_iter()
            .map(|(id, age_ms)| RecentId {
                id: self.id(id),
                age_ms,
            })
            .collect()
    }

    fn body(&self, body: Body) -> MeshMessage<Peer> {
        use MembershipMessage as M;
        let infos = |Few(v): Few<Info, 64>| v.into_iter().map(info).collect();
        match body {
            Body::Join(data) => MeshMessage::Membership(M::Join {
                data: data.map(peer_data),
            }),
            Body::JoinReply(accepted, referrals) => MeshMessage::Membership(M::JoinReply {
                accepted,
                referrals: infos(referrals),
            }),
            Body::ForwardJoin(joiner, ttl) => MeshMessage::Membership(M::ForwardJoin {
                joiner: info(joiner),
                ttl,
            }),
            Body::Neighbor(high, data) => MeshMessage::Membership(M::Neighbor {
                priority: if high { Priority::High } else { Priority::Low },
                data: data.map(peer_data),
            }),
            Body::NeighborReply(accepted, referrals) => MeshMessage::Membership(M::NeighborReply {
                accepted,
                referrals: infos(referrals),
            }),
            Body::Disconnect(reason) => MeshMessage::Membership(M::Disconnect {
                reason: match reason % 6 {
                    0 => DisconnectReason::Leaving,
                    1 => DisconnectReason::Evicted,
                    2 => DisconnectReason::NotMember,
                    3 => DisconnectReason::Slow,
                    4 => DisconnectReason::Misbehaving,
                    _ => DisconnectReason::LinkLost,
                },
            }),
            Body::Shuffle(origin, ttl, nodes) => MeshMessage::Membership(M::Shuffle {
                origin: info(origin),
                ttl,
                nodes: infos(nodes),
            }),
            Body::ShuffleReply(nodes) => MeshMessage::Membership(M::ShuffleReply {
                nodes: infos(nodes),
            }),
            Body::Gossip {
                id,
                hops,
                hop_limit,
                beacon,
                payload,
            } => MeshMessage::Broadcast(BroadcastMessage::Gossip(Gossip {
                id: self.id(id),
                hops,
                hop_limit,
                kind: if beacon {
                    GossipKind::Beacon
                } else {
                    GossipKind::App
                },
                payload: Bytes::from(payload.0),
            })),
            Body::IHave(Few(announcements)) => {
                let announcements: Vec<_> = announcements
                    .into_iter()
                    .map(|(id, hops, catch_up)| Announcement {
                        id: self.id(id),
                        hops,
                        catch_up,
                    })
                    .collect();
                MeshMessage::Broadcast(BroadcastMessage::IHave(Announced::group(&announcements)))
            }
            Body::Graft(id) => MeshMessage::Broadcast(BroadcastMessage::Graft {
                id: id.map(|id| self.id(id)),
            }),
            Body::Prune => MeshMessage::Broadcast(BroadcastMessage::Prune),
            Body::Parent(id) => MeshMessage::Broadcast(BroadcastMessage::Parent {
                beacon: self.id(id),
            }),
            Body::Fetch(id, count) => MeshMessage::Broadcast(BroadcastMessage::Fetch {
                id: self.id(id),
                count,
            }),
            Body::Resume(id) => {
                MeshMessage::Broadcast(BroadcastMessage::Resume { from: self.id(id) })
            }
            Body::Probe(recent, data) => MeshMessage::Probe(Probe {
                recent: self.recent(recent),
                data: data.map(peer_data),
            }),
            Body::ProbeReply(recent, data) => MeshMessage::ProbeReply(Probe {
                recent: self.recent(recent),
                data: data.map(peer_data),
            }),
        }
    }

    fn deliver_one(&mut self, (from, to): (Peer, Peer)) {
        let Some(item) = self.links.get_mut(&(from, to)).and_then(|q| q.pop_front()) else {
            return;
        };
        let i = honest_index(to).expect("links only lead to honest nodes");
        let event = match item {
            Item::Message(message) => InEvent::Message { from, message },
            Item::Down => InEvent::PeerDisconnected { peer: from },
        };
        self.nodes[i].handle(event, self.now);
        self.drain(i);
    }

    /// The connection between `a` and `b` fails: both directions lose what is in flight, and
    /// both ends hear of it.
    fn cut(&mut self, a: Peer, b: Peer) {
        for link in [(a, b), (b, a)] {
            self.links.remove(&link);
        }
        for (node, peer) in [(a, b), (b, a)] {
            if let Some(i) = honest_index(node) {
                self.nodes[i].handle(InEvent::PeerDisconnected { peer }, self.now);
                self.drain(i);
            }
        }
    }

    fn advance(&mut self, by: Duration, jump: bool) {
        let target = self.now + by;
        if !jump {
            // Step through the timers on the way, as a driver does.
            for _ in 0..MAX_TIMER_STEPS {
                let next = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.poll_timeout())
                    .min()
                    .filter(|&t| t <= target);
                let Some(next) = next else { break };
                self.now = self.now.max(next);
                self.fire_timers();
            }
        }
        self.now = target;
        self.fire_timers();
    }

    fn fire_timers(&mut self) {
        for (i, me) in HONEST.into_iter().enumerate() {
            for round in 0.. {
                match self.nodes[i].poll_timeout() {
                    Some(t) if t <= self.now => {
                        assert!(
                            round < TIMEOUT_ROUNDS,
                            "node {me}: a timer is still due after {round} calls at the same \
                             instant"
                        );
                        self.nodes[i].handle_timeout(self.now);
                        self.drain(i);
                    }
                    _ => break,
                }
            }
        }
    }

    /// Carries out a node's outputs, checking each.
    fn drain(&mut self, i: usize) {
        let me = HONEST[i];
        let mut count = 0;
        while let Some(event) = self.nodes[i].poll_event() {
            count += 1;
            assert!(
                count <= MAX_OUT_PER_STEP,
                "node {me}: more than {MAX_OUT_PER_STEP} outputs for one input"
            );
            match event {
                OutEvent::SendMessage { to, message } => {
                    assert_ne!(to, me, "node {me} sends to itself: {message:?}");
                    round_trip(&message, DEFAULT_MAX_FRAME);
                    self.check_bounded(me, &message.body);
                    if let MeshMessage::Broadcast(BroadcastMessage::Gossip(g)) = &message.body {
                        self.remember(g.id);
                    }
                    if honest_index(to).is_some() {
                        self.send(me, to, Item::Message(message));
                    }
                }
                OutEvent::DisconnectPeer { peer } => {
                    assert_ne!(peer, me, "node {me} disconnects itself");
                    if honest_index(peer).is_some() {
                        self.send(me, peer, Item::Down);
                    }
                }
                OutEvent::PeerData { peer, .. } => {
                    assert_ne!(peer, me, "node {me} learns its own data");
                }
                OutEvent::WantContacts { count, .. } => {
                    // Its own setting, or the few a partition probe needs.
                    let most = self.config.membership.contacts_wanted.max(PROBE_CONTACTS);
                    assert!(count > 0 && count <= most, "asks for {count} contacts");
                }
                OutEvent::Deliver { mesh, delivery } => self.delivered(i, mesh, &delivery),
                OutEvent::Event { .. } => {}
            }
        }
    }

    /// What a node sends is bounded by its own settings, whatever it was sent: no walk longer
    /// than its own, no more referrals, shuffle entries or ids per batch than it would send.
    fn check_bounded(&self, me: Peer, body: &MeshMessage<Peer>) {
        use MembershipMessage as M;
        let m = &self.config.membership;
        let shuffle = 1 + m.shuffle_active + m.shuffle_passive;
        if let MeshMessage::Membership(M::ForwardJoin { ttl, .. } | M::Shuffle { ttl, .. }) = body {
            assert!(
                *ttl <= m.active_walk_length,
                "node {me} sends a walk of {ttl} hops: {body:?}"
            );
        }
        match body {
            MeshMessage::Membership(
                M::JoinReply { referrals, .. } | M::NeighborReply { referrals, .. },
            ) => assert!(referrals.len() <= m.referrals, "node {me}: {body:?}"),
            MeshMessage::Membership(M::Shuffle { nodes, .. } | M::ShuffleReply { nodes }) => {
                assert!(nodes.len() <= shuffle, "node {me}: {body:?}");
            }
            MeshMessage::Broadcast(BroadcastMessage::IHave(groups)) => {
                let ids: usize = groups.iter().map(Announced::len).sum();
                assert!(
                    ids > 0
                        && ids <= self.config.broadcast.max_ihave_batch
                        && groups
                            .iter()
                            .all(|g| !g.runs.is_empty() && g.runs.iter().all(|r| r.count > 0)),
                    "node {me} announces {ids} ids at once in {} groups",
                    groups.len()
                );
            }
            MeshMessage::Probe(p) | MeshMessage::ProbeReply(p) => {
                // This version sends its newest beacon only.
                assert!(p.recent.len() <= 1, "node {me}: {body:?}");
            }
            _ => {}
        }
    }

    fn delivered(&mut self, i: usize, mesh: MeshId, delivery: &Delivery<Peer>) {
        let retention = self.config.broadcast.seen_retention;
        let now = self.now;
        if let Some(first) = self.delivered[i].insert((mesh, delivery.id), now) {
            assert!(
                !self.check_duplicates || now.duration_since(first) >= retention,
                "node {} delivered {:?} twice",
                HONEST[i],
                delivery.id
            );
        }
    }

    fn remember(&mut self, id: MessageId<Peer>) {
        if !self.known.contains(&id) {
            if self.known.len() >= KNOWN_IDS {
                self.known.pop_front();
            }
            self.known.push_back(id);
        }
    }

    fn send(&mut self, from: Peer, to: Peer, item: Item) {
        let in_flight: usize = self.links.values().map(VecDeque::len).sum();
        if in_flight >= MAX_IN_FLIGHT {
            // Too much in flight: the busiest link fails, as a congested connection would.
            let busiest = self
                .links
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(k, _)| *k);
            if let Some((a, b)) = busiest {
                self.cut(a, b);
            }
        }
        self.links.entry((from, to)).or_default().push_back(item);
    }

    /// The bounds every node keeps, whatever it was told.
    fn check(&self) {
        let m = &self.config.membership;
        let b = &self.config.broadcast;
        let q = &self.config.mesh;
        for (i, node) in self.nodes.iter().enumerate() {
            let me = HONEST[i];
            for mesh in node.meshes() {
                let active = node.neighbors(mesh).expect("a joined mesh");
                let passive = node.passive(mesh).expect("a joined mesh");
                let stats = node.mesh_stats(mesh).expect("a joined mesh");
                assert!(
                    active.len() <= m.active_max,
                    "node {me}: {} neighbors, max {}",
                    active.len(),
                    m.active_max
                );
                assert!(
                    passive.len() <= m.passive_capacity,
                    "node {me}: passive view of {}, capacity {}",
                    passive.len(),
                    m.passive_capacity
                );
                assert!(!active.contains(&me), "node {me} is its own neighbor");
                assert!(
                    !passive.contains(&me),
                    "node {me} is in its own passive view"
                );
                assert!(
                    active.iter().all(|p| !passive.contains(p)),
                    "node {me}: a peer in both views: {active:?} {passive:?}"
                );
                assert!(
                    distinct(active) && distinct(passive),
                    "node {me}: a peer twice in a view: {active:?} {passive:?}"
                );
                let eager = node.eager_peers(mesh).expect("a joined mesh");
                assert!(
                    eager.iter().all(|p| active.contains(p)),
                    "node {me}: eager peers {eager:?} that are not neighbors {active:?}"
                );
                assert!(stats.queued <= q.offline_queue_messages);
                assert!(stats.seen_ids <= b.seen_capacity);
                assert!(stats.awaited_ids <= MAX_MISSING);
                assert!(
                    stats.grafts_in_flight <= MAX_GRAFTS_IN_FLIGHT
                        && stats.grafts_in_flight <= stats.awaited_ids,
                    "node {me}: {} grafts in flight, {} ids awaited",
                    stats.grafts_in_flight,
                    stats.awaited_ids
                );
                assert!(
                    stats.stored_bytes <= b.store_bytes,
                    "node {me}: {} bytes stored, max {}",
                    stats.stored_bytes,
                    b.store_bytes
                );
            }
        }
    }
}

fn distinct(peers: &[Peer]) -> bool {
    let mut sorted = peers.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).all(|w| w[0] != w[1])
}

fn node_index(pick: u8) -> usize {
    usize::from(pick) % HONEST.len()
}

fn honest_index(peer: Peer) -> Option<usize> {
    HONEST.iter().position(|&h| h == peer)
}

fn info(Info(id, data): Info) -> PeerInfo<Peer> {
    PeerInfo {
        id: Peer::from(id % PEERS),
        data: data.map(peer_data),
    }
}

fn peer_data(Data(Few(mut bytes)): Data) -> PeerData {
    bytes.truncate(crate::message::MAX_PEER_DATA_LEN);
    PeerData::new(bytes).expect("cut to the maximum")
}
