//! The node: every mesh it is in, routed by mesh id, behind one drive contract.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;

use crate::broadcast::Delivery;
use crate::config::Config;
use crate::id::{MeshId, MessageId, PeerIdentity};
use crate::mesh::{
    BroadcastError, BroadcastOptions, BroadcastStatus, Filter, Mesh, MeshEvent, MeshOut, MeshStats,
};
use crate::message::{
    DisconnectReason, MembershipMessage, MeshMessage, Message, PeerData, PeerInfo,
};

/// An input from the driver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum InEvent<PI> {
    /// A message arrived from a peer over an authenticated link.
    Message {
        /// The peer it came from, as the link authenticated it (never taken from the message).
        from: PI,
        /// The message.
        message: Message<PI>,
    },
    /// The link to a peer is gone: closed by the peer, timed out (the QUIC idle timeout), or a
    /// dial that failed. Messages sent to it since may be lost.
    PeerDisconnected {
        /// The peer.
        peer: PI,
    },
    /// Contacts for a mesh, in answer to [`OutEvent::WantContacts`] (or unasked).
    Contacts {
        /// The mesh.
        mesh: MeshId,
        /// Members the resolver knows of.
        contacts: Vec<PeerInfo<PI>>,
    },
    /// The link to a peer cannot keep up (its send queue is full): stop pushing to it eagerly
    /// in every mesh.
    PeerSlow {
        /// The peer.
        peer: PI,
    },
    /// The peer may not take part in one mesh: the driver's admission check for that mesh
    /// (a password or certificate handshake) failed or was refused, while the link itself may
    /// still serve other meshes. Handled like a lost link, for that mesh only: the peer leaves
    /// its active and passive views and requests to it are given up.
    PeerRefused {
        /// The mesh.
        mesh: MeshId,
        /// The peer.
        peer: PI,
    },
}

/// An output for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutEvent<PI> {
    /// Send a message to a peer, dialing it first if there is no link (using the latest
    /// [`OutEvent::PeerData`] for it). If the dial fails, report
    /// [`InEvent::PeerDisconnected`].
    SendMessage {
        /// The peer.
        to: PI,
        /// The message.
        message: Message<PI>,
    },
    /// No mesh needs the link to this peer any more: close it once queued messages are sent.
    /// A later [`OutEvent::SendMessage`] to the same peer opens a new one.
    DisconnectPeer {
        /// The peer.
        peer: PI,
    },
    /// How to reach a peer (its addresses, as the driver encoded them).
    PeerData {
        /// The peer.
        peer: PI,
        /// Its data.
        data: PeerData,
    },
    /// The mesh needs members to connect to: ask the resolver for up to `count` and answer
    /// with [`InEvent::Contacts`].
    WantContacts {
        /// The mesh.
        mesh: MeshId,
        /// How many.
        count: usize,
    },
    /// A message for the application.
    Deliver {
        /// The mesh.
        mesh: MeshId,
        /// The message.
        delivery: Delivery<PI>,
    },
    /// Something happened to a mesh.
    Event {
        /// The mesh.
        mesh: MeshId,
        /// What.
        event: MeshEvent<PI>,
    },
}

/// Why joining failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The node is already in this mesh. Use the existing membership, or leave first.
    #[error("already a member of mesh `{0}`")]
    AlreadyJoined(MeshId),
}

/// Why an operation on a mesh failed because the node is not in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a member of mesh `{0}`")]
pub struct NotJoined(pub MeshId);

/// A node's counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Messages for meshes this node is not in.
    pub unknown_mesh: u64,
}

/// The protocol state of one node: every mesh it is in.
///
/// # The drive contract
///
/// `State` does no I/O, reads no clock and draws no OS randomness: the driver (the network
/// runtime, the simulator, a test) feeds it inputs and carries out its outputs.
///
/// - **Inputs** are [`State::handle`] (messages, lost links, contacts), the commands
///   ([`State::join`], [`State::leave`], [`State::broadcast`]), and [`State::handle_timeout`].
///   Each takes `now`; time only moves forward (an earlier `now` than before is treated as
///   the latest one seen, never as going back).
/// - **Outputs** are drained with [`State::poll_event`] after every input, until it returns
///   `None`. Carry them out in order: a [`OutEvent::PeerData`] precedes the first
///   [`OutEvent::SendMessage`] that needs it, and messages to one peer must stay in order.
/// - **Timers**: after draining, [`State::poll_timeout`] gives the next instant at which
///   [`State::handle_timeout`] must be called. Calling it early, late or twice is harmless:
///   it acts on what is due.
/// - **Failure detection** is the driver's: the core learns that a peer died only from
///   [`InEvent::PeerDisconnected`], which on the network comes after the QUIC idle timeout.
///   The core never assumes instant notice; it repairs when told.
///
/// ```
/// use std::time::Instant;
/// use rand::SeedableRng;
/// use peerchannel_proto::{Config, MeshId, OutEvent, PeerInfo, State};
///
/// let now = Instant::now();
/// let mesh = MeshId::new("soccerpals").unwrap();
/// let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let mut node = State::new(1u32, None, rng);
/// node.join(mesh.clone(), Config::default(), vec![PeerInfo::new(2)], now).unwrap();
/// // The node asks to join through its contact: the driver sends that message to peer 2.
/// let mut sends = 0;
/// while let Some(event) = node.poll_event() {
///     if let OutEvent::SendMessage { to, .. } = event {
///         assert_eq!(to, 2);
///         sends += 1;
///     }
/// }
/// assert_eq!(sends, 1);
/// assert!(node.poll_timeout().is_some());
/// ```
pub struct State<PI, R> {
    me: PI,
    my_data: Option<PeerData>,
    rng: R,
    meshes: BTreeMap<MeshId, Mesh<PI>>,
    out: VecDeque<OutEvent<PI>>,
    scratch: Vec<MeshOut<PI>>,
    latest: Option<Instant>,
    stats: NodeStats,
}

impl<PI: PeerIdentity, R: Rng> State<PI, R> {
    /// A node with identity `me`, reachable as `my_data` says, drawing randomness from `rng`.
    pub fn new(me: PI, my_data: Option<PeerData>, rng: R) -> Self {
        Self {
            me,
            my_data,
            rng,
            meshes: BTreeMap::new(),
            out: VecDeque::new(),
            scratch: Vec::new(),
            latest: None,
            stats: NodeStats::default(),
        }
    }

    /// This node's identity.
    pub fn me(&self) -> &PI {
        &self.me
    }

    /// Changes how this node is reached (its addresses changed); sent with later requests.
    pub fn set_my_data(&mut self, data: Option<PeerData>) {
        self.my_data = data.clone();
        for mesh in self.meshes.values_mut() {
            mesh.set_my_data(data.clone());
        }
    }

    /// Joins a mesh through the given contacts; with none, the node asks for contacts with
    /// [`OutEvent::WantContacts`].
    pub fn join(
        &mut self,
        mesh: MeshId,
        config: Config,
        contacts: Vec<PeerInfo<PI>>,
        now: Instant,
    ) -> Result<(), JoinError> {
        let now = self.clock(now);
        if self.meshes.contains_key(&mesh) {
            return Err(JoinError::AlreadyJoined(mesh));
        }
        let mut state = Mesh::new(self.me, self.my_data.clone(), config, now, &mut self.rng);
        state.join(contacts, now, &mut self.rng, &mut self.scratch);
        self.meshes.insert(mesh.clone(), state);
        self.flush(&mesh);
        Ok(())
    }

    /// Leaves a mesh, saying goodbye to its neighbors. Returns how many messages were still in
    /// the offline queue and will never be sent.
    pub fn leave(&mut self, mesh: &MeshId, now: Instant) -> Result<usize, NotJoined> {
        let now = self.clock(now);
        let mut state = self
            .meshes
            .remove(mesh)
            .ok_or_else(|| NotJoined(mesh.clone()))?;
        let unsent = state.leave(now, &mut self.rng, &mut self.scratch);
        self.flush(mesh);
        Ok(unsent)
    }

    /// Sends a message to every member of a mesh.
    ///
    /// While the node has no neighbor the message waits in a bounded offline queue
    /// ([`BroadcastStatus::Queued`]); when the queue is full, the call fails and nothing is
    /// queued. The origin does not receive its own message.
    pub fn broadcast(
        &mut self,
        mesh: &MeshId,
        payload: Bytes,
        options: BroadcastOptions,
        now: Instant,
    ) -> Result<(MessageId<PI>, BroadcastStatus), BroadcastError> {
        self.broadcast_with(mesh, options, now, move |_| payload)
    }

    /// Like [`State::broadcast`], building the payload from the message's id (for example to
    /// sign the id together with the content).
    pub fn broadcast_with(
        &mut self,
        mesh: &MeshId,
        options: BroadcastOptions,
        now: Instant,
        payload: impl FnOnce(MessageId<PI>) -> Bytes,
    ) -> Result<(MessageId<PI>, BroadcastStatus), BroadcastError> {
        let now = self.clock(now);
        let state = self.meshes.get_mut(mesh).ok_or(BroadcastError::NotJoined)?;
        let result = state.broadcast(payload, options, now, &mut self.rng, &mut self.scratch);
        self.flush(mesh);
        result
    }

    /// Installs (or with `None` removes) a mesh's propagation filter, consulted for each new
    /// application message before it is delivered or passed on.
    pub fn set_filter(
        &mut self,
        mesh: &MeshId,
        filter: Option<Filter<PI>>,
    ) -> Result<(), NotJoined> {
        let state = self
            .meshes
            .get_mut(mesh)
            .ok_or_else(|| NotJoined(mesh.clone()))?;
        state.set_filter(filter);
        Ok(())
    }

    /// Handles one input from the driver.
    pub fn handle(&mut self, event: InEvent<PI>, now: Instant) {
        let now = self.clock(now);
        match event {
            InEvent::Message { from, message } => self.on_message(from, message, now),
            InEvent::PeerDisconnected { peer } => {
                let meshes: Vec<MeshId> = self.meshes.keys().cloned().collect();
                for id in meshes {
                    if let Some(state) = self.meshes.get_mut(&id) {
                        state.peer_disconnected(peer, now, &mut self.rng, &mut self.scratch);
                    }
                    self.flush(&id);
                }
            }
            InEvent::Contacts { mesh, contacts } => {
                if let Some(state) = self.meshes.get_mut(&mesh) {
                    state.contacts(contacts, now, &mut self.rng, &mut self.scratch);
                    self.flush(&mesh);
                }
            }
            InEvent::PeerRefused { mesh, peer } => {
                if let Some(state) = self.meshes.get_mut(&mesh) {
                    state.peer_disconnected(peer, now, &mut self.rng, &mut self.scratch);
                    self.flush(&mesh);
                }
            }
            InEvent::PeerSlow { peer } => {
                let meshes: Vec<MeshId> = self.meshes.keys().cloned().collect();
                for id in meshes {
                    if let Some(state) = self.meshes.get_mut(&id) {
                        state.peer_slow(peer, now, &mut self.rng, &mut self.scratch);
                    }
                    self.flush(&id);
                }
            }
        }
    }

    /// The next instant [`State::handle_timeout`] must be called at, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.meshes.values().filter_map(|m| m.poll_timeout()).min()
    }

    /// Acts on every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        let due: Vec<MeshId> = self
            .meshes
            .iter()
            .filter(|(_, m)| m.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(state) = self.meshes.get_mut(&id) {
                state.handle_timeout(now, &mut self.rng, &mut self.scratch);
            }
            self.flush(&id);
        }
    }

    /// The next output, if any. Drain until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<OutEvent<PI>> {
        self.out.pop_front()
    }

    /// The meshes this node is in.
    pub fn meshes(&self) -> impl Iterator<Item = &MeshId> {
        self.meshes.keys()
    }

    /// A mesh's neighbors (its active view).
    pub fn neighbors(&self, mesh: &MeshId) -> Option<&[PI]> {
        self.meshes.get(mesh).map(|m| m.neighbors())
    }

    /// A mesh's passive view: members known for repair.
    pub fn passive(&self, mesh: &MeshId) -> Option<&[PI]> {
        self.meshes.get(mesh).map(|m| m.passive())
    }

    /// The neighbors a mesh pushes messages to eagerly (its part of the broadcast tree).
    pub fn eager_peers(&self, mesh: &MeshId) -> Option<Vec<PI>> {
        self.meshes.get(mesh).map(|m| m.eager().copied().collect())
    }

    /// Whether any mesh needs a link to `peer` (a neighbor, or a request under way). A driver
    /// may close links that no mesh uses once they have been idle for a while.
    pub fn uses(&self, peer: &PI) -> bool {
        self.meshes.values().any(|m| m.uses(peer))
    }

    /// Whether a mesh has at least one neighbor.
    pub fn is_online(&self, mesh: &MeshId) -> bool {
        self.meshes.get(mesh).is_some_and(|m| m.is_online())
    }

    /// A mesh's counters.
    pub fn mesh_stats(&self, mesh: &MeshId) -> Option<MeshStats> {
        self.meshes.get(mesh).map(|m| m.stats())
    }

    /// The node's own counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    fn clock(&mut self, now: Instant) -> Instant {
        let now = self.latest.map_or(now, |latest| latest.max(now));
        self.latest = Some(now);
        now
    }

    fn on_message(&mut self, from: PI, message: Message<PI>, now: Instant) {
        let Message { mesh, body } = message;
        if let Some(state) = self.meshes.get_mut(&mesh) {
            state.handle_message(from, body, now, &mut self.rng, &mut self.scratch);
            self.flush(&mesh);
            return;
        }
        self.stats.unknown_mesh += 1;
        // A request for a mesh we are not in gets a quick "not a member" so the asker moves on
        // at once instead of waiting out its timeout (resolvers can be a minute out of date).
        let asks = matches!(
            body,
            MeshMessage::Membership(
                MembershipMessage::Join { .. }
                    | MembershipMessage::Neighbor { .. }
                    | MembershipMessage::Shuffle { .. }
            ) | MeshMessage::Probe(_)
        );
        if asks {
            let body = MeshMessage::Membership(MembershipMessage::Disconnect {
                reason: DisconnectReason::NotMember,
            });
            self.out.push_back(OutEvent::SendMessage {
                to: from,
                message: Message { mesh, body },
            });
        }
    }

    /// Moves a mesh's outputs to the node's queue.
    fn flush(&mut self, mesh: &MeshId) {
        // Taken and put back, emptied: its capacity serves the next input (a vector made anew
        // per message was an allocation per message).
        let mut scratch = std::mem::take(&mut self.scratch);
        for o in scratch.drain(..) {
            let event = match o {
                MeshOut::Send(to, body) => OutEvent::SendMessage {
                    to,
                    message: Message {
                        mesh: mesh.clone(),
                        body,
                    },
                },
                MeshOut::PeerData(peer, data) => OutEvent::PeerData { peer, data },
                MeshOut::WantContacts(count) => OutEvent::WantContacts {
                    mesh: mesh.clone(),
                    count,
                },
                MeshOut::Release(peer) => {
                    if self.meshes.values().any(|m| m.uses(&peer)) {
                        continue;
                    }
                    OutEvent::DisconnectPeer { peer }
                }
                MeshOut::Event(event) => OutEvent::Event {
                    mesh: mesh.clone(),
                    event,
                },
                MeshOut::Deliver(delivery) => OutEvent::Deliver {
                    mesh: mesh.clone(),
                    delivery,
                },
            };
            self.out.push_back(event);
        }
        self.scratch = scratch;
    }
}

impl<PI: PeerIdentity, R> std::fmt::Debug for State<PI, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("me", &self.me)
            .field("meshes", &self.meshes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::mesh::MeshEvent;
    use crate::message::{BroadcastMessage, Gossip, GossipKind, Priority, Probe};

    #[test]
    fn a_request_for_a_mesh_we_are_not_in_gets_not_a_member() {
        let now = Instant::now();
        let mut node = node(1);
        let other = mesh("other");
        let asks = [
            MeshMessage::Membership(MembershipMessage::Join { data: None }),
            MeshMessage::Membership(MembershipMessage::Neighbor {
                priority: Priority::High,
                data: None,
            }),
            MeshMessage::Probe(Probe {
                recent: vec![],
                data: None,
            }),
        ];
        for body in asks {
            node.handle(message(2, &other, body.clone()), now);
            assert_eq!(
                drain(&mut node),
                vec![OutEvent::SendMessage {
                    to: 2,
                    message: Message {
                        mesh: other.clone(),
                        body: MeshMessage::Membership(MembershipMessage::Disconnect {
                            reason: DisconnectReason::NotMember,
                        }),
                    },
                }],
                "answer to {body:?}"
            );
        }
        // Anything else for an unknown mesh is dropped and counted, never answered.
        let gossip = MeshMessage::Broadcast(BroadcastMessage::Gossip(Gossip {
            id: MessageId { origin: 2, seq: 0 },
            hops: 1,
            hop_limit: None,
            kind: GossipKind::App,
            payload: Bytes::from_static(b"hi"),
        }));
        node.handle(message(2, &other, gossip), now);
        assert_eq!(drain(&mut node), vec![]);
        assert_eq!(node.stats().unknown_mesh, 4);
    }

    #[test]
    fn a_peer_is_disconnected_only_when_no_mesh_uses_it() {
        let now = Instant::now();
        let (a, b) = (mesh("a"), mesh("b"));
        let mut node = node(1);
        node.join(a.clone(), Config::default(), vec![], now)
            .unwrap();
        node.join(b.clone(), Config::default(), vec![], now)
            .unwrap();
        for m in [&a, &b] {
            for peer in [2, 3] {
                let join = MeshMessage::Membership(MembershipMessage::Join { data: None });
                node.handle(message(peer, m, join), now);
            }
        }
        drain(&mut node);

        // 2 leaves mesh a but is still our neighbor in b.
        let bye = MeshMessage::Membership(MembershipMessage::Disconnect {
            reason: DisconnectReason::Leaving,
        });
        node.handle(message(2, &a, bye.clone()), now);
        assert_eq!(disconnects(&drain(&mut node)), vec![]);
        node.handle(message(2, &b, bye), now);
        assert_eq!(disconnects(&drain(&mut node)), vec![2]);

        // 3's link fails: every mesh lets go of it, and the link is closed once.
        node.handle(InEvent::PeerDisconnected { peer: 3 }, now);
        let out = drain(&mut node);
        assert_eq!(disconnects(&out), vec![3]);
        let downs: Vec<_> = out
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    OutEvent::Event {
                        event: MeshEvent::NeighborDown(3, DisconnectReason::LinkLost),
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(downs.len(), 2, "one neighbor-down per mesh: {out:?}");
    }

    #[test]
    fn a_peer_refused_in_one_mesh_stays_in_the_others() {
        let now = Instant::now();
        let (a, b) = (mesh("a"), mesh("b"));
        let mut node = node(1);
        // A join request under way to 2 in mesh a; 2 is our neighbor in mesh b.
        node.join(a.clone(), Config::default(), vec![PeerInfo::new(2)], now)
            .unwrap();
        node.join(b.clone(), Config::default(), vec![], now)
            .unwrap();
        let join = MeshMessage::Membership(MembershipMessage::Join { data: None });
        node.handle(message(2, &b, join), now);
        drain(&mut node);

        node.handle(
            InEvent::PeerRefused {
                mesh: a.clone(),
                peer: 2,
            },
            now,
        );
        let out = drain(&mut node);
        assert_eq!(
            disconnects(&out),
            vec![],
            "mesh b still uses the link: {out:?}"
        );
        assert!(node.uses(&2));
        assert_eq!(node.neighbors(&b), Some(&[2][..]));
        assert!(node.passive(&a).unwrap().is_empty(), "mesh a forgets 2");
        // The join request was given up: no timeout is left for it.
        node.handle_timeout(now + Config::default().membership.request_timeout);
        assert_eq!(node.mesh_stats(&a).unwrap().membership.request_timeouts, 0);

        // Refused in its last mesh too: the link may close.
        node.handle(
            InEvent::PeerRefused {
                mesh: b.clone(),
                peer: 2,
            },
            now,
        );
        let out = drain(&mut node);
        assert_eq!(disconnects(&out), vec![2], "{out:?}");
        assert_eq!(node.neighbors(&b), Some(&[][..]));
        // A refusal for a mesh the node is not in changes nothing.
        node.handle(
            InEvent::PeerRefused {
                mesh: mesh("c"),
                peer: 2,
            },
            now,
        );
        assert_eq!(drain(&mut node), vec![]);
    }

    #[test]
    fn leaving_one_mesh_keeps_the_links_another_mesh_uses() {
        let now = Instant::now();
        let (a, b) = (mesh("a"), mesh("b"));
        let mut node = node(1);
        node.join(a.clone(), Config::default(), vec![], now)
            .unwrap();
        node.join(b.clone(), Config::default(), vec![], now)
            .unwrap();
        let join = MeshMessage::Membership(MembershipMessage::Join { data: None });
        node.handle(message(2, &a, join.clone()), now);
        node.handle(message(2, &b, join.clone()), now);
        node.handle(message(3, &a, join), now);
        drain(&mut node);

        assert_eq!(node.leave(&a, now), Ok(0));
        let out = drain(&mut node);
        let bye = |to| OutEvent::SendMessage {
            to,
            message: Message {
                mesh: a.clone(),
                body: MeshMessage::Membership(MembershipMessage::Disconnect {
                    reason: DisconnectReason::Leaving,
                }),
            },
        };
        assert!(out.contains(&bye(2)) && out.contains(&bye(3)), "{out:?}");
        assert_eq!(disconnects(&out), vec![3], "mesh b still uses 2");
        assert_eq!(node.meshes().collect::<Vec<_>>(), vec![&b]);
        assert_eq!(node.leave(&a, now), Err(NotJoined(a)));
    }

    #[test]
    fn joining_twice_is_refused() {
        let now = Instant::now();
        let mut node = node(1);
        let a = mesh("a");
        node.join(a.clone(), Config::default(), vec![PeerInfo::new(2)], now)
            .unwrap();
        drain(&mut node);
        assert_eq!(
            node.join(a.clone(), Config::default(), vec![PeerInfo::new(3)], now),
            Err(JoinError::AlreadyJoined(a.clone()))
        );
        assert_eq!(
            drain(&mut node),
            vec![],
            "the first membership is untouched"
        );
        assert_eq!(node.meshes().count(), 1);
    }

    #[test]
    fn an_earlier_time_counts_as_the_latest_one_seen() {
        let t0 = Instant::now();
        let mut node = node(1);
        node.handle_timeout(t0 + Duration::from_secs(10));
        // Joined "at t0", which is in the past: the join request's deadline runs from t0 + 10 s.
        let a = mesh("a");
        node.join(a.clone(), Config::default(), vec![PeerInfo::new(2)], t0)
            .unwrap();
        drain(&mut node);
        let timeout = Config::default().membership.request_timeout;
        assert_eq!(
            node.poll_timeout(),
            Some(t0 + Duration::from_secs(10) + timeout)
        );
        // A timer call from the past acts on nothing.
        node.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(drain(&mut node), vec![]);
        assert_eq!(node.mesh_stats(&a).unwrap().membership.request_timeouts, 0);
        node.handle_timeout(t0 + Duration::from_secs(10) + timeout);
        assert_eq!(disconnects(&drain(&mut node)), vec![2]);
        assert_eq!(node.mesh_stats(&a).unwrap().membership.request_timeouts, 1);
    }

    #[test]
    fn a_broadcast_to_a_mesh_we_are_not_in_is_refused() {
        let now = Instant::now();
        let mut node = node(1);
        let result = node.broadcast(&mesh("a"), Bytes::new(), BroadcastOptions::default(), now);
        assert_eq!(result, Err(BroadcastError::NotJoined));
        assert!(node.set_filter(&mesh("a"), None).is_err());
    }

    // --- helpers ----------------------------------------------------------------------------

    fn node(me: u32) -> State<u32, ChaCha8Rng> {
        State::new(me, None, ChaCha8Rng::seed_from_u64(u64::from(me)))
    }

    fn mesh(name: &str) -> MeshId {
        MeshId::new(name).expect("a valid test mesh id")
    }

    fn message(from: u32, mesh: &MeshId, body: MeshMessage<u32>) -> InEvent<u32> {
        InEvent::Message {
            from,
            message: Message {
                mesh: mesh.clone(),
                body,
            },
        }
    }

    fn drain(node: &mut State<u32, ChaCha8Rng>) -> Vec<OutEvent<u32>> {
        std::iter::from_fn(|| node.poll_event()).collect()
    }

    fn disconnects(out: &[OutEvent<u32>]) -> Vec<u32> {
        out.iter()
            .filter_map(|e| match e {
                OutEvent::DisconnectPeer { peer } => Some(*peer),
                _ => None,
            })
            .collect()
    }
}
