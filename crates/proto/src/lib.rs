//! The sans-IO core of peerchannel: how the nodes of a mesh find each other, keep their links,
//! and carry every message to every member.
//!
//! # Design
//!
//! A **mesh** is a named, self-organising graph of nodes. This crate holds its algorithms as
//! pure state machines, written once and driven by the network runtime (`peerchannel`), by the
//! deterministic simulator (`peerchannel-sim`) and by tests:
//!
//! - [`State`] is one node: every mesh it is in, routed by [`MeshId`]. Its documentation is
//!   the drive contract (inputs, outputs, timers, failure detection).
//! - Membership follows HyParView: a small active view of neighbors with min / ideal / max
//!   bounds, a passive view for repair, joins announced on random walks, periodic shuffles,
//!   and a request for contacts (the resolver) when no candidate is left.
//! - Broadcast follows Plumtree: eager push along a spanning tree made of the links that
//!   deliver first, lazy push of message ids on the rest, graft and prune to repair and shape
//!   the tree. A flood mode is kept for comparison.
//! - Above both: a bounded offline queue (a message sent with no neighbor is never dropped
//!   silently), catch-up on new links (late joiners and nodes that were cut off fetch recent
//!   messages), beacons that rebuild the broadcast tree, and **partition repair**: nodes now and then
//!   compare recent message ids with a random member from the resolver, and link up when the
//!   other side has seen messages they never got — so two halves of a split mesh merge again.
//!
//! Nothing here does I/O, reads a clock or draws OS randomness: every call takes `now`, and
//! randomness comes from the `R: Rng` the node was built with. Peer ids are generic
//! ([`PeerIdentity`]): the runtime uses Ed25519 public keys, tests use small integers.
//!
//! # Getting started
//!
//! Two nodes, driven by hand: node 1 joins through node 2, which is alone in the mesh.
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use rand::SeedableRng;
//! use peerchannel_proto::*;
//!
//! let now = Instant::now();
//! let mesh = MeshId::new("soccerpals")?;
//! let rng = |seed| rand_chacha::ChaCha8Rng::seed_from_u64(seed);
//! let mut a = State::new(1u32, None, rng(1));
//! let mut b = State::new(2u32, None, rng(2));
//! b.join(mesh.clone(), Config::default(), vec![], now)?;
//! a.join(mesh.clone(), Config::default(), vec![PeerInfo::new(2)], now)?;
//!
//! // Carry messages from one node to the other; returns what was delivered.
//! fn pump<R: rand::Rng>(from: &mut State<u32, R>, to: &mut State<u32, R>, now: Instant) -> Vec<Bytes> {
//!     let mut delivered = Vec::new();
//!     while let Some(event) = from.poll_event() {
//!         match event {
//!             OutEvent::SendMessage { message, .. } => {
//!                 to.handle(InEvent::Message { from: *from.me(), message }, now)
//!             }
//!             OutEvent::Deliver { delivery, .. } => delivered.push(delivery.payload),
//!             _ => {}
//!         }
//!     }
//!     delivered
//! }
//! for _ in 0..4 {
//!     pump(&mut a, &mut b, now);
//!     pump(&mut b, &mut a, now);
//! }
//! assert!(a.is_online(&mesh) && b.is_online(&mesh));
//!
//! a.broadcast(&mesh, Bytes::from("hello"), BroadcastOptions::default(), now)?;
//! pump(&mut a, &mut b, now);
//! assert_eq!(pump(&mut b, &mut a, now), vec![Bytes::from("hello")]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod broadcast;
mod cache;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
mod idmap;
pub mod membership;
pub mod mesh;
pub mod message;
pub mod state;
pub mod wire;

pub use broadcast::{BroadcastStats, Delivery, Propagation};
pub use config::{BroadcastConfig, BroadcastMode, Config, MembershipConfig, MeshConfig};
pub use id::{AddressError, MeshAddress, MeshId, MeshIdError, MessageId, PeerIdentity};
pub use membership::MembershipStats;
pub use mesh::{BroadcastError, BroadcastOptions, BroadcastStatus, Filter, MeshEvent, MeshStats};
pub use message::{
    Announced, AnnouncedRun, Announcement, BroadcastMessage, DisconnectReason, Gossip, GossipKind,
    MembershipMessage, MeshMessage, Message, PeerData, PeerInfo, Priority, Probe, RecentId,
};
pub use state::{InEvent, JoinError, NodeStats, NotJoined, OutEvent, State};
pub use wire::FrameError;
