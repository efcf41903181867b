//! Neighbor management, after HyParView (Leitão, Pereira, Rodrigues: *HyParView: a
//! membership protocol for reliable gossip-based broadcast*, DSN 2007).
//!
//! Each node keeps a small **active view** (its neighbors: open, symmetric links) and a larger
//! **passive view** (members it knows of, kept for repair). New nodes join through a contact
//! that announces them on random walks; full nodes refuse with referrals; nodes that lose a
//! neighbor promote a passive peer; a periodic shuffle keeps the passive views fresh.
//!
//! Departures from the paper are marked "Modification from the paper" where they are made.
//! The biggest: links form by request and acceptance everywhere (the paper adds a node to the
//! active view and tells it afterwards), active views have min / ideal / max bounds instead of
//! one fixed size, and a node with no candidate left asks its driver (the resolver) for
//! contacts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, RngExt};

use crate::config::MembershipConfig;
use crate::id::PeerIdentity;
use crate::message::{DisconnectReason, MembershipMessage, PeerData, PeerInfo, Priority};

/// What membership asks of its surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MembershipOut<PI> {
    /// Send a message to a peer (the driver dials if needed).
    Send(PI, MembershipMessage<PI>),
    /// A link is up.
    NeighborUp(PI),
    /// A link is down.
    NeighborDown(PI, DisconnectReason),
    /// How to reach a peer.
    PeerData(PI, PeerData),
    /// The node needs contacts from the resolver.
    WantContacts(usize),
    /// This mesh needs no link to the peer any more.
    Release(PI),
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipStats {
    /// Joins this node answered.
    pub joins_received: u64,
    /// Neighbor requests this node refused.
    pub refusals_sent: u64,
    /// Neighbors this node evicted to make room.
    pub evictions: u64,
    /// Requests of ours that were never answered.
    pub request_timeouts: u64,
    /// Times this node asked for contacts.
    pub contact_requests: u64,
    /// Shuffles this node started.
    pub shuffles: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    Join,
    Neighbor,
}

/// The membership state of one node in one mesh.
#[derive(Debug)]
pub(crate) struct Membership<PI> {
    me: PI,
    my_data: Option<PeerData>,
    config: MembershipConfig,
    active: Vec<PI>,
    passive: Vec<PI>,
    /// Addressing data for peers in either view or pending.
    data: BTreeMap<PI, PeerData>,
    /// Our join and neighbor requests awaiting an answer.
    pending: BTreeMap<PI, Instant>,
    /// Passive entries sent in our last shuffle: evicted first when the reply comes.
    shuffled: Vec<PI>,
    /// Whether this node ever had a neighbor: a node that had one repairs aggressively.
    ever_online: bool,
    next_fill: Option<Instant>,
    next_shuffle: Option<Instant>,
    /// When contacts may be asked for again, and the backoff after that.
    contacts_after: Option<Instant>,
    contacts_backoff: Duration,
    stats: MembershipStats,
}

impl<PI: PeerIdentity> Membership<PI> {
    pub(crate) fn new(me: PI, my_data: Option<PeerData>, config: MembershipConfig) -> Self {
        let contacts_backoff = config.contacts_backoff_min;
        Self {
            me,
            my_data,
            config,
            active: Vec::new(),
            passive: Vec::new(),
            data: BTreeMap::new(),
            pending: BTreeMap::new(),
            shuffled: Vec::new(),
            ever_online: false,
            next_fill: None,
            next_shuffle: None,
            contacts_after: None,
            contacts_backoff,
            stats: MembershipStats::default(),
        }
    }

    pub(crate) fn active(&self) -> &[PI] {
        &self.active
    }

    pub(crate) fn passive(&self) -> &[PI] {
        &self.passive
    }

    pub(crate) fn is_active(&self, peer: &PI) -> bool {
        self.active.contains(peer)
    }

    /// Whether this mesh needs a link to `peer`: a neighbor or an open request.
    pub(crate) fn uses(&self, peer: &PI) -> bool {
        self.active.contains(peer) || self.pending.contains_key(peer)
    }

    pub(crate) fn stats(&self) -> &MembershipStats {
        &self.stats
    }

    pub(crate) fn set_my_data(&mut self, data: Option<PeerData>) {
        self.my_data = data;
    }

    pub(crate) fn info(&self, peer: PI) -> PeerInfo<PI> {
        PeerInfo {
            id: peer,
            data: self.data.get(&peer).cloned(),
        }
    }

    /// Starts (or restarts) joining with the given contacts.
    pub(crate) fn join<R: Rng>(
        &mut self,
        contacts: Vec<PeerInfo<PI>>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        self.add_contacts(contacts, now, rng, out);
        self.schedule_shuffle(now, rng);
        self.repair(now, rng, out);
    }

    /// Takes contacts from the driver (the resolver). An isolated node tries them at once.
    pub(crate) fn add_contacts<R: Rng>(
        &mut self,
        contacts: Vec<PeerInfo<PI>>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        let mut fresh = Vec::new();
        for c in contacts {
            if c.id == self.me || self.active.contains(&c.id) {
                continue;
            }
            self.learn(&c, out);
            if !self.pending.contains_key(&c.id) {
                fresh.push(c.id);
            }
            self.add_passive(c.id, rng);
        }
        // Contacts from the resolver are the freshest news of who is alive: an isolated node
        // tries them straight away, beyond its usual number of parallel requests.
        if self.active.is_empty() && self.ever_online {
            fresh.shuffle(rng);
            for peer in fresh.into_iter().take(self.config.isolated_parallel) {
                self.request(peer, PendingKind::Join, now, out);
            }
        }
        self.repair(now, rng, out);
    }

    /// Leaves the mesh: says goodbye to every neighbor.
    pub(crate) fn leave(&mut self, out: &mut Vec<MembershipOut<PI>>) {
        for peer in std::mem::take(&mut self.active) {
            out.push(MembershipOut::Send(
                peer,
                MembershipMessage::Disconnect {
                    reason: DisconnectReason::Leaving,
                },
            ));
            out.push(MembershipOut::NeighborDown(peer, DisconnectReason::Leaving));
            out.push(MembershipOut::Release(peer));
        }
        // A peer we asked may already count us as its neighbor (its acceptance is on the way):
        // it gets the goodbye too, or it would hold a dead link until the link times out.
        for peer in std::mem::take(&mut self.pending).into_keys() {
            out.push(MembershipOut::Send(
                peer,
                MembershipMessage::Disconnect {
                    reason: DisconnectReason::Leaving,
                },
            ));
            out.push(MembershipOut::Release(peer));
        }
        self.passive.clear();
        self.data.clear();
    }

    /// Asks `peer` to become a neighbor now (partition merge).
    pub(crate) fn request_neighbor(
        &mut self,
        peer: PeerInfo<PI>,
        now: Instant,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        if peer.id == self.me
            || self.active.contains(&peer.id)
            || self.pending.contains_key(&peer.id)
        {
            return;
        }
        self.learn(&peer, out);
        self.pending
            .insert(peer.id, now + self.config.request_timeout);
        out.push(MembershipOut::Send(
            peer.id,
            MembershipMessage::Neighbor {
                priority: Priority::High,
                data: self.my_data.clone(),
            },
        ));
    }

    /// Records addressing data learnt elsewhere (a probe, a gossip envelope).
    pub(crate) fn learn(&mut self, peer: &PeerInfo<PI>, out: &mut Vec<MembershipOut<PI>>) {
        if let Some(data) = &peer.data
            && peer.id != self.me
            && self.data.get(&peer.id) != Some(data)
        {
            self.data.insert(peer.id, data.clone());
            out.push(MembershipOut::PeerData(peer.id, data.clone()));
        }
    }

    pub(crate) fn handle_message<R: Rng>(
        &mut self,
        from: PI,
        message: MembershipMessage<PI>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        if from == self.me {
            return;
        }
        match message {
            MembershipMessage::Join { data } => self.on_join(from, data, rng, out),
            MembershipMessage::JoinReply {
                accepted,
                referrals,
            } => self.on_reply(from, accepted, referrals, now, rng, out),
            MembershipMessage::ForwardJoin { joiner, ttl } => {
                self.on_forward_join(from, joiner, ttl, now, rng, out)
            }
            MembershipMessage::Neighbor { priority, data } => {
                self.on_neighbor(from, priority, data, rng, out)
            }
            MembershipMessage::NeighborReply {
                accepted,
                referrals,
            } => self.on_reply(from, accepted, referrals, now, rng, out),
            MembershipMessage::Disconnect { reason } => {
                self.on_disconnect(from, reason, now, rng, out)
            }
            MembershipMessage::Shuffle { origin, ttl, nodes } => {
                self.on_shuffle(from, origin, ttl, nodes, rng, out)
            }
            MembershipMessage::ShuffleReply { nodes } => {
                let sent = std::mem::take(&mut self.shuffled);
                self.integrate(nodes, &sent, out, rng);
            }
        }
    }

    /// The link to `peer` is gone without a goodbye (idle timeout, connection lost, or a dial
    /// that failed). The core only ever learns of a dead peer this way, after the driver's
    /// detection delay.
    pub(crate) fn peer_disconnected<R: Rng>(
        &mut self,
        peer: PI,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        let was_pending = self.pending.remove(&peer).is_some();
        if let Some(pos) = self.active.iter().position(|p| *p == peer) {
            self.active.remove(pos);
            out.push(MembershipOut::NeighborDown(
                peer,
                DisconnectReason::LinkLost,
            ));
            self.remove_passive(peer);
        } else if was_pending {
            self.remove_passive(peer);
        } else {
            return;
        }
        out.push(MembershipOut::Release(peer));
        self.repair(now, rng, out);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().min().copied();
        let contacts = if self.needs_contacts() {
            self.contacts_after
        } else {
            None
        };
        [pending, self.next_fill, self.next_shuffle, contacts]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn handle_timeout<R: Rng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        let expired: Vec<PI> = self
            .pending
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| *id)
            .collect();
        for peer in expired {
            // An unanswered request: the peer is dead, unreachable or overloaded. HyParView drops
            // such peers from the passive view.
            self.pending.remove(&peer);
            self.stats.request_timeouts += 1;
            self.remove_passive(peer);
            out.push(MembershipOut::Release(peer));
        }
        if self.next_shuffle.is_some_and(|t| t <= now) {
            self.shuffle(rng, out);
            self.schedule_shuffle(now, rng);
        }
        if self.next_fill.is_some_and(|t| t <= now) {
            self.next_fill = None;
            self.fill_one(now, rng, out);
        }
        self.repair(now, rng, out);
        // Addresses learnt of peers that never joined a view (a partition probe's target, a
        // peer that probed us) are forgotten now and then, so they cannot pile up.
        let strangers: Vec<PI> = self
            .data
            .keys()
            .filter(|p| !self.has_place(p))
            .copied()
            .collect();
        for peer in strangers {
            self.data.remove(&peer);
        }
    }

    // --- message handlers -------------------------------------------------------------------

    /// Paper: "upon Receive(JOIN, newNode): addNodeActiveView(newNode); foreach n in activeView
    /// and n != newNode: Send(FORWARDJOIN, n, newNode, ARWL)".
    ///
    /// Modification from the paper: a full contact refuses the joiner with referrals instead
    /// of evicting a neighbor (as WCF's full nodes did), and walks go to at most `join_walks`
    /// neighbors. The walks go out either way, so a refused joiner still gets offers.
    fn on_join<R: Rng>(
        &mut self,
        from: PI,
        data: Option<PeerData>,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        self.stats.joins_received += 1;
        let joiner = PeerInfo { id: from, data };
        self.learn(&joiner, out);
        let accepted = self.active.contains(&from) || self.active.len() < self.config.active_max;
        let referrals = self.referrals(from, rng);
        if accepted {
            self.add_active(from, rng, out);
        } else {
            self.stats.refusals_sent += 1;
            self.add_passive(from, rng);
        }
        out.push(MembershipOut::Send(
            from,
            MembershipMessage::JoinReply {
                accepted,
                referrals,
            },
        ));
        let mut others: Vec<PI> = self.active.iter().copied().filter(|p| *p != from).collect();
        others.shuffle(rng);
        for peer in others.into_iter().take(self.config.join_walks) {
            out.push(MembershipOut::Send(
                peer,
                MembershipMessage::ForwardJoin {
                    joiner: joiner.clone(),
                    ttl: self.config.active_walk_length,
                },
            ));
        }
    }

    /// Paper: "if timeToLive == 0 or #activeView == 1 then addNodeActiveView(newNode) else if
    /// timeToLive == PRWL then addNodePassiveView(newNode); n <- random node from activeView
    /// \ {sender}; Send(FORWARDJOIN, n, newNode, timeToLive - 1)".
    ///
    /// Modification from the paper: where the walk ends, this node offers the joiner a link
    /// (a neighbor request) rather than assuming it.
    fn on_forward_join<R: Rng>(
        &mut self,
        from: PI,
        joiner: PeerInfo<PI>,
        ttl: u16,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        if joiner.id == self.me {
            return;
        }
        // No walk goes further than ours would: a peer that asks for more (up to 65,535 hops)
        // would make one message cost the mesh that many.
        let ttl = ttl.min(self.config.active_walk_length);
        self.learn(&joiner, out);
        let next: Vec<PI> = self
            .active
            .iter()
            .copied()
            .filter(|p| *p != from && *p != joiner.id)
            .collect();
        if ttl == 0 || next.is_empty() {
            if !self.active.contains(&joiner.id) && !self.pending.contains_key(&joiner.id) {
                self.request(joiner.id, PendingKind::Neighbor, now, out);
            }
            return;
        }
        if ttl == self.config.passive_walk_length {
            self.add_passive(joiner.id, rng);
        }
        let joiner_id = joiner.id;
        if let Some(&n) = next.choose(rng) {
            out.push(MembershipOut::Send(
                n,
                MembershipMessage::ForwardJoin {
                    joiner,
                    ttl: ttl - 1,
                },
            ));
        }
        // Passed on without a place in our views: keeping its data would let a peer fill our
        // memory with walks for made-up joiners (found by fuzzing).
        self.drop_data_if_unknown(joiner_id);
    }

    /// Paper: a high-priority request is always accepted; a low-priority one only if the
    /// active view has room.
    fn on_neighbor<R: Rng>(
        &mut self,
        from: PI,
        priority: Priority,
        data: Option<PeerData>,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        self.learn(&PeerInfo { id: from, data }, out);
        let accepted = self.active.contains(&from)
            || priority == Priority::High
            || self.active.len() < self.config.active_max;
        if accepted {
            // Crossed requests (we asked them too) resolve to one link: both sides accept.
            self.pending.remove(&from);
            self.add_active(from, rng, out);
            out.push(MembershipOut::Send(
                from,
                MembershipMessage::NeighborReply {
                    accepted: true,
                    referrals: Vec::new(),
                },
            ));
        } else {
            self.stats.refusals_sent += 1;
            let referrals = self.referrals(from, rng);
            self.add_passive(from, rng);
            out.push(MembershipOut::Send(
                from,
                MembershipMessage::NeighborReply {
                    accepted: false,
                    referrals,
                },
            ));
            out.push(MembershipOut::Release(from));
        }
    }

    /// The answer to our join or neighbor request.
    fn on_reply<R: Rng>(
        &mut self,
        from: PI,
        accepted: bool,
        referrals: Vec<PeerInfo<PI>>,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        let was_pending = self.pending.remove(&from).is_some();
        let referrals: Vec<_> = referrals.into_iter().take(self.config.referrals).collect();
        for r in &referrals {
            if r.id != self.me && !self.active.contains(&r.id) {
                self.learn(r, out);
                self.add_passive(r.id, rng);
            }
        }
        if accepted {
            if self.active.contains(&from) {
                return;
            }
            if was_pending || self.active.len() < self.config.active_max {
                self.add_active(from, rng, out);
            } else {
                // A late acceptance of a request we gave up on, and no room: undo the link.
                out.push(MembershipOut::Send(
                    from,
                    MembershipMessage::Disconnect {
                        reason: DisconnectReason::Evicted,
                    },
                ));
                self.add_passive(from, rng);
                out.push(MembershipOut::Release(from));
            }
        } else {
            self.add_passive(from, rng);
            if was_pending {
                out.push(MembershipOut::Release(from));
            }
        }
        self.repair(now, rng, out);
    }

    fn on_disconnect<R: Rng>(
        &mut self,
        from: PI,
        reason: DisconnectReason,
        now: Instant,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        // A disconnect never carries `LinkLost`; a peer claiming it is treated as leaving.
        let was_pending = self.pending.remove(&from).is_some();
        let was_active = if let Some(pos) = self.active.iter().position(|p| *p == from) {
            self.active.remove(pos);
            out.push(MembershipOut::NeighborDown(from, reason));
            true
        } else {
            false
        };
        if reason.peer_stays() {
            self.add_passive(from, rng);
        } else {
            self.remove_passive(from);
        }
        if was_active || was_pending {
            out.push(MembershipOut::Release(from));
        }
        self.repair(now, rng, out);
    }

    /// Paper: "if timeToLive > 0 and #activeView > 1 then forward to a random active peer
    /// other than the sender; else reply with a passive sample of the same size and integrate
    /// the received nodes".
    fn on_shuffle<R: Rng>(
        &mut self,
        from: PI,
        origin: PeerInfo<PI>,
        ttl: u16,
        nodes: Vec<PeerInfo<PI>>,
        rng: &mut R,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        if origin.id == self.me {
            return;
        }
        // As for forward-joins: no longer walk, no larger sample than ours.
        let ttl = ttl.min(self.config.active_walk_length);
        let max_nodes = 1 + self.config.shuffle_active + self.config.shuffle_passive;
        let nodes: Vec<_> = nodes.into_iter().take(max_nodes).collect();
        let next: Vec<PI> = self
            .active
            .iter()
            .copied()
            .filter(|p| *p != from && *p != origin.id)
            .collect();
        if ttl > 1
            && let Some(&n) = next.choose(rng)
        {
            out.push(MembershipOut::Send(
                n,
                MembershipMessage::Shuffle {
                    origin,
                    ttl: ttl - 1,
                    nodes,
                },
            ));
            return;
        }
        let reply: Vec<PI> = self
            .passive
            .iter()
            .copied()
            .filter(|p| *p != origin.id)
            .collect::<Vec<_>>()
            .sample(rng, nodes.len())
            .copied()
            .collect();
        let reply_infos = reply.iter().map(|p| self.info(*p)).collect();
        self.learn(&origin, out);
        out.push(MembershipOut::Send(
            origin.id,
            MembershipMessage::ShuffleReply { nodes: reply_infos },
        ));
        let mut incoming = nodes;
        incoming.push(origin);
        self.integrate(incoming, &reply, out, rng);
    }

    // --- upkeep -----------------------------------------------------------------------------

    /// Works the active view back towards its bounds after any change.
    fn repair<R: Rng>(&mut self, now: Instant, rng: &mut R, out: &mut Vec<MembershipOut<PI>>) {
        let active = self.active.len();
        if active >= self.config.active_min {
            self.contacts_backoff = self.config.contacts_backoff_min;
            self.contacts_after = None;
        }
        if active >= self.config.active_ideal {
            self.next_fill = None;
            return;
        }
        let pending = self.pending.len();
        if active == 0 {
            // Isolated: join through passive peers. A node that was online before repairs in
            // parallel (after a mass failure most of its passive view may be dead); a new
            // node joins through one contact at a time, so as not to flood the mesh with walks.
            let parallel = if self.ever_online {
                self.config.isolated_parallel
            } else {
                1
            };
            let want = parallel.saturating_sub(pending);
            let picked = self.candidates(want, rng);
            for peer in picked {
                self.request(peer, PendingKind::Join, now, out);
            }
        } else if active < self.config.active_min {
            let want = (self.config.active_ideal - active).saturating_sub(pending);
            for peer in self.candidates(want, rng) {
                self.request(peer, PendingKind::Neighbor, now, out);
            }
        } else if self.next_fill.is_none() {
            // Between min and ideal: one low-priority request per tick, in the background.
            self.next_fill = Some(now + self.config.fill_interval);
        }
        if self.needs_contacts() {
            self.ask_contacts(now, out);
        }
    }

    fn fill_one<R: Rng>(&mut self, now: Instant, rng: &mut R, out: &mut Vec<MembershipOut<PI>>) {
        if self.active.len() >= self.config.active_ideal || !self.pending.is_empty() {
            return;
        }
        if let Some(peer) = self.candidates(1, rng).pop() {
            self.request(peer, PendingKind::Neighbor, now, out);
        }
    }

    /// Whether to ask the driver (the resolver) for contacts: below the minimum with no
    /// passive candidate left, or below the minimum after having been online.
    ///
    /// Modification from the paper (which has no resolver): a node that loses neighbors to a
    /// failure asks at once, in parallel with its passive view. After a mass failure most of
    /// the passive view is dead, and each dead candidate costs a request timeout, while the
    /// resolver knows who is alive now.
    fn needs_contacts(&self) -> bool {
        let exhausted = self.passive.iter().all(|p| self.pending.contains_key(p));
        self.active.len() < self.config.active_min
            && (self.ever_online || (exhausted && self.pending.is_empty()))
    }

    fn ask_contacts(&mut self, now: Instant, out: &mut Vec<MembershipOut<PI>>) {
        if self.contacts_after.is_some_and(|t| now < t) {
            return;
        }
        self.stats.contact_requests += 1;
        out.push(MembershipOut::WantContacts(self.config.contacts_wanted));
        self.contacts_after = Some(now + self.contacts_backoff);
        self.contacts_backoff = (self.contacts_backoff * 2).min(self.config.contacts_backoff_max);
    }

    fn schedule_shuffle<R: Rng>(&mut self, now: Instant, rng: &mut R) {
        self.next_shuffle = Some(now + jitter(self.config.shuffle_interval, rng));
    }

    /// Paper: "periodically, a node sends a SHUFFLE with itself, ka active and kp passive
    /// peers to a random neighbor, on a walk of ARWL hops".
    fn shuffle<R: Rng>(&mut self, rng: &mut R, out: &mut Vec<MembershipOut<PI>>) {
        let Some(&target) = self.active.choose(rng) else {
            return;
        };
        self.stats.shuffles += 1;
        let actives: Vec<PI> = self
            .active
            .iter()
            .copied()
            .filter(|p| *p != target)
            .collect();
        let mut nodes: Vec<PeerInfo<PI>> = actives
            .sample(rng, self.config.shuffle_active)
            .map(|p| self.info(*p))
            .collect();
        self.shuffled = self
            .passive
            .sample(rng, self.config.shuffle_passive)
            .copied()
            .collect();
        nodes.extend(self.shuffled.iter().map(|p| self.info(*p)));
        let origin = PeerInfo {
            id: self.me,
            data: self.my_data.clone(),
        };
        out.push(MembershipOut::Send(
            target,
            MembershipMessage::Shuffle {
                origin,
                ttl: self.config.active_walk_length,
                nodes,
            },
        ));
    }

    /// Adds shuffled nodes to the passive view, evicting entries from `prefer_evict` first.
    fn integrate<R: Rng>(
        &mut self,
        nodes: Vec<PeerInfo<PI>>,
        prefer_evict: &[PI],
        out: &mut Vec<MembershipOut<PI>>,
        rng: &mut R,
    ) {
        let mut evictable: Vec<PI> = prefer_evict
            .iter()
            .copied()
            .filter(|p| self.passive.contains(p))
            .collect();
        let max_nodes = 1 + self.config.shuffle_active + self.config.shuffle_passive;
        for node in nodes.into_iter().take(max_nodes) {
            if node.id == self.me
                || self.active.contains(&node.id)
                || self.passive.contains(&node.id)
            {
                continue;
            }
            if self.passive.len() >= self.config.passive_capacity
                && let Some(victim) = evictable.pop()
            {
                self.remove_passive(victim);
            }
            self.learn(&node, out);
            self.add_passive(node.id, rng);
        }
    }

    // --- views ------------------------------------------------------------------------------

    fn request(
        &mut self,
        peer: PI,
        kind: PendingKind,
        now: Instant,
        out: &mut Vec<MembershipOut<PI>>,
    ) {
        self.pending.insert(peer, now + self.config.request_timeout);
        let data = self.my_data.clone();
        let message = match kind {
            PendingKind::Join => MembershipMessage::Join { data },
            PendingKind::Neighbor => {
                let priority = if self.active.is_empty() {
                    Priority::High
                } else {
                    Priority::Low
                };
                MembershipMessage::Neighbor { priority, data }
            }
        };
        out.push(MembershipOut::Send(peer, message));
    }

    /// Passive peers we have no open request to, in random order.
    fn candidates<R: Rng>(&self, want: usize, rng: &mut R) -> Vec<PI> {
        if want == 0 {
            return Vec::new();
        }
        let free: Vec<PI> = self
            .passive
            .iter()
            .copied()
            .filter(|p| !self.pending.contains_key(p))
            .collect();
        free.sample(rng, want).copied().collect()
    }

    fn referrals<R: Rng>(&self, except: PI, rng: &mut R) -> Vec<PeerInfo<PI>> {
        let known: Vec<PI> = self
            .active
            .iter()
            .chain(self.passive.iter())
            .copied()
            .filter(|p| *p != except)
            .collect();
        known
            .sample(rng, self.config.referrals)
            .map(|p| self.info(*p))
            .collect()
    }

    /// Paper's addNodeActiveView: "if the active view is full, drop a random node from it".
    fn add_active<R: Rng>(&mut self, peer: PI, rng: &mut R, out: &mut Vec<MembershipOut<PI>>) {
        if peer == self.me || self.active.contains(&peer) {
            return;
        }
        if self.active.len() >= self.config.active_max
            && let Some(&victim) = self.active.choose(rng)
        {
            self.stats.evictions += 1;
            self.active.retain(|p| *p != victim);
            out.push(MembershipOut::Send(
                victim,
                MembershipMessage::Disconnect {
                    reason: DisconnectReason::Evicted,
                },
            ));
            out.push(MembershipOut::NeighborDown(
                victim,
                DisconnectReason::Evicted,
            ));
            out.push(MembershipOut::Release(victim));
            self.add_passive(victim, rng);
        }
        self.passive.retain(|p| *p != peer);
        self.active.push(peer);
        self.ever_online = true;
        out.push(MembershipOut::NeighborUp(peer));
    }

    fn add_passive<R: Rng>(&mut self, peer: PI, rng: &mut R) {
        if peer == self.me || self.active.contains(&peer) || self.passive.contains(&peer) {
            return;
        }
        if self.passive.len() >= self.config.passive_capacity && !self.passive.is_empty() {
            let victim = rng.random_range(0..self.passive.len());
            let removed = self.passive.swap_remove(victim);
            self.drop_data_if_unknown(removed);
        }
        self.passive.push(peer);
    }

    /// Drops a peer from the passive view, and its addressing data unless it is still known.
    fn remove_passive(&mut self, peer: PI) {
        self.passive.retain(|p| *p != peer);
        self.drop_data_if_unknown(peer);
    }

    /// Whether a peer is in a view or has a request pending: only such peers' addressing
    /// data is kept.
    fn has_place(&self, peer: &PI) -> bool {
        self.active.contains(peer) || self.passive.contains(peer) || self.pending.contains_key(peer)
    }

    fn drop_data_if_unknown(&mut self, peer: PI) {
        if !self.has_place(&peer) {
            self.data.remove(&peer);
        }
    }
}

/// `base` scaled by a random factor in [0.5, 1.5), so periodic work spreads out.
pub(crate) fn jitter<R: Rng>(base: Duration, rng: &mut R) -> Duration {
    base.mul_f64(rng.random_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn config() -> MembershipConfig {
        MembershipConfig {
            active_min: 1,
            active_ideal: 2,
            active_max: 3,
            passive_capacity: 4,
            ..Default::default()
        }
    }

    fn node(me: u32) -> Membership<u32> {
        Membership::new(me, None, config())
    }

    fn sends(out: &[MembershipOut<u32>]) -> Vec<(u32, MembershipMessage<u32>)> {
        out.iter()
            .filter_map(|o| match o {
                MembershipOut::Send(to, m) => Some((*to, m.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_node_joins_through_one_contact() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        m.join(
            vec![PeerInfo::new(2), PeerInfo::new(3)],
            now,
            &mut rng,
            &mut out,
        );
        let joins: Vec<_> = sends(&out)
            .into_iter()
            .filter(|(_, msg)| matches!(msg, MembershipMessage::Join { .. }))
            .collect();
        assert_eq!(
            joins.len(),
            1,
            "a node that was never online joins through one contact"
        );
        assert!(m.active().is_empty());
    }

    #[test]
    fn a_contact_accepts_and_walks_the_join_out() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        // Give node 1 two neighbors first.
        m.handle_message(
            2,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        m.handle_message(
            3,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        out.clear();
        m.handle_message(
            4,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        assert_eq!(m.active(), &[2, 3, 4]);
        assert!(out.contains(&MembershipOut::NeighborUp(4)));
        let s = sends(&out);
        assert!(s.iter().any(|(to, msg)| *to == 4
            && matches!(msg, MembershipMessage::JoinReply { accepted: true, .. })));
        let walks: Vec<u32> = s
            .iter()
            .filter(|(_, msg)| matches!(msg, MembershipMessage::ForwardJoin { ttl: 6, .. }))
            .map(|(to, _)| *to)
            .collect();
        assert_eq!(walks.len(), 2, "one walk per other neighbor");
        assert!(!walks.contains(&4));
    }

    #[test]
    fn a_full_contact_refuses_with_referrals() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        for p in 2..=4 {
            m.handle_message(
                p,
                MembershipMessage::Join { data: None },
                now,
                &mut rng,
                &mut out,
            );
        }
        out.clear();
        m.handle_message(
            5,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        assert_eq!(
            m.active(),
            &[2, 3, 4],
            "a full node does not evict for a join"
        );
        let reply = sends(&out).into_iter().find(|(to, _)| *to == 5).unwrap().1;
        match reply {
            MembershipMessage::JoinReply {
                accepted: false,
                referrals,
            } => {
                let ids: Vec<u32> = referrals.iter().map(|r| r.id).collect();
                assert_eq!(ids.len(), 3);
                assert!(ids.iter().all(|id| [2, 3, 4].contains(id)));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(m.passive().contains(&5), "the refused joiner is remembered");
    }

    #[test]
    fn a_high_priority_request_evicts_at_a_full_node() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        for p in 2..=4 {
            m.handle_message(
                p,
                MembershipMessage::Join { data: None },
                now,
                &mut rng,
                &mut out,
            );
        }
        out.clear();
        m.handle_message(
            9,
            MembershipMessage::Neighbor {
                priority: Priority::Low,
                data: None,
            },
            now,
            &mut rng,
            &mut out,
        );
        assert!(!m.is_active(&9), "low priority is refused when full");
        out.clear();
        m.handle_message(
            9,
            MembershipMessage::Neighbor {
                priority: Priority::High,
                data: None,
            },
            now,
            &mut rng,
            &mut out,
        );
        assert!(m.is_active(&9));
        assert_eq!(m.active().len(), 3);
        let evicted: Vec<_> = sends(&out)
            .into_iter()
            .filter(|(_, msg)| {
                *msg == MembershipMessage::Disconnect {
                    reason: DisconnectReason::Evicted,
                }
            })
            .collect();
        assert_eq!(evicted.len(), 1);
        assert!(
            m.passive().contains(&evicted[0].0),
            "the evicted peer stays in the passive view"
        );
    }

    #[test]
    fn a_lost_neighbor_is_replaced_from_the_passive_view() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        m.handle_message(
            2,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        m.add_contacts(vec![PeerInfo::new(7)], now, &mut rng, &mut out);
        out.clear();
        m.peer_disconnected(2, now, &mut rng, &mut out);
        assert!(out.contains(&MembershipOut::NeighborDown(2, DisconnectReason::LinkLost)));
        assert!(
            !m.passive().contains(&2),
            "a failed peer is not kept for repair"
        );
        let s = sends(&out);
        assert_eq!(s, vec![(7, MembershipMessage::Join { data: None })]);
        assert!(m.uses(&7));
    }

    #[test]
    fn an_unanswered_request_times_out_and_asks_for_contacts() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        m.join(vec![PeerInfo::new(2)], now, &mut rng, &mut out);
        out.clear();
        let later = now + Duration::from_secs(1);
        assert!(m.poll_timeout().unwrap() <= later);
        m.handle_timeout(later, &mut rng, &mut out);
        assert!(out.contains(&MembershipOut::Release(2)));
        assert!(m.passive().is_empty());
        assert!(out.contains(&MembershipOut::WantContacts(8)));
        assert_eq!(m.stats().request_timeouts, 1);
        // Asking again waits out the backoff.
        out.clear();
        m.handle_timeout(later, &mut rng, &mut out);
        assert!(
            !out.iter()
                .any(|o| matches!(o, MembershipOut::WantContacts(_)))
        );
    }

    #[test]
    fn forward_join_ends_with_an_offer_to_the_joiner() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        m.handle_message(
            2,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        out.clear();
        // Only one neighbor (the sender): the walk ends here.
        m.handle_message(
            2,
            MembershipMessage::ForwardJoin {
                joiner: PeerInfo::new(5),
                ttl: 4,
            },
            now,
            &mut rng,
            &mut out,
        );
        assert_eq!(
            sends(&out),
            vec![(
                5,
                MembershipMessage::Neighbor {
                    priority: Priority::Low,
                    data: None
                }
            )]
        );
        out.clear();
        m.handle_message(
            5,
            MembershipMessage::NeighborReply {
                accepted: true,
                referrals: vec![],
            },
            now,
            &mut rng,
            &mut out,
        );
        assert!(m.is_active(&5));
    }

    #[test]
    fn a_goodbye_removes_the_peer_for_good_and_an_eviction_keeps_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        m.handle_message(
            2,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        m.handle_message(
            3,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        m.handle_message(
            2,
            MembershipMessage::Disconnect {
                reason: DisconnectReason::Leaving,
            },
            now,
            &mut rng,
            &mut out,
        );
        assert!(!m.is_active(&2) && !m.passive().contains(&2));
        m.handle_message(
            3,
            MembershipMessage::Disconnect {
                reason: DisconnectReason::Evicted,
            },
            now,
            &mut rng,
            &mut out,
        );
        assert!(!m.is_active(&3) && m.passive().contains(&3));
    }

    #[test]
    fn shuffles_walk_and_the_end_replies_to_the_origin() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        m.handle_message(
            2,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        m.add_contacts(vec![PeerInfo::new(8)], now, &mut rng, &mut out);
        out.clear();
        let nodes = vec![PeerInfo::new(20), PeerInfo::new(21)];
        m.handle_message(
            2,
            MembershipMessage::Shuffle {
                origin: PeerInfo::new(10),
                ttl: 3,
                nodes,
            },
            now,
            &mut rng,
            &mut out,
        );
        // The only neighbor is the sender, so the walk ends here.
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 10);
        assert!(matches!(&s[0].1, MembershipMessage::ShuffleReply { nodes } if nodes.len() == 1));
        for p in [10, 20, 21] {
            assert!(m.passive().contains(&p), "{p} joins the passive view");
        }
    }

    #[test]
    fn the_passive_view_is_bounded() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        m.handle_message(
            2,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        m.handle_message(
            3,
            MembershipMessage::Join { data: None },
            now,
            &mut rng,
            &mut out,
        );
        let contacts = (10..30).map(PeerInfo::new).collect();
        m.add_contacts(contacts, now, &mut rng, &mut out);
        assert_eq!(m.passive().len(), 4);
    }
    #[test]
    fn walks_go_no_further_than_ours() {
        // Found by the `state_machine` fuzz target: a walk asked for 65,535 hops went on that far.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        for peer in [2, 3] {
            let join = MembershipMessage::Join { data: None };
            m.handle_message(peer, join, now, &mut rng, &mut out);
        }
        out.clear();
        let walks = [
            MembershipMessage::ForwardJoin {
                joiner: PeerInfo::new(9),
                ttl: u16::MAX,
            },
            MembershipMessage::Shuffle {
                origin: PeerInfo::new(10),
                ttl: u16::MAX,
                nodes: vec![],
            },
        ];
        for walk in walks {
            m.handle_message(2, walk, now, &mut rng, &mut out);
        }
        let longest = m.config.active_walk_length - 1;
        let s = sends(&out);
        assert_eq!(s.len(), 2, "{s:?}");
        for (to, msg) in s {
            assert_eq!(to, 3);
            assert!(
                matches!(
                    msg,
                    MembershipMessage::ForwardJoin { ttl, .. } | MembershipMessage::Shuffle { ttl, .. }
                        if ttl == longest
                ),
                "{msg:?}"
            );
        }
    }

    #[test]
    fn addresses_of_peers_in_no_view_are_not_kept() {
        // Found while fuzzing: every forward-join passed on left its joiner's data behind.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let mut m = node(1);
        let mut out = Vec::new();
        for peer in [2, 3] {
            let join = MembershipMessage::Join { data: None };
            m.handle_message(peer, join, now, &mut rng, &mut out);
        }
        for joiner in 100..1100 {
            let joiner = PeerInfo {
                id: joiner,
                data: PeerData::new(vec![1; 100]),
            };
            let walk = MembershipMessage::ForwardJoin { joiner, ttl: 6 };
            m.handle_message(2, walk, now, &mut rng, &mut out);
        }
        assert_eq!(m.data.len(), 0, "{:?}", m.data.keys().collect::<Vec<_>>());
        // Data learnt outside any walk (a partition probe's target) goes at the next timer.
        let stranger = PeerInfo {
            id: 50,
            data: PeerData::new(vec![2; 10]),
        };
        m.learn(&stranger, &mut out);
        m.handle_timeout(now, &mut rng, &mut out);
        assert!(!m.data.contains_key(&50));
    }
}
