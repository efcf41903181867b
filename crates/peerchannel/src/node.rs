//! The node: one identity, one QUIC endpoint, any number of meshes.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use peerchannel_proto::MeshAddress;
use tokio::sync::{mpsc, oneshot};

use crate::actor::{self, Command};
use crate::error::{BindError, JoinError, NodeClosed};
use crate::identity::Identity;
use crate::limits::Limits;
use crate::mesh::{Mesh, MeshOptions};
use crate::resolver::Resolver;
use crate::socket::KillableSocket;
use crate::tls::LinkConfig;
use crate::{PeerId, addresses, tls};

/// The default largest message (body) a node sends or accepts.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Messages a channel holds for its reader before it lags (see
/// [`crate::RecvError::Lagged`]).
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1024;

/// Commands the node's task takes before callers wait: the backpressure on senders.
pub(crate) const COMMAND_QUEUE: usize = 256;

/// How a node is set up.
///
/// ```
/// use peerchannel::NodeConfig;
/// let config = NodeConfig::default().listen("127.0.0.1:0".parse().unwrap());
/// assert_eq!(config.max_message_size, 64 * 1024);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Where to listen. Default `0.0.0.0:0`: every IPv4 interface, a free port.
    pub listen: SocketAddr,
    /// The addresses published to resolvers and neighbors. Empty (the default): derived from
    /// `listen` (every interface address for an unspecified one).
    pub advertise: Vec<SocketAddr>,
    /// Where to find other members; all are registered with and asked. Empty: the node only
    /// gets the neighbors that find it.
    pub resolvers: Vec<Arc<dyn Resolver>>,
    /// QUIC link parameters (idle timeout, keep-alive).
    pub link: LinkConfig,
    /// The largest message body sent or accepted. Default 64 KiB. Every node of a mesh should
    /// use the same value: a receiver refuses frames larger than its own maximum.
    pub max_message_size: usize,
    /// Messages a channel holds for its reader. Default 1,024.
    pub channel_capacity: usize,
    /// Bounds on what one peer can make this node do or hold.
    pub limits: Limits,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            advertise: Vec::new(),
            resolvers: Vec::new(),
            link: LinkConfig::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            limits: Limits::default(),
        }
    }
}

impl NodeConfig {
    /// Listens on `addr`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Adds a resolver.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolvers.push(resolver);
        self
    }

    /// Sets the largest message body.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("resolvers", &self.resolvers)
            .field("link", &self.link)
            .field("max_message_size", &self.max_message_size)
            .field("channel_capacity", &self.channel_capacity)
            .field("limits", &self.limits)
            .finish()
    }
}

/// A peerchannel node. Cheap to clone; every clone is the same node.
///
/// The node runs in the background on the tokio runtime it was started on. It stops when
/// [`Node::shutdown`] is called (leaving every mesh with a goodbye), or when every handle,
/// including every [`Mesh`], is dropped.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    peer_id: PeerId,
    local_addr: SocketAddr,
    addresses: Vec<SocketAddr>,
    commands: mpsc::Sender<Command>,
    socket: Arc<KillableSocket>,
}

impl Node {
    /// Starts a node with `identity`. Must be called within a tokio runtime.
    pub async fn bind(identity: Identity, config: NodeConfig) -> Result<Self, BindError> {
        if config.max_message_size == 0 {
            return Err(BindError::Invalid(
                "max_message_size must be more than zero",
            ));
        }
        if config.channel_capacity == 0 {
            return Err(BindError::Invalid(
                "channel_capacity must be more than zero",
            ));
        }
        let socket = KillableSocket::bind(config.listen).map_err(|source| BindError::Socket {
            addr: config.listen,
            source,
        })?;
        let server = tls::server_config(&identity, &config.link)?;
        let client = tls::client_config(&identity, &config.link)?;
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| BindError::Socket {
            addr: config.listen,
            source,
        })?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint.local_addr().map_err(|source| BindError::Socket {
            addr: config.listen,
            source,
        })?;
        let addresses = if config.advertise.is_empty() {
            addresses::advertised(local_addr)
        } else {
            config.advertise.clone()
        };
        let peer_id = identity.peer_id();
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        actor::spawn(actor::Setup {
            peer_id,
            identity,
            endpoint,
            config,
            addresses: addresses.clone(),
            commands: commands.clone(),
            rx,
            socket: socket.clone(),
        });
        Ok(Self {
            inner: Arc::new(NodeInner {
                peer_id,
                local_addr,
                addresses,
                commands,
                socket,
            }),
        })
    }

    /// This node's peer id (its Ed25519 public key).
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The address the node's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The addresses the node advertises.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.inner.addresses
    }

    /// Joins a mesh: `"soccerpals"` or `"net.p2p://soccerpals/chat"` (the path becomes
    /// [`Mesh::path`]). Returns at once; the mesh comes online ([`crate::Event::Online`]) when
    /// a first neighbor links up.
    pub async fn join(&self, address: &str, options: MeshOptions) -> Result<Mesh, JoinError> {
        let address = MeshAddress::parse(address)?;
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Join {
                address,
                options: Box::new(options),
                reply,
            })
            .await
            .map_err(|_| NodeClosed)?;
        let shared = rx.await.map_err(|_| NodeClosed)??;
        Ok(Mesh::new(shared))
    }

    /// Leaves every mesh (with a goodbye to each neighbor and an unregistration from the
    /// resolvers), closes every link and stops the node.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Stops the node as a crash would: nothing more is sent, not even a goodbye, and its
    /// peers notice only when their links time out. For demonstrations and failure tests.
    pub fn crash(&self) {
        self.inner.socket.kill();
        let _ = self.inner.commands.try_send(Command::Crash);
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.inner.peer_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}
