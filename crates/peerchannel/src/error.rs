//! Errors of the node's operations, one type per operation.

use std::io;
use std::net::SocketAddr;

use peerchannel_proto::{AddressError, MeshId};

use crate::PeerId;
use crate::tls;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The UDP socket could not be bound: the port is in use, the address is not local, or
    /// permission is missing. Pick another address or port (port 0 picks a free one).
    #[error("cannot listen on {addr}: {source}")]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// The TLS or QUIC configuration could not be built (see the inner error).
    #[error(transparent)]
    Config(#[from] tls::ConfigError),
    /// The configuration is inconsistent; the message says which setting.
    #[error("invalid node configuration: {0}")]
    Invalid(&'static str),
}

/// Why joining a mesh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The mesh address or id is not valid. Mesh ids are hostnames (`soccerpals`); addresses
    /// look like `net.p2p://soccerpals/chat`.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// This node is already in that mesh: use the [`crate::Mesh`] it returned, or leave first.
    #[error("already a member of mesh `{0}`")]
    AlreadyJoined(MeshId),
    /// The node has shut down.
    #[error(transparent)]
    NodeClosed(#[from] NodeClosed),
    /// This node's member certificate would be refused by the mesh's other members: not
    /// issued by the given CA, expired, or for another key than the node's identity.
    ///
    /// Fix: issue a certificate for this node's identity with the mesh's CA
    /// (`peerchannel cert issue --identity`).
    #[error(transparent)]
    Certificate(#[from] crate::security::CertificateError),
    /// `MeshOptions::signature_window` is not shorter than the protocol's duplicate-cache
    /// retention (`broadcast.seen_retention`): a message replayed after its id was forgotten
    /// would still be accepted.
    ///
    /// Fix: shorten the window, or lengthen the retention.
    #[error(
        "the signature window ({window:?}) must be shorter than broadcast.seen_retention \
         ({retention:?})"
    )]
    SignatureWindow {
        /// The window asked for.
        window: std::time::Duration,
        /// The duplicate cache's retention.
        retention: std::time::Duration,
    },
}

/// The node has shut down (or crashed); nothing more can be done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node has shut down")]
pub struct NodeClosed;

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The path is too long or has spaces or control characters.
    #[error(transparent)]
    Path(#[from] AddressError),
    /// The mesh was left.
    #[error("the mesh was left")]
    Left,
}

/// Why a message was not sent. Nothing was sent or queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message is larger than the node's maximum message size (default 64 KiB). Split it,
    /// or raise `NodeConfig::max_message_size` on every node (a receiver refuses frames larger
    /// than its own maximum).
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The mesh has been offline long enough to fill the offline queue. Wait for
    /// [`crate::Event::Online`], or raise the queue's bound in the mesh options.
    #[error("offline, and the offline queue is full ({messages} messages, {bytes} bytes)")]
    OfflineQueueFull {
        /// Messages waiting.
        messages: usize,
        /// Bytes waiting.
        bytes: usize,
    },
    /// A hop limit of 0 would reach nobody.
    #[error("a hop limit must be at least 1")]
    ZeroHopLimit,
    /// The message could not be encoded (a serde error from the typed channel).
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// The mesh was left.
    #[error("the mesh was left")]
    Left,
    /// The node has shut down.
    #[error("the node has shut down")]
    NodeClosed,
}

/// Why [`crate::RawChannel::recv`] or [`crate::Channel::recv`] returned no message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// This many messages were dropped because the channel was not read fast enough (its
    /// queue holds `NodeConfig::channel_capacity` messages). Reading goes on.
    #[error("{0} messages were dropped because the channel was read too slowly")]
    Lagged(u64),
    /// A message on this path was not of the channel's type. Reading goes on.
    #[error("a message from {from} could not be decoded: {reason}")]
    Decode {
        /// Its origin.
        from: PeerId,
        /// The decoder's error.
        reason: String,
    },
    /// The mesh was left or the node shut down: no more messages will come.
    #[error("the channel is closed")]
    Closed,
}
