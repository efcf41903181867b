//! peerchannel-proto: the sans-IO core.
#![warn(missing_docs)]

pub mod id;

pub use id::{AddressError, MeshAddress, MeshId, MeshIdError, MessageId, PeerIdentity};
