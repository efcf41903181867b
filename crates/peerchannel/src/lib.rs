//! peerchannel: multiparty peer-to-peer messaging over named meshes.
#![warn(missing_docs)]

mod actor;
pub mod addresses;
mod envelope;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
pub mod identity;
pub mod limits;
mod link;
pub mod mesh;
pub mod node;
pub mod resolver;
pub mod security;
mod socket;
pub mod tls;

pub use error::{BindError, ChannelError, JoinError, NodeClosed, RecvError, SendError};
pub use id::PeerId;
pub use identity::Identity;
pub use limits::Limits;
pub use mesh::{
    Channel, Event, FilterInput, LeaveReport, Mesh, MeshOptions, PropagationFilter, RawChannel,
    Received, SendOptions, SendStatus,
};
pub use node::{Node, NodeConfig};
pub use peerchannel_proto::{DisconnectReason, MeshAddress, MeshId, Propagation};
pub use security::{AuthFailure, MeshPassword, MeshSecurity, SecurityStats};

// The README's examples are compiled (and the runnable ones run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
