//! Message dissemination, after Plumtree (Leitão, Pereira, Rodrigues: *Epidemic Broadcast
//! Trees*, SRDS 2007), with a plain flood mode beside it.
//!
//! Every neighbor is either **eager** (messages are pushed to it in full) or **lazy** (only
//! their ids are announced, batched). All links start eager. A node that receives a message
//! twice prunes the later link to lazy, so the eager links settle into a spanning tree made of
//! the links that delivered first: the tree follows the fastest paths. A node that hears of a
//! message only lazily waits a little, then grafts the announcing link back into the tree and
//! fetches the message over it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

#[cfg(test)]
use crate::cache::STALE_WINDOW;
use crate::cache::{HopCounts, SeenCache, Store, seq_block, stale_below};
use crate::config::{BroadcastConfig, BroadcastMode};
use crate::id::{MessageId, PeerIdentity};
use crate::idmap::IdMap;
use crate::message::{
    Announced, AnnouncedRun, Announcement, BroadcastMessage, Gossip, GossipKind, RecentId,
};

/// A leaving node re-sends its own messages younger than this to every neighbor: longer than
/// a dead link takes to be noticed (3 s) plus a graft timeout.
pub const FAREWELL_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// At most this many messages are re-sent on leaving.
pub const FAREWELL_MESSAGES: usize = 64;

/// How fast the memory of a slow tree fades (see `Broadcast::graft_wait`).
pub const LAG_HALF_LIFE: std::time::Duration = std::time::Duration::from_secs(10);

/// Grafted messages remembered to learn the tree's lag from their late eager copies.
const MAX_GRAFTED: usize = 4096;

/// Grafts sent and not yet answered, at most; further grafts wait for answers (see
/// `Broadcast::graft_due`).
pub const MAX_GRAFTS_IN_FLIGHT: usize = 64;

/// A lazy neighbor that keeps sending full copies of messages we have is sent a prune again,
/// at most this often (see `Broadcast::on_gossip`).
pub const PRUNE_REPEAT: std::time::Duration = std::time::Duration::from_millis(250);

/// Origins whose progress is followed (see [`Broadcast::graft_due`]); the longest silent are
/// forgotten first.
const MAX_ORIGINS_FOLLOWED: usize = 1024;

/// The longest a graft waits, however slow the tree has been.
pub const MAX_GRAFT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often one neighbor's [`BroadcastMessage::Resume`] of one origin is answered at most: a
/// resume costs up to the whole store, and an honest node asks once per break of its tree.
pub const RESUME_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// (Neighbor, origin) pairs whose resume was answered within [`RESUME_INTERVAL`], at most;
/// further resumes wait until older pairs are out of it.
const MAX_RESUMES_ANSWERED: usize = 1024;

/// The most messages one [`BroadcastMessage::Fetch`] asks for or is answered with: a run of
/// missing messages up to this long is asked for at once; a run's answer goes out as the
/// asker's link takes it (the runtime never waits for room for answers).
pub const MAX_FETCH_RUN: u16 = 256;

/// How many recent beacons are remembered.
const BEACON_HISTORY: usize = 8;

/// The most message ids awaited at once from lazy announcements; beyond it new announcements
/// are ignored until some resolve. Bounds what a peer can make a node remember: 272 bytes
/// each with [`MAX_ANNOUNCERS`], and for ids scattered at random a block of the index each
/// (112 bytes, in a table up to twice that size), so 32 MiB per mesh at worst (17 MiB for ids
/// numbered one after another).
///
/// Under load, announcements run ahead of the eager copies by the queues along the tree
/// (seconds at saturation), and each message is awaited that long: measured with
/// `peerchannel-bench --pause-one 10`, 16,384 overflowed at 7,000 msg/s and the messages whose
/// announcements were ignored were lost wherever the eager copy then did not come.
pub const MAX_MISSING: usize = 65_536;

/// Announcers remembered per awaited message: whom to graft, in order, if earlier ones fail.
pub const MAX_ANNOUNCERS: usize = 4;

/// `want`, but at least `floor` and at most [`MAX_GRAFT_WAIT`] (or `floor`, if longer).
fn bounded_wait(floor: std::time::Duration, want: std::time::Duration) -> std::time::Duration {
    want.max(floor).min(MAX_GRAFT_WAIT.max(floor))
}

/// A stored message sent again to `to`, one link further.
fn resend<PI: Copy>(to: PI, mut stored: Gossip<PI>) -> BroadcastOut<PI> {
    stored.hops = stored.hops.saturating_add(1);
    BroadcastOut::Send(to, BroadcastMessage::Gossip(stored))
}

/// What a propagation filter decides for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Propagation {
    /// Deliver to the application and pass it on (the default).
    DeliverAndForward,
    /// Deliver, but do not pass it on.
    DeliverOnly,
    /// Pass it on without delivering it here.
    ForwardOnly,
    /// Neither; the message still counts as seen.
    Neither,
    /// The message is invalid (for example a bad signature): not delivered, not passed on, and
    /// not remembered as seen, so that a genuine copy with the same id can still arrive.
    Reject,
}

impl Propagation {
    fn delivers(self) -> bool {
        matches!(self, Self::DeliverAndForward | Self::DeliverOnly)
    }

    fn forwards(self) -> bool {
        matches!(self, Self::DeliverAndForward | Self::ForwardOnly)
    }
}

/// A message handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<PI> {
    /// Origin and sequence number.
    pub id: MessageId<PI>,
    /// The neighbor it arrived from.
    pub from: PI,
    /// Links it travelled.
    pub hops: u16,
    /// The application payload.
    pub payload: Bytes,
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastStats {
    /// Messages originated here.
    pub originated: u64,
    /// Distinct messages received from neighbors.
    pub received: u64,
    /// Copies received of messages already seen.
    pub duplicates: u64,
    /// Messages a filter rejected as invalid.
    pub rejected: u64,
    /// Full messages sent (eager pushes and graft answers).
    pub gossip_sent: u64,
    /// Ids announced lazily.
    pub ihave_sent: u64,
    /// Bytes of lazy announcements sent (ids, hop counts, grouped by origin as encoded).
    pub ihave_bytes: u64,
    /// Grafts sent.
    pub grafts_sent: u64,
    /// Prunes sent.
    pub prunes_sent: u64,
    /// Announcements ignored because too many were awaited or a batch was too long.
    pub announcements_dropped: u64,
    /// Times a due graft waited because [`MAX_GRAFTS_IN_FLIGHT`] were unanswered.
    pub grafts_deferred: u64,
    /// Announced messages given up on: every announcer was asked and none sent it, or, while
    /// the stores are full (judged by this node's), it was first announced longer ago than
    /// they keep messages or is further behind its origin's flow than they hold messages. An
    /// eager copy may still come after.
    pub lost: u64,
    /// Resumes sent (also counted in `grafts_sent`): the tree stopped bringing an origin's
    /// messages, and a neighbor was asked for all of them from the first one missing.
    pub resumes_sent: u64,
    /// Stored messages sent answering neighbors' resumes (also counted in `gossip_sent`).
    pub resumed: u64,
    /// Messages neighbors asked for (grafts and fetches) that were no longer stored: the
    /// store had moved past them before the ask came (see `BroadcastConfig::store_bytes`).
    pub unanswerable: u64,
    /// Announced messages ignored as stale: at or below the highest sequence number of their
    /// origin this node's duplicate cache has forgotten (see
    /// `BroadcastConfig::seen_capacity`): seen and forgotten, most likely.
    pub stale_ignored: u64,
}

/// What the broadcast layer asks of its surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BroadcastOut<PI> {
    Send(PI, BroadcastMessage<PI>),
    Deliver(Delivery<PI>),
}

/// A tree rebuild under way (see [`GossipKind::Beacon`]).
#[derive(Debug)]
struct Rebuild<PI> {
    /// The beacon driving it; when beacons cross, the highest id wins everywhere.
    beacon: MessageId<PI>,
    /// Where the beacon first came from (`None` at its origin).
    parent: Option<PI>,
    /// Links that stay eager: children that named us their parent, and links that had to turn
    /// eager meanwhile (grafts, new neighbors).
    keep: BTreeSet<PI>,
    /// When the new tree takes over.
    switch_at: Instant,
}

#[derive(Debug)]
struct Missing<PI> {
    /// Who announced it, with their hop count, oldest first (held inline: one of these is
    /// made for most messages under load, when announcements overtake the eager copies).
    announcers: SmallVec<[(PI, u16, bool); MAX_ANNOUNCERS]>,
    /// The pending graft timer, if any: of this id's entries in `graft_timers`, the one that
    /// counts.
    timer: Option<Instant>,
    /// When the first announcement came.
    first_at: Instant,
    /// The peer we grafted it from, if we did: a copy from that peer is the graft's answer and
    /// says nothing about the tree's lag; a copy from anyone else is the late eager copy.
    grafted_from: Option<PI>,
    /// Whether that request was a [`BroadcastMessage::Fetch`] (the tree left as it is) rather
    /// than a graft.
    fetched: bool,
}

/// A [`BroadcastMessage::Resume`] sent: later messages of its origin are its answer's to bring.
#[derive(Debug, Clone, Copy)]
struct Resuming<PI> {
    /// The neighbor asked.
    peer: PI,
    /// The first sequence number asked for.
    from: u64,
    /// Until when later missing messages of the origin wait for the answer.
    until: Instant,
}

/// How late eager copies have lately come after their first announcement: a maximum that
/// halves every [`LAG_HALF_LIFE`] unless a new sample renews it.
#[derive(Debug, Default)]
struct Lag {
    value: std::time::Duration,
    at: Option<Instant>,
}

impl Lag {
    fn current(&self, now: Instant) -> std::time::Duration {
        let Some(at) = self.at else {
            return std::time::Duration::ZERO;
        };
        let halvings =
            now.saturating_duration_since(at).as_secs_f64() / LAG_HALF_LIFE.as_secs_f64();
        self.value.mul_f64(0.5f64.powf(halvings))
    }

    fn sample(&mut self, lag: std::time::Duration, now: Instant) {
        self.value = self.current(now).max(lag);
        self.at = Some(now);
    }
}

/// Plumtree state of one node in one mesh.
#[derive(Debug)]
pub(crate) struct Broadcast<PI> {
    me: PI,
    config: BroadcastConfig,
    eager: BTreeSet<PI>,
    lazy: BTreeSet<PI>,
    seen: SeenCache<PI>,
    /// Hop-limited messages passed on, with the fewest hops a copy of each arrived with.
    hop_counts: HopCounts<PI>,
    store: Store<PI>,
    /// Messages announced and not received yet. Nothing depends on its order.
    missing: IdMap<PI, Missing<PI>>,
    /// Entries of `missing` grafted and not yet answered.
    grafts_in_flight: usize,
    graft_timers: BTreeMap<Instant, Vec<MessageId<PI>>>,
    /// Messages fetched because of a catch-up announcement: passed on lazily only.
    caught_up: BTreeSet<MessageId<PI>>,
    lazy_queue: BTreeMap<PI, Vec<Announcement<PI>>>,
    flush_at: Option<Instant>,
    next_seq: u64,
    /// The newest beacons seen, oldest first.
    beacons: VecDeque<(Instant, MessageId<PI>)>,
    rebuild: Option<Rebuild<PI>>,
    lag: Lag,
    /// Messages we got by grafting, with when they were first announced: the late eager copy's
    /// arrival is a lag sample. Bounded by [`MAX_GRAFTED`].
    grafted: BTreeMap<MessageId<PI>, Instant>,
    /// Right after a switch to a rebuilt tree, until this instant, messages sent before the
    /// switch still arrive over old and new links: their duplicates prune nothing.
    settling_until: Option<Instant>,
    /// When each neighbor was last sent a prune.
    pruned_at: BTreeMap<PI, Instant>,
    /// Per origin, the highest sequence number received and when it last rose. Bounded by
    /// [`MAX_ORIGINS_FOLLOWED`].
    progress: BTreeMap<PI, (u64, Instant)>,
    /// Per origin, the resume sent for it last (at most one per origin followed).
    resuming: HashMap<PI, Resuming<PI>>,
    /// When each (neighbor, origin) resume was last answered. Bounded by
    /// [`MAX_RESUMES_ANSWERED`].
    resumes_answered: HashMap<(PI, PI), Instant>,
    stats: BroadcastStats,
}

impl<PI: PeerIdentity> Broadcast<PI> {
    pub(crate) fn new(me: PI, first_seq: u64, config: BroadcastConfig) -> Self {
        Self {
            me,
            seen: SeenCache::new(config.seen_retention, config.seen_capacity),
            hop_counts: HopCounts::new(config.seen_retention, config.seen_capacity),
            store: Store::new(config.store_retention, config.store_bytes),
            config,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            missing: IdMap::new(),
            grafts_in_flight: 0,
            graft_timers: BTreeMap::new(),
            caught_up: BTreeSet::new(),
            lazy_queue: BTreeMap::new(),
            flush_at: None,
            next_seq: first_seq,
            beacons: VecDeque::new(),
            rebuild: None,
            lag: Lag::default(),
            grafted: BTreeMap::new(),
            settling_until: None,
            pruned_at: BTreeMap::new(),
            progress: BTreeMap::new(),
            resuming: HashMap::new(),
            resumes_answered: HashMap::new(),
            stats: BroadcastStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> &BroadcastStats {
        &self.stats
    }

    pub(crate) fn eager_peers(&self) -> &BTreeSet<PI> {
        &self.eager
    }

    pub(crate) fn awaited_len(&self) -> usize {
        self.missing.len()
    }

    pub(crate) fn grafts_in_flight(&self) -> usize {
        debug_assert_eq!(
            self.grafts_in_flight,
            self.missing
                .values()
                .filter(|m| m.grafted_from.is_some())
                .count(),
            "the count of grafts in flight drifted"
        );
        self.grafts_in_flight
    }

    pub(crate) fn seen_len(&self) -> usize {
        self.seen.len()
    }

    pub(crate) fn store_bytes(&self) -> usize {
        self.store.bytes()
    }

    #[cfg(test)]
    pub(crate) fn has_seen(&self, id: &MessageId<PI>) -> bool {
        self.seen.contains(id)
    }

    /// Whether a beacon reached this node. Recent beacons are remembered beyond the duplicate
    /// cache, so that two groups that split long ago can still tell they are apart.
    pub(crate) fn has_seen_beacon(&self, id: &MessageId<PI>) -> bool {
        self.beacons.iter().any(|(_, b)| b == id) || self.seen.contains(id)
    }

    /// The newest beacon this node has seen that is at least `grace` old, with its age.
    pub(crate) fn latest_beacon(
        &self,
        now: Instant,
        grace: std::time::Duration,
    ) -> Option<RecentId<PI>> {
        self.beacons.iter().rev().find_map(|&(at, id)| {
            let age = now.saturating_duration_since(at);
            (age >= grace).then(|| RecentId {
                id,
                age_ms: u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
            })
        })
    }

    /// Takes the id for the next message from this node.
    pub(crate) fn reserve_id(&mut self) -> MessageId<PI> {
        let id = MessageId {
            origin: self.me,
            seq: self.next_seq,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        id
    }

    /// When a new beacon last passed through this node (received or originated).
    pub(crate) fn last_beacon(&self) -> Option<Instant> {
        self.beacons.back().map(|(at, _)| *at)
    }

    fn note_beacon(&mut self, id: MessageId<PI>, now: Instant) {
        if self.beacons.len() >= BEACON_HISTORY {
            self.beacons.pop_front();
        }
        self.beacons.push_back((now, id));
    }

    /// Sends a new message from this node under an id from [`Self::reserve_id`]. The origin
    /// does not deliver its own message.
    pub(crate) fn broadcast(
        &mut self,
        id: MessageId<PI>,
        payload: Bytes,
        hop_limit: Option<u16>,
        kind: GossipKind,
        now: Instant,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        self.stats.originated += 1;
        if kind == GossipKind::Beacon {
            self.note_beacon(id, now);
            self.follow_beacon(id, None, now, out);
        }
        if kind == GossipKind::App
            && self.config.mode == BroadcastMode::Plumtree
            && self.eager.is_empty()
        {
            // Cut off from the tree (its tree links went down): announcing lazily would make
            // every neighbor wait a graft timeout, and the message would be lost if this node
            // left meanwhile. Start from the paper's initial state instead: every link eager.
            // The receivers make the link eager too, and duplicates prune it back to a tree.
            let lazy: Vec<PI> = self.lazy.iter().copied().collect();
            for peer in lazy {
                self.make_eager(peer);
            }
        }
        self.seen.insert(id, now);
        // Stored with hop count 0: a graft answer adds one, like any forward.
        let gossip = Gossip {
            id,
            hops: 0,
            hop_limit,
            kind,
            payload,
        };
        self.forward(&gossip, None, false, now, out);
        // Beacons are flooded, never grafted or caught up: only application messages are kept.
        if hop_limit.is_none() && kind == GossipKind::App {
            self.store.insert(&gossip, now);
        }
    }

    /// Paper, "upon Receive(GOSSIP)": deliver and forward a new message, prune the sender of a
    /// duplicate.
    pub(crate) fn on_gossip(
        &mut self,
        from: PI,
        gossip: Gossip<PI>,
        now: Instant,
        filter: &mut dyn FnMut(&Gossip<PI>, &PI) -> Propagation,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        if self.seen.contains(&gossip.id) || gossip.id.origin == self.me {
            self.stats.duplicates += 1;
            if let Some(first_at) = self.grafted.remove(&gossip.id) {
                // The eager copy of a message we grafted, arriving late: the tree's lag. It
                // says the tree is slow, not that the link is redundant: no prune.
                self.lag
                    .sample(now.saturating_duration_since(first_at), now);
                if gossip.hop_limit.is_none() {
                    return;
                }
            }
            if gossip.hop_limit.is_some() {
                self.on_closer_copy(from, &gossip, now, out);
                return;
            }
            // Beacons flood on purpose: their duplicates say nothing about the tree.
            if self.config.mode == BroadcastMode::Plumtree
                && gossip.hop_limit.is_none()
                && gossip.kind == GossipKind::App
                && !self.is_settling(now)
            {
                // Paper: "eagerPushPeers <- eagerPushPeers \ {sender}; lazyPushPeers <-
                // lazyPushPeers U {sender}; Send(PRUNE, sender)".
                //
                // Modification: the paper prunes on every duplicate; we prune an eager sender
                // at once, and a sender already lazy here again only every PRUNE_REPEAT. Copies
                // pushed before our first prune arrived keep coming for a while and need no
                // answer each; but a lazy sender still pushing after that has the link eager
                // at its end (the two ends' views crossed, say a graft and a prune on the
                // way at once), and without a new prune it would push duplicates for good
                // (measured with `peerchannel-bench`: RMR 0.65 with one prune per 80
                // duplicates).
                let was_eager = self.eager.remove(&from);
                let repeat = self.lazy.contains(&from)
                    && self
                        .pruned_at
                        .get(&from)
                        .is_none_or(|at| now.saturating_duration_since(*at) >= PRUNE_REPEAT);
                if was_eager || repeat {
                    self.lazy.insert(from);
                    self.pruned_at.insert(from, now);
                    self.stats.prunes_sent += 1;
                    out.push(BroadcastOut::Send(from, BroadcastMessage::Prune));
                }
            }
            return;
        }
        let decision = if gossip.kind == GossipKind::App {
            filter(&gossip, &from)
        } else {
            Propagation::DeliverAndForward
        };
        if decision == Propagation::Reject {
            self.stats.rejected += 1;
            return;
        }
        self.seen.insert(gossip.id, now);
        if gossip.kind == GossipKind::App {
            self.note_progress(gossip.id, now);
        }
        self.stats.received += 1;
        tracing::trace!(id = ?gossip.id, from = ?from, hops = gossip.hops, "gossip: new");
        if gossip.kind == GossipKind::Beacon {
            self.note_beacon(gossip.id, now);
            self.follow_beacon(gossip.id, Some(from), now, out);
        }
        let announced = self.forget_missing(&gossip.id);
        if let Some(m) = &announced {
            if m.grafted_from != Some(from) {
                self.lag
                    .sample(now.saturating_duration_since(m.first_at), now);
            } else {
                // Answered by the graft: the eager copy, when it comes as a duplicate, tells how
                // late the tree is.
                self.note_grafted(gossip.id, m.first_at);
            }
        }
        let caught_up = self.caught_up.remove(&gossip.id);
        if gossip.kind == GossipKind::App && decision.delivers() {
            out.push(BroadcastOut::Deliver(Delivery {
                id: gossip.id,
                from,
                hops: gossip.hops,
                payload: gossip.payload.clone(),
            }));
        }
        if gossip.hop_limit.is_some() && decision.forwards() {
            self.hop_counts.lower(gossip.id, gossip.hops, now);
        }
        let within_limit = gossip.hop_limit.is_none_or(|limit| gossip.hops < limit);
        if decision.forwards() && within_limit {
            self.forward(&gossip, Some(from), caught_up, now, out);
            if gossip.hop_limit.is_none() && gossip.kind == GossipKind::App {
                self.store.insert(&gossip, now);
            }
        }
        if self.config.mode == BroadcastMode::Plumtree
            && gossip.hop_limit.is_none()
            && gossip.kind == GossipKind::App
        {
            // Paper: "eagerPushPeers <- eagerPushPeers U {sender}" (if it is a neighbor);
            // not for the answer to a fetch, which leaves the tree alone.
            let fetched = announced
                .as_ref()
                .is_some_and(|m| m.fetched && m.grafted_from == Some(from));
            if self.lazy.contains(&from) && !fetched {
                self.make_eager(from);
            }
            if let Some(missing) = announced {
                self.optimize(from, gossip.hops, missing, out);
            }
        }
    }

    /// A copy of a hop-limited message we already have.
    ///
    /// Addition to the paper: hop-limited messages are flooded, and the first copy to arrive
    /// may have come the long way round (two short links beat one long one), with less of its
    /// limit left than a later copy. A copy that has travelled fewer links than any before it
    /// is passed on again (not delivered again), so every node within the limit gets the
    /// message whichever copy wins the race.
    fn on_closer_copy(
        &mut self,
        from: PI,
        gossip: &Gossip<PI>,
        now: Instant,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        // Only messages this node passed on (the filter allowed it) are remembered.
        if !self.hop_counts.contains(&gossip.id)
            || !self.hop_counts.lower(gossip.id, gossip.hops, now)
        {
            return;
        }
        if gossip.hop_limit.is_some_and(|limit| gossip.hops < limit) {
            self.forward(gossip, Some(from), false, now, out);
        }
    }

    /// Paper's optimisation: "if a lazy announcement offers the message in far fewer hops than
    /// the eager copy took, graft the announcer and prune the eager sender".
    fn optimize(
        &mut self,
        eager_sender: PI,
        hops: u16,
        missing: Missing<PI>,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        let best = missing
            .announcers
            .iter()
            .filter(|(p, _, catch_up)| !catch_up && self.lazy.contains(p))
            .min_by_key(|(_, h, _)| *h)
            .copied();
        if let Some((announcer, announced_hops, _)) = best {
            self.swap_parent(eager_sender, hops, announcer, announced_hops, out);
        }
    }

    /// Swaps the tree link `parent` (over which a message came in `hops` hops) for the lazy
    /// link `announcer` (which had it at `announced_hops`) if that saves at least the
    /// optimisation threshold. The eager links stay a tree and no message moves.
    fn swap_parent(
        &mut self,
        parent: PI,
        hops: u16,
        announcer: PI,
        announced_hops: u16,
        out: &mut Vec<BroadcastOut<PI>>,
    ) -> bool {
        let Some(threshold) = self.config.optimization_threshold else {
            return false;
        };
        let saved = hops.saturating_sub(announced_hops.saturating_add(1));
        if saved < threshold || !self.lazy.contains(&announcer) || !self.eager.contains(&parent) {
            return false;
        }
        self.lazy.remove(&announcer);
        self.eager.insert(announcer);
        self.stats.grafts_sent += 1;
        out.push(BroadcastOut::Send(
            announcer,
            BroadcastMessage::Graft { id: None },
        ));
        self.eager.remove(&parent);
        self.lazy.insert(parent);
        self.stats.prunes_sent += 1;
        out.push(BroadcastOut::Send(parent, BroadcastMessage::Prune));
        true
    }

    fn note_progress(&mut self, id: MessageId<PI>, now: Instant) {
        match self.progress.get_mut(&id.origin) {
            Some((seq, rose)) => {
                if id.seq > *seq {
                    *seq = id.seq;
                    *rose = now;
                }
            }
            None => {
                if self.progress.len() >= MAX_ORIGINS_FOLLOWED
                    && let Some(stalest) = self
                        .progress
                        .iter()
                        .min_by_key(|(_, (_, rose))| *rose)
                        .map(|(origin, _)| *origin)
                {
                    self.progress.remove(&stalest);
                }
                self.progress.insert(id.origin, (id.seq, now));
            }
        }
    }

    /// How many messages from `id` on are missing in a row (at most [`MAX_FETCH_RUN`]); those
    /// after `id` not asked for yet wait until `until` for the answer to `id`'s request.
    fn await_run(&mut self, id: MessageId<PI>, until: Instant) -> u16 {
        let mut count = 1;
        while count < MAX_FETCH_RUN {
            let Some(seq) = id.seq.checked_add(count.into()) else {
                break;
            };
            let next = MessageId { seq, ..id };
            let Some(missing) = self.missing.get_mut(&next) else {
                break;
            };
            if missing.grafted_from.is_none() {
                // Its earlier timer stays where it is, and finds nothing to do when it fires.
                missing.timer = Some(until);
                self.arm(until, next);
            }
            count += 1;
        }
        count
    }

    /// Remembers a resume sent, one per origin followed.
    fn note_resume(&mut self, from: MessageId<PI>, peer: PI, until: Instant) {
        if self.resuming.len() >= MAX_ORIGINS_FOLLOWED
            && !self.resuming.contains_key(&from.origin)
            && let Some(oldest) = self
                .resuming
                .iter()
                .min_by_key(|(origin, r)| (r.until, **origin))
                .map(|(origin, _)| *origin)
        {
            self.resuming.remove(&oldest);
        }
        let resuming = Resuming {
            peer,
            from: from.seq,
            until,
        };
        self.resuming.insert(from.origin, resuming);
    }

    /// Stops awaiting a missing message, counted in [`BroadcastStats::lost`].
    fn give_up(&mut self, id: &MessageId<PI>) {
        self.stats.lost += 1;
        self.forget_missing(id);
        self.caught_up.remove(id);
    }

    /// Removes a missing message, keeping the count of grafts in flight.
    fn forget_missing(&mut self, id: &MessageId<PI>) -> Option<Missing<PI>> {
        let missing = self.missing.remove(id)?;
        if missing.grafted_from.is_some() {
            self.grafts_in_flight -= 1;
        }
        Some(missing)
    }

    /// Sets a graft timer. Timers are kept per instant (the ids of a batch of announcements
    /// share one), so arming one compares instants, not 40-byte ids. Timers are never taken
    /// back: one whose message came meanwhile, or that was set again for another instant
    /// (`Missing::timer` says which one counts), fires and finds nothing to do.
    fn arm(&mut self, at: Instant, id: MessageId<PI>) {
        self.graft_timers.entry(at).or_default().push(id);
    }

    fn note_grafted(&mut self, id: MessageId<PI>, first_at: Instant) {
        if self.grafted.len() >= MAX_GRAFTED {
            self.grafted.pop_first();
        }
        self.grafted.insert(id, first_at);
    }

    /// How long to wait for a message after its first announcement before grafting it.
    ///
    /// Modification from the paper (a fixed timeout): at least `graft_timeout_1`, and twice
    /// the lag lately seen between an announcement and the eager copy, up to
    /// [`MAX_GRAFT_WAIT`]. Under load, announcements overtake the eager copies waiting in
    /// queues along the tree; a fixed timeout then grafts nearly every message, and each
    /// graft's duplicate re-cuts the tree (measured with `peerchannel-bench`: 0.9-1.4 grafts
    /// and RMR 0.97 per delivery at saturation).
    ///
    /// Addition: never longer than half of how far back this node's store reaches while it is
    /// full (the neighbors', with the same traffic, reach as far), unless that is shorter than
    /// `graft_timeout_1`: a graft sent after the neighbors forgot the message is lost for
    /// sure, where one sent while the eager copy is merely late costs a duplicate. Measured
    /// with `peerchannel-bench --secs 1 --pause-one 10 --pause-rate 10000` (2026-12-07): the
    /// lag learnt at saturation (halving every 10 s) made the children of the paused node
    /// wait 0.5 s and more for the messages it stopped passing on, longer than the 0.4 s the
    /// stores hold at 10,000 messages/s, and every child lost the same run of them.
    fn graft_wait(&self, now: Instant) -> std::time::Duration {
        let wait = bounded_wait(self.config.graft_timeout_1, self.lag.current(now) * 2);
        match self.store.horizon(now) {
            Some(horizon) => wait.min((horizon / 2).max(self.config.graft_timeout_1)),
            None => wait,
        }
    }

    /// Paper, "upon Receive(IHAVE)": note who has a message we lack and start a graft timer.
    pub(crate) fn on_ihave(&mut self, from: PI, batch: Vec<Announced<PI>>, now: Instant) {
        let count = batch
            .iter()
            .fold(0usize, |sum, group| sum.saturating_add(group.len()));
        tracing::trace!(from = ?from, count, "ihave");
        // Groups and runs count too, each on its own (a batch the sender cut at the limit has
        // as many of each as ids at most): a batch of empty ones is as long as it looks.
        let runs = batch
            .iter()
            .fold(0usize, |sum, group| sum.saturating_add(group.runs.len()));
        if count.max(batch.len()).max(runs) > self.config.max_ihave_batch {
            // What a peer claims, counted without overflowing.
            self.stats.announcements_dropped = self
                .stats
                .announcements_dropped
                .saturating_add(count as u64);
            return;
        }
        let wait = self.graft_wait(now);
        for group in &batch {
            // This node's own messages are never missing here, even once they have left the
            // duplicate cache (a neighbor back from a stall announces what it stored).
            if group.origin == self.me {
                continue;
            }
            let floor = self.seen.floor(&group.origin, now);
            // Most announced ids were seen already: looked up a block of 64 at a time.
            let mut seen_block: Option<(u64, u64)> = None;
            for run in &group.runs {
                for seq in run.seqs() {
                    let (block, bit) = seq_block(seq);
                    let seen = match seen_block {
                        Some((at, bits)) if at == block => bits,
                        _ => {
                            let bits = self.seen.block(&group.origin, block);
                            seen_block = Some((block, bits));
                            bits
                        }
                    };
                    if seen & bit != 0 {
                        continue;
                    }
                    let id = MessageId {
                        origin: group.origin,
                        seq,
                    };
                    self.await_announced(from, id, run, floor, wait, now);
                }
            }
        }
    }

    /// Notes that `from` announced `id` (in `run`), which this node has not seen.
    fn await_announced(
        &mut self,
        from: PI,
        id: MessageId<PI>,
        run: &AnnouncedRun,
        floor: Option<u64>,
        wait: std::time::Duration,
        now: Instant,
    ) {
        // An id already awaited is not stale: one more announcer for it.
        if stale_below(floor, id.seq) && !self.missing.contains(&id) {
            self.stats.stale_ignored += 1;
            return;
        }
        let entry = if self.missing.len() >= MAX_MISSING {
            self.missing.get_mut(&id)
        } else {
            self.missing.get_or_insert_with(id, || Missing {
                announcers: SmallVec::new(),
                timer: None,
                first_at: now,
                grafted_from: None,
                fetched: false,
            })
        };
        let Some(entry) = entry else {
            self.stats.announcements_dropped += 1;
            return;
        };
        if entry.announcers.len() < MAX_ANNOUNCERS {
            entry.announcers.push((from, run.hops, run.catch_up));
        }
        if entry.timer.is_none() {
            // A catch-up announcement is for a message sent before the link came up, not one
            // still on its way down the tree: no reason to wait long for it.
            let wait = if run.catch_up {
                self.config.graft_timeout_2
            } else {
                wait
            };
            let at = now + wait;
            entry.timer = Some(at);
            self.arm(at, id);
        }
    }

    /// Paper, "upon Receive(GRAFT)": make the link eager and send the message if we have it.
    pub(crate) fn on_graft(
        &mut self,
        from: PI,
        id: Option<MessageId<PI>>,
        is_neighbor: bool,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        if is_neighbor {
            self.make_eager(from);
        }
        if let Some(id) = id {
            self.answer(from, id, 1, out);
        }
    }

    /// Sends stored messages to a neighbor that asked for them (graft or fetch): `count` of
    /// `id`'s origin from `id` on, at most [`MAX_FETCH_RUN`]. A message no longer kept gets no
    /// answer: the asker tries its next announcer when its timer runs out.
    pub(crate) fn answer(
        &mut self,
        from: PI,
        id: MessageId<PI>,
        count: u16,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        let seqs = (0..count.min(MAX_FETCH_RUN)).map_while(|i| id.seq.checked_add(i.into()));
        for seq in seqs {
            let Some(stored) = self.store.get(&MessageId { seq, ..id }) else {
                self.stats.unanswerable += 1;
                continue;
            };
            self.stats.gossip_sent += 1;
            out.push(resend(from, stored));
        }
    }

    /// A neighbor's [`BroadcastMessage::Resume`]: the link turns eager, as for a graft, and
    /// every stored message of the origin from `from` on goes to it, oldest first, ahead of
    /// whatever is pushed to it next. A neighbor asking again for the same origin within
    /// [`RESUME_INTERVAL`] gets nothing: each answer may be the whole store.
    pub(crate) fn on_resume(
        &mut self,
        peer: PI,
        from: MessageId<PI>,
        is_neighbor: bool,
        now: Instant,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        if !is_neighbor {
            return;
        }
        self.make_eager(peer);
        let recent = |at: &Instant| now.saturating_duration_since(*at) < RESUME_INTERVAL;
        if self.resumes_answered.len() >= MAX_RESUMES_ANSWERED {
            self.resumes_answered.retain(|_, at| recent(at));
        }
        let key = (peer, from.origin);
        if self.resumes_answered.get(&key).is_some_and(recent)
            || (!self.resumes_answered.contains_key(&key)
                && self.resumes_answered.len() >= MAX_RESUMES_ANSWERED)
        {
            return;
        }
        self.resumes_answered.insert(key, now);
        for stored in self.store.since(from) {
            self.stats.gossip_sent += 1;
            self.stats.resumed += 1;
            out.push(resend(peer, stored));
        }
    }

    /// Paper, "upon Receive(PRUNE)".
    pub(crate) fn on_prune(&mut self, from: PI) {
        if self.eager.remove(&from) {
            self.lazy.insert(from);
        }
    }

    /// A neighbor can no longer keep up: stop pushing to it eagerly.
    pub(crate) fn demote(&mut self, peer: PI, out: &mut Vec<BroadcastOut<PI>>) {
        if self.eager.remove(&peer) {
            self.lazy.insert(peer);
            self.stats.prunes_sent += 1;
            out.push(BroadcastOut::Send(peer, BroadcastMessage::Prune));
        }
    }

    /// Paper, "upon NeighborUp": the new link starts eager.
    ///
    /// Modification from the paper: only a node that is not in the tree yet (no eager link)
    /// starts the link eager, and asks the other side to do the same with a graft. A node
    /// already in the tree starts it lazy. A link between two tree nodes then adds no cycle, so
    /// the next message does not re-cut the tree around its own sender (which, repeated for
    /// every repair, left the tree far slower for everyone); beacons rebuild the tree as a
    /// whole instead.
    ///
    /// Addition to the paper: the link also gets a catch-up announcement of our most recent
    /// messages, so a late joiner, or a node that was cut off, can fetch what it missed.
    pub(crate) fn neighbor_up(
        &mut self,
        peer: PI,
        catch_up: usize,
        window: std::time::Duration,
        now: Instant,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        if self.eager.contains(&peer) || self.lazy.contains(&peer) {
            return;
        }
        if self.eager.is_empty() || self.config.mode == BroadcastMode::Flood {
            self.make_eager(peer);
            if self.config.mode == BroadcastMode::Plumtree {
                out.push(BroadcastOut::Send(
                    peer,
                    BroadcastMessage::Graft { id: None },
                ));
            }
        } else {
            self.lazy.insert(peer);
        }
        if catch_up == 0 {
            return;
        }
        let announcements: Vec<_> = self
            .store
            // The peer's own messages are no news to it: they take no place in the batch.
            .recent(now, window, catch_up, |g| g.id.origin != peer)
            .into_iter()
            .map(|g| Announcement {
                id: g.id,
                hops: g.hops,
                catch_up: true,
            })
            .collect();
        if !announcements.is_empty() {
            tracing::trace!(to = ?peer, count = announcements.len(), "catch-up announced");
            self.queue_lazy(peer, announcements, now);
        }
    }

    /// On leaving: the messages this node sent in the last [`FAREWELL_WINDOW`], in full, to
    /// every neighbor.
    ///
    /// Addition to the paper: Plumtree counts on the origin staying to answer grafts. A node
    /// that leaves right after sending (a chat's "goodbye") may have pushed its message into a
    /// link that died without notice yet, and its announcements would be answered by no one.
    /// Duplicates at the receivers are dropped; this costs a few copies once per leave.
    pub(crate) fn farewell(&mut self, now: Instant, out: &mut Vec<BroadcastOut<PI>>) {
        let me = self.me;
        let own: Vec<Gossip<PI>> = self
            .store
            .recent(now, FAREWELL_WINDOW, FAREWELL_MESSAGES, |g| {
                g.id.origin == me
            })
            .into_iter()
            .map(|stored| self.store.copy_out(stored))
            .collect();
        let peers: Vec<PI> = self.eager.iter().chain(self.lazy.iter()).copied().collect();
        for gossip in own {
            let next = Gossip {
                hops: gossip.hops.saturating_add(1),
                ..gossip
            };
            for peer in &peers {
                self.stats.gossip_sent += 1;
                out.push(BroadcastOut::Send(
                    *peer,
                    BroadcastMessage::Gossip(next.clone()),
                ));
            }
        }
    }

    /// Paper, "upon NeighborDown".
    pub(crate) fn neighbor_down(&mut self, peer: PI) {
        self.eager.remove(&peer);
        self.lazy.remove(&peer);
        self.lazy_queue.remove(&peer);
        self.pruned_at.remove(&peer);
        self.resuming.retain(|_, r| r.peer != peer);
        if let Some(r) = &mut self.rebuild {
            r.keep.remove(&peer);
            if r.parent == Some(peer) {
                r.parent = None;
            }
        }
    }

    /// A neighbor names us its parent in a beacon's tree.
    pub(crate) fn on_parent(&mut self, from: PI, beacon: MessageId<PI>, is_neighbor: bool) {
        if !is_neighbor {
            return;
        }
        match &mut self.rebuild {
            // During the rebuild, only note it: messages keep using the old tree.
            Some(r) if r.beacon == beacon => {
                r.keep.insert(from);
            }
            // A late notice (or for another beacon): the peer counts on this link being eager.
            _ => self.make_eager(from),
        }
    }

    /// Turns a link eager now, and keeps it eager through a rebuild under way.
    fn make_eager(&mut self, peer: PI) {
        self.lazy.remove(&peer);
        self.eager.insert(peer);
        if let Some(r) = &mut self.rebuild {
            r.keep.insert(peer);
        }
    }

    /// Starts following a beacon's tree, unless a rebuild for a higher beacon is under way
    /// (when beacons cross, every node follows the highest, so all build the same tree).
    fn follow_beacon(
        &mut self,
        beacon: MessageId<PI>,
        parent: Option<PI>,
        now: Instant,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        if self.config.mode != BroadcastMode::Plumtree {
            return;
        }
        if self.rebuild.as_ref().is_some_and(|r| r.beacon >= beacon) {
            return;
        }
        self.rebuild = Some(Rebuild {
            beacon,
            parent,
            keep: BTreeSet::new(),
            switch_at: now + self.config.rebuild_delay,
        });
        if let Some(parent) = parent {
            out.push(BroadcastOut::Send(
                parent,
                BroadcastMessage::Parent { beacon },
            ));
        }
    }

    fn is_settling(&self, now: Instant) -> bool {
        self.settling_until.is_some_and(|until| now < until)
    }

    /// The new tree takes over: the parent and the kept links are eager, the rest lazy. Each
    /// link that changes is announced to the other side (a prune or a graft), so both ends of
    /// every link agree even where the two sides' views of the rebuild differed.
    fn switch_tree(&mut self, now: Instant, out: &mut Vec<BroadcastOut<PI>>) {
        let Some(r) = self.rebuild.take() else {
            return;
        };
        let keep: BTreeSet<PI> = r.keep.into_iter().chain(r.parent).collect();
        let all: BTreeSet<PI> = self.eager.iter().chain(self.lazy.iter()).copied().collect();
        if all.is_empty() || keep.is_disjoint(&all) {
            // The beacon's flood did not reach us properly; keep the tree we have.
            return;
        }
        let (eager, lazy): (BTreeSet<PI>, BTreeSet<PI>) =
            all.into_iter().partition(|p| keep.contains(p));
        for p in self.eager.difference(&eager) {
            self.stats.prunes_sent += 1;
            out.push(BroadcastOut::Send(*p, BroadcastMessage::Prune));
        }
        for p in eager.difference(&self.eager) {
            out.push(BroadcastOut::Send(*p, BroadcastMessage::Graft { id: None }));
        }
        self.settling_until = Some(now + self.config.rebuild_delay);
        self.eager = eager;
        self.lazy = lazy;
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let graft = self.graft_timers.first_key_value().map(|(at, _)| *at);
        let switch = self.rebuild.as_ref().map(|r| r.switch_at);
        [graft, self.flush_at, switch].into_iter().flatten().min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<BroadcastOut<PI>>) {
        while let Some(timers) = self.graft_timers.first_entry() {
            if *timers.key() > now {
                break;
            }
            let (at, mut ids) = timers.remove_entry();
            // In the order of the ids, each once: as an ordered set of (time, id) had them.
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                self.graft_due(id, at, now, out);
            }
        }
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_at = None;
            self.flush(out);
        }
        if self.rebuild.as_ref().is_some_and(|r| r.switch_at <= now) {
            self.switch_tree(now, out);
        }
        self.seen.expire(now);
        self.hop_counts.expire(now);
        self.store.expire(now);
    }

    /// Paper, "upon Timer(mID)": graft the first announcer; try the next one after a shorter
    /// timeout if the message still does not come.
    ///
    /// Addition to the paper: at most [`MAX_GRAFTS_IN_FLIGHT`] grafts wait for an answer at
    /// once; a first graft beyond them waits and tries again, like a sender waiting for room
    /// in its window (each wait half as long as the message has waited, at least
    /// `graft_timeout_2`). Under load the eager copies are merely late, and an
    /// unbounded number of grafts adds a second copy of each message to links already full,
    /// which makes them later still: measured with `peerchannel-bench` at saturation, runs
    /// fell into such storms (0.5-1.6 grafts per delivery, RMR 1.2-1.6). When a parent is
    /// really gone, answers come back at the speed of the new link, and so do the grafts.
    /// Retries of grafts already in flight are never held back, so a dead announcer cannot
    /// block the window; an unanswered graft is retried with the next announcer after
    /// `graft_timeout_2`, longer while the tree is slow, up to [`MAX_GRAFT_WAIT`]. A message
    /// no announcer sent is given up and counted in [`BroadcastStats::lost`].
    fn graft_due(
        &mut self,
        id: MessageId<PI>,
        at: Instant,
        now: Instant,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        let window_full = self.grafts_in_flight >= MAX_GRAFTS_IN_FLIGHT;
        let Some(missing) = self.missing.get_mut(&id) else {
            return;
        };
        if missing.timer != Some(at) {
            return;
        }
        missing.timer = None;
        if self.seen.contains(&id) {
            self.forget_missing(&id);
            return;
        }
        // The highest sequence number the tree brought lately from this origin, if it is
        // still bringing its messages.
        let flowing = self
            .progress
            .get(&id.origin)
            .filter(|(_, rose)| now.saturating_duration_since(*rose) < self.config.graft_timeout_1)
            .map(|(seq, _)| *seq);
        // ... just not this one yet: each link is in order, so the copy is most likely queued
        // behind the ones arriving.
        let behind = flowing.is_some_and(|seq| seq < id.seq);
        let waited = now.saturating_duration_since(missing.first_at);
        // A resume of an earlier message of the origin is on its way: its answer brings this
        // one too.
        let resumed = flowing.is_none()
            && self.resuming.get(&id.origin).is_some_and(|r| {
                r.from < id.seq
                    && now < r.until
                    && (self.eager.contains(&r.peer) || self.lazy.contains(&r.peer))
            });
        if missing.grafted_from.is_none()
            && (window_full || resumed || (behind && waited < MAX_GRAFT_WAIT))
        {
            // Each wait half as long as the message has waited so far: under load tens of
            // thousands of announced ids wait at once, and re-arming each every
            // `graft_timeout_2` took a third of the CPU of the bench's pause phase (64 million
            // deferrals in 30 s over nine nodes).
            let next = now.max(at) + bounded_wait(self.config.graft_timeout_2, waited / 2);
            missing.timer = Some(next);
            self.arm(next, id);
            self.stats.grafts_deferred += 1;
            return;
        }
        // Addition to the paper: a message first announced longer ago than the stores keep
        // messages is given up, not asked for again: no neighbor has it any more. Asked for
        // anyway (from each announcer in turn, a wait apart), such messages filled the window
        // of grafts in flight for as long as the stall that caused them lasted, and the
        // messages missing meanwhile waited behind them until they were lost too (measured
        // with `peerchannel-bench --secs 1 --pause-one 10 --pause-rate 10000`: nodes kept
        // 64 hopeless grafts in flight for 13 s, and lost a tenth of what was sent).
        // How long the neighbors' stores keep messages is judged by this node's (see
        // `graft_wait`), and taken as at least two first waits; how many, by how many it
        // holds (of every origin: more than the origin's share).
        let kept = self.store.horizon(now).map(|horizon| {
            let kept_for = horizon.max(self.config.graft_timeout_1 * 2);
            (kept_for, self.store.len() as u64)
        });
        // A message further behind its origin's flow than the stores hold messages is as
        // gone, however recently announced: a node back from a stall reads announcements
        // queued for it during the stall, of messages long forgotten everywhere.
        let gone = kept.is_some_and(|(kept_for, held)| {
            waited > kept_for || flowing.is_some_and(|high| high.saturating_sub(id.seq) > held)
        });
        if gone {
            self.give_up(&id);
            return;
        }
        // Announcers that are no longer neighbors cannot be grafted.
        let announcer = loop {
            let next = (!missing.announcers.is_empty()).then(|| missing.announcers.remove(0));
            match next {
                Some((peer, _, catch_up))
                    if self.eager.contains(&peer) || self.lazy.contains(&peer) =>
                {
                    break Some((peer, catch_up));
                }
                Some(_) => continue,
                None => break None,
            }
        };
        let Some((peer, catch_up)) = announcer else {
            self.give_up(&id);
            return;
        };
        if missing.grafted_from.replace(peer).is_none() {
            self.grafts_in_flight += 1;
        }
        // Addition to the paper: while the tree still brings the origin's messages, a missing
        // one is a hole (a copy dropped or overtaken on the way), not a broken link: fetch it
        // and leave the tree alone. Grafting every hole turned each announcer asked into an
        // eager link, and the mesh into a flood, after a neighbor stalled (measured with
        // `peerchannel-bench --pause-one 10`: as many duplicates as deliveries).
        let progressing = flowing.is_some();
        missing.fetched = progressing;
        let next = at + bounded_wait(self.config.graft_timeout_2, self.lag.current(at));
        missing.timer = Some(next);
        self.arm(next, id);
        // Addition to the paper: the messages right after a hole are often missing too (a
        // tree change leaves a run of them between what the old parent sent and what the new
        // one starts with): fetch the run at once and let its members wait for the answer.
        // One by one, a run of hundreds took seconds under load, behind the window of grafts.
        let count = if progressing {
            self.await_run(id, next)
        } else {
            1
        };
        if catch_up {
            self.caught_up.insert(id);
        }
        self.stats.grafts_sent += 1;
        // Addition to the paper: when the tree stopped bringing the origin altogether and
        // nothing of it past this message has come, the messages after it are missing too
        // (a parent that stalled or left): ask for them all at once, as one stream the asked
        // neighbor sends in order (as far as its queue to us takes them; the rest are then
        // fetched in runs, see `await_run`). Grafted one by one, a gap of
        // thousands under load took longer than the stores keep them (measured with
        // `peerchannel-bench --pause-one 10`: a third to two thirds of the messages sent
        // during the pause never reached the paused node's children).
        let resume = !progressing
            && self
                .progress
                .get(&id.origin)
                .is_none_or(|(seq, _)| *seq < id.seq);
        tracing::trace!(id = ?id, to = ?peer, catch_up, fetch = progressing, resume, "graft");
        let request = if progressing {
            BroadcastMessage::Fetch { id, count }
        } else if resume {
            self.make_eager(peer);
            self.stats.resumes_sent += 1;
            self.note_resume(id, peer, next);
            BroadcastMessage::Resume { from: id }
        } else {
            self.make_eager(peer);
            BroadcastMessage::Graft { id: Some(id) }
        };
        out.push(BroadcastOut::Send(peer, request));
    }

    /// Pushes a message on: in full to eager peers (every neighbor when flooding or
    /// hop-limited), as an id to lazy peers.
    fn forward(
        &mut self,
        gossip: &Gossip<PI>,
        except: Option<PI>,
        lazy_only: bool,
        now: Instant,
        out: &mut Vec<BroadcastOut<PI>>,
    ) {
        // Beacons are flooded: the flood and the prunes it causes rebuild the tree.
        let flood = self.config.mode == BroadcastMode::Flood
            || gossip.hop_limit.is_some()
            || gossip.kind == GossipKind::Beacon;
        let mut next = gossip.clone();
        next.hops = gossip.hops.saturating_add(1);
        // Who gets the message in full, who only its id (no list of peers is built: this runs
        // for every message).
        let both = [&self.eager, &self.lazy];
        let (push, announce): (&[_], &[_]) = if flood {
            (&both, &[])
        } else if lazy_only {
            (&[], &both)
        } else {
            (&both[..1], &both[1..])
        };
        for peer in push
            .iter()
            .flat_map(|set| set.iter())
            .filter(|p| Some(**p) != except)
        {
            self.stats.gossip_sent += 1;
            out.push(BroadcastOut::Send(
                *peer,
                BroadcastMessage::Gossip(next.clone()),
            ));
        }
        let a = Announcement {
            id: gossip.id,
            hops: gossip.hops,
            catch_up: false,
        };
        for peer in announce
            .iter()
            .flat_map(|set| set.iter())
            .filter(|p| Some(**p) != except)
        {
            self.lazy_queue.entry(*peer).or_default().push(a.clone());
        }
        self.schedule_flush(now);
    }

    fn queue_lazy(&mut self, peer: PI, announcements: Vec<Announcement<PI>>, now: Instant) {
        self.lazy_queue
            .entry(peer)
            .or_default()
            .extend(announcements);
        self.schedule_flush(now);
    }

    /// Announcements wait `ihave_delay` to be batched, counted from the first one queued.
    fn schedule_flush(&mut self, now: Instant) {
        if self.flush_at.is_none() && self.lazy_queue.values().any(|q| !q.is_empty()) {
            self.flush_at = Some(now + self.config.ihave_delay);
        }
    }

    fn flush(&mut self, out: &mut Vec<BroadcastOut<PI>>) {
        // The queues are emptied, not dropped: each keeps its room for the next batch (a
        // neighbor's entry goes when the neighbor does).
        for (peer, announcements) in &mut self.lazy_queue {
            for chunk in announcements.chunks(self.config.max_ihave_batch.max(1)) {
                let batch = Announced::group(chunk);
                self.stats.ihave_sent += chunk.len() as u64;
                // Sizing cannot fail for these types; an error would only leave the count low.
                self.stats.ihave_bytes +=
                    postcard::experimental::serialized_size(&batch).unwrap_or(0) as u64;
                out.push(BroadcastOut::Send(*peer, BroadcastMessage::IHave(batch)));
            }
            announcements.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pass(_: &Gossip<u32>, _: &u32) -> Propagation {
        Propagation::DeliverAndForward
    }

    /// A node whose links are all eager, as after a beacon.
    fn tree(me: u32, peers: &[u32]) -> Broadcast<u32> {
        tree_with(me, peers, BroadcastConfig::default())
    }

    /// [`tree`] with its own settings.
    fn tree_with(me: u32, peers: &[u32], config: BroadcastConfig) -> Broadcast<u32> {
        let mut b = Broadcast::new(me, 0, config);
        for p in peers {
            b.neighbor_up(*p, 0, Duration::ZERO, Instant::now(), &mut Vec::new());
        }
        let lazy = std::mem::take(&mut b.lazy);
        b.eager.extend(lazy);
        b
    }

    /// A lazy push of one message, as a neighbor sends it.
    fn ihave(id: MessageId<u32>, hops: u16) -> Vec<Announced<u32>> {
        Announced::group(&[Announcement {
            id,
            hops,
            catch_up: false,
        }])
    }

    /// Node 1, all links eager, which has received and stored messages 0 to 4 of origin 9
    /// from 2; with what that sent.
    fn storing_five(now: Instant) -> (Broadcast<u32>, Vec<BroadcastOut<u32>>) {
        let mut b = tree(1, &[2, 3]);
        let mut out = Vec::new();
        for seq in 0..5 {
            b.on_gossip(2, gossip(9, seq, 1), now, &mut pass, &mut out);
        }
        (b, out)
    }

    /// Node 1, with 2 eager and 3 lazy, which 3 has just told of `id`.
    fn announced(id: MessageId<u32>, now: Instant) -> Broadcast<u32> {
        let mut b = tree(1, &[2, 3]);
        b.on_prune(3);
        b.on_ihave(3, ihave(id, 2), now);
        b
    }

    /// Whether `o` asks 3 for a message (graft, fetch or resume).
    fn asks_3(o: &BroadcastOut<u32>) -> bool {
        matches!(
            o,
            BroadcastOut::Send(
                3,
                BroadcastMessage::Graft { id: Some(_) }
                    | BroadcastMessage::Fetch { .. }
                    | BroadcastMessage::Resume { .. }
            )
        )
    }

    fn gossip(origin: u32, seq: u64, hops: u16) -> Gossip<u32> {
        Gossip {
            id: MessageId { origin, seq },
            hops,
            hop_limit: None,
            kind: GossipKind::App,
            payload: Bytes::from_static(b"hi"),
        }
    }

    #[test]
    fn the_first_copy_is_delivered_and_pushed_to_the_other_eager_peers() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3, 4]);
        let mut out = Vec::new();
        b.on_gossip(2, gossip(9, 0, 1), now, &mut pass, &mut out);
        assert_eq!(
            out[0],
            BroadcastOut::Deliver(Delivery {
                id: MessageId { origin: 9, seq: 0 },
                from: 2,
                hops: 1,
                payload: Bytes::from_static(b"hi"),
            })
        );
        let pushed: Vec<_> = out[1..]
            .iter()
            .map(|o| match o {
                BroadcastOut::Send(to, BroadcastMessage::Gossip(g)) => (*to, g.hops),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(pushed, vec![(3, 2), (4, 2)]);
    }

    #[test]
    fn a_duplicate_prunes_its_sender_to_lazy() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        let mut out = Vec::new();
        b.on_gossip(2, gossip(9, 0, 1), now, &mut pass, &mut out);
        out.clear();
        b.on_gossip(3, gossip(9, 0, 2), now, &mut pass, &mut out);
        assert_eq!(out, vec![BroadcastOut::Send(3, BroadcastMessage::Prune)]);
        assert_eq!(b.eager_peers().iter().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(b.stats().duplicates, 1);
        // The next message goes to 3 only as an announcement, after the batching delay.
        out.clear();
        b.on_gossip(2, gossip(9, 1, 1), now, &mut pass, &mut out);
        assert!(out.iter().all(|o| !matches!(o, BroadcastOut::Send(3, _))));
        assert_eq!(b.poll_timeout(), Some(now + Duration::from_millis(5)));
        out.clear();
        b.handle_timeout(now + Duration::from_millis(5), &mut out);
        assert_eq!(
            out,
            vec![BroadcastOut::Send(
                3,
                BroadcastMessage::IHave(Announced::group(&[Announcement {
                    id: MessageId { origin: 9, seq: 1 },
                    hops: 1,
                    catch_up: false
                }]))
            )]
        );
    }

    #[test]
    fn a_lazy_neighbor_still_pushing_is_pruned_again_now_and_then() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        let mut out = Vec::new();
        b.on_gossip(2, gossip(9, 0, 1), now, &mut pass, &mut out);
        b.on_gossip(3, gossip(9, 0, 2), now, &mut pass, &mut out);
        out.clear();
        let prunes = |out: &mut Vec<BroadcastOut<u32>>| {
            let n = out
                .iter()
                .filter(|o| matches!(o, BroadcastOut::Send(3, BroadcastMessage::Prune)))
                .count();
            out.clear();
            n
        };
        // Copies 3 pushed before it got our prune: no prune for each.
        for seq in 1..10 {
            b.on_gossip(2, gossip(9, seq, 1), now, &mut pass, &mut out);
            b.on_gossip(3, gossip(9, seq, 2), now, &mut pass, &mut out);
        }
        assert_eq!(prunes(&mut out), 0);
        // Still pushing later: its end of the link is eager, so it is told again, once.
        let later = now + PRUNE_REPEAT;
        for seq in 10..20 {
            b.on_gossip(2, gossip(9, seq, 1), later, &mut pass, &mut out);
            b.on_gossip(3, gossip(9, seq, 2), later, &mut pass, &mut out);
        }
        assert_eq!(prunes(&mut out), 1);
        assert!(!b.eager_peers().contains(&3));
    }

    #[test]
    fn a_missing_message_is_grafted_after_the_timeout_and_its_late_copy_prunes_nothing() {
        let now = Instant::now();
        let id = MessageId { origin: 9, seq: 0 };
        let mut b = announced(id, now);
        let mut out = Vec::new();
        // A later message of the origin came, and nothing since: a hole in a quiet origin.
        b.on_gossip(2, gossip(9, 1, 1), now, &mut pass, &mut out);
        b.handle_timeout(now + Duration::from_millis(299), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
        out.clear();
        b.handle_timeout(now + Duration::from_millis(300), &mut out);
        assert_eq!(
            out,
            vec![BroadcastOut::Send(
                3,
                BroadcastMessage::Graft { id: Some(id) }
            )]
        );
        assert!(
            b.eager_peers().contains(&3),
            "grafting makes the link eager again"
        );
        out.clear();
        b.on_gossip(3, gossip(9, 0, 2), now, &mut pass, &mut out);
        out.clear();
        // The old parent was slow, not redundant: its late copy is no reason to cut it.
        b.on_gossip(
            2,
            gossip(9, 0, 1),
            now + Duration::from_millis(50),
            &mut pass,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        assert!(b.eager_peers().contains(&2));
        assert_eq!(b.stats().duplicates, 1);
        assert_eq!(b.stats().resumes_sent, 0);
    }

    #[test]
    fn no_more_grafts_in_flight_than_the_window() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        let mut out = Vec::new();
        b.on_prune(3);
        let extra = 10;
        // One message of each of many origins, so that each is asked for on its own (here
        // with a resume each, since nothing of their origins came yet).
        let announcements: Vec<_> = (0..(MAX_GRAFTS_IN_FLIGHT + extra) as u32)
            .map(|origin| Announcement {
                id: MessageId {
                    origin: 100 + origin,
                    seq: 0,
                },
                hops: 2,
                catch_up: false,
            })
            .collect();
        b.on_ihave(3, Announced::group(&announcements), now);
        let grafts = |out: &mut Vec<BroadcastOut<u32>>| -> Vec<u32> {
            let ids = out
                .iter()
                .filter(|o| asks_3(o))
                .filter_map(|o| match o {
                    BroadcastOut::Send(_, BroadcastMessage::Resume { from }) => {
                        Some(from.origin - 100)
                    }
                    _ => None,
                })
                .collect();
            out.clear();
            ids
        };
        let t1 = now + Duration::from_millis(300);
        b.handle_timeout(t1, &mut out);
        assert_eq!(grafts(&mut out).len(), MAX_GRAFTS_IN_FLIGHT);
        assert_eq!(b.stats().grafts_deferred, extra as u64);

        // Answers free the window: the waiting grafts go out on a later turn.
        for origin in 0..extra as u32 {
            b.on_gossip(3, gossip(100 + origin, 0, 3), t1, &mut pass, &mut out);
        }
        out.clear();
        b.handle_timeout(t1 + b.config.graft_timeout_2, &mut out);
        let mut sent = grafts(&mut out);
        sent.sort_unstable();
        let retried: Vec<u32> = (extra as u32..MAX_GRAFTS_IN_FLIGHT as u32).collect();
        let waited: Vec<u32> =
            (MAX_GRAFTS_IN_FLIGHT as u32..(MAX_GRAFTS_IN_FLIGHT + extra) as u32).collect();
        assert!(
            waited.iter().all(|seq| sent.contains(seq)),
            "the deferred grafts are sent once answers free the window: {sent:?}"
        );
        assert!(
            retried.iter().all(|seq| !sent.contains(seq)),
            "unanswered grafts have no other announcer to retry: {sent:?}"
        );
        assert_eq!(
            b.grafts_in_flight, extra,
            "only the deferred grafts await answers"
        );
    }

    #[test]
    fn no_graft_while_the_tree_is_still_bringing_the_origins_earlier_messages() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let id = MessageId { origin: 9, seq: 5 };
        let mut b = announced(id, t0);
        let mut out = Vec::new();
        // The eager parent is behind but moving: its copies of 1..=3 keep coming.
        for (seq, at) in [(1, 100), (2, 250), (3, 290)] {
            b.on_gossip(2, gossip(9, seq, 1), t0 + ms(at), &mut pass, &mut out);
        }
        out.clear();
        let is_resume = |o: &BroadcastOut<u32>| matches!(o, BroadcastOut::Send(3, BroadcastMessage::Resume { from }) if *from == id);
        for at in [300, 500] {
            b.handle_timeout(t0 + ms(at), &mut out);
            assert!(!out.iter().any(asks_3), "asked at {at} ms: {out:?}");
        }
        assert_eq!(b.stats().grafts_deferred, 2);
        // The parent goes quiet: the graft goes out at the first look after its last copy is
        // a timeout old (the looks come farther apart as the message waits: 300, 500, 750
        // ms), as a resume (nothing of the origin after it has come).
        b.handle_timeout(t0 + ms(749), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
        b.handle_timeout(t0 + ms(750), &mut out);
        assert!(out.iter().any(is_resume), "{out:?}");
    }

    #[test]
    fn a_message_that_arrives_in_time_cancels_the_graft() {
        let now = Instant::now();
        let mut b = announced(MessageId { origin: 9, seq: 0 }, now);
        let mut out = Vec::new();
        b.on_gossip(2, gossip(9, 0, 3), now, &mut pass, &mut out);
        out.clear();
        b.handle_timeout(now + Duration::from_secs(1), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
    }

    #[test]
    fn a_graft_is_answered_from_the_store() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        let mut out = Vec::new();
        b.on_gossip(2, gossip(9, 0, 1), now, &mut pass, &mut out);
        out.clear();
        b.on_graft(3, Some(MessageId { origin: 9, seq: 0 }), true, &mut out);
        assert_eq!(
            out,
            vec![BroadcastOut::Send(
                3,
                BroadcastMessage::Gossip(gossip(9, 0, 2))
            )]
        );
    }

    #[test]
    fn a_stalled_origin_is_resumed_with_one_request_and_its_gap_streams_in() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = tree(1, &[2, 3]);
        b.on_prune(3);
        let mut out = Vec::new();
        for seq in 0..3 {
            b.on_gossip(2, gossip(9, seq, 1), t0, &mut pass, &mut out);
        }
        // The parent stalls; the lazy neighbor tells of everything after.
        let gap: Vec<_> = (3..20)
            .map(|seq| Announcement {
                id: MessageId { origin: 9, seq },
                hops: 2,
                catch_up: false,
            })
            .collect();
        b.on_ihave(3, Announced::group(&gap), t0 + ms(10));
        out.clear();
        b.handle_timeout(t0 + ms(310), &mut out);
        let asked: Vec<_> = out.iter().filter(|o| asks_3(o)).collect();
        assert_eq!(
            asked,
            vec![&BroadcastOut::Send(
                3,
                BroadcastMessage::Resume {
                    from: MessageId { origin: 9, seq: 3 }
                }
            )],
            "one request for the whole gap"
        );
        assert!(b.eager_peers().contains(&3), "a resume is a graft");
        assert_eq!(b.stats().resumes_sent, 1);
        assert_eq!(b.stats().grafts_deferred, 16);
        // The answer streams in, in order: the rest wait behind it and nobody else is asked.
        out.clear();
        for seq in 3..10 {
            b.on_gossip(3, gossip(9, seq, 3), t0 + ms(350), &mut pass, &mut out);
        }
        b.handle_timeout(t0 + ms(510), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
        for seq in 10..20 {
            b.on_gossip(3, gossip(9, seq, 3), t0 + ms(520), &mut pass, &mut out);
        }
        assert_eq!(b.awaited_len(), 0);
        assert_eq!(b.stats().received, 20);
        assert_eq!(b.stats().grafts_sent, 1);
    }

    #[test]
    fn a_resume_is_answered_with_the_stored_gap_in_order_once_per_interval() {
        let now = Instant::now();
        let (mut b, mut out) = storing_five(now);
        b.on_gossip(2, gossip(7, 0, 1), now, &mut pass, &mut out);
        b.on_prune(3);
        out.clear();
        let from = MessageId { origin: 9, seq: 2 };
        let gap: Vec<_> = (2..5)
            .map(|seq| BroadcastOut::Send(3, BroadcastMessage::Gossip(gossip(9, seq, 2))))
            .collect();
        b.on_resume(3, from, true, now, &mut out);
        assert_eq!(
            out, gap,
            "the origin's messages from the one asked, in order"
        );
        assert!(b.eager_peers().contains(&3));
        assert_eq!(b.stats().resumed, 3);
        out.clear();
        b.on_resume(3, from, true, now + RESUME_INTERVAL / 2, &mut out);
        assert!(out.is_empty(), "asked again too soon: {out:?}");
        b.on_resume(3, from, true, now + RESUME_INTERVAL, &mut out);
        assert_eq!(out, gap);
        out.clear();
        b.on_resume(4, from, false, now, &mut out);
        assert!(out.is_empty(), "only neighbors are answered: {out:?}");
        assert!(!b.eager_peers().contains(&4));
    }

    #[test]
    fn a_run_of_holes_is_fetched_with_one_request() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        b.on_prune(3);
        let run: Vec<_> = (0..5)
            .map(|seq| Announcement {
                id: MessageId { origin: 9, seq },
                hops: 2,
                catch_up: false,
            })
            .collect();
        b.on_ihave(3, Announced::group(&run), now);
        let mut out = Vec::new();
        // The tree brings the origin again, from a later message on.
        let due = now + Duration::from_millis(300);
        b.on_gossip(2, gossip(9, 10, 1), due, &mut pass, &mut out);
        out.clear();
        b.handle_timeout(due, &mut out);
        let fetch = BroadcastMessage::Fetch {
            id: MessageId { origin: 9, seq: 0 },
            count: 5,
        };
        assert_eq!(
            out.iter().filter(|o| asks_3(o)).collect::<Vec<_>>(),
            vec![&BroadcastOut::Send(3, fetch)]
        );
        // The run's other members wait for the answer instead of asking on their own.
        out.clear();
        b.handle_timeout(due + Duration::from_millis(199), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
        for seq in 0..5 {
            b.on_gossip(3, gossip(9, seq, 2), due, &mut pass, &mut out);
        }
        assert_eq!(b.awaited_len(), 0);
        assert_eq!(b.stats().grafts_sent, 1);
    }

    #[test]
    fn a_fetch_is_answered_with_the_run_it_asks_for_within_the_cap() {
        let now = Instant::now();
        let (mut b, mut out) = storing_five(now);
        out.clear();
        b.answer(3, MessageId { origin: 9, seq: 1 }, 3, &mut out);
        let seqs = |out: &[BroadcastOut<u32>]| -> Vec<u64> {
            out.iter()
                .filter_map(|o| match o {
                    BroadcastOut::Send(3, BroadcastMessage::Gossip(g)) => Some(g.id.seq),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(seqs(&out), vec![1, 2, 3]);
        out.clear();
        b.answer(3, MessageId { origin: 9, seq: 3 }, u16::MAX, &mut out);
        assert_eq!(seqs(&out), vec![3, 4], "only what is kept");
        out.clear();
        // Sequence numbers at the end of the range end the run; nothing wraps.
        b.answer(
            3,
            MessageId {
                origin: 9,
                seq: u64::MAX,
            },
            5,
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_message_no_announcer_can_send_is_given_up_and_counted_lost() {
        let now = Instant::now();
        let id = MessageId { origin: 9, seq: 0 };
        let mut b = announced(id, now);
        let mut out = Vec::new();
        b.neighbor_down(3);
        b.handle_timeout(now + Duration::from_millis(300), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
        assert_eq!(b.stats().lost, 1);
        assert_eq!(b.awaited_len(), 0);
        assert_eq!(b.poll_timeout(), None);
    }

    /// Node 1 with a duplicate cache of 64 ids and these neighbors up (the first eager).
    fn forgetful(peers: &[u32], now: Instant) -> Broadcast<u32> {
        let config = BroadcastConfig {
            seen_capacity: 64,
            ..BroadcastConfig::default()
        };
        let mut b = Broadcast::new(1, 0, config);
        for p in peers {
            b.neighbor_up(*p, 0, Duration::ZERO, now, &mut Vec::new());
        }
        b
    }

    #[test]
    fn announcements_older_than_the_duplicate_cache_remembers_are_not_asked_for() {
        // The duplicate cache holds 64 ids: a neighbor back from a stall announces messages of
        // origin 9 this node delivered and forgot, and one it never had.
        let now = Instant::now();
        let mut b = forgetful(&[2, 3], now);
        // Origin 9 numbers its messages from 2^30 (starts are random).
        let seq = |n: u64| (1 << 30) + n;
        let mut out = Vec::new();
        // Three blocks of 64: the first two forgotten whole.
        for n in 0..192 {
            b.on_gossip(2, gossip(9, seq(n), 1), now, &mut pass, &mut out);
        }
        assert!(
            !b.has_seen(&MessageId {
                origin: 9,
                seq: seq(100)
            }),
            "forgotten"
        );
        out.clear();
        let old = MessageId {
            origin: 9,
            seq: seq(101),
        };
        let below_the_window = MessageId {
            origin: 9,
            seq: seq(105) - STALE_WINDOW,
        };
        let new = MessageId {
            origin: 9,
            seq: seq(300),
        };
        let other_origin = MessageId {
            origin: 8,
            seq: seq(101),
        };
        for id in [old, below_the_window, new, other_origin] {
            b.on_ihave(3, ihave(id, 2), now);
        }
        assert_eq!(b.stats().stale_ignored, 1);
        b.handle_timeout(now + Duration::from_secs(1), &mut out);
        let asked: Vec<MessageId<u32>> = out
            .iter()
            .filter_map(|o| match o {
                BroadcastOut::Send(3, BroadcastMessage::Graft { id: Some(id) })
                | BroadcastOut::Send(3, BroadcastMessage::Resume { from: id })
                | BroadcastOut::Send(3, BroadcastMessage::Fetch { id, .. }) => Some(*id),
                _ => None,
            })
            .collect();
        assert!(
            asked.contains(&new) && asked.contains(&other_origin),
            "{out:?}"
        );
        assert!(
            asked.contains(&below_the_window),
            "far below: another run of the origin (restarted), not stale: {out:?}"
        );
        assert!(
            !asked.contains(&old),
            "the stale one is not asked for: {out:?}"
        );
        assert_eq!(asked.len(), 3, "{out:?}");
        // Once the cache's retention has passed since the origin's ids were forgotten, its
        // old numbers are nothing special any more.
        let later = now + b.config.seen_retention;
        b.on_ihave(
            3,
            ihave(
                MessageId {
                    origin: 9,
                    seq: seq(102),
                },
                2,
            ),
            later,
        );
        assert_eq!(b.stats().stale_ignored, 1);
        assert_eq!(b.awaited_len(), 1, "awaited again");
    }

    #[test]
    fn an_awaited_message_takes_more_announcers_though_newer_ids_were_forgotten() {
        let now = Instant::now();
        let mut b = forgetful(&[2, 3, 4], now);
        let mut out = Vec::new();
        let hole = MessageId {
            origin: 9,
            seq: 100,
        };
        b.on_ihave(3, ihave(hole, 2), now);
        // 200 later messages arrive; the blocks above the hole are forgotten again.
        for seq in 101..301 {
            b.on_gossip(2, gossip(9, seq, 1), now, &mut pass, &mut out);
        }
        b.on_ihave(4, ihave(hole, 2), now);
        assert_eq!(b.stats().stale_ignored, 0);
        assert_eq!(b.missing.get(&hole).unwrap().announcers.len(), 2);
    }

    #[test]
    fn a_node_never_asks_for_its_own_messages() {
        // Node 1's own message, announced back to it after its duplicate cache let it go.
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        b.on_prune(3);
        b.on_ihave(3, ihave(MessageId { origin: 1, seq: 7 }, 2), now);
        let mut out = Vec::new();
        b.handle_timeout(now + Duration::from_secs(1), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
        assert_eq!(b.awaited_len(), 0);
    }

    #[test]
    fn waits_grow_with_the_lag_within_their_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(bounded_wait(ms(200), ms(0)), ms(200));
        assert_eq!(bounded_wait(ms(200), ms(1500)), ms(1500));
        assert_eq!(bounded_wait(ms(200), ms(60_000)), MAX_GRAFT_WAIT);
        // A floor above the cap wins: the configured timeout is never cut.
        assert_eq!(bounded_wait(ms(9_000), ms(0)), ms(9_000));
    }

    /// Node 1 with 2 eager and 3 lazy, a store of ten messages of [`gossip`]'s size, and a
    /// tree that was slow: an eager copy came 2 s after its announcement, at `t0 + 2 s`.
    fn small_store_after_a_slow_tree(t0: Instant) -> Broadcast<u32> {
        let config = BroadcastConfig {
            store_bytes: 20,
            ..BroadcastConfig::default()
        };
        let mut b = tree_with(1, &[2, 3], config);
        b.on_prune(3);
        let first = MessageId { origin: 9, seq: 0 };
        b.on_ihave(3, ihave(first, 2), t0);
        b.on_gossip(
            2,
            gossip(9, 0, 1),
            t0 + Duration::from_secs(2),
            &mut pass,
            &mut Vec::new(),
        );
        assert!(b.graft_wait(t0 + Duration::from_secs(2)) > Duration::from_secs(3));
        b
    }

    /// Messages `seqs` of origin 9 from 2, one every 100 ms from `from`; the time after the
    /// last.
    fn flow(b: &mut Broadcast<u32>, seqs: std::ops::Range<u64>, from: Instant) -> Instant {
        let mut now = from;
        for seq in seqs {
            now += Duration::from_millis(100);
            b.on_gossip(2, gossip(9, seq, 1), now, &mut pass, &mut Vec::new());
        }
        now
    }

    #[test]
    fn grafts_wait_no_longer_than_half_of_what_the_stores_keep() {
        let t0 = Instant::now();
        let mut b = small_store_after_a_slow_tree(t0);
        // Twelve messages into a store of ten: it reaches back 0.9 s.
        let now = flow(&mut b, 1..13, t0 + Duration::from_secs(2));
        assert_eq!(b.store.horizon(now), Some(Duration::from_millis(900)));
        // Another origin's message (not behind a flow), announced by 3: asked for after
        // 0.45 s, not after twice the lag learnt (more than 3 s).
        b.on_ihave(3, ihave(MessageId { origin: 8, seq: 0 }, 2), now);
        let mut out = Vec::new();
        b.handle_timeout(now + Duration::from_millis(449), &mut out);
        assert!(!out.iter().any(asks_3), "{out:?}");
        b.handle_timeout(now + Duration::from_millis(450), &mut out);
        assert!(out.iter().any(asks_3), "{out:?}");
    }

    #[test]
    fn a_message_announced_longer_ago_than_the_stores_keep_is_given_up() {
        let t0 = Instant::now();
        let mut b = small_store_after_a_slow_tree(t0);
        let now = flow(&mut b, 1..13, t0 + Duration::from_secs(2));
        let id = MessageId { origin: 8, seq: 0 };
        b.on_ihave(3, ihave(id, 2), now);
        b.on_ihave(2, ihave(id, 1), now);
        let mut out = Vec::new();
        b.handle_timeout(now + Duration::from_millis(450), &mut out);
        assert!(out.iter().any(asks_3), "{out:?}");
        // No answer. The next try comes after the slow tree's lag (about 1.8 s), by when the
        // stores (still reaching back about a second, as messages keep coming) have let the
        // message go: it is given up instead of asked of 2.
        let mut now = flow(&mut b, 13..33, now);
        assert!(b.store.horizon(now) < Some(Duration::from_secs(1)));
        out.clear();
        for _ in 0..10 {
            now += Duration::from_millis(100);
            b.handle_timeout(now, &mut out);
        }
        assert!(
            !out.iter().any(|o| matches!(o, BroadcastOut::Send(2, _))),
            "{out:?}"
        );
        assert_eq!(b.stats().lost, 1);
        assert_eq!(b.awaited_len(), 0);
        assert_eq!(b.grafts_in_flight(), 0);
    }

    #[test]
    fn a_message_further_behind_its_flow_than_the_stores_hold_is_given_up() {
        let t0 = Instant::now();
        let mut b = small_store_after_a_slow_tree(t0);
        // Messages 100 to 112 of origin 9 but 108: the store holds the last ten.
        let mut now = t0 + Duration::from_secs(2);
        for seq in (100..113).filter(|seq| *seq != 108) {
            now += Duration::from_millis(100);
            b.on_gossip(2, gossip(9, seq, 1), now, &mut pass, &mut Vec::new());
        }
        // Announced just now: 108, four behind the flow, and 50, sixty-two behind.
        let hole = MessageId {
            origin: 9,
            seq: 108,
        };
        let old = MessageId { origin: 9, seq: 50 };
        b.on_ihave(3, ihave(hole, 2), now);
        b.on_ihave(3, ihave(old, 2), now);
        let mut out = Vec::new();
        for seq in 113..123 {
            now += Duration::from_millis(100);
            b.on_gossip(2, gossip(9, seq, 1), now, &mut pass, &mut Vec::new());
            b.handle_timeout(now, &mut out);
        }
        let asked: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                BroadcastOut::Send(3, BroadcastMessage::Fetch { id, .. }) => Some(id.seq),
                _ => None,
            })
            .collect();
        assert_eq!(asked, [108], "{out:?}");
        assert_eq!(b.stats().lost, 1, "50 given up");
    }

    #[test]
    fn a_hole_in_a_flowing_origin_is_fetched_and_the_tree_left_alone() {
        let now = Instant::now();
        let hole = MessageId { origin: 9, seq: 0 };
        let mut b = announced(hole, now);
        let mut out = Vec::new();
        // The origin's later messages keep coming down the tree.
        let due = now + Duration::from_millis(300);
        b.on_gossip(2, gossip(9, 1, 1), due, &mut pass, &mut out);
        out.clear();
        // Not "behind" (a later message of its origin has arrived): asked for at once, and
        // as a fetch, since the origin is flowing.
        b.handle_timeout(due, &mut out);
        assert_eq!(
            out,
            vec![BroadcastOut::Send(
                3,
                BroadcastMessage::Fetch { id: hole, count: 1 }
            )]
        );
        assert!(
            !b.eager_peers().contains(&3),
            "a fetch leaves the link lazy"
        );
        out.clear();
        b.on_gossip(3, gossip(9, 0, 2), due, &mut pass, &mut out);
        assert!(
            matches!(out.first(), Some(BroadcastOut::Deliver(d)) if d.id == hole),
            "{out:?}"
        );
        assert!(
            !b.eager_peers().contains(&3),
            "the fetch's answer leaves the link lazy too"
        );
    }

    #[test]
    fn hop_limited_messages_flood_within_the_limit() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3, 4]);
        b.on_prune(4);
        let mut out = Vec::new();
        let mut g = gossip(9, 0, 1);
        g.hop_limit = Some(2);
        b.on_gossip(2, g.clone(), now, &mut pass, &mut out);
        let to: Vec<u32> = out
            .iter()
            .filter_map(|o| match o {
                BroadcastOut::Send(p, BroadcastMessage::Gossip(_)) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(
            to,
            vec![3, 4],
            "lazy peers get hop-limited messages in full"
        );
        out.clear();
        let mut g2 = gossip(9, 1, 2);
        g2.hop_limit = Some(2);
        b.on_gossip(2, g2, now, &mut pass, &mut out);
        assert_eq!(out.len(), 1, "at the limit: delivered, not forwarded");
        assert!(matches!(out[0], BroadcastOut::Deliver(_)));
    }

    #[test]
    fn a_closer_copy_of_a_hop_limited_message_is_passed_on_again() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3, 4]);
        let mut out = Vec::new();
        let limited = |hops| Gossip {
            hop_limit: Some(2),
            ..gossip(9, 0, hops)
        };
        // The first copy came the long way round: at the limit, delivered and not passed on.
        b.on_gossip(2, limited(2), now, &mut pass, &mut out);
        assert!(matches!(&out[..], [BroadcastOut::Deliver(d)] if d.hops == 2));
        out.clear();
        // The origin's direct copy has one hop left: passed on, not delivered again.
        b.on_gossip(3, limited(1), now, &mut pass, &mut out);
        assert_eq!(
            out,
            vec![
                BroadcastOut::Send(2, BroadcastMessage::Gossip(limited(2))),
                BroadcastOut::Send(4, BroadcastMessage::Gossip(limited(2))),
            ]
        );
        out.clear();
        // No closer than before: dropped.
        b.on_gossip(4, limited(1), now, &mut pass, &mut out);
        assert_eq!(out, vec![]);
        assert_eq!(b.stats().duplicates, 2);
    }

    #[test]
    fn a_hop_limited_message_a_filter_kept_is_not_passed_on_by_a_closer_copy() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3, 4]);
        let mut out = Vec::new();
        let limited = |hops| Gossip {
            hop_limit: Some(3),
            ..gossip(9, 0, hops)
        };
        let mut deliver_only = |_: &Gossip<u32>, _: &u32| Propagation::DeliverOnly;
        b.on_gossip(2, limited(2), now, &mut deliver_only, &mut out);
        out.clear();
        b.on_gossip(3, limited(1), now, &mut deliver_only, &mut out);
        assert_eq!(out, vec![]);
    }

    #[test]
    fn the_filter_decides_delivery_and_forwarding() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        let mut out = Vec::new();
        let mut only_forward = |_: &Gossip<u32>, _: &u32| Propagation::ForwardOnly;
        b.on_gossip(2, gossip(9, 0, 1), now, &mut only_forward, &mut out);
        assert!(out.iter().all(|o| !matches!(o, BroadcastOut::Deliver(_))));
        assert!(out.iter().any(|o| matches!(o, BroadcastOut::Send(3, _))));
        out.clear();
        let mut reject = |_: &Gossip<u32>, _: &u32| Propagation::Reject;
        b.on_gossip(2, gossip(9, 1, 1), now, &mut reject, &mut out);
        assert!(out.is_empty());
        assert!(
            !b.has_seen(&MessageId { origin: 9, seq: 1 }),
            "rejected copies are not remembered"
        );
        b.on_gossip(2, gossip(9, 1, 1), now, &mut pass, &mut out);
        assert!(
            matches!(out[0], BroadcastOut::Deliver(_)),
            "a genuine copy still gets through"
        );
    }

    #[test]
    fn a_deliver_only_node_delivers_and_passes_nothing_on() {
        let now = Instant::now();
        let mut b = tree(1, &[2, 3]);
        b.on_prune(3);
        let mut out = Vec::new();
        let mut deliver_only = |_: &Gossip<u32>, _: &u32| Propagation::DeliverOnly;
        b.on_gossip(2, gossip(9, 0, 1), now, &mut deliver_only, &mut out);
        assert_eq!(
            out,
            vec![BroadcastOut::Deliver(Delivery {
                id: MessageId { origin: 9, seq: 0 },
                from: 2,
                hops: 1,
                payload: Bytes::from_static(b"hi"),
            })]
        );
        assert_eq!(
            b.poll_timeout(),
            None,
            "no announcement to the lazy link either"
        );
        out.clear();
        b.on_graft(3, Some(MessageId { origin: 9, seq: 0 }), true, &mut out);
        assert_eq!(
            out,
            vec![],
            "a message not passed on is not kept to answer grafts"
        );
    }

    #[test]
    fn flood_mode_never_prunes() {
        let now = Instant::now();
        let config = BroadcastConfig {
            mode: BroadcastMode::Flood,
            ..Default::default()
        };
        let mut b = Broadcast::new(1, 0, config);
        b.neighbor_up(2, 0, Duration::ZERO, now, &mut Vec::new());
        b.neighbor_up(3, 0, Duration::ZERO, now, &mut Vec::new());
        let mut out = Vec::new();
        b.on_gossip(2, gossip(9, 0, 1), now, &mut pass, &mut out);
        out.clear();
        b.on_gossip(3, gossip(9, 0, 1), now, &mut pass, &mut out);
        assert!(out.is_empty());
        assert_eq!(b.eager_peers().len(), 2);
    }

    #[test]
    fn a_new_link_is_told_of_recent_messages() {
        let now = Instant::now();
        let mut b = tree(1, &[2]);
        let mut out = Vec::new();
        b.on_gossip(2, gossip(9, 0, 1), now, &mut pass, &mut out);
        b.on_gossip(2, gossip(9, 1, 1), now, &mut pass, &mut out);
        out.clear();
        b.neighbor_up(5, 64, Duration::from_secs(30), now, &mut out);
        assert!(
            !b.eager_peers().contains(&5),
            "a node already in the tree starts new links lazy"
        );
        b.handle_timeout(now + Duration::from_millis(5), &mut out);
        let ids: Vec<u64> = match &out[..] {
            [BroadcastOut::Send(5, BroadcastMessage::IHave(a))] => {
                let a: Vec<_> = a.iter().flat_map(Announced::iter).collect();
                assert!(a.iter().all(|a| a.catch_up));
                a.iter().map(|a| a.id.seq).collect()
            }
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(ids, vec![0, 1]);
    }

    #[test]
    fn oversized_announcement_batches_are_dropped() {
        let now = Instant::now();
        let mut b = tree(1, &[2]);
        let batch: Vec<_> = (0..300)
            .map(|s| Announcement {
                id: MessageId { origin: 9, seq: s },
                hops: 1,
                catch_up: false,
            })
            .collect();
        b.on_ihave(2, Announced::group(&batch), now);
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.stats().announcements_dropped, 300);
        // Empty groups count as long as they make the batch, and so do empty runs.
        let empty = (0..300)
            .map(|origin| Announced {
                origin,
                runs: Vec::new(),
            })
            .collect();
        b.on_ihave(2, empty, now);
        assert_eq!(b.poll_timeout(), None);
        let run = |first, count| AnnouncedRun {
            first,
            count,
            hops: 1,
            catch_up: false,
        };
        let empty_runs = vec![Announced {
            origin: 9,
            runs: vec![run(0, 0); 300],
        }];
        b.on_ihave(2, empty_runs, now);
        assert_eq!(b.poll_timeout(), None);
        // A run of four billion ids costs the same as any batch too long: nothing is awaited.
        let huge = vec![Announced {
            origin: 9,
            runs: vec![run(0, u32::MAX)],
        }];
        b.on_ihave(2, huge, now);
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.stats().announcements_dropped, 300 + u64::from(u32::MAX));
        // A run that would go past the last sequence number stops there.
        let last = vec![Announced {
            origin: 9,
            runs: vec![run(u64::MAX - 1, 100)],
        }];
        b.on_ihave(2, last, now);
        assert_eq!(b.missing.len(), 2);
    }

    #[test]
    fn a_full_batch_of_scattered_announcements_is_taken() {
        // Ids that make no runs (two origins in turn, then alternating hop counts): as many
        // groups or runs as ids, up to the limit, which the sender cuts at.
        let now = Instant::now();
        let max = BroadcastConfig::default().max_ihave_batch as u64;
        for scattered in [
            (0..max)
                .map(|i| announce(7 + (i % 2) as u32, 1_000 + i, 1))
                .collect::<Vec<_>>(),
            (0..max)
                .map(|i| announce(7, 1_000 + i, 1 + (i % 2) as u16))
                .collect(),
        ] {
            let mut b = tree(1, &[2]);
            b.on_ihave(2, Announced::group(&scattered), now);
            assert_eq!(b.stats().announcements_dropped, 0);
            assert_eq!(b.missing.len() as u64, max);
        }
    }

    fn announce(origin: u32, seq: u64, hops: u16) -> Announcement<u32> {
        Announcement {
            id: MessageId { origin, seq },
            hops,
            catch_up: false,
        }
    }

    #[test]
    fn announcements_go_as_runs_and_seen_ids_are_skipped_by_block() {
        let now = Instant::now();
        let mut b = tree(1, &[2]);
        let announce = |seqs: &[u64], hops: u16| -> Vec<Announcement<u32>> {
            seqs.iter()
                .map(|&seq| Announcement {
                    id: MessageId { origin: 9, seq },
                    hops,
                    catch_up: false,
                })
                .collect()
        };
        // A sender groups them by origin, in runs of consecutive ids with one hop count: a
        // gap or another hop count starts a new run.
        let mut list = announce(&[60, 61, 62, 63, 64, 65], 2);
        list.extend(announce(&[67], 2));
        list.extend(announce(&[68], 3));
        let batch = Announced::group(&list);
        let run = |first, count, hops| AnnouncedRun {
            first,
            count,
            hops,
            catch_up: false,
        };
        assert_eq!(
            batch,
            vec![Announced {
                origin: 9,
                runs: vec![run(60, 6, 2), run(67, 1, 2), run(68, 1, 3)],
            }]
        );
        let back: Vec<_> = batch.iter().flat_map(Announced::iter).collect();
        assert_eq!(back, list, "the runs give back every announcement");
        // Seen ids on both sides of a block boundary are not awaited; the others are.
        for seq in [61, 63, 64, 68] {
            b.seen.insert(MessageId { origin: 9, seq }, now);
        }
        b.on_ihave(2, batch, now);
        let mut awaited: Vec<_> = b.missing.ids().map(|id| id.seq).collect();
        awaited.sort_unstable();
        assert_eq!(awaited, [60, 62, 65, 67]);
    }
}
