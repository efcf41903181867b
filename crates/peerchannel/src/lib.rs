//! peerchannel: multiparty peer-to-peer messaging over named meshes.
#![warn(missing_docs)]

pub mod id;
pub mod identity;
pub mod resolver;
pub mod tls;

pub use id::PeerId;
pub use peerchannel_proto::{MeshAddress, MeshId};
