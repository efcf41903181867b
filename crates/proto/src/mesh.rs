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
pub(crate) const PROBE_CONTACTS: usize = 3;

/// After a disruption, a node floods a beacon after a random delay in this range, unless one
/// arrives first. Wide enough that, when hundreds of nodes are disrupted at once, only a few
/// beacons start within the time one takes to cross the mesh.
const BEACON_AFTER_DISRUPTION: std::ops::Range<Duration> =
    Duration::from_secs(2)..Duration::from_secs(20);

/// A beacon due after a disruption while at least [`BUSY_AWAITED`] announced messages are still
/// awaited here looks again this much later.
const BEACON_WHILE_BUSY: Duration = Duration::from_secs(1);

/// Announced messages awaited at once from which a node counts as busy: a saturated mesh
/// awaits tens of thousands per node (announcements run ahead of the eager copies by the
/// queues' depth), one at 1,000 msg/s a few dozen at most. Measured with `peerchannel-bench`:
/// waiting for none at all also held back the rebuild after the mesh formed, into the
/// latency phase, whose worst-node p99 rose from 3-6 ms to 15-36 ms.
const BUSY_AWAITED: usize = 1024;

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
    /// Message ids announced and not received yet, now (at most
    /// [`MAX_MISSING`](crate::broadcast::MAX_MISSING)).
    pub awaited_ids: usize,
    /// Grafts sent and not answered yet, now (at most
    /// [`MAX_GRAFTS_IN_FLIGHT`](crate::broadcast::MAX_GRAFTS_IN_FLIGHT)).
    pub grafts_in_flight: usize,
}

/// A propagation filter: decides, for each new message, whether to deliver and to forward.
pub type Filter<PI> = Box<dyn FnMut(&Gossip<PI>, &PI) -> Propagation + Send>;

/// What a mesh asks of the node.
#[derive(Debug, PartialEq, Eq)]
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
            awaited_ids: self.broadcast.awaited_len(),
            grafts_in_flight: self.broadcast.grafts_in_flight(),
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
        // Recent messages first, then the goodbyes: see `Broadcast::farewell`.
        self.broadcast.farewell(now, &mut self.b_out);
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
            BroadcastMessage::Resume { from: first } => {
                let is_neighbor = self.membership.is_active(&from);
                self.broadcast
                    .on_resume(from, first, is_neighbor, now, &mut self.b_out);
            }
            BroadcastMessage::Prune => self.broadcast.on_prune(from),
            BroadcastMessage::Fetch { id, count } => {
                self.broadcast.answer(from, id, count, &mut self.b_out);
            }
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
        // Addition: the rebuild after a disruption waits while many messages announced here
        // are still awaited (the mesh is saturated). Under load the switch to a new tree
        // leaves a run of messages between what each old parent sent and what its new one
        // starts with, and refilling those runs in every node at once is what a saturated
        // mesh cannot afford (measured with `peerchannel-bench --pause-one 10`: each rebuild
        // during the pause cut the others to a third of their rate and lost thousands of
        // messages at most of them). A mesh that is not saturated, as after a failure in a
        // chat, rebuilds as before.
        let busy = self.broadcast.awaited_len() >= BUSY_AWAITED;
        if disrupted && !overdue && self.is_online() && busy {
            let retry = now + BEACON_WHILE_BUSY;
            self.next_beacon = Some(retry);
            return;
        }
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
        // The sub-states' output vectors keep their capacity from input to input: made anew,
        // they cost an allocation per message.
        loop {
            let mut m_out = std::mem::take(&mut self.m_out);
            for o in m_out.drain(..) {
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
            if self.m_out.is_empty() {
                self.m_out = m_out;
            }
            for o in self.b_out.drain(..) {
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

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::config::{BroadcastConfig, MembershipConfig};
    use crate::message::{Announced, Announcement, MembershipMessage, Priority};

    #[test]
    fn a_message_published_offline_is_queued_and_goes_out_on_the_first_link() {
        let mut n = Node::new(1, config());
        let (first, out) = n.publish("first", BroadcastOptions::default());
        let (first, status) = first.unwrap();
        assert_eq!(status, BroadcastStatus::Queued);
        assert!(out.is_empty(), "nothing to send to: {out:?}");
        let (second, _) = n.publish("second", BroadcastOptions::hop_limit(2));
        let (second, _) = second.unwrap();
        assert_eq!(second.seq, first.seq + 1);
        assert_eq!(n.mesh.stats().queued, 2);

        let out = n.neighbor_joins(2);
        assert_eq!(
            out,
            vec![
                MeshOut::Event(MeshEvent::Online),
                MeshOut::Event(MeshEvent::NeighborUp(2)),
                MeshOut::Send(2, join_accepted()),
                MeshOut::Send(2, broadcast(BroadcastMessage::Graft { id: None })),
                MeshOut::Send(2, gossip(first, 1, None, "first")),
                MeshOut::Send(2, gossip(second, 1, Some(2), "second")),
            ],
            "the queue goes out in order, with its hop limits, once the link is up"
        );
        assert_eq!(n.mesh.stats().queued, 0);
    }

    #[test]
    fn a_full_offline_queue_refuses_and_queues_nothing() {
        let mut cfg = config();
        cfg.mesh.offline_queue_messages = 2;
        let mut n = Node::new(1, cfg);
        let (a, _) = n.publish("aa", BroadcastOptions::default());
        let (b, _) = n.publish("bbb", BroadcastOptions::default());
        let (a, b) = (a.unwrap().0, b.unwrap().0);
        let (refused, out) = n.publish("c", BroadcastOptions::default());
        assert_eq!(
            refused,
            Err(BroadcastError::OfflineQueueFull {
                messages: 2,
                bytes: 5
            })
        );
        assert!(out.is_empty());
        assert_eq!(n.mesh.stats().queued, 2);

        let sent = gossip_sends(&n.neighbor_joins(2));
        assert_eq!(
            sent,
            vec![(2, a), (2, b)],
            "the refused message never goes out"
        );
        // The refusal used no sequence number.
        let (next, _) = n.publish("d", BroadcastOptions::default());
        assert_eq!(
            next.unwrap(),
            (
                MessageId {
                    origin: 1,
                    seq: b.seq + 1
                },
                BroadcastStatus::Sent
            )
        );
    }

    #[test]
    fn the_offline_queue_is_bounded_in_bytes() {
        let mut cfg = config();
        cfg.mesh.offline_queue_bytes = 6;
        let mut n = Node::new(1, cfg);
        assert!(n.publish("abc", BroadcastOptions::default()).0.is_ok());
        assert!(n.publish("def", BroadcastOptions::default()).0.is_ok());
        assert_eq!(
            n.publish("g", BroadcastOptions::default()).0,
            Err(BroadcastError::OfflineQueueFull {
                messages: 2,
                bytes: 6
            })
        );
        assert_eq!(n.mesh.stats().queued, 2);
    }

    #[test]
    fn leaving_reports_the_messages_never_sent() {
        let mut n = Node::new(1, config());
        for payload in ["a", "b", "c"] {
            n.publish(payload, BroadcastOptions::default()).0.unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(n.mesh.leave(n.now, &mut n.rng, &mut out), 3);
        assert_eq!(n.mesh.stats().queued, 0);
        assert!(out.is_empty(), "no neighbor to say goodbye to: {out:?}");
    }

    #[test]
    fn a_hop_limit_of_zero_is_refused_online_and_offline() {
        let mut n = Node::new(1, config());
        let (offline, out) = n.publish("x", BroadcastOptions::hop_limit(0));
        assert_eq!(offline, Err(BroadcastError::ZeroHopLimit));
        assert!(out.is_empty());
        assert_eq!(n.mesh.stats().queued, 0, "a refused message is not queued");
        n.neighbor_joins(2);
        let (online, out) = n.publish("x", BroadcastOptions::hop_limit(0));
        assert_eq!(online, Err(BroadcastError::ZeroHopLimit));
        assert!(out.is_empty(), "a refused message is not sent: {out:?}");
        assert_eq!(n.mesh.stats().broadcast.originated, 0);
    }

    #[test]
    fn online_comes_before_the_first_neighbor_and_offline_after_the_last() {
        let mut n = Node::new(1, config());
        let mut out = n.neighbor_joins(2);
        out.extend(n.neighbor_joins(3));
        assert!(n.mesh.is_online());
        out.extend(n.link_lost(2));
        assert!(n.mesh.is_online());
        out.extend(n.receive(
            3,
            MeshMessage::Membership(MembershipMessage::Disconnect {
                reason: DisconnectReason::Leaving,
            }),
        ));
        assert!(!n.mesh.is_online());
        out.extend(n.neighbor_joins(4));
        assert_eq!(
            events(&out),
            vec![
                MeshEvent::Online,
                MeshEvent::NeighborUp(2),
                MeshEvent::NeighborUp(3),
                MeshEvent::NeighborDown(2, DisconnectReason::LinkLost),
                MeshEvent::NeighborDown(3, DisconnectReason::Leaving),
                MeshEvent::Offline,
                MeshEvent::Online,
                MeshEvent::NeighborUp(4),
            ]
        );
    }

    #[test]
    fn a_new_link_is_told_of_recent_messages_but_not_of_its_own() {
        let mut cfg = config();
        cfg.mesh.catch_up_window = Duration::from_secs(10);
        cfg.mesh.catch_up_messages = 2;
        let mut n = Node::new(1, cfg);
        n.neighbor_joins(2);
        let old = MessageId { origin: 9, seq: 0 };
        n.receive(2, gossip(old, 1, None, "old"));
        n.advance(Duration::from_secs(15));
        let (a, b, own) = (
            MessageId { origin: 9, seq: 1 },
            MessageId { origin: 8, seq: 0 },
            MessageId { origin: 3, seq: 0 },
        );
        n.receive(2, gossip(a, 2, None, "a"));
        n.receive(2, gossip(b, 1, None, "b"));
        n.receive(2, gossip(own, 3, None, "own"));
        let up = n.neighbor_joins(3);
        assert!(
            !up.contains(&MeshOut::Send(
                3,
                broadcast(BroadcastMessage::Graft { id: None })
            )),
            "a node already in the tree starts a new link lazy"
        );
        let out = n.advance(BroadcastConfig::default().ihave_delay);
        let catch_up = |id, hops| Announcement {
            id,
            hops,
            catch_up: true,
        };
        // The two newest messages, oldest first; not the peer's own message, and not the one
        // older than the window.
        assert_eq!(
            out,
            vec![MeshOut::Send(
                3,
                broadcast(BroadcastMessage::IHave(Announced::group(&[
                    catch_up(a, 2),
                    catch_up(b, 1)
                ])))
            )]
        );
    }

    #[test]
    fn a_disruption_floods_a_beacon_within_the_delay() {
        let mut n = Node::new(1, config());
        n.neighbor_joins(2);
        n.neighbor_joins(3);
        let out = n.advance(BEACON_AFTER_DISRUPTION.end);
        let beacons = beacon_sends(&out);
        assert_eq!(beacons.len(), 2, "one beacon, to every neighbor: {out:?}");
        let id = beacons[0].1.id;
        assert_eq!(id.origin, 1);
        let expected = Gossip {
            id,
            hops: 1,
            hop_limit: None,
            kind: GossipKind::Beacon,
            payload: Bytes::new(),
        };
        assert_eq!(beacons, vec![(2, expected.clone()), (3, expected)]);
        assert_eq!(n.mesh.stats().beacons_sent, 1);
        // A stable mesh sends no more (no periodic beacons by default).
        let later = n.advance(Duration::from_secs(600));
        assert_eq!(beacon_sends(&later), vec![]);
    }

    #[test]
    fn the_rebuild_after_a_disruption_waits_while_the_node_is_saturated() {
        let mut n = Node::new(1, config());
        n.neighbor_joins(2);
        n.neighbor_joins(3);
        // A saturated mesh: announcements keep coming, thousands ahead of their messages.
        let mut sent = Vec::new();
        let mut seq = 0;
        for _ in 0..120 {
            for _ in 0..BUSY_AWAITED.div_ceil(200) {
                let batch: Vec<_> = (seq..seq + 200)
                    .map(|seq| Announcement {
                        id: MessageId { origin: 9, seq },
                        hops: 1,
                        catch_up: false,
                    })
                    .collect();
                seq += 200;
                n.receive(
                    3,
                    broadcast(BroadcastMessage::IHave(Announced::group(&batch))),
                );
            }
            sent.extend(beacon_sends(&n.advance(Duration::from_millis(200))));
        }
        assert!(
            BEACON_AFTER_DISRUPTION.end < Duration::from_millis(200 * 120),
            "the busy spell outlasts the longest delay"
        );
        assert_eq!(sent, vec![], "no rebuild while busy");
        // The messages come, and nothing more is announced: the disruption still gets its
        // beacon, at the next look.
        for seq in 0..seq {
            n.receive(2, gossip(MessageId { origin: 9, seq }, 1, None, "m"));
        }
        let out = n.advance(BEACON_WHILE_BUSY);
        assert_eq!(beacon_sends(&out).len(), 2, "{out:?}");
    }

    #[test]
    fn another_nodes_beacon_makes_ours_unnecessary() {
        let mut n = Node::new(1, config());
        n.neighbor_joins(2);
        n.neighbor_joins(3);
        n.advance(Duration::from_secs(1));
        let beacon = MessageId { origin: 9, seq: 0 };
        let out = n.receive(2, beacon_gossip(beacon, 1));
        assert_eq!(
            out,
            vec![
                MeshOut::Send(2, broadcast(BroadcastMessage::Parent { beacon })),
                MeshOut::Send(3, beacon_gossip(beacon, 2)),
            ],
            "a beacon names its parent and floods on"
        );
        n.advance(Duration::from_secs(60));
        assert_eq!(n.mesh.stats().beacons_sent, 0);
    }

    #[test]
    fn a_beacon_rebuilds_the_tree_after_the_rebuild_delay() {
        let mut n = Node::new(1, config());
        for p in [2, 3, 4] {
            n.neighbor_joins(p);
        }
        assert_eq!(
            n.eager(),
            vec![2],
            "the first link is the node's way into the tree"
        );
        n.advance(Duration::from_secs(1));
        let beacon = MessageId { origin: 9, seq: 0 };
        n.receive(3, beacon_gossip(beacon, 1));
        n.advance(Duration::from_millis(50));
        // 4 names us its parent; 2's copy of the flood is a duplicate, which prunes nothing.
        assert_eq!(
            n.receive(4, broadcast(BroadcastMessage::Parent { beacon })),
            vec![]
        );
        assert_eq!(n.receive(2, beacon_gossip(beacon, 3)), vec![]);
        let before = n.advance(Duration::from_millis(949));
        assert_eq!(before, vec![]);
        assert_eq!(
            n.eager(),
            vec![2],
            "messages use the old tree until the switch"
        );
        let switch = n.advance(Duration::from_millis(1));
        assert_eq!(
            switch,
            vec![
                MeshOut::Send(2, broadcast(BroadcastMessage::Prune)),
                MeshOut::Send(3, broadcast(BroadcastMessage::Graft { id: None })),
                MeshOut::Send(4, broadcast(BroadcastMessage::Graft { id: None })),
            ],
            "each changed link is announced to its other side"
        );
        assert_eq!(n.eager(), vec![3, 4], "the parent and the child");

        // Right after the switch, copies over old and new links are expected: no prune.
        let m = MessageId { origin: 8, seq: 0 };
        n.receive(3, gossip(m, 1, None, "m"));
        assert_eq!(prunes(&n.receive(4, gossip(m, 2, None, "m"))), vec![]);
        n.advance(BroadcastConfig::default().rebuild_delay);
        let m = MessageId { origin: 8, seq: 1 };
        n.receive(3, gossip(m, 1, None, "m"));
        assert_eq!(prunes(&n.receive(4, gossip(m, 2, None, "m"))), vec![4]);
    }

    #[test]
    fn a_probe_with_a_beacon_never_seen_while_online_links_the_two_sides() {
        let mut n = Node::new(1, config());
        n.neighbor_joins(2);
        n.advance_quietly(Duration::from_secs(10));
        // The other side saw this beacon 3 s ago: 7 s after we came online.
        let probe = probe_of(MessageId { origin: 9, seq: 4 }, 3_000);
        let out = n.receive(7, MeshMessage::Probe(probe));
        assert_eq!(
            out,
            vec![
                MeshOut::Send(
                    7,
                    MeshMessage::ProbeReply(Probe {
                        recent: vec![],
                        data: None
                    })
                ),
                MeshOut::Send(
                    7,
                    MeshMessage::Membership(MembershipMessage::Neighbor {
                        priority: Priority::High,
                        data: None
                    })
                ),
            ]
        );
        assert_eq!(n.mesh.stats().splits_detected, 1);
    }

    #[test]
    fn a_probe_with_a_beacon_we_saw_changes_nothing() {
        let mut n = Node::new(1, config());
        n.neighbor_joins(2);
        n.advance_quietly(Duration::from_secs(5));
        let beacon = MessageId { origin: 9, seq: 4 };
        n.receive(2, beacon_gossip(beacon, 1));
        n.advance_quietly(Duration::from_secs(5));
        let out = n.receive(7, MeshMessage::Probe(probe_of(beacon, 4_000)));
        let recent = vec![RecentId {
            id: beacon,
            age_ms: 5_000,
        }];
        assert_eq!(
            out,
            vec![MeshOut::Send(
                7,
                MeshMessage::ProbeReply(Probe { recent, data: None })
            )]
        );
        assert_eq!(n.mesh.stats().splits_detected, 0);
    }

    #[test]
    fn a_probe_with_a_beacon_from_before_we_were_online_changes_nothing() {
        let mut n = Node::new(1, config());
        n.neighbor_joins(2);
        n.advance_quietly(Duration::from_secs(10));
        // Sent 1 s after we came online: within the grace period, it may not have reached us.
        let early = probe_of(MessageId { origin: 9, seq: 4 }, 9_000);
        assert_eq!(
            probe_requests(&n.receive(7, MeshMessage::Probe(early))),
            vec![]
        );
        // Seen by the other side less than the grace period ago: it may still be on its way.
        let young = probe_of(MessageId { origin: 9, seq: 5 }, 1_000);
        assert_eq!(
            probe_requests(&n.receive(7, MeshMessage::Probe(young))),
            vec![]
        );
        assert_eq!(n.mesh.stats().splits_detected, 0);
    }

    #[test]
    fn a_probe_reply_with_an_unseen_beacon_links_up_too() {
        let mut n = Node::new(1, config());
        n.neighbor_joins(2);
        n.advance_quietly(Duration::from_secs(10));
        let reply = probe_of(MessageId { origin: 9, seq: 4 }, 3_000);
        let out = n.receive(7, MeshMessage::ProbeReply(reply));
        assert_eq!(probe_requests(&out), vec![7]);
    }

    // --- helpers ----------------------------------------------------------------------------

    /// Small views and no periodic work, so that outputs are only what a test causes.
    fn config() -> Config {
        Config {
            membership: MembershipConfig {
                active_min: 1,
                active_ideal: 3,
                active_max: 5,
                shuffle_interval: Duration::from_secs(3600),
                ..Default::default()
            },
            broadcast: BroadcastConfig::default(),
            mesh: MeshConfig {
                probe_interval: None,
                ..Default::default()
            },
        }
    }

    /// What a broadcast returned, and what the mesh sent.
    type Published = (
        Result<(MessageId<u32>, BroadcastStatus), BroadcastError>,
        Vec<MeshOut<u32>>,
    );

    /// One node's view of a mesh, driven by hand on its own clock.
    struct Node {
        mesh: Mesh<u32>,
        rng: ChaCha8Rng,
        now: Instant,
    }

    impl Node {
        /// A node that has joined with no contact (it has asked for some; that is dropped).
        fn new(me: u32, config: Config) -> Self {
            let now = Instant::now();
            let mut rng = ChaCha8Rng::seed_from_u64(u64::from(me));
            let mut mesh = Mesh::new(me, None, config, now, &mut rng);
            mesh.join(Vec::new(), now, &mut rng, &mut Vec::new());
            Self { mesh, rng, now }
        }

        fn receive(&mut self, from: u32, message: MeshMessage<u32>) -> Vec<MeshOut<u32>> {
            let mut out = Vec::new();
            self.mesh
                .handle_message(from, message, self.now, &mut self.rng, &mut out);
            out
        }

        /// `peer` joins through this node, which accepts it.
        fn neighbor_joins(&mut self, peer: u32) -> Vec<MeshOut<u32>> {
            self.receive(
                peer,
                MeshMessage::Membership(MembershipMessage::Join { data: None }),
            )
        }

        fn link_lost(&mut self, peer: u32) -> Vec<MeshOut<u32>> {
            let mut out = Vec::new();
            self.mesh
                .peer_disconnected(peer, self.now, &mut self.rng, &mut out);
            out
        }

        fn publish(&mut self, payload: &'static str, options: BroadcastOptions) -> Published {
            let mut out = Vec::new();
            let payload = Bytes::from_static(payload.as_bytes());
            let result =
                self.mesh
                    .broadcast(|_| payload, options, self.now, &mut self.rng, &mut out);
            (result, out)
        }

        /// Moves the clock forward by `by`, firing every timer due on the way, in order.
        fn advance(&mut self, by: Duration) -> Vec<MeshOut<u32>> {
            let until = self.now + by;
            let mut out = Vec::new();
            while let Some(at) = self.mesh.poll_timeout().filter(|at| *at <= until) {
                self.now = self.now.max(at);
                self.mesh.handle_timeout(self.now, &mut self.rng, &mut out);
            }
            self.now = until;
            out
        }

        /// Moves the clock forward without firing timers (calling late is allowed).
        fn advance_quietly(&mut self, by: Duration) {
            self.now += by;
        }

        fn eager(&self) -> Vec<u32> {
            self.mesh.eager().copied().collect()
        }
    }

    fn broadcast(message: BroadcastMessage<u32>) -> MeshMessage<u32> {
        MeshMessage::Broadcast(message)
    }

    fn gossip(
        id: MessageId<u32>,
        hops: u16,
        hop_limit: Option<u16>,
        payload: &'static str,
    ) -> MeshMessage<u32> {
        broadcast(BroadcastMessage::Gossip(Gossip {
            id,
            hops,
            hop_limit,
            kind: GossipKind::App,
            payload: Bytes::from_static(payload.as_bytes()),
        }))
    }

    fn beacon_gossip(id: MessageId<u32>, hops: u16) -> MeshMessage<u32> {
        broadcast(BroadcastMessage::Gossip(Gossip {
            id,
            hops,
            hop_limit: None,
            kind: GossipKind::Beacon,
            payload: Bytes::new(),
        }))
    }

    fn join_accepted() -> MeshMessage<u32> {
        MeshMessage::Membership(MembershipMessage::JoinReply {
            accepted: true,
            referrals: vec![],
        })
    }

    fn probe_of(beacon: MessageId<u32>, age_ms: u32) -> Probe<u32> {
        Probe {
            recent: vec![RecentId { id: beacon, age_ms }],
            data: None,
        }
    }

    fn events(out: &[MeshOut<u32>]) -> Vec<MeshEvent<u32>> {
        out.iter()
            .filter_map(|o| match o {
                MeshOut::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// Application messages pushed in full: to whom, which.
    fn gossip_sends(out: &[MeshOut<u32>]) -> Vec<(u32, MessageId<u32>)> {
        out.iter()
            .filter_map(|o| match o {
                MeshOut::Send(to, MeshMessage::Broadcast(BroadcastMessage::Gossip(g)))
                    if g.kind == GossipKind::App =>
                {
                    Some((*to, g.id))
                }
                _ => None,
            })
            .collect()
    }

    fn beacon_sends(out: &[MeshOut<u32>]) -> Vec<(u32, Gossip<u32>)> {
        out.iter()
            .filter_map(|o| match o {
                MeshOut::Send(to, MeshMessage::Broadcast(BroadcastMessage::Gossip(g)))
                    if g.kind == GossipKind::Beacon =>
                {
                    Some((*to, g.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn prunes(out: &[MeshOut<u32>]) -> Vec<u32> {
        out.iter()
            .filter_map(|o| match o {
                MeshOut::Send(to, MeshMessage::Broadcast(BroadcastMessage::Prune)) => Some(*to),
                _ => None,
            })
            .collect()
    }

    /// Peers asked to become neighbors with high priority.
    fn probe_requests(out: &[MeshOut<u32>]) -> Vec<u32> {
        out.iter()
            .filter_map(|o| match o {
                MeshOut::Send(
                    to,
                    MeshMessage::Membership(MembershipMessage::Neighbor {
                        priority: Priority::High,
                        ..
                    }),
                ) => Some(*to),
                _ => None,
            })
            .collect()
    }
}
