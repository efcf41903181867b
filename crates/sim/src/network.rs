//! The simulated network: nodes running the real protocol core, links with latency, a
//! resolver, failures and partitions, all on a virtual clock.
//!
//! Links behave like the runtime's QUIC connections: one per pair of nodes, opened on first
//! use with a handshake round trip, in order in each direction, reliable (a lost packet is a
//! retransmission delay that also holds back what follows, not a lost message). A node that
//! dies says nothing: its peers learn of it only after the detection delay (the QUIC idle
//! timeout), and dialing a dead or unreachable node fails after the connect timeout.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerchannel_proto::{
    BroadcastError, BroadcastMessage, BroadcastOptions, BroadcastStatus, Config, Filter, InEvent,
    MeshId, MeshMessage, Message, MessageId, OutEvent, PeerInfo, State,
};
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A simulated node's id.
pub type NodeId = u32;

/// How the simulated network behaves.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way latency of each link, drawn once per pair of nodes from this range.
    pub latency: (Duration, Duration),
    /// Probability that a message needs a retransmission (adds a retransmission timeout and
    /// holds back later messages on the same link, as a QUIC stream does).
    pub loss: f64,
    /// How long after a peer dies, or a path is cut, the surviving side's link goes down (the
    /// runtime's QUIC idle timeout: 3 s).
    pub detect_delay: Duration,
    /// How long dialing a dead or unreachable node takes to fail.
    pub connect_timeout: Duration,
    /// Extra one-way latency on every link of a slow node.
    pub slow_extra: Duration,
    /// The protocol configuration every node runs.
    pub proto: Config,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: (Duration::from_millis(10), Duration::from_millis(50)),
            loss: 0.0,
            detect_delay: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            slow_extra: Duration::from_millis(200),
            proto: Config::default(),
        }
    }
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    /// Events processed.
    pub events: u64,
    /// Messages delivered to a live node.
    pub messages: u64,
    /// Messages lost to a dead node or a cut link.
    pub lost: u64,
    /// Connections opened.
    pub dials: u64,
    /// Resolver lookups.
    pub resolver_calls: u64,
}

/// What the simulator knows about one broadcast it is tracking.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The node that sent it.
    pub origin: NodeId,
    /// When it was sent.
    pub sent_at: Instant,
    /// Which nodes delivered it (bit per node).
    delivered: Vec<u64>,
    /// Distinct deliveries.
    pub deliveries: usize,
    /// Full copies received (deliveries and duplicates).
    pub receptions: u64,
    /// The most hops any delivery took.
    pub max_hops: u16,
    /// When the last delivery happened.
    pub last_delivery: Option<Instant>,
}

impl Tracked {
    /// Whether `node` delivered this message.
    pub fn delivered_by(&self, node: NodeId) -> bool {
        let i = node as usize;
        self.delivered
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

struct SimNode {
    state: State<NodeId, ChaCha8Rng>,
    alive: bool,
    incarnation: u32,
    joined: bool,
    slow: bool,
    wake: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    generation: u64,
    ready_at: Instant,
    broken: bool,
    /// A graceful close under way, effective at this instant unless the link is used again.
    closing: Option<Instant>,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        generation: u64,
        message: Message<NodeId>,
    },
    Wake {
        node: NodeId,
        incarnation: u32,
    },
    LinkDown {
        node: NodeId,
        peer: NodeId,
        generation: u64,
    },
    Close {
        a: NodeId,
        b: NodeId,
        generation: u64,
    },
    Notify {
        node: NodeId,
        peer: NodeId,
    },
    Contacts {
        node: NodeId,
        incarnation: u32,
        contacts: Vec<NodeId>,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A deterministic simulation of one mesh: the same seed gives the same run, event for event.
pub struct Network {
    config: NetConfig,
    mesh: MeshId,
    rng: ChaCha8Rng,
    epoch: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    next_gen: u64,
    conns: BTreeMap<(NodeId, NodeId), Conn>,
    latency: BTreeMap<(NodeId, NodeId), Duration>,
    fifo: BTreeMap<(NodeId, NodeId), Instant>,
    side: Option<Vec<u8>>,
    tracked: BTreeMap<MessageId<NodeId>, Tracked>,
    stats: NetStats,
}

impl Network {
    /// A network of `nodes` nodes (not yet joined) for one mesh, seeded with `seed`.
    pub fn new(nodes: usize, seed: u64, config: NetConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let epoch = Instant::now();
        let nodes = (0..nodes)
            .map(|i| SimNode {
                state: State::new(i as NodeId, None, ChaCha8Rng::seed_from_u64(rng.random())),
                alive: true,
                incarnation: 0,
                joined: false,
                slow: false,
                wake: None,
            })
            .collect();
        Self {
            config,
            mesh: MeshId::new("sim").expect("a valid mesh id"),
            rng,
            epoch,
            now: epoch,
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            next_gen: 0,
            conns: BTreeMap::new(),
            latency: BTreeMap::new(),
            fifo: BTreeMap::new(),
            side: None,
            tracked: BTreeMap::new(),
            stats: NetStats::default(),
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The mesh every node is in.
    pub fn mesh(&self) -> &MeshId {
        &self.mesh
    }

    /// Number of nodes, dead or alive.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Network counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// The simulator's own random source (for choosing senders and victims).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Whether a node is alive.
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.nodes[node as usize].alive
    }

    /// Live nodes that have joined.
    pub fn live(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as NodeId)
            .filter(|n| self.is_alive(*n) && self.nodes[*n as usize].joined)
            .collect()
    }

    /// A node's protocol state.
    pub fn state(&self, node: NodeId) -> &State<NodeId, ChaCha8Rng> {
        &self.nodes[node as usize].state
    }

    /// Links of the broadcast tree that only one side considers eager (each is a place where a
    /// message stalls until a graft), and the number of eager links in all.
    pub fn tree_asymmetry(&self) -> (usize, usize) {
        let mut asymmetric = 0;
        let mut eager_links = 0;
        for n in self.live() {
            let eager = self.state(n).eager_peers(&self.mesh).unwrap_or_default();
            for p in eager {
                eager_links += 1;
                let back = self.state(p).eager_peers(&self.mesh).unwrap_or_default();
                if self.is_alive(p) && !back.contains(&n) {
                    asymmetric += 1;
                }
            }
        }
        (asymmetric, eager_links)
    }

    /// The sum of every live node's protocol counters.
    pub fn total_stats(&self) -> peerchannel_proto::MeshStats {
        let mut total = peerchannel_proto::MeshStats::default();
        for n in self.live() {
            let Some(s) = self.state(n).mesh_stats(&self.mesh) else {
                continue;
            };
            let (m, b) = (&s.membership, &s.broadcast);
            let tm = &mut total.membership;
            tm.joins_received += m.joins_received;
            tm.refusals_sent += m.refusals_sent;
            tm.evictions += m.evictions;
            tm.request_timeouts += m.request_timeouts;
            tm.contact_requests += m.contact_requests;
            tm.shuffles += m.shuffles;
            let tb = &mut total.broadcast;
            tb.originated += b.originated;
            tb.received += b.received;
            tb.duplicates += b.duplicates;
            tb.gossip_sent += b.gossip_sent;
            tb.ihave_sent += b.ihave_sent;
            tb.grafts_sent += b.grafts_sent;
            tb.prunes_sent += b.prunes_sent;
            total.probes_sent += s.probes_sent;
            total.splits_detected += s.splits_detected;
            total.beacons_sent += s.beacons_sent;
        }
        total
    }

    /// Marks a node slow: every one of its links gets [`NetConfig::slow_extra`] more latency.
    pub fn set_slow(&mut self, node: NodeId, slow: bool) {
        self.nodes[node as usize].slow = slow;
    }

    /// A node joins the mesh through up to `contacts` random live members.
    pub fn join(&mut self, node: NodeId, contacts: usize) {
        let members = self.sample_live(node, contacts);
        let infos = members.into_iter().map(PeerInfo::new).collect();
        let now = self.now;
        let config = self.config.proto.clone();
        let mesh = self.mesh.clone();
        let n = &mut self.nodes[node as usize];
        n.joined = true;
        // `join` fails only for a mesh already joined; a revived node has a fresh state.
        let _ = n.state.join(mesh, config, infos, now);
        self.process(node);
    }

    /// Sends a message from `node` and tracks its delivery; `None` if the node refused it
    /// (see [`Network::broadcast_with`]).
    pub fn broadcast(&mut self, node: NodeId, payload: &'static [u8]) -> Option<MessageId<NodeId>> {
        self.broadcast_with(
            node,
            Bytes::from_static(payload),
            BroadcastOptions::default(),
        )
        .ok()
        .map(|(id, _)| id)
    }

    /// Sends a message from `node` with options (a hop limit), tracks its delivery, and returns
    /// what the node's [`State::broadcast`] said: the message may be queued (the node is
    /// offline) or refused. A queued message is tracked from now, when it was published.
    pub fn broadcast_with(
        &mut self,
        node: NodeId,
        payload: Bytes,
        options: BroadcastOptions,
    ) -> Result<(MessageId<NodeId>, BroadcastStatus), BroadcastError> {
        let now = self.now;
        let mesh = self.mesh.clone();
        let (id, status) = self.nodes[node as usize]
            .state
            .broadcast(&mesh, payload, options, now)?;
        self.tracked.insert(
            id,
            Tracked {
                origin: node,
                sent_at: now,
                delivered: vec![0; self.nodes.len().div_ceil(64)],
                deliveries: 0,
                receptions: 0,
                max_hops: 0,
                last_delivery: None,
            },
        );
        self.process(node);
        Ok((id, status))
    }

    /// Installs (or with `None` removes) a node's propagation filter (see
    /// [`State::set_filter`]). Does nothing for a node that has not joined.
    pub fn set_filter(&mut self, node: NodeId, filter: Option<Filter<NodeId>>) {
        let mesh = self.mesh.clone();
        // `set_filter` fails only for a node that is not in the mesh: nothing to filter there.
        let _ = self.nodes[node as usize].state.set_filter(&mesh, filter);
    }

    /// A node's neighbors (its active view); empty if it has not joined.
    pub fn neighbors(&self, node: NodeId) -> &[NodeId] {
        self.state(node).neighbors(&self.mesh).unwrap_or(&[])
    }

    /// The neighbors a node pushes messages to eagerly: its links in the broadcast tree.
    pub fn eager_peers(&self, node: NodeId) -> Vec<NodeId> {
        self.state(node).eager_peers(&self.mesh).unwrap_or_default()
    }

    /// Whether a node is marked slow (see [`Network::set_slow`]).
    pub fn is_slow(&self, node: NodeId) -> bool {
        self.nodes[node as usize].slow
    }

    /// What is known of a tracked message.
    pub fn tracked(&self, id: &MessageId<NodeId>) -> Option<&Tracked> {
        self.tracked.get(id)
    }

    /// Kills a node without a goodbye: its peers notice after the detection delay.
    pub fn kill(&mut self, node: NodeId) {
        let n = &mut self.nodes[node as usize];
        if !n.alive {
            return;
        }
        n.alive = false;
        n.wake = None;
        let touching: Vec<(NodeId, NodeId)> = self
            .conns
            .keys()
            .filter(|(a, b)| *a == node || *b == node)
            .copied()
            .collect();
        for key in touching {
            let other = if key.0 == node { key.1 } else { key.0 };
            self.break_conn(key, &[other]);
        }
    }

    /// Brings a killed node back with a fresh state (same id, new incarnation), joining again.
    pub fn revive(&mut self, node: NodeId, contacts: usize) {
        let seed = self.rng.random();
        let n = &mut self.nodes[node as usize];
        if n.alive {
            return;
        }
        n.alive = true;
        n.incarnation += 1;
        n.state = State::new(node, None, ChaCha8Rng::seed_from_u64(seed));
        n.wake = None;
        self.join(node, contacts);
    }

    /// Cuts the network in two: no message crosses between nodes of different sides. Links
    /// across the cut go down after the detection delay.
    pub fn partition(&mut self, side: Vec<u8>) {
        let crossing: Vec<(NodeId, NodeId)> = self
            .conns
            .keys()
            .filter(|(a, b)| side[*a as usize] != side[*b as usize])
            .copied()
            .collect();
        for key in crossing {
            self.break_conn(key, &[key.0, key.1]);
        }
        self.side = Some(side);
    }

    /// Heals a partition.
    pub fn heal(&mut self) {
        self.side = None;
    }

    /// Whether the live nodes' neighbor links form one connected graph.
    pub fn connected(&self) -> bool {
        let live = self.live();
        let Some(&first) = live.first() else {
            return true;
        };
        let mut seen = BTreeSet::from([first]);
        let mut stack = vec![first];
        while let Some(n) = stack.pop() {
            let neighbors = self.state(n).neighbors(&self.mesh).unwrap_or(&[]);
            for &p in neighbors {
                if self.is_alive(p) && seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        // Links are symmetric once settled; count a node reached if any live node links to it.
        seen.len() == live.len()
    }

    /// Runs events up to and including `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until {
                break;
            }
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    /// Runs until `done` holds (checked after every event) or `until` passes; returns when it
    /// first held, if it did.
    pub fn run_until_or(
        &mut self,
        until: Instant,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<Instant> {
        if done(self) {
            return Some(self.now);
        }
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until {
                break;
            }
            self.step();
            if done(self) {
                return Some(self.now);
            }
        }
        self.now = self.now.max(until);
        None
    }

    /// Processes the next event.
    fn step(&mut self) {
        let Some(Reverse(Scheduled { at, event, .. })) = self.queue.pop() else {
            return;
        };
        self.now = self.now.max(at);
        self.stats.events += 1;
        match event {
            Event::Deliver {
                from,
                to,
                generation,
                message,
            } => {
                let live_link = self
                    .conns
                    .get(&key(from, to))
                    .is_some_and(|c| c.generation == generation && !c.broken);
                if !live_link || !self.nodes[to as usize].alive {
                    self.stats.lost += 1;
                    return;
                }
                self.stats.messages += 1;
                if let MeshMessage::Broadcast(BroadcastMessage::Gossip(g)) = &message.body
                    && let Some(t) = self.tracked.get_mut(&g.id)
                {
                    t.receptions += 1;
                }
                let now = self.now;
                self.nodes[to as usize]
                    .state
                    .handle(InEvent::Message { from, message }, now);
                self.process(to);
            }
            Event::Wake { node, incarnation } => {
                let n = &mut self.nodes[node as usize];
                if !n.alive || n.incarnation != incarnation || n.wake != Some(at) {
                    return;
                }
                n.wake = None;
                n.state.handle_timeout(at);
                self.process(node);
            }
            Event::LinkDown {
                node,
                peer,
                generation,
            } => {
                let k = key(node, peer);
                match self.conns.get(&k) {
                    Some(c) if c.generation == generation => {
                        self.conns.remove(&k);
                    }
                    // Replaced by a newer link: this one was already reported.
                    Some(_) => return,
                    None => {}
                }
                self.notify(node, peer);
            }
            Event::Close { a, b, generation } => {
                let k = key(a, b);
                let closing = self
                    .conns
                    .get(&k)
                    .is_some_and(|c| c.generation == generation && c.closing == Some(at));
                if !closing {
                    return;
                }
                self.conns.remove(&k);
                for (node, peer) in [(a, b), (b, a)] {
                    self.notify(node, peer);
                }
            }
            Event::Notify { node, peer } => self.notify(node, peer),
            Event::Contacts {
                node,
                incarnation,
                contacts,
            } => {
                let n = &self.nodes[node as usize];
                if !n.alive || n.incarnation != incarnation {
                    return;
                }
                let contacts = contacts.into_iter().map(PeerInfo::new).collect();
                let mesh = self.mesh.clone();
                let now = self.now;
                self.nodes[node as usize]
                    .state
                    .handle(InEvent::Contacts { mesh, contacts }, now);
                self.process(node);
            }
        }
    }

    fn notify(&mut self, node: NodeId, peer: NodeId) {
        if self.nodes[node as usize].alive {
            let now = self.now;
            self.nodes[node as usize]
                .state
                .handle(InEvent::PeerDisconnected { peer }, now);
            self.process(node);
        }
    }

    /// Carries out a node's outputs and schedules its next wake-up.
    fn process(&mut self, node: NodeId) {
        while let Some(event) = self.nodes[node as usize].state.poll_event() {
            match event {
                OutEvent::SendMessage { to, message } => self.send(node, to, message),
                OutEvent::DisconnectPeer { peer } => self.close(node, peer),
                OutEvent::WantContacts { count, .. } => {
                    self.stats.resolver_calls += 1;
                    let contacts = self.sample_live(node, count);
                    let delay = self.latency(node, node.wrapping_add(1)) * 2;
                    let incarnation = self.nodes[node as usize].incarnation;
                    self.schedule(
                        self.now + delay,
                        Event::Contacts {
                            node,
                            incarnation,
                            contacts,
                        },
                    );
                }
                OutEvent::Deliver { delivery, .. } => {
                    let now = self.now;
                    if let Some(t) = self.tracked.get_mut(&delivery.id) {
                        let i = node as usize;
                        let word = &mut t.delivered[i / 64];
                        if *word & (1 << (i % 64)) == 0 {
                            *word |= 1 << (i % 64);
                            t.deliveries += 1;
                            t.max_hops = t.max_hops.max(delivery.hops);
                            t.last_delivery = Some(now);
                        }
                    }
                }
                _ => {}
            }
        }
        let n = &mut self.nodes[node as usize];
        if let Some(t) = n.state.poll_timeout()
            && n.wake.is_none_or(|w| t < w)
        {
            let at = t.max(self.now);
            n.wake = Some(at);
            let incarnation = n.incarnation;
            self.schedule(at, Event::Wake { node, incarnation });
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message<NodeId>) {
        if from == to || to as usize >= self.nodes.len() {
            return;
        }
        let k = key(from, to);
        let conn = match self.conns.get_mut(&k) {
            Some(c) if !c.broken => {
                // Using a link cancels a close under way, as the runtime's linger does.
                c.closing = None;
                *c
            }
            Some(c)
                if self
                    .side
                    .as_ref()
                    .is_none_or(|s| s[from as usize] == s[to as usize])
                    && self.nodes[to as usize].alive =>
            {
                // A link broken by a death the other side has not noticed yet, and the node is
                // back: the new connection replaces the old one, which is reported down to the
                // other side first (as the runtime does when a peer reconnects).
                let _ = c;
                self.schedule(
                    self.now,
                    Event::Notify {
                        node: to,
                        peer: from,
                    },
                );
                self.dial(from, to)
            }
            Some(_) => {
                self.stats.lost += 1;
                return;
            }
            None => self.dial(from, to),
        };
        if conn.broken {
            self.stats.lost += 1;
            return;
        }
        let mut delay = self.latency(from, to);
        if self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.min(1.0)) {
            delay += delay * 3 + Duration::from_millis(25);
        }
        let at = conn.ready_at.max(self.now) + delay;
        let fifo = self.fifo.entry((from, to)).or_insert(at);
        let at = at.max(*fifo);
        *fifo = at;
        self.schedule(
            at,
            Event::Deliver {
                from,
                to,
                generation: conn.generation,
                message,
            },
        );
    }

    fn dial(&mut self, from: NodeId, to: NodeId) -> Conn {
        self.stats.dials += 1;
        let generation = self.next_gen;
        self.next_gen += 1;
        let ok = self.nodes[to as usize].alive && self.reachable(from, to);
        let rtt = self.latency(from, to) * 2;
        let conn = Conn {
            generation,
            ready_at: self.now + rtt,
            broken: !ok,
            closing: None,
        };
        self.conns.insert(key(from, to), conn);
        if !ok {
            let at = self.now + self.config.connect_timeout;
            self.schedule(
                at,
                Event::LinkDown {
                    node: from,
                    peer: to,
                    generation,
                },
            );
        }
        conn
    }

    /// A graceful close: effective after the messages already in flight, unless either side
    /// uses the link again first. Both sides then see the link go down.
    fn close(&mut self, node: NodeId, peer: NodeId) {
        let k = key(node, peer);
        let last = self.fifo.get(&(node, peer)).copied().unwrap_or(self.now);
        let at = last.max(self.now) + self.latency(node, peer);
        let Some(conn) = self.conns.get_mut(&k) else {
            return;
        };
        if conn.broken {
            return;
        }
        conn.closing = Some(at);
        let generation = conn.generation;
        self.schedule(
            at,
            Event::Close {
                a: node,
                b: peer,
                generation,
            },
        );
    }

    fn break_conn(&mut self, k: (NodeId, NodeId), notify: &[NodeId]) {
        let Some(conn) = self.conns.get_mut(&k) else {
            return;
        };
        if conn.broken {
            return;
        }
        conn.broken = true;
        let generation = conn.generation;
        let at = self.now + self.config.detect_delay;
        for &node in notify {
            let peer = if node == k.0 { k.1 } else { k.0 };
            self.schedule(
                at,
                Event::LinkDown {
                    node,
                    peer,
                    generation,
                },
            );
        }
    }

    fn reachable(&self, a: NodeId, b: NodeId) -> bool {
        self.side
            .as_ref()
            .is_none_or(|side| side[a as usize] == side[b as usize])
    }

    fn latency(&mut self, a: NodeId, b: NodeId) -> Duration {
        let (lo, hi) = self.config.latency;
        let k = key(a, b);
        let base = match self.latency.get(&k) {
            Some(d) => *d,
            None => {
                let d = if hi > lo {
                    self.rng.random_range(lo..=hi)
                } else {
                    lo
                };
                self.latency.insert(k, d);
                d
            }
        };
        let slow = |n: NodeId| self.nodes.get(n as usize).is_some_and(|n| n.slow);
        let extra = if slow(a) || slow(b) {
            self.config.slow_extra
        } else {
            Duration::ZERO
        };
        base + extra
    }

    fn sample_live(&mut self, except: NodeId, count: usize) -> Vec<NodeId> {
        let live: Vec<NodeId> = self.live().into_iter().filter(|n| *n != except).collect();
        live.sample(&mut self.rng, count).copied().collect()
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }
}

fn key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a < b { (a, b) } else { (b, a) }
}
