//! Configuration of a mesh, with the reason for every default.
//!
//! Defaults marked "from the paper" come from Leitão et al., *HyParView* (DSN 2007) and
//! *Epidemic Broadcast Trees* (SRDS 2007, Plumtree). "From simulation" names a
//! `peerchannel-sim` run in `crates/sim/README.md` that chose the value. "A guess" means
//! nothing has tested it yet.

use std::time::Duration;

/// Everything that shapes one mesh.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// Neighbor management (HyParView).
    pub membership: MembershipConfig,
    /// Message dissemination (Plumtree or flood).
    pub broadcast: BroadcastConfig,
    /// Everything that sits on top of both: offline queue, catch-up, partition repair.
    pub mesh: MeshConfig,
}

/// Neighbor management: the HyParView active and passive views.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MembershipConfig {
    /// Below this many neighbors a node repairs urgently: several parallel requests, and a
    /// request for contacts to the resolver. Default 4: half the ideal (a guess), with the
    /// ideal below.
    pub active_min: usize,
    /// The number of neighbors a node works towards in the background. Default 8: from
    /// simulation (`single-1000` and `multi-1000`, six seeds, see `crates/sim/README.md`):
    /// with 3/5/8 the broadcast tree needed a mean 13.8 hops (max 25) and 269 ms to reach
    /// everyone; with 4/8/12 it needs 10.7 hops (max 13) and 172 ms (max 211 ms). A denser
    /// mesh gives the tree shorter, faster paths, for more lazy announcements per message.
    pub active_ideal: usize,
    /// The most neighbors a node accepts; a request beyond it is refused with referrals unless
    /// it is high priority (then a random neighbor is evicted). Default 12: from the same runs,
    /// leaving room above the ideal for walk offers and partition-merge links. (WCF used min 2,
    /// ideal 3, max 7; HyParView a fixed 5.)
    pub active_max: usize,
    /// Capacity of the passive view, the pool of known members used for repair. Default 30:
    /// from the paper.
    pub passive_capacity: usize,
    /// Active random walk length for forward-joins and shuffles. Default 6: from the paper.
    pub active_walk_length: u16,
    /// Passive random walk length: where a forward-join walk adds the joiner to the passive
    /// view. Default 3: from the paper.
    pub passive_walk_length: u16,
    /// How many of the contact's neighbors a join walks out to. Default 4: the paper sends one
    /// walk per active neighbor; from simulation (`single-1000`), 7 walks per join made the
    /// mesh formed by joins slower to broadcast over (max 371 ms against 211 ms).
    pub join_walks: usize,
    /// How long to wait for a join or neighbor request to be answered before trying another
    /// candidate. Default 1 s: a guess, well above a QUIC handshake plus a round trip on the
    /// internet and below the 3 s it takes QUIC to give up on a dead address.
    pub request_timeout: Duration,
    /// How often a node below `active_ideal` tries one more passive peer. Default 1 s: a guess.
    pub fill_interval: Duration,
    /// Shuffle period. Default 30 s, with ±50% jitter: iroh-gossip uses 60 s; halved because
    /// the passive view is our repair pool after a mass failure (a guess).
    pub shuffle_interval: Duration,
    /// Active-view entries sent in a shuffle. Default 3: from the paper.
    pub shuffle_active: usize,
    /// Passive-view entries sent in a shuffle. Default 4: from the paper.
    pub shuffle_passive: usize,
    /// Referrals sent with a refusal or a welcome. Default 10: WCF sent up to 10.
    pub referrals: usize,
    /// When a node has no neighbor it asks the driver for contacts, at first after this delay
    /// and then with exponential backoff up to `contacts_backoff_max`. Default 1 s: a guess.
    pub contacts_backoff_min: Duration,
    /// The longest wait between two requests for contacts while isolated. Default 30 s: a
    /// guess; the lone first member of a mesh asks at this pace.
    pub contacts_backoff_max: Duration,
    /// How many contacts to ask the driver for. Default 8: a guess.
    pub contacts_wanted: usize,
    /// How many join requests a node that was online and lost every neighbor sends at once.
    /// Default 3: a guess. After a mass failure most of its passive view is dead, and each dead
    /// candidate costs a request timeout; `churn-1000 --kill-fraction 0.8` delivers to every
    /// survivor in the first round with it.
    pub isolated_parallel: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            active_min: 4,
            active_ideal: 8,
            active_max: 12,
            passive_capacity: 30,
            active_walk_length: 6,
            passive_walk_length: 3,
            join_walks: 4,
            request_timeout: Duration::from_secs(1),
            fill_interval: Duration::from_secs(1),
            shuffle_interval: Duration::from_secs(30),
            shuffle_active: 3,
            shuffle_passive: 4,
            referrals: 10,
            contacts_backoff_min: Duration::from_secs(1),
            contacts_backoff_max: Duration::from_secs(30),
            contacts_wanted: 8,
            isolated_parallel: 3,
        }
    }
}

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BroadcastMode {
    /// Plumtree: eager push along a spanning tree that follows the fastest links, lazy push of
    /// message ids on the other links. Near one copy per node per message.
    #[default]
    Plumtree,
    /// Every node sends every message to every neighbor but the one it came from. Roughly
    /// `degree - 1` copies per node per message; kept for comparison and for tiny meshes.
    Flood,
}

/// Message dissemination.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BroadcastConfig {
    /// Plumtree or flood.
    pub mode: BroadcastMode,
    /// How long lazy announcements (`IHave`) wait to be batched. Default 5 ms: a guess, short
    /// against graft timeouts and link latencies, long enough to batch bursts.
    pub ihave_delay: Duration,
    /// The most ids in one `IHave` batch, and the most origins and the most runs of
    /// consecutive ids in it; a peer that sends more is misbehaving. Default 256.
    pub max_ihave_batch: usize,
    /// Wait after the first announcement of a missing message before grafting. Default 300 ms:
    /// from simulation (`single-1000`): iroh-gossip's 80 ms grafted messages that were still on
    /// their way down the tree (a tree path is often much longer than the lazy shortcut), which
    /// cost 0.2-1.0 redundancy; 250 ms and above brought it under 0.01.
    pub graft_timeout_1: Duration,
    /// Wait between further grafts for the same message, and before grafting a message
    /// announced on catch-up. Default 200 ms: a graft is answered after a round trip, so a
    /// shorter wait grafts a second link while the first answer is still on its way, and the
    /// duplicate that follows prunes a link of the tree. From simulation (`multi-1000`, seeds
    /// 1-20, see `crates/sim/README.md`): with iroh-gossip's 40 ms (below the simulator's
    /// 20-100 ms round trips) seed 10 fell into a graft storm it never left (RMR 1.1-1.4 and
    /// 900 ms to reach everyone, every round); from 100 ms up, no run did. 200 ms covers the
    /// round trip of almost any internet path.
    pub graft_timeout_2: Duration,
    /// Plumtree's optimisation: when a lazy link announces a message (before the eager copy
    /// arrives) at least this many hops earlier than the eager copy took, swap the two links.
    /// Default `None` (off): from simulation (`single-1000`): with one tree shared by every
    /// sender, reshaping it towards each sender in turn made it slower for all of them (mean
    /// time to full delivery 288-341 ms at thresholds 1-7, against 212 ms without).
    pub optimization_threshold: Option<u16>,
    /// A beacon rebuilds the tree in the background: each node notes its parent in the
    /// beacon's flood and the children that name it, and switches to the new tree this long
    /// after the beacon first reached it. Meanwhile messages use the old tree; for as long
    /// again after the switch, duplicates prune nothing (messages sent before the switch still
    /// arrive over old and new links). Default 1 s: several times the 250 ms a message takes
    /// to cross 10,000 nodes in simulation (`single-10000`).
    pub rebuild_delay: Duration,
    /// How long message ids are remembered to drop duplicates. Default 2 min: a guess, well
    /// above the time a message takes to cross a mesh and the partition-probe window.
    pub seen_retention: Duration,
    /// The most message ids remembered. Default 65,536 (about 4 MiB for ids numbered one after
    /// another, as senders number them; up to 10 MiB for ids scattered at random).
    ///
    /// Under load this is seconds, not minutes (6.5 s at 10,000 messages/s). What it forgets
    /// is remembered by one number per origin, the highest sequence number forgotten: an
    /// announcement of an older message of that origin is ignored (counted in
    /// `BroadcastStats::stale_ignored`) instead of asked for. Without it, a neighbor back
    /// from a 10 s stall announced the messages it had kept from before, every node asked for
    /// them again as new, and the repair traffic (and the sender asking for its own
    /// messages) cost the healthy receivers 20-38% of the messages sent after its return
    /// (`peerchannel-bench --secs 1 --pause-one 10 --pause-rate 10000`, 2026-12-07).
    pub seen_capacity: usize,
    /// How long message payloads are kept to answer grafts and catch-up. Default 30 s: from
    /// iroh-gossip's message cache.
    pub store_retention: Duration,
    /// The most payload bytes kept for grafts and catch-up. Default 4 MiB.
    ///
    /// The store is the mesh's repair window: a node cut off from the tree (its parent
    /// crashed, stalled or routed around it) notices from the announcements after at least
    /// `graft_timeout_1`, then fetches what it missed from its neighbors' stores; whatever they
    /// have forgotten by then is lost to it. Under load the window is short: 4 MiB holds about
    /// 3,800 messages of 1 KiB, 0.2-0.4 s at 10,000-20,000 messages/s. A larger store is not
    /// simply better: measured with `peerchannel-bench --pause-one 10` (2026-12-07), 16 MiB
    /// made the stores answer the repairs, and at saturation the repair traffic took the rate
    /// of healthy receivers down (others kept 42-78% of their rate in six runs, against
    /// 91-110% with 4 MiB) without delivering more. The store fills only as fast as messages
    /// come (and forgets them after `store_retention`), so a quiet mesh holds far less.
    pub store_bytes: usize,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            mode: BroadcastMode::Plumtree,
            ihave_delay: Duration::from_millis(5),
            max_ihave_batch: 256,
            graft_timeout_1: Duration::from_millis(300),
            graft_timeout_2: Duration::from_millis(200),
            optimization_threshold: None,
            rebuild_delay: Duration::from_secs(1),
            seen_retention: Duration::from_secs(120),
            seen_capacity: 65_536,
            store_retention: Duration::from_secs(30),
            store_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Behaviour of a mesh above membership and broadcast.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// Messages published while the node has no neighbor wait in a queue of this many
    /// messages; when it is full, publishing fails with [`crate::BroadcastError::OfflineQueueFull`].
    /// Default 128: a guess.
    pub offline_queue_messages: usize,
    /// The same queue's bound in payload bytes. Default 1 MiB: a guess.
    pub offline_queue_bytes: usize,
    /// When a link comes up, each side announces up to this many of its most recent messages
    /// (still in the store) so the other can fetch what it missed: catch-up for late joiners
    /// and for nodes that were cut off. 0 turns catch-up off. Default 64: a guess.
    pub catch_up_messages: usize,
    /// Only messages younger than this are announced on catch-up. Default 30 s: the store
    /// retention.
    pub catch_up_window: Duration,
    /// Partition repair: how often a node asks the driver for a contact outside its views and
    /// compares the newest beacon each has seen, with ±50% jitter. `None` turns probing off.
    /// Default 60 s: from simulation (`partition-1000`): across a mesh of N nodes a probe
    /// happens every 60/N s, so two halves of a large mesh meet within a second of the heal.
    pub probe_interval: Option<Duration>,
    /// Beacons younger than this are not used as evidence of a split: they may still be on
    /// their way. Default 2 s: a guess, several times the time a message takes to cross a mesh.
    pub probe_grace: Duration,
    /// After the neighbors change (a link comes up or goes down, two halves merge), a node
    /// floods a tiny beacon over every link within a few seconds, unless another node's beacon
    /// comes first. The flood rebuilds the broadcast tree as a clean shortest-path tree from
    /// the beacon's origin, undoing what repairs did to it, and the beacon's id lets partition
    /// probes tell two halves of a mesh apart. Default on: from simulation (`churn-1000`,
    /// `partition-1000`): without beacons the tree after a mass failure or a merge stayed two
    /// to four times slower than before it, for good.
    pub beacons: bool,
    /// Also flood a beacon at least this often (plus a random delay up to the same again) even
    /// when nothing changes. Default `None`: from simulation (`single-1000`): a tree does not
    /// degrade while the neighbors stay the same, and each rebuild briefly disturbs messages in
    /// flight while nodes switch trees.
    pub beacon_interval: Option<Duration>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            offline_queue_messages: 128,
            offline_queue_bytes: 1024 * 1024,
            catch_up_messages: 64,
            catch_up_window: Duration::from_secs(30),
            probe_interval: Some(Duration::from_secs(60)),
            probe_grace: Duration::from_secs(2),
            beacons: true,
            beacon_interval: None,
        }
    }
}
