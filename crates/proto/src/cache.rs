//! The bounded memories of a mesh: which message ids were seen, and recent payloads.
//!
//! Both are bounded in time and in size, and both expire strictly in arrival order (time only
//! moves forward), so expiry is a pop from the front of a queue. Lookups go through hash maps
//! (std's, keyed at random per map, so a peer cannot choose ids that collide): every message
//! and every announced id is looked up, and ordered maps of 40-byte ids spent their time
//! comparing keys. Nothing the core does depends on the maps' order (the one pass over a map,
//! dropping expired floors, keeps or drops each entry on its own), so it stays reproducible.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::id::{MessageId, PeerIdentity};
use crate::message::Gossip;

/// Message ids seen recently, in the order they were first seen.
///
/// An origin numbers its messages one after another, so the ids are kept as bitmaps of 64
/// consecutive sequence numbers per origin: the map stays small enough to live in the cache
/// (a thousand entries for 65,536 ids of one sender, against a table of 2.6 MB of 40-byte
/// keys whose every lookup missed the cache). Ids scattered at random cost one entry each, as
/// before.
#[derive(Debug)]
pub(crate) struct SeenCache<PI> {
    /// Per origin and block of 64 sequence numbers (`seq >> 6`), which of them were seen.
    blocks: HashMap<(PI, u64), u64>,
    order: VecDeque<(Instant, MessageId<PI>)>,
    /// Per origin, the highest sequence number forgotten so far, and when it was: see
    /// [`stale_below`].
    floors: HashMap<PI, (u64, Instant)>,
    /// When expired floors were last looked for (see [`SeenCache::raise_floor`]).
    floors_swept: Option<Instant>,
    retention: Duration,
    capacity: usize,
}

/// How far below an origin's forgotten ids an id still counts as stale (see
/// [`stale_below`]): 2^20 messages, minutes of traffic at the rates one sender
/// reaches. An origin restarted with the same identity starts at a random 32-bit sequence
/// number: the chance it lands this close below its old numbers is 2^-12, and then only the
/// repair of its first messages is held back, until the floor expires.
pub(crate) const STALE_WINDOW: u64 = 1 << 20;

/// Whether a message numbered `seq` is as old as what a node has forgotten of its origin:
/// at or below (by less than [`STALE_WINDOW`]) `floor`, the highest sequence number of that
/// origin its duplicate cache forgot lately ([`SeenCache::floor`]). An origin numbers its
/// messages one after another and they arrive mostly in order, so such a message was most
/// likely seen and forgotten (or awaited in vain for as long as 65,536 newer ids took to
/// arrive, by when no store holds it); announced, it comes from a store far behind this
/// node's (a neighbor back from a stall announcing what it kept), and asking for it would
/// bring back, as new, messages delivered long ago.
pub(crate) fn stale_below(floor: Option<u64>, seq: u64) -> bool {
    floor.is_some_and(|floor| seq <= floor && floor - seq < STALE_WINDOW)
}

/// Origins whose floor is remembered; a new origin's floor is not recorded past this.
pub(crate) const MAX_FLOORS: usize = 4096;

/// The block of 64 sequence numbers `seq` falls in (of its origin's), and its bit in the
/// block: how [`SeenCache`] keeps ids, and how [`SeenCache::block`] gives them out.
pub(crate) fn seq_block(seq: u64) -> (u64, u64) {
    (seq >> 6, 1 << (seq & 63))
}

/// The block an id falls in, and its bit in the block.
fn block_of<PI: PeerIdentity>(id: &MessageId<PI>) -> ((PI, u64), u64) {
    let (block, bit) = seq_block(id.seq);
    ((id.origin, block), bit)
}

/// The block an id falls in, and its place in the block.
fn slot_of<PI: PeerIdentity>(id: &MessageId<PI>) -> ((PI, u64), usize) {
    let (block, bit) = seq_block(id.seq);
    ((id.origin, block), bit.trailing_zeros() as usize)
}

impl<PI: PeerIdentity> SeenCache<PI> {
    pub(crate) fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            blocks: HashMap::new(),
            order: VecDeque::new(),
            floors: HashMap::new(),
            floors_swept: None,
            retention,
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; false if it was already there.
    pub(crate) fn insert(&mut self, id: MessageId<PI>, now: Instant) -> bool {
        if self.contains(&id) {
            return false;
        }
        self.expire(now);
        while self.order.len() >= self.capacity {
            self.pop_oldest(now);
        }
        let (block, bit) = block_of(&id);
        *self.blocks.entry(block).or_default() |= bit;
        self.order.push_back((now, id));
        true
    }

    pub(crate) fn contains(&self, id: &MessageId<PI>) -> bool {
        let (block, bit) = block_of(id);
        self.blocks.get(&block).is_some_and(|bits| bits & bit != 0)
    }

    /// Which of `origin`'s sequence numbers `block << 6` to `(block << 6) + 63` were seen, as
    /// bits (bit `seq & 63`).
    pub(crate) fn block(&self, origin: &PI, block: u64) -> u64 {
        self.blocks.get(&(*origin, block)).copied().unwrap_or(0)
    }

    /// The highest sequence number of `origin` this cache has forgotten, if it forgot one
    /// within `retention`: see [`stale_below`].
    pub(crate) fn floor(&self, origin: &PI, now: Instant) -> Option<u64> {
        self.floors
            .get(origin)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.retention)
            .map(|(floor, _)| *floor)
    }

    #[cfg(test)]
    pub(crate) fn is_stale(&self, id: &MessageId<PI>, now: Instant) -> bool {
        stale_below(self.floor(&id.origin, now), id.seq)
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.order.front() {
            if now.saturating_duration_since(at) < self.retention {
                break;
            }
            self.pop_oldest(now);
        }
    }

    fn pop_oldest(&mut self, now: Instant) {
        let Some((_, id)) = self.order.pop_front() else {
            return;
        };
        let (block, bit) = block_of(&id);
        if let Some(bits) = self.blocks.get_mut(&block) {
            *bits &= !bit;
            if *bits == 0 {
                self.blocks.remove(&block);
                // Once per block forgotten whole, not per id: this runs for every message
                // seen, and the floor then lags by less than a block.
                self.raise_floor(id, now);
            }
        }
    }

    /// Notes that `id` was forgotten at `now`, the last of its block. An expired floor, or one
    /// far above the id (the origin restarted lower: its new numbers must get a floor of their
    /// own), is replaced.
    fn raise_floor(&mut self, id: MessageId<PI>, now: Instant) {
        let retention = self.retention;
        if let Some((floor, at)) = self.floors.get_mut(&id.origin) {
            if id.seq >= *floor
                || now.saturating_duration_since(*at) >= retention
                || *floor - id.seq >= STALE_WINDOW
            {
                *floor = id.seq;
                *at = now;
            }
            return;
        }
        if self.floors.len() >= MAX_FLOORS {
            // Expired floors make room, looked for at most once per retention/16 (with more
            // origins than this active at once, the newest go without a floor).
            let due = self
                .floors_swept
                .is_none_or(|swept| now.saturating_duration_since(swept) >= retention / 16);
            if !due {
                return;
            }
            self.floors_swept = Some(now);
            self.floors
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < retention);
            if self.floors.len() >= MAX_FLOORS {
                return;
            }
        }
        self.floors.insert(id.origin, (id.seq, now));
    }
}

/// For recent hop-limited messages this node passed on: the fewest links a copy had travelled
/// on arrival. Bounded like [`SeenCache`].
#[derive(Debug)]
pub(crate) struct HopCounts<PI> {
    map: HashMap<MessageId<PI>, u16>,
    order: VecDeque<(Instant, MessageId<PI>)>,
    retention: Duration,
    capacity: usize,
}

impl<PI: PeerIdentity> HopCounts<PI> {
    pub(crate) fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            retention,
            capacity: capacity.max(1),
        }
    }

    /// Records that a copy of `id` arrived over `hops` links; true if no copy had come over as
    /// few before (the first copy included).
    pub(crate) fn lower(&mut self, id: MessageId<PI>, hops: u16, now: Instant) -> bool {
        if let Some(best) = self.map.get_mut(&id) {
            if hops >= *best {
                return false;
            }
            *best = hops;
            return true;
        }
        self.expire(now);
        while self.map.len() >= self.capacity {
            self.pop_oldest();
        }
        self.map.insert(id, hops);
        self.order.push_back((now, id));
        true
    }

    pub(crate) fn contains(&self, id: &MessageId<PI>) -> bool {
        self.map.contains_key(id)
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.order.front() {
            if now.saturating_duration_since(at) < self.retention {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.map.remove(&id);
        }
    }
}

/// Payloads of recent messages, kept to answer grafts, fetches, resumes and catch-up
/// announcements.
///
/// Every message a node passes on goes in, and almost none is ever asked for: the store is
/// built for the insert. Payloads are copied into one ring of bytes, one after another
/// (wrapping round at its end), and the oldest are forgotten by being overwritten. Held as
/// `Bytes` each, a forgotten payload was freed long after it came: a cold allocation freed on
/// every message, with its hash-map entry (measured with `peerchannel-bench`, 10 nodes on 2
/// cores: the store took 17% of the CPU time per delivery). The ring grows by doubling up to
/// `max_bytes`, and is let go when the store empties, so a quiet mesh holds little. Ids are
/// found through per-origin blocks of 64 sequence numbers, as in [`SeenCache`]. A stored
/// message is copied out when asked for.
#[derive(Debug)]
pub(crate) struct Store<PI> {
    /// The payloads; byte `pos` (counted since the ring last changed size) is at
    /// `pos % ring.len()`.
    ring: Vec<u8>,
    /// The messages held, oldest first; their payloads lie one after another in the ring.
    entries: VecDeque<Stored<PI>>,
    /// The number of `entries[0]`, counted since the store was made.
    first: u64,
    /// Where the next payload goes.
    end: u64,
    /// Per origin and block of 64 sequence numbers (`seq >> 6`), the number of the entry
    /// holding each, or [`NOT_STORED`].
    index: HashMap<(PI, u64), Block>,
    /// Payload bytes held.
    bytes: usize,
    /// When a message was last forgotten to make room for a new one.
    made_room_at: Option<Instant>,
    retention: Duration,
    max_bytes: usize,
}

/// What the store keeps of a message besides its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<PI> {
    pub(crate) at: Instant,
    pub(crate) id: MessageId<PI>,
    pub(crate) hops: u16,
    hop_limit: Option<u16>,
    kind: crate::message::GossipKind,
    /// Where its payload starts in the ring.
    start: u64,
    len: usize,
}

/// A block of the store's index: entry numbers of 64 consecutive sequence numbers.
#[derive(Debug)]
struct Block {
    entries: [u64; 64],
    /// How many of them are stored.
    held: u8,
}

/// An index slot with no message.
const NOT_STORED: u64 = u64::MAX;

/// The smallest ring: a store that holds a few messages takes no more.
const MIN_RING: usize = 16 * 1024;

impl<PI: PeerIdentity> Store<PI> {
    pub(crate) fn new(retention: Duration, max_bytes: usize) -> Self {
        Self {
            ring: Vec::new(),
            entries: VecDeque::new(),
            first: 0,
            end: 0,
            index: HashMap::new(),
            bytes: 0,
            made_room_at: None,
            retention,
            max_bytes,
        }
    }

    /// Keeps `gossip`, making room by forgetting the oldest. An id already kept is not kept
    /// twice.
    pub(crate) fn insert(&mut self, gossip: &Gossip<PI>, now: Instant) {
        self.expire(now);
        let len = gossip.payload.len();
        if len > self.max_bytes {
            return;
        }
        let (key, place) = slot_of(&gossip.id);
        let number = self.first + self.entries.len() as u64;
        let block = self.index.entry(key).or_insert_with(|| Block {
            entries: [NOT_STORED; 64],
            held: 0,
        });
        let slot = &mut block.entries[place];
        if *slot != NOT_STORED {
            return;
        }
        *slot = number;
        block.held += 1;
        // Room: the ring grows while it may, then the oldest payloads are overwritten.
        while self.bytes + len > self.ring.len() {
            if self.ring.len() < self.max_bytes {
                self.grow(self.bytes + len);
            } else {
                self.pop_oldest();
                self.made_room_at = Some(now);
            }
        }
        let start = self.end;
        self.write(start, &gossip.payload);
        self.end += len as u64;
        self.bytes += len;
        self.entries.push_back(Stored {
            at: now,
            id: gossip.id,
            hops: gossip.hops,
            hop_limit: gossip.hop_limit,
            kind: gossip.kind,
            start,
            len,
        });
    }

    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How far back the store reaches while it is full: the age of its oldest message, if a
    /// message was forgotten to make room since that one came. `None` while the store holds
    /// every message of the last `retention` that fit.
    pub(crate) fn horizon(&self, now: Instant) -> Option<Duration> {
        let oldest = self.entries.front()?;
        let made_room_at = self.made_room_at?;
        (made_room_at > oldest.at).then(|| now.saturating_duration_since(oldest.at))
    }

    /// A copy of the message with this id, if it is kept.
    pub(crate) fn get(&self, id: &MessageId<PI>) -> Option<Gossip<PI>> {
        let (key, place) = slot_of(id);
        let number = self.index.get(&key)?.entries[place];
        let stored = self
            .entries
            .get(usize::try_from(number.checked_sub(self.first)?).ok()?)?;
        Some(self.copy_out(stored))
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            if now.saturating_duration_since(oldest.at) < self.retention {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some(oldest) = self.entries.pop_front() else {
            return;
        };
        self.first += 1;
        self.bytes -= oldest.len;
        let (key, place) = slot_of(&oldest.id);
        if let Some(block) = self.index.get_mut(&key) {
            block.entries[place] = NOT_STORED;
            block.held -= 1;
            if block.held == 0 {
                self.index.remove(&key);
            }
        }
        if self.entries.is_empty() {
            // Nothing held: the ring goes, and comes back small when needed.
            self.ring = Vec::new();
            self.end = 0;
        }
    }

    /// A ring of at least `needed` bytes (doubling, up to `max_bytes`), with what is held
    /// moved to its start.
    fn grow(&mut self, needed: usize) {
        let size = needed
            .max(self.ring.len() * 2)
            .max(MIN_RING)
            .min(self.max_bytes);
        let old = std::mem::replace(&mut self.ring, vec![0; size]);
        let mut pos = 0;
        for stored in &mut self.entries {
            if stored.len == 0 {
                stored.start = pos as u64;
                continue;
            }
            let from = (stored.start % old.len() as u64) as usize;
            let (head, tail) = split_at_wrap(&old, from, stored.len);
            self.ring[pos..pos + head.len()].copy_from_slice(head);
            self.ring[pos + head.len()..pos + stored.len].copy_from_slice(tail);
            stored.start = pos as u64;
            pos += stored.len;
        }
        self.end = pos as u64;
    }

    /// Copies `payload` into the ring at `start`, wrapping round at its end.
    fn write(&mut self, start: u64, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        let size = self.ring.len();
        let at = (start % size as u64) as usize;
        let head = payload.len().min(size - at);
        self.ring[at..at + head].copy_from_slice(&payload[..head]);
        self.ring[..payload.len() - head].copy_from_slice(&payload[head..]);
    }

    /// A copy of a message [`Store::recent`] listed.
    pub(crate) fn copy_out(&self, stored: &Stored<PI>) -> Gossip<PI> {
        let payload = if stored.len == 0 {
            bytes::Bytes::new()
        } else {
            let from = (stored.start % self.ring.len() as u64) as usize;
            let (head, tail) = split_at_wrap(&self.ring, from, stored.len);
            let mut payload = Vec::with_capacity(stored.len);
            payload.extend_from_slice(head);
            payload.extend_from_slice(tail);
            payload.into()
        };
        Gossip {
            id: stored.id,
            hops: stored.hops,
            hop_limit: stored.hop_limit,
            kind: stored.kind,
            payload,
        }
    }

    /// Up to `max` of the newest messages younger than `window` for which `wanted` holds,
    /// oldest first (without their payloads).
    pub(crate) fn recent(
        &self,
        now: Instant,
        window: Duration,
        max: usize,
        wanted: impl Fn(&Stored<PI>) -> bool,
    ) -> Vec<&Stored<PI>> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .rev()
            .take_while(|stored| now.saturating_duration_since(stored.at) < window)
            .filter(|stored| wanted(stored))
            .take(max)
            .collect();
        out.reverse();
        out
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Copies of the stored messages of `from`'s origin from its sequence number on, in
    /// order.
    pub(crate) fn since(&self, from: MessageId<PI>) -> Vec<Gossip<PI>> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .filter(|stored| stored.id.origin == from.origin && stored.id.seq >= from.seq)
            .collect();
        out.sort_unstable_by_key(|stored| stored.id.seq);
        out.into_iter()
            .map(|stored| self.copy_out(stored))
            .collect()
    }
}

/// The `len` bytes of `ring` from `from` on, as the part before its end and the part wrapped
/// round to its start.
fn split_at_wrap(ring: &[u8], from: usize, len: usize) -> (&[u8], &[u8]) {
    let head = len.min(ring.len() - from);
    (&ring[from..from + head], &ring[..len - head])
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::GossipKind;

    fn id(seq: u64) -> MessageId<u32> {
        MessageId { origin: 1, seq }
    }

    fn gossip(seq: u64, len: usize) -> Gossip<u32> {
        Gossip {
            id: id(seq),
            hops: 0,
            hop_limit: None,
            kind: GossipKind::App,
            payload: Bytes::from(vec![0; len]),
        }
    }

    #[test]
    fn seen_cache_is_bounded_in_time_and_entries() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(Duration::from_secs(10), 3);
        assert!(c.insert(id(1), t0));
        assert!(!c.insert(id(1), t0), "a duplicate is reported");
        c.insert(id(2), t0 + Duration::from_secs(1));
        c.insert(id(3), t0 + Duration::from_secs(2));
        c.insert(id(4), t0 + Duration::from_secs(3));
        assert!(!c.contains(&id(1)), "the oldest makes room");
        assert_eq!(c.len(), 3);
        c.expire(t0 + Duration::from_millis(11_500));
        assert!(!c.contains(&id(2)));
        assert!(c.contains(&id(3)));
    }

    #[test]
    fn seen_ids_share_blocks_without_mixing_origins_or_neighbors() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(Duration::from_secs(10), 200);
        let other = |seq| MessageId { origin: 2, seq };
        for seq in (60..70).chain([u64::MAX, 1 << 40]) {
            assert!(c.insert(id(seq), t0));
        }
        assert!(
            c.insert(other(64), t0),
            "another origin's same number is new"
        );
        for seq in (60..70).chain([u64::MAX, 1 << 40]) {
            assert!(c.contains(&id(seq)) && !c.insert(id(seq), t0));
        }
        for seq in [0, 59, 70, 127, 128, u64::MAX - 1, (1 << 40) + 1] {
            assert!(!c.contains(&id(seq)), "{seq} was never seen");
        }
        assert!(!c.contains(&other(65)));
        assert_eq!(c.len(), 13);
        // Forgetting the oldest clears its bit only: the rest of its block stays.
        let mut small = SeenCache::new(Duration::from_secs(10), 2);
        small.insert(id(1), t0);
        small.insert(id(2), t0);
        small.insert(id(3), t0);
        assert!(!small.contains(&id(1)));
        assert!(small.contains(&id(2)) && small.contains(&id(3)));
        small.expire(t0 + Duration::from_secs(10));
        assert_eq!(small.len(), 0);
        assert!(small.blocks.is_empty(), "an empty block is dropped");
    }

    #[test]
    fn forgotten_origins_are_remembered_by_one_number_within_a_bound() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(Duration::from_secs(10), 1);
        let of = |origin, seq| MessageId { origin, seq };
        // Each in a block of its own (the cache forgets blocks of 64 numbers).
        c.insert(of(1, 500), t0);
        c.insert(of(1, 400), t0);
        c.insert(of(1, 600), t0);
        // 500 and 400 forgotten: the floor is the highest, and covers what lies below it.
        assert!(c.is_stale(&of(1, 500), t0) && c.is_stale(&of(1, 10), t0));
        assert!(!c.is_stale(&of(1, 501), t0), "above the floor");
        assert!(!c.is_stale(&of(2, 10), t0), "another origin");
        // Ids of a block not yet forgotten whole leave no floor.
        let mut big = SeenCache::new(Duration::from_secs(10), 2);
        for seq in 0..3 {
            big.insert(of(1, seq), t0);
        }
        assert!(!big.contains(&of(1, 0)) && big.floor(&1, t0).is_none());
        // Floors for at most MAX_FLOORS origins; expired ones make room.
        for origin in 2..(MAX_FLOORS as u32 + 10) {
            c.insert(of(origin, 1), t0);
        }
        assert_eq!(c.floors.len(), MAX_FLOORS);
        let later = t0 + Duration::from_secs(10);
        assert!(!c.is_stale(&of(1, 500), later), "expired");
        c.insert(of(u32::MAX, 1), later);
        c.insert(of(u32::MAX - 1, 1), later);
        assert!(c.is_stale(&of(u32::MAX, 1), later));
        assert!(c.floors.len() < MAX_FLOORS);
    }

    #[test]
    fn a_restarted_origin_gets_a_floor_of_its_own() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(Duration::from_secs(10), 1);
        let of = |seq| MessageId { origin: 1, seq };
        // Ids a block apart: each one forgotten is a block forgotten whole.
        let old = 1 << 31;
        c.insert(of(old), t0);
        c.insert(of(old + 64), t0);
        assert!(c.is_stale(&of(old), t0));
        // Restarted far below its old numbers: those, forgotten, are its floor now.
        let new = 1 << 10;
        c.insert(of(new), t0);
        c.insert(of(new + 64), t0);
        assert!(c.is_stale(&of(new), t0));
        assert!(
            !c.is_stale(&of(old), t0),
            "the old numbers are not stale any more"
        );
        // Restarted a little below (within the window), once its old ids are all forgotten
        // and the floor they left has expired.
        c.expire(t0 + Duration::from_secs(10));
        let later = t0 + Duration::from_secs(20);
        c.insert(of(new - 128), later);
        c.insert(of(new - 5), later);
        assert!(c.is_stale(&of(new - 128), later) && !c.is_stale(&of(new), later));
    }

    #[test]
    fn store_is_bounded_in_bytes_and_time() {
        let t0 = Instant::now();
        let mut s = Store::new(Duration::from_secs(10), 100);
        s.insert(&gossip(1, 40), t0);
        s.insert(&gossip(2, 40), t0);
        s.insert(&gossip(3, 40), t0);
        assert!(s.get(&id(1)).is_none());
        assert_eq!(s.bytes(), 80);
        s.insert(&gossip(4, 500), t0);
        assert!(
            s.get(&id(4)).is_none(),
            "a payload larger than the store is not kept"
        );
        let recent: Vec<_> = s
            .recent(t0, Duration::from_secs(1), 10, |_| true)
            .iter()
            .map(|g| g.id.seq)
            .collect();
        assert_eq!(recent, vec![2, 3]);
        s.insert(&gossip(0, 10), t0);
        let mut other = gossip(7, 10);
        other.id.origin = 2;
        s.insert(&other, t0);
        let since: Vec<_> = s
            .since(id(2))
            .iter()
            .map(|g| (g.id.origin, g.id.seq))
            .collect();
        assert_eq!(
            since,
            vec![(1, 2), (1, 3)],
            "its origin only, from the given number, in order"
        );
        s.expire(t0 + Duration::from_secs(10));
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn store_reaches_back_to_its_oldest_message_only_while_full() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = Store::new(Duration::from_secs(10), 100);
        s.insert(&gossip(1, 40), at(0));
        s.insert(&gossip(2, 40), at(100));
        assert_eq!(s.horizon(at(500)), None, "it holds all it was given");
        // Message 1 goes to make room: the store reaches back to message 2.
        s.insert(&gossip(3, 40), at(200));
        assert_eq!(s.horizon(at(500)), Some(Duration::from_millis(400)));
        // Message 2 expires: what is left came with or after the last room made.
        s.expire(at(10_150));
        assert_eq!(s.horizon(at(10_150)), None);
        s.expire(at(10_200));
        assert_eq!(s.horizon(at(10_200)), None, "empty");
    }

    /// The store against a model of it (the newest payloads whose bytes fit, by time and by
    /// bytes): payloads of every size up to the whole store, wrapping round the ring's end,
    /// the ring growing with messages held (some of them wrapped round), ids of several
    /// origins and repeated ids.
    #[test]
    fn store_keeps_the_newest_payloads_that_fit_byte_for_byte() {
        // A ring at its full size from the start, overwritten by size and by time.
        store_against_its_model(3_000, 400, true, Duration::from_secs(5), 7);
        // A ring growing from `MIN_RING` while expiry has moved its contents round (no
        // payload the size of the store, which would leave nothing to move).
        store_against_its_model(100_000, 1_500, false, Duration::from_millis(400), 8);
    }

    fn store_against_its_model(
        max: usize,
        max_len: u32,
        whole: bool,
        retention: Duration,
        seed: u64,
    ) {
        use rand::{RngExt, SeedableRng};
        use rand_chacha::ChaCha8Rng;

        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut grew = 0;
        let mut s = Store::new(retention, max);
        // The model: (arrival, id, payload), oldest first.
        let mut model: VecDeque<(Instant, MessageId<u32>, Vec<u8>)> = VecDeque::new();
        let t0 = Instant::now();
        for step in 0..5_000u64 {
            let now = t0 + Duration::from_millis(step * 7);
            let origin = (rng.random::<u32>() % 3) + 1;
            let seq = step / 2 + u64::from(rng.random::<u32>() % 4);
            let len = match rng.random::<u32>() % 10 {
                0 => 0,
                1 if whole => max,
                2 => max + 1,
                _ => (rng.random::<u32>() % max_len) as usize,
            };
            let payload: Vec<u8> = (0..len).map(|_| rng.random::<u32>() as u8).collect();
            let id = MessageId { origin, seq };
            let ring = s.ring.len();
            let wrapped = s
                .entries
                .iter()
                .any(|e| e.len > 0 && (e.start % ring as u64) as usize + e.len > ring);
            s.insert(
                &Gossip {
                    id,
                    hops: (step % 7) as u16,
                    hop_limit: None,
                    kind: GossipKind::App,
                    payload: Bytes::from(payload.clone()),
                },
                now,
            );
            while model
                .front()
                .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= retention)
            {
                model.pop_front();
            }
            if len <= max && !model.iter().any(|(_, kept, _)| *kept == id) {
                while model.iter().map(|(_, _, p)| p.len()).sum::<usize>() + len > max {
                    model.pop_front();
                }
                model.push_back((now, id, payload));
            }
            assert_eq!(
                s.bytes(),
                model.iter().map(|(_, _, p)| p.len()).sum::<usize>(),
                "step {step}"
            );
            assert!(s.ring.len() <= max);
            if ring > 0 && s.ring.len() > ring && wrapped {
                grew += 1;
            }
            for (_, id, payload) in &model {
                let got = s
                    .get(id)
                    .unwrap_or_else(|| panic!("step {step}: {id:?} lost"));
                assert_eq!(got.payload, payload[..], "step {step}: {id:?}");
            }
            // A message forgotten (or never kept) is not found.
            let gone = MessageId { origin: 9, seq };
            assert!(s.get(&gone).is_none());
        }
        let recent: Vec<_> = s
            .recent(
                t0 + Duration::from_millis(4_999 * 7),
                retention,
                usize::MAX,
                |_| true,
            )
            .iter()
            .map(|stored| stored.id)
            .collect();
        let kept: Vec<_> = model.iter().map(|(_, id, _)| *id).collect();
        assert_eq!(recent, kept, "recent lists what is held, oldest first");
        if max > MIN_RING {
            assert!(grew > 0, "the ring never grew with a payload wrapped round");
        }
    }

    #[test]
    fn store_lets_its_ring_go_when_it_empties_and_keeps_ids_once() {
        let t0 = Instant::now();
        let mut s = Store::new(Duration::from_secs(10), 1 << 20);
        s.insert(&gossip(1, 100), t0);
        let ring = s.ring.len();
        assert!(
            (100..=MIN_RING).contains(&ring),
            "a small store takes little: {ring}"
        );
        let mut again = gossip(1, 50);
        again.hops = 9;
        s.insert(&again, t0);
        assert_eq!(s.bytes(), 100, "an id already kept is not kept twice");
        assert_eq!(s.get(&id(1)).map(|g| g.hops), Some(0));
        // Grows past its first size with every payload kept where it was.
        for seq in 2..=400 {
            let mut g = gossip(seq, 100);
            g.payload = Bytes::from(vec![seq as u8; 100]);
            s.insert(&g, t0);
        }
        assert!(s.ring.len() > ring);
        assert_eq!(s.get(&id(300)).unwrap().payload, vec![44u8; 100]);
        s.expire(t0 + Duration::from_secs(10));
        assert_eq!((s.bytes(), s.ring.len(), s.index.len()), (0, 0, 0));
        assert!(s.get(&id(300)).is_none());
    }
}
