//! One mesh as one node sees it: membership and broadcast together, with what sits above
//! both — online/offline, the offline queue, catch-up, beacons and partition repair.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt};

use crate::broadcast::{Broadcast, BroadcastOut, BroadcastStats, Delivery, Propagation};
use crate::config::{Config, MeshConfig};
use crate::id::{MessageId, PeerIdentity};
use crate::membership::{Membership, MembershipOut, MembershipStats, jitter};
use crate::message::{
    BroadcastMessage, DisconnectReason, Gossip, GossipKind, MeshMessage, PeerData, PeerInfo, Probe,
    RecentId,
};

/// How many contacts a partition probe asks for.
const PROBE_CONTACTS: usize = 3;

/// After a disruption, a node floods a beacon after a random delay in this range, unless one
/// arrives first. Wide enough that, when hundreds of nodes are disrupted at once, only a few
/// beacons start within the time one takes to cross the mesh.
const BEACON_AFTER_DISRUPTION: std::ops::Range<Duration> =
    Duration::from_secs(2)..Duration::from_secs(20);

/// Something that happened to a mesh, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshEvent<PI> {
    /// The mesh went from no neighbor to at least one.
    Online,
    /// The mesh went from at least one neighbor to none.
    Offline,
    /// A link to a neighbor came up.
    NeighborUp(PI),
    /// A link to a neighbor went down, and why.
    NeighborDown(PI, DisconnectReason),
}

/// Options for one broadcast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastOptions {
    /// The most links the message may travel (1 = direct neighbors only). `None`: the whole
    /// mesh.
    pub hop_limit: Option<u16>,
}

impl BroadcastOptions {
    /// Options with a hop limit.
    pub fn hop_limit(limit: u16) -> Self {
        Self {
            hop_limit: Some(limit),
        }
    }
}

/// What became of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastStatus {
    /// It went out to the neighbors.
    Sent,
    /// The node has no neighbor: it waits in the offline queue and goes out when the mesh is
    /// online again.
    Queued,
}

/// Why a broadcast was refused. The message was not sent and is not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// This node is not in that mesh. Join it first.
    #[error("not a member of this mesh; join it first")]
    NotJoined,
    /// The node has been offline long enough to fill the offline queue. Wait for the mesh to
    /// come online (see [`MeshEvent::Online`]) or raise `offline_queue_messages`.
    #[error("offline, and the offline queue is full ({messages} messages, {bytes} bytes)")]
    OfflineQueueFull {
        /// Messages waiting.
        messages: usize,
        /// Bytes waiting.
        bytes: usize,
    },
    /// A hop limit of 0 would reach nobody.
    #[error("a hop limit must be at least 1")]
    ZeroHopLimit,
}

/// Counters of one mesh, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStats {
    /// Membership counters.
    pub membership: MembershipStats,
    /// Broadcast counters.
    pub broadcast: BroadcastStats,
    /// Partition probes sent.
    pub probes_sent: u64,
    /// Probes (sent or answered) that found the two sides had seen different messages.
    pub splits_detected: u64,
    /// Beacons sent.
    pub beacons_sent: u64,
    /// Messages in the offline queue now.
    pub queued: usize,
    /// Message ids remembered now.
    pub seen_ids: usize,
    /// Payload bytes kept for grafts and catch-up now.
    pub stored_bytes: usize,
}

/// A propagation filter: decides, for each new message, whether to deliver and to forward.
pub type Filter<PI> = Box<dyn FnMut(&Gossip<PI>, &PI) -> Propagation + Send>;

/// What a mesh asks of the node.
#[derive(Debug)]
pub(crate) enum MeshOut<PI> {
    Send(PI, MeshMessage<PI>),
    PeerData(PI, PeerData),
    WantContacts(usize),
    Release(PI),
    Event(MeshEvent<PI>),
    Deliver(Delivery<PI>),
}

struct Queued<PI> {
    id: MessageId<PI>,
    payload: Bytes,
    hop_limit: Option<u16>,
}

/// One mesh's state.
pub(crate) struct Mesh<PI> {
    me: PI,
    config: MeshConfig,
    my_data: Option<PeerData>,
    membership: Membership<PI>,
    broadcast: Broadcast<PI>,
    neighbors: usize,
    online_since: Option<Instant>,
    queue: VecDeque<Queued<PI>>,
    queued_bytes: usize,
    filter: Option<Filter<PI>>,
    next_beacon: Option<Instant>,
    disrupted_at: Option<Instant>,
    next_probe: Option<Instant>,
    probing: bool,
    m_out: Vec<MembershipOut<PI>>,
    b_out: Vec<BroadcastOut<PI>>,
    probes_sent: u64,
    splits_detected: u64,
    beacons_sent: u64,
}

impl<PI: PeerIdentity> Mesh<PI> {
    pub(crate) fn new<R: Rng>(
        me: PI,
        my_data: Option<PeerData>,
        config: Config,
        now: Instant,
        rng: &mut R,
    ) -> Self {
        // A random starting sequence number: a node restarted with the same identity must not
        // reuse ids still held in other nodes' duplicate caches. 32 random bits keep the ids
        // short on the wire (varints) and make a collision between runs negligible.
        let first_seq = u64::from(rng.random::<u32>());
        let next_beacon = config
            .mesh
            .beacon_interval
            .map(|i| now + quiet_delay(i, rng));
        let next_probe = config.mesh.probe_interval.map(|i| now + jitter(i, rng));
        Self {
            me,
            membership: Membership::new(me, my_data.clone(), config.membership),
            broadcast: Broadcast::new(me, first_seq, config.broadcast),
            config: config.mesh,
            my_data,
            neighbors: 0,
            online_since: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            filter: None,
            next_beacon,
            disrupted_at: None,
            next_probe,
            probing: false,
            m_out: Vec::new(),
            b_out: Vec::new(),
            probes_sent: 0,
            splits_detected: 0,
            beacons_sent: 0,
        }
    }

    pub(crate) fn neighbors(&self) -> &[PI] {
        self.membership.active()
    }

    pub(crate) fn passive(&self) -> &[PI] {
        self.membership.passive()
    }

    pub(crate) fn eager(&self) -> impl Iterator<Item = &PI> {
        self.broadcast.eager_peers().iter()
    }

    pub(crate) fn uses(&self, peer: &PI) -> bool {
        self.membership.uses(peer)
    }

    pub(crate) fn is_online(&self) -> bool {
        self.neighbors > 0
    }

    pub(crate) fn set_filter(&mut self, filter: Option<Filter<PI>>) {
        self.filter = filter;
    }

    pub(crate) fn set_my_data(&mut self, data: Option<PeerData>) {
        self.my_data = data.clone();
        self.membership.set_my_data(data);
    }

    pub(crate) fn stats(&self) -> MeshStats {
        MeshStats {
            membership: self.membership.stats().clone(),
            broadcast: self.broadcast.stats().clone(),
            probes_sent: self.probes_sent,
            splits_detected: self.splits_detected,
            beacons_sent: self.beacons_sent,
            queued: self.queue.len(),
            seen_ids: self.broadcast.seen_len(),
            stored_bytes: self.broadcast.store_bytes(),
        }
    }

    pub(crate) fn join<R: Rng>(
        &mut self,
        contacts: Vec<PeerInfo<PI>>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) {
        self.membership.join(contacts, now, rng, &mut self.m_out);
        self.drain(now, rng, out);
    }

    /// Says goodbye to every neighbor; returns how many queued messages were never sent.
    pub(crate) fn leave<R: Rng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) -> usize {
        self.membership.leave(&mut self.m_out);
        self.drain(now, rng, out);
        let unsent = self.queue.len();
        self.queue.clear();
        self.queued_bytes = 0;
        unsent
    }

    pub(crate) fn broadcast<R: Rng>(
        &mut self,
        payload: impl FnOnce(MessageId<PI>) -> Bytes,
        options: BroadcastOptions,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) -> Result<(MessageId<PI>, BroadcastStatus), BroadcastError> {
        if options.hop_limit == Some(0) {
            return Err(BroadcastError::ZeroHopLimit);
        }
        if !self.is_online() {
            if self.queue.len() >= self.config.offline_queue_messages
                || self.queued_bytes >= self.config.offline_queue_bytes
            {
                return Err(BroadcastError::OfflineQueueFull {
                    messages: self.queue.len(),
                    bytes: self.queued_bytes,
                });
            }
            let id = self.broadcast.reserve_id();
            let payload = payload(id);
            self.queued_bytes += payload.len();
            self.queue.push_back(Queued {
                id,
                payload,
                hop_limit: options.hop_limit,
            });
            return Ok((id, BroadcastStatus::Queued));
        }
        let id = self.broadcast.reserve_id();
        let payload = payload(id);
        self.broadcast.broadcast(
            id,
            payload,
            options.hop_limit,
            GossipKind::App,
            now,
            &mut self.b_out,
        );
        self.drain(now, rng, out);
        Ok((id, BroadcastStatus::Sent))
    }

    pub(crate) fn handle_message<R: Rng>(
        &mut self,
        from: PI,
        message: MeshMessage<PI>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) {
        match message {
            MeshMessage::Membership(m) => {
                self.membership
                    .handle_message(from, m, now, rng, &mut self.m_out)
            }
            MeshMessage::Broadcast(b) => self.on_broadcast(from, b, now),
            MeshMessage::Probe(probe) => {
                self.membership.learn(
                    &PeerInfo {
                        id: from,
                        data: probe.data.clone(),
                    },
                    &mut self.m_out,
                );
                let reply = Probe {
                    recent: self.recent(now),
                    data: self.my_data.clone(),
                };
                out.push(MeshOut::Send(from, MeshMessage::ProbeReply(reply)));
                self.check_split(from, &probe, now, rng);
            }
            MeshMessage::ProbeReply(probe) => self.check_split(from, &probe, now, rng),
        }
        self.drain(now, rng, out);
    }

    fn on_broadcast(&mut self, from: PI, message: BroadcastMessage<PI>, now: Instant) {
        match message {
            BroadcastMessage::Gossip(g) => {
                let mut pass = |_: &Gossip<PI>, _: &PI| Propagation::DeliverAndForward;
                let filter: &mut dyn FnMut(&Gossip<PI>, &PI) -> Propagation = match &mut self.filter
                {
                    Some(f) => f.as_mut(),
                    None => &mut pass,
                };
                self.broadcast
                    .on_gossip(from, g, now, filter, &mut self.b_out);
            }
            BroadcastMessage::IHave(a) => self.broadcast.on_ihave(from, a, now),
            BroadcastMessage::Graft { id } => {
                let is_neighbor = self.membership.is_active(&from);
                self.broadcast
                    .on_graft(from, id, is_neighbor, &mut self.b_out);
            }
            BroadcastMessage::Prune => self.broadcast.on_prune(from),
            BroadcastMessage::Parent { beacon } => {
                let is_neighbor = self.membership.is_active(&from);
                self.broadcast.on_parent(from, beacon, is_neighbor);
            }
        }
    }

    pub(crate) fn peer_disconnected<R: Rng>(
        &mut self,
        peer: PI,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) {
        self.membership
            .peer_disconnected(peer, now, rng, &mut self.m_out);
        self.drain(now, rng, out);
    }

    pub(crate) fn peer_slow<R: Rng>(
        &mut self,
        peer: PI,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) {
        self.broadcast.demote(peer, &mut self.b_out);
        self.drain(now, rng, out);
    }

    pub(crate) fn contacts<R: Rng>(
        &mut self,
        mut contacts: Vec<PeerInfo<PI>>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) {
        if std::mem::take(&mut self.probing) {
            contacts.shuffle(rng);
            let me = self.me;
            let target = contacts
                .iter()
                .find(|c| c.id != me && !self.membership.is_active(&c.id))
                .cloned();
            if let Some(target) = target {
                self.membership.learn(&target, &mut self.m_out);
                self.probes_sent += 1;
                let probe = Probe {
                    recent: self.recent(now),
                    data: self.my_data.clone(),
                };
                out.push(MeshOut::Send(target.id, MeshMessage::Probe(probe)));
            }
        }
        self.membership
            .add_contacts(contacts, now, rng, &mut self.m_out);
        self.drain(now, rng, out);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.membership.poll_timeout(),
            self.broadcast.poll_timeout(),
            self.next_beacon,
            self.next_probe,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn handle_timeout<R: Rng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MeshOut<PI>>,
    ) {
        self.membership.handle_timeout(now, rng, &mut self.m_out);
        self.broadcast.handle_timeout(now, &mut self.b_out);
        if self.next_beacon.is_some_and(|at| at <= now) {
            self.beacon_due(now, rng);
        }
        if let (Some(at), Some(interval)) = (self.next_probe, self.config.probe_interval)
            && at <= now
        {
            self.next_probe = Some(now + jitter(interval, rng));
            if self.is_online() && !self.recent(now).is_empty() {
                self.probing = true;
                out.push(MeshOut::WantContacts(PROBE_CONTACTS));
            }
        }
        self.drain(now, rng, out);
    }

    /// Floods a beacon if none has passed since a disruption here (or for the periodic
    /// interval, when one is set); then schedules the next check.
    fn beacon_due<R: Rng>(&mut self, now: Instant, rng: &mut R) {
        let last = self.broadcast.last_beacon();
        let interval = self.config.beacon_interval;
        let overdue =
            interval.is_some_and(|i| last.is_none_or(|t| now.saturating_duration_since(t) >= i));
        let disrupted = self
            .disrupted_at
            .is_some_and(|d| last.is_none_or(|b| b < d));
        if self.is_online() && (overdue || disrupted) {
            let id = self.broadcast.reserve_id();
            self.beacons_sent += 1;
            self.broadcast.broadcast(
                id,
                Bytes::new(),
                None,
                GossipKind::Beacon,
                now,
                &mut self.b_out,
            );
        }
        // An offline node keeps its disruption pending: the next link that comes up renews it.
        if self.is_online() || !disrupted {
            self.disrupted_at = None;
        }
        self.next_beacon = interval.map(|i| {
            let next = self.broadcast.last_beacon().unwrap_or(now) + quiet_delay(i, rng);
            if next > now {
                next
            } else {
                now + quiet_delay(i, rng)
            }
        });
    }

    /// The neighbors changed (a link came up or went down, two halves merged): rebuild the tree
    /// soon with a beacon, unless another node's beacon comes first.
    fn disrupted<R: Rng>(&mut self, now: Instant, rng: &mut R) {
        if !self.config.beacons {
            return;
        }
        self.disrupted_at.get_or_insert(now);
        let soon = now + rng.random_range(BEACON_AFTER_DISRUPTION);
        self.next_beacon = Some(self.next_beacon.map_or(soon, |t| t.min(soon)));
    }

    /// What a probe tells: the newest beacon this node has seen (past the grace period).
    fn recent(&self, now: Instant) -> Vec<RecentId<PI>> {
        self.broadcast
            .latest_beacon(now, self.config.probe_grace)
            .into_iter()
            .collect()
    }

    /// Has the peer's newest beacon, sent while we were online, never reached us? Every beacon
    /// floods the whole of a connected mesh, so then we are in different parts of a split
    /// mesh: link up (catch-up on the new link exchanges recent messages) and bring a beacon
    /// forward, whose flood tells both halves they are one again.
    fn check_split<R: Rng>(&mut self, from: PI, probe: &Probe<PI>, now: Instant, rng: &mut R) {
        let Some(since) = self.online_since else {
            return;
        };
        let grace = self.config.probe_grace;
        let split = probe.recent.first().is_some_and(|r| {
            let age = Duration::from_millis(u64::from(r.age_ms));
            let sent = now.checked_sub(age);
            let we_were_online = sent.is_some_and(|sent| since + grace <= sent);
            age >= grace && we_were_online && !self.broadcast.has_seen_beacon(&r.id)
        });
        if split {
            self.splits_detected += 1;
            self.disrupted(now, rng);
            let peer = self.membership.info(from);
            self.membership.request_neighbor(peer, now, &mut self.m_out);
        }
    }

    /// Turns the sub-states' outputs into the mesh's, reacting to neighbor changes.
    fn drain<R: Rng>(&mut self, now: Instant, rng: &mut R, out: &mut Vec<MeshOut<PI>>) {
        loop {
            let m_out = std::mem::take(&mut self.m_out);
            for o in m_out {
                match o {
                    MembershipOut::Send(to, m) => {
                        out.push(MeshOut::Send(to, MeshMessage::Membership(m)))
                    }
                    MembershipOut::NeighborUp(peer) => {
                        self.disrupted(now, rng);
                        self.neighbor_up(peer, now, out);
                    }
                    MembershipOut::NeighborDown(peer, reason) => {
                        self.disrupted(now, rng);
                        self.broadcast.neighbor_down(peer);
                        self.neighbors = self.neighbors.saturating_sub(1);
                        out.push(MeshOut::Event(MeshEvent::NeighborDown(peer, reason)));
                        if self.neighbors == 0 {
                            self.online_since = None;
                            out.push(MeshOut::Event(MeshEvent::Offline));
                        }
                    }
                    MembershipOut::PeerData(peer, data) => out.push(MeshOut::PeerData(peer, data)),
                    MembershipOut::WantContacts(n) => out.push(MeshOut::WantContacts(n)),
                    MembershipOut::Release(peer) => out.push(MeshOut::Release(peer)),
                }
            }
            for o in std::mem::take(&mut self.b_out) {
                match o {
                    BroadcastOut::Send(to, m) => {
                        out.push(MeshOut::Send(to, MeshMessage::Broadcast(m)))
                    }
                    BroadcastOut::Deliver(d) => out.push(MeshOut::Deliver(d)),
                }
            }
            if self.m_out.is_empty() && self.b_out.is_empty() {
                break;
            }
        }
    }

    fn neighbor_up(&mut self, peer: PI, now: Instant, out: &mut Vec<MeshOut<PI>>) {
        if self.neighbors == 0 {
            self.online_since = Some(now);
            out.push(MeshOut::Event(MeshEvent::Online));
        }
        self.neighbors += 1;
        out.push(MeshOut::Event(MeshEvent::NeighborUp(peer)));
        self.broadcast.neighbor_up(
            peer,
            self.config.catch_up_messages,
            self.config.catch_up_window,
            now,
            &mut self.b_out,
        );
        // Messages published while offline go out as soon as there is someone to take them.
        while let Some(q) = self.queue.pop_front() {
            self.queued_bytes -= q.payload.len();
            self.broadcast.broadcast(
                q.id,
                q.payload,
                q.hop_limit,
                GossipKind::App,
                now,
                &mut self.b_out,
            );
        }
    }
}

/// The time before a beacon: the interval plus a random part of it again, so that one node
/// usually speaks first and the others, hearing it, stay silent.
fn quiet_delay<R: Rng>(interval: Duration, rng: &mut R) -> Duration {
    interval + interval.mul_f64(rng.random_range(0.0..1.0))
}
