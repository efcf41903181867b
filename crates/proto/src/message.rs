//! Every message the mesh protocol puts on the wire.
//!
//! Kept in one module so the wire format can be read and reviewed in one place. Encoding is
//! postcard (see [`crate::wire`] for framing). Compatibility rule: never remove or reorder a
//! field or variant; add variants at the end, and add fields only together with a new
//! [`crate::wire::WIRE_VERSION`] that older decoders reject cleanly.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use crate::id::{MeshId, MessageId};

/// The largest [`PeerData`] accepted, in bytes.
pub const MAX_PEER_DATA_LEN: usize = 512;

/// Opaque addressing data for a peer, as the driver encodes it (the runtime puts socket
/// addresses here). The core stores and forwards it without looking inside.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PeerData(Bytes);

impl PeerData {
    /// Wraps driver data; `None` if it is longer than [`MAX_PEER_DATA_LEN`].
    pub fn new(data: impl Into<Bytes>) -> Option<Self> {
        let data = data.into();
        (data.len() <= MAX_PEER_DATA_LEN).then_some(Self(data))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl<'de> Deserialize<'de> for PeerData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let data = Bytes::deserialize(deserializer)?;
        PeerData::new(data).ok_or_else(|| serde::de::Error::custom("peer data too long"))
    }
}

/// A peer and, when known, how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo<PI> {
    /// The peer's identity.
    pub id: PI,
    /// Its addressing data, if known.
    pub data: Option<PeerData>,
}

impl<PI> PeerInfo<PI> {
    /// A peer without addressing data.
    pub fn new(id: PI) -> Self {
        Self { id, data: None }
    }
}

/// One protocol message, addressed to a mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<PI> {
    /// The mesh it belongs to.
    pub mesh: MeshId,
    /// What it says.
    pub body: MeshMessage<PI>,
}

/// The messages of one mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshMessage<PI> {
    /// Neighbor management.
    Membership(MembershipMessage<PI>),
    /// Message dissemination.
    Broadcast(BroadcastMessage<PI>),
    /// Partition repair: "here are the messages I have seen lately".
    Probe(Probe<PI>),
    /// The answer to a probe, with the answerer's recent messages.
    ProbeReply(Probe<PI>),
}

impl<PI> MeshMessage<PI> {
    /// Whether this asks the receiver to send stored messages back (a graft, a resume or a
    /// fetch). Each request costs the receiver at least a full message: runtimes limit these
    /// per peer, and send the answers best effort (as far as the link's queue takes them:
    /// waiting for room for them could make two nodes wait on each other, or hold a node up
    /// for the length of a resume's answer).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Self::Broadcast(
                BroadcastMessage::Graft { .. }
                    | BroadcastMessage::Resume { .. }
                    | BroadcastMessage::Fetch { .. }
            )
        )
    }
}

/// HyParView's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipMessage<PI> {
    /// "I want to join the mesh through you." Sent to a contact by a node with no neighbor.
    Join {
        /// The joiner's addressing data.
        data: Option<PeerData>,
    },
    /// The contact's answer to a join. Referrals fill the joiner's passive view either way.
    JoinReply {
        /// Whether the contact took the joiner as a neighbor.
        accepted: bool,
        /// Other members the joiner may try.
        referrals: Vec<PeerInfo<PI>>,
    },
    /// A random walk announcing a joiner; where it ends, that node offers the joiner a link.
    ForwardJoin {
        /// The node that joined.
        joiner: PeerInfo<PI>,
        /// Hops left.
        ttl: u16,
    },
    /// "Be my neighbor."
    Neighbor {
        /// High when the sender has no neighbor at all: then the request is never refused.
        priority: Priority,
        /// The sender's addressing data.
        data: Option<PeerData>,
    },
    /// The answer to [`MembershipMessage::Neighbor`].
    NeighborReply {
        /// Whether the link is now up.
        accepted: bool,
        /// Other members to try, when refused.
        referrals: Vec<PeerInfo<PI>>,
    },
    /// "I am dropping our link", and why.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
    },
    /// A shuffle walk carrying a sample of the origin's views.
    Shuffle {
        /// The node that started the shuffle; the reply goes straight to it.
        origin: PeerInfo<PI>,
        /// Hops left.
        ttl: u16,
        /// The sample.
        nodes: Vec<PeerInfo<PI>>,
    },
    /// The answer to a shuffle: a sample of the answerer's passive view.
    ShuffleReply {
        /// The sample.
        nodes: Vec<PeerInfo<PI>>,
    },
}

/// How urgently a node asks for a neighbor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// Accepted only if the receiver has room.
    Low,
    /// Always accepted, evicting a random neighbor if the receiver is full: the sender has
    /// no neighbor, or is merging two halves of a split mesh.
    High,
}

/// Why a link was dropped. Carried in [`MembershipMessage::Disconnect`] and reported to the
/// application with neighbor-down events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer left the mesh.
    Leaving,
    /// The peer made room for another neighbor; it is still a member.
    Evicted,
    /// The peer is not a member of this mesh.
    NotMember,
    /// The link could not keep up and was dropped.
    Slow,
    /// The peer broke the protocol or a limit.
    Misbehaving,
    /// The link failed (timeout or connection loss) without a goodbye. Never sent; reported
    /// locally.
    LinkLost,
}

impl DisconnectReason {
    /// Whether the peer is still a member after this disconnect (and may be kept in the passive
    /// view for later repair).
    pub fn peer_stays(self) -> bool {
        matches!(self, Self::Evicted | Self::Slow)
    }
}

/// Plumtree's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BroadcastMessage<PI> {
    /// A message, pushed eagerly.
    Gossip(Gossip<PI>),
    /// Lazy push: ids of messages the sender has, batched and grouped by origin (see
    /// [`Announced`]).
    IHave(Vec<Announced<PI>>),
    /// "Send me this message, and push eagerly to me from now on."
    Graft {
        /// The message wanted; `None` only turns the link eager.
        id: Option<MessageId<PI>>,
    },
    /// "I got that already: announce lazily to me from now on."
    Prune,
    /// "You are my parent in the tree this beacon is rebuilding": the link stays eager when
    /// the new tree takes over.
    Parent {
        /// The beacon.
        beacon: MessageId<PI>,
    },
    /// "Send me these messages" and nothing more: unlike a graft, the tree stays as it is.
    /// Asked for messages missing while the tree still brings their origin's newer ones (a
    /// hole, or a run of them after the tree changed, not a broken link).
    Fetch {
        /// The first message wanted.
        id: MessageId<PI>,
        /// How many of its origin's messages, from `id` on, are wanted (at most
        /// [`crate::broadcast::MAX_FETCH_RUN`] are answered).
        count: u16,
    },
    /// "Send me this message and every later one of its origin you still keep, in order, and
    /// push eagerly to me from now on": a graft that also refills the gap. Asked when the tree
    /// stopped bringing an origin's messages altogether (the parent stalled or left), so the
    /// asker has none of them past `from`; the gap then comes as one stream, in order, instead
    /// of one graft per missing message (what the link's queue does not take is fetched).
    Resume {
        /// The first message wanted.
        from: MessageId<PI>,
    },
}

/// A broadcast message in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip<PI> {
    /// Origin and sequence number.
    pub id: MessageId<PI>,
    /// Links travelled so far, counting the one it arrives on (1 at the origin's neighbors).
    pub hops: u16,
    /// The most links it may travel (1 = the origin's neighbors only); `None` for no limit.
    /// A hop-limited message is flooded within its limit, since the broadcast tree does not
    /// follow hop distances.
    pub hop_limit: Option<u16>,
    /// Application data or the mesh's own beacon.
    pub kind: GossipKind,
    /// The application payload (opaque to the core). Decoded by the runtime's links, it is a
    /// slice of the buffer the link read it into (see [`crate::wire::decode_frame_shared`]).
    #[serde(with = "crate::wire::shared_bytes")]
    pub payload: Bytes,
}

/// What a gossip message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipKind {
    /// Application data: delivered.
    App,
    /// The mesh's beacon: never delivered, always flooded over every link. The flood, with the
    /// usual prune of duplicates, rebuilds the broadcast tree as a shortest-path tree from the
    /// beacon's origin; and beacon ids let partition probes tell two halves of a quiet mesh
    /// apart.
    Beacon,
}

/// One id in a lazy push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement<PI> {
    /// The message.
    pub id: MessageId<PI>,
    /// Its hop count at the announcer.
    pub hops: u16,
    /// Sent because the link just came up (catch-up), not because the message just arrived.
    pub catch_up: bool,
}

/// The ids of one origin's messages in a lazy push, as runs of consecutive sequence numbers.
///
/// On the wire a run costs its first sequence number, length, hop count and flag (about 7
/// bytes) however many ids it holds, and the origin's 32 bytes come once per group. An origin
/// numbers its messages one after another and a neighbor passes them on in order, so under
/// load one run holds every message of a batch (see [`Announced::group`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced<PI> {
    /// The node that first sent these messages.
    pub origin: PI,
    /// The messages, in the order announced.
    pub runs: Vec<AnnouncedRun>,
}

/// Consecutive messages in [`Announced`], with the same hop count and flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedRun {
    /// The origin's sequence number of the first.
    pub first: u64,
    /// How many: `first`, `first + 1`, ... (none past `u64::MAX`).
    pub count: u32,
    /// Their hop count at the announcer.
    pub hops: u16,
    /// Sent because the link just came up (catch-up), not because the messages just arrived.
    pub catch_up: bool,
}

impl AnnouncedRun {
    /// Whether `next`, a run of one, continues this run: the next id, with the same hop count
    /// and flag, and room in the count.
    fn continues_with(&self, next: &AnnouncedRun) -> bool {
        self.hops == next.hops
            && self.catch_up == next.catch_up
            && self.count < u32::MAX
            && self.first.checked_add(u64::from(self.count)) == Some(next.first)
    }

    /// The sequence numbers in the run.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + use<> {
        let first = self.first;
        (0..u64::from(self.count)).map_while(move |i| first.checked_add(i))
    }
}

impl<PI: Copy + Eq> Announced<PI> {
    /// Groups announcements by origin, keeping their order, and merges consecutive ids with
    /// the same hop count and flag into runs (under load, one run per origin and batch).
    ///
    /// Merged, the lazy push costs 10% less CPU time per delivery than with a run per id
    /// (`peerchannel-bench --secs 3`, three alternating pairs in one build, 2026-12-07: 9.0
    /// against 10.0 us). Until a node back from a stall gave up at once the messages further
    /// behind than the stores hold (see `Broadcast::graft_due`), merging cost that node 5-13%
    /// of the messages sent after its return: the small batches queued for it during the stall
    /// still fit in its receive window, and on its return it asked for every message they
    /// announced, long forgotten everywhere, before the new holes.
    pub fn group(announcements: &[Announcement<PI>]) -> Vec<Self> {
        let mut groups: Vec<Self> = Vec::new();
        for a in announcements {
            let run = AnnouncedRun {
                first: a.id.seq,
                count: 1,
                hops: a.hops,
                catch_up: a.catch_up,
            };
            match groups.last_mut() {
                Some(group) if group.origin == a.id.origin => match group.runs.last_mut() {
                    Some(last) if last.continues_with(&run) => last.count += 1,
                    _ => group.runs.push(run),
                },
                _ => groups.push(Self {
                    origin: a.id.origin,
                    runs: vec![run],
                }),
            }
        }
        groups
    }

    /// How many ids the runs claim, summed without overflowing (a run that would go past
    /// `u64::MAX` yields fewer: see [`AnnouncedRun::seqs`]).
    pub fn len(&self) -> usize {
        self.runs
            .iter()
            .fold(0usize, |sum, run| sum.saturating_add(run.count as usize))
    }

    /// Whether the group announces no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The announcements, one per id.
    pub fn iter(&self) -> impl Iterator<Item = Announcement<PI>> + '_ {
        self.runs.iter().flat_map(move |run| {
            run.seqs().map(move |seq| Announcement {
                id: MessageId {
                    origin: self.origin,
                    seq,
                },
                hops: run.hops,
                catch_up: run.catch_up,
            })
        })
    }
}

/// Partition repair: what the sender knows of the mesh's recent history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe<PI> {
    /// Recent beacon ids, newest first, each with how long ago the sender saw it (this version
    /// sends the newest one only; a receiver looks at the first).
    pub recent: Vec<RecentId<PI>>,
    /// The sender's addressing data.
    pub data: Option<PeerData>,
}

/// A message id and its age at the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentId<PI> {
    /// The message.
    pub id: MessageId<PI>,
    /// Milliseconds since the sender first saw it.
    pub age_ms: u32,
}
