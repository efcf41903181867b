//! A map from message ids to values, laid out for ids numbered one after another.
//!
//! Every message announced before its eager copy arrives is awaited (under load most are:
//! 88% of deliveries in `peerchannel-bench`'s throughput phase), so an entry is made, looked
//! up and removed for nearly every message. In a hash map keyed by 40-byte ids with the
//! values inline (272 bytes a bucket), each of those missed the cache: removing an entry was
//! 3% of the bench's CPU, 80% of that one load. Here the ids go in blocks of [`BLOCK`]
//! consecutive sequence numbers per origin, each slot the number of a value in a slab: the
//! ids of a sender's run share a block, the block table stays small, and a freed place is
//! reused while still in the cache.
//!
//! Ids scattered at random cost a block each (112 bytes in the table); the caller bounds how
//! many entries it makes.

use std::collections::HashMap;

use crate::id::{MessageId, PeerIdentity};

/// A slot with no value.
const EMPTY: u32 = u32::MAX;

/// Sequence numbers per block. Sixteen, not the 64 of the seen cache: ids scattered at
/// random cost a block each, and a block of 64 slots cost as much as a value.
const BLOCK: usize = 16;

/// A map from message ids to `V`.
#[derive(Debug)]
pub(crate) struct IdMap<PI, V> {
    /// Per origin and block of [`BLOCK`] sequence numbers, where each id's value is.
    blocks: HashMap<(PI, u64), Block>,
    /// The values, with their ids; `None` where one was removed.
    slab: Vec<Option<(MessageId<PI>, V)>>,
    /// Places in `slab` free for reuse, the most recently freed last.
    free: Vec<u32>,
}

/// Where the values of [`BLOCK`] consecutive sequence numbers are in the slab.
#[derive(Debug)]
struct Block {
    slots: [u32; BLOCK],
    /// How many of them hold a value.
    held: u8,
}

/// The smallest slab kept once the map is empty again.
const KEEP_EMPTY: usize = 64;

impl<PI: PeerIdentity, V> IdMap<PI, V> {
    pub(crate) fn new() -> Self {
        Self {
            blocks: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    /// Where `id`'s value is in the slab, if it has one.
    fn place(&self, id: &MessageId<PI>) -> Option<usize> {
        let slot = self.blocks.get(&block_of(id))?.slots[slot_of(id.seq)];
        (slot != EMPTY).then_some(slot as usize)
    }

    pub(crate) fn contains(&self, id: &MessageId<PI>) -> bool {
        self.place(id).is_some()
    }

    #[cfg(test)]
    pub(crate) fn get(&self, id: &MessageId<PI>) -> Option<&V> {
        let place = self.place(id)?;
        self.slab[place].as_ref().map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId<PI>) -> Option<&mut V> {
        let place = self.place(id)?;
        self.slab[place].as_mut().map(|(_, v)| v)
    }

    /// `id`'s value, made by `make` if it has none. `None` only when the slab is out of
    /// numbers (`u32::MAX` values held): callers bound the map far below that.
    pub(crate) fn get_or_insert_with(
        &mut self,
        id: MessageId<PI>,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        let key = block_of(&id);
        let slot = slot_of(id.seq);
        let entry = self.blocks.entry(key).or_insert(Block {
            slots: [EMPTY; BLOCK],
            held: 0,
        });
        let place = match entry.slots[slot] {
            EMPTY => {
                let place = match self.free.pop() {
                    Some(place) => place,
                    None => {
                        let place = u32::try_from(self.slab.len()).ok().filter(|p| *p != EMPTY);
                        let Some(place) = place else {
                            if entry.held == 0 {
                                self.blocks.remove(&key);
                            }
                            return None;
                        };
                        self.slab.push(None);
                        place
                    }
                };
                entry.slots[slot] = place;
                entry.held += 1;
                self.slab[place as usize] = Some((id, make()));
                place
            }
            place => place,
        };
        self.slab[place as usize].as_mut().map(|(_, v)| v)
    }

    pub(crate) fn remove(&mut self, id: &MessageId<PI>) -> Option<V> {
        let key = block_of(id);
        let entry = self.blocks.get_mut(&key)?;
        let slot = &mut entry.slots[slot_of(id.seq)];
        if *slot == EMPTY {
            return None;
        }
        let place = std::mem::replace(slot, EMPTY);
        entry.held -= 1;
        if entry.held == 0 {
            self.blocks.remove(&key);
        }
        let (_, value) = self.slab[place as usize].take()?;
        self.free.push(place);
        if self.len() == 0 {
            // Let go of what a burst took.
            self.free.clear();
            self.slab.clear();
            self.slab.shrink_to(KEEP_EMPTY);
            self.free.shrink_to(KEEP_EMPTY);
            self.blocks.shrink_to(KEEP_EMPTY);
        }
        Some(value)
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slab.iter().flatten().map(|(_, v)| v)
    }

    /// Every id, in no particular order.
    #[cfg(test)]
    pub(crate) fn ids(&self) -> impl Iterator<Item = MessageId<PI>> {
        self.slab.iter().flatten().map(|(id, _)| *id)
    }
}

/// The block an id falls in.
fn block_of<PI: PeerIdentity>(id: &MessageId<PI>) -> (PI, u64) {
    (id.origin, id.seq / BLOCK as u64)
}

/// `seq`'s slot in its block.
fn slot_of(seq: u64) -> usize {
    (seq % BLOCK as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{RngExt, SeedableRng};

    use super::*;

    fn id(origin: u32, seq: u64) -> MessageId<u32> {
        MessageId { origin, seq }
    }

    /// Random inserts, lookups and removals against a `BTreeMap`: consecutive ids, ids
    /// scattered over the whole range, block edges and the ends of the sequence numbers.
    #[test]
    fn behaves_as_a_map() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut map = IdMap::new();
        let mut model = BTreeMap::new();
        let edges = [0, 15, 16, 31, 63, 64, u64::MAX - 16, u64::MAX - 1, u64::MAX];
        for step in 0..200_000u64 {
            let origin = rng.random_range(0..3u32);
            let seq = match rng.random_range(0..4) {
                0 => rng.random::<u64>(),
                1 => edges[rng.random_range(0..edges.len())],
                _ => rng.random_range(1_000..1_400),
            };
            let key = id(origin, seq);
            match rng.random_range(0..5) {
                0 | 1 => {
                    let value = map.get_or_insert_with(key, || step).copied();
                    let expected = *model.entry(key).or_insert(step);
                    assert_eq!(value, Some(expected));
                }
                2 => assert_eq!(map.remove(&key), model.remove(&key)),
                3 => {
                    if let Some(v) = map.get_mut(&key) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 1;
                    }
                }
                _ => {
                    assert_eq!(map.get(&key), model.get(&key));
                    assert_eq!(map.contains(&key), model.contains_key(&key));
                }
            }
            assert_eq!(map.len(), model.len());
            if step % 10_000 == 0 {
                let mut ids: Vec<_> = map.ids().collect();
                ids.sort();
                assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
                let mut values: Vec<_> = map.values().copied().collect();
                values.sort();
                let mut expected: Vec<_> = model.values().copied().collect();
                expected.sort();
                assert_eq!(values, expected);
            }
        }
    }

    /// Blocks go with their last id, and an emptied map lets go of its slab.
    #[test]
    fn lets_go_of_what_it_no_longer_holds() {
        let mut map = IdMap::new();
        for seq in 0..10_000 {
            map.get_or_insert_with(id(1, seq), || seq);
        }
        assert_eq!(map.blocks.len(), 625);
        for seq in 0..9_999 {
            assert_eq!(map.remove(&id(1, seq)), Some(seq));
        }
        assert_eq!(map.blocks.len(), 1, "only the last id's block is left");
        assert_eq!(map.free.len(), 9_999, "removed places are reused");
        map.get_or_insert_with(id(1, 20_000), || 0);
        assert_eq!(map.slab.len(), 10_000, "a new value takes a freed place");
        map.remove(&id(1, 9_999));
        map.remove(&id(1, 20_000));
        assert_eq!(map.len(), 0);
        assert!(map.blocks.is_empty());
        assert!(map.slab.capacity() <= KEEP_EMPTY);
        assert!(map.free.is_empty());
        assert_eq!(map.remove(&id(1, 5)), None);
    }
}
