//! A fixed list of bootstrap peers: [`StaticResolver`].

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::net::lookup_host;

use super::{
    BoxFuture, NEVER_EXPIRES, PeerAddr, Registration, RegistrationId, Resolver, ResolverError,
};
use crate::{MeshId, PeerId};

/// How long looking up one bootstrap host name may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The registration id a static resolver hands out: it publishes nothing.
const STATIC_REGISTRATION: &str = "static";

/// A resolver that answers every mesh with the same fixed list of bootstrap peers.
///
/// Each entry is `host:port`, `ip:port` (`[::1]:4433` for IPv6), or either of those prefixed
/// with a peer id and `@` (`<peer id>@host:port`) when the peer's id is known. Without an id,
/// the peer comes back from [`Resolver::resolve`] with `peer_id: None`: the runtime dials the
/// address without expecting a particular key and learns the peer id from the TLS handshake.
/// With an id, the runtime checks it against the peer's certificate.
///
/// Host names are looked up at each [`Resolver::resolve`], so a name whose address changes is
/// followed. A name that does not resolve is skipped with a warning; the call fails only when
/// every name failed and nothing else is listed.
///
/// Registering does nothing (nobody asks a static list who is there) and never expires.
///
/// ```
/// use peerchannel::resolver::StaticResolver;
///
/// let resolver = StaticResolver::new(["127.0.0.1:4433", "localhost:4434"]).unwrap();
/// assert_eq!(resolver.len(), 2);
/// assert!(StaticResolver::new(["no-port"]).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct StaticResolver {
    peers: Vec<StaticPeer>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct StaticPeer {
    peer_id: Option<PeerId>,
    target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Addr(SocketAddr),
    /// A `host:port` whose host is a name, looked up when resolving.
    Host(String),
}

impl StaticResolver {
    /// A resolver over `peers`, each `[<peer id>@]host:port`; checked here, looked up later.
    pub fn new<I, S>(peers: I) -> Result<Self, InvalidStaticPeer>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let peers = peers
            .into_iter()
            .map(|p| parse_peer(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { peers })
    }

    /// A resolver over socket addresses whose peer ids are not known.
    pub fn from_addrs(addrs: Vec<SocketAddr>) -> Self {
        let peers = addrs.into_iter().map(|a| StaticPeer {
            peer_id: None,
            target: Target::Addr(a),
        });
        Self {
            peers: peers.collect(),
        }
    }

    /// A resolver over members whose ids and addresses are known (e.g. from a previous run).
    pub fn from_peers(peers: impl IntoIterator<Item = (PeerId, SocketAddr)>) -> Self {
        let peers = peers.into_iter().map(|(id, addr)| StaticPeer {
            peer_id: Some(id),
            target: Target::Addr(addr),
        });
        Self {
            peers: peers.collect(),
        }
    }

    /// The number of peers listed.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    async fn resolve_inner(&self, max: usize) -> Result<Vec<PeerAddr>, ResolverError> {
        let chosen = &self.peers[..self.peers.len().min(max)];
        let lookups = chosen.iter().map(|peer| async move {
            let addresses = match &peer.target {
                Target::Addr(addr) => vec![*addr],
                Target::Host(host) => look_up(host).await?,
            };
            Ok::<_, ResolverError>(PeerAddr {
                peer_id: peer.peer_id,
                addresses,
            })
        });
        let mut found = Vec::with_capacity(chosen.len());
        let mut failures = Vec::new();
        for result in join_all(lookups).await {
            match result {
                Ok(peer) => found.push(peer),
                Err(err) => {
                    tracing::warn!("skipping a bootstrap peer: {err}");
                    failures.push(err);
                }
            }
        }
        if found.is_empty() && !failures.is_empty() {
            return Err(if failures.len() == 1 {
                failures.remove(0)
            } else {
                ResolverError::AllFailed { errors: failures }
            });
        }
        Ok(found)
    }
}

impl Resolver for StaticResolver {
    fn register<'a>(
        &'a self,
        _mesh: &'a MeshId,
        _peer_id: PeerId,
        _addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Registration, ResolverError>> {
        Box::pin(async {
            Ok(Registration {
                id: RegistrationId::new(STATIC_REGISTRATION),
                lifetime: NEVER_EXPIRES,
            })
        })
    }

    fn update<'a>(
        &'a self,
        _mesh: &'a MeshId,
        _id: &'a RegistrationId,
        _addresses: &'a [SocketAddr],
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        Box::pin(async { Ok(NEVER_EXPIRES) })
    }

    fn refresh<'a>(
        &'a self,
        _mesh: &'a MeshId,
        _id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<Duration, ResolverError>> {
        Box::pin(async { Ok(NEVER_EXPIRES) })
    }

    fn unregister<'a>(
        &'a self,
        _mesh: &'a MeshId,
        _id: &'a RegistrationId,
    ) -> BoxFuture<'a, Result<(), ResolverError>> {
        Box::pin(async { Ok(()) })
    }

    fn resolve<'a>(
        &'a self,
        _mesh: &'a MeshId,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<PeerAddr>, ResolverError>> {
        Box::pin(self.resolve_inner(max))
    }

    fn name(&self) -> String {
        format!("static peers ({})", self.peers.len())
    }
}

/// Why an entry of a static peer list is not usable. Raised when the list is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidStaticPeer {
    /// The entry is not `host:port`.
    ///
    /// Fix: give the port, e.g. `192.0.2.7:4433`, `[2001:db8::7]:4433` or `node7.lan:4433`.
    #[error("bootstrap peer `{entry}` is not host:port, e.g. 192.0.2.7:4433 or node7.lan:4433")]
    Syntax {
        /// The entry as given.
        entry: String,
    },
    /// The part before `@` is not a peer id.
    ///
    /// Fix: give the peer's id as the node prints it, or leave it (and the `@`) out.
    #[error("bootstrap peer `{entry}`: `{id}` is not a peer id ({reason})")]
    PeerId {
        /// The entry as given.
        entry: String,
        /// The part before `@`.
        id: String,
        /// Why it is not a peer id.
        reason: crate::id::PeerIdError,
    },
}

fn parse_peer(entry: &str) -> Result<StaticPeer, InvalidStaticPeer> {
    let trimmed = entry.trim();
    let (peer_id, target) = match trimmed.split_once('@') {
        Some((id, target)) => {
            let peer_id = id
                .parse::<PeerId>()
                .map_err(|reason| InvalidStaticPeer::PeerId {
                    entry: entry.to_owned(),
                    id: id.to_owned(),
                    reason,
                })?;
            (Some(peer_id), target)
        }
        None => (None, trimmed),
    };
    let syntax = || InvalidStaticPeer::Syntax {
        entry: entry.to_owned(),
    };
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(StaticPeer {
            peer_id,
            target: Target::Addr(addr),
        });
    }
    let (host, port) = target.rsplit_once(':').ok_or_else(syntax)?;
    port.parse::<u16>().map_err(|_| syntax())?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !host_ok {
        return Err(syntax());
    }
    Ok(StaticPeer {
        peer_id,
        target: Target::Host(target.to_owned()),
    })
}

async fn look_up(host: &str) -> Result<Vec<SocketAddr>, ResolverError> {
    let failed = |reason: String| ResolverError::Lookup {
        host: host.to_owned(),
        reason,
    };
    let addrs = tokio::time::timeout(LOOKUP_TIMEOUT, lookup_host(host))
        .await
        .map_err(|_| failed(format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs())))?
        .map_err(|err| failed(err.to_string()))?;
    let mut unique: Vec<SocketAddr> = Vec::new();
    for addr in addrs {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    if unique.is_empty() {
        return Err(failed("the name has no address".to_owned()));
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> MeshId {
        MeshId::new("m").unwrap()
    }

    #[test]
    fn entries_parse_with_and_without_ids() {
        let id = PeerId::from_bytes([9; 32]);
        let peers = StaticResolver::new([
            "127.0.0.1:1".to_owned(),
            "[::1]:2".to_owned(),
            "localhost:3".to_owned(),
            format!("{id}@127.0.0.1:4"),
        ])
        .unwrap()
        .peers;
        assert_eq!(
            peers[0].target,
            Target::Addr("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(peers[1].target, Target::Addr("[::1]:2".parse().unwrap()));
        assert_eq!(peers[2].target, Target::Host("localhost:3".into()));
        assert_eq!(peers[3].peer_id, Some(id));
        for bad in [
            "127.0.0.1",
            "::1:80:x",
            "host:",
            "host:99999",
            ":80",
            "a b:1",
            "x@1.2.3.4:5",
        ] {
            assert!(StaticResolver::new([bad]).is_err(), "{bad} was accepted");
        }
    }

    #[tokio::test]
    async fn resolves_addresses_without_ids_and_registers_as_a_no_op() {
        let resolver = StaticResolver::new(["127.0.0.1:1", "127.0.0.1:2", "[::1]:3"]).unwrap();
        let found = resolver.resolve(&mesh(), 2).await.unwrap();
        assert_eq!(
            found,
            vec![
                PeerAddr::without_id(vec!["127.0.0.1:1".parse().unwrap()]),
                PeerAddr::without_id(vec!["127.0.0.1:2".parse().unwrap()]),
            ]
        );
        let registration = resolver
            .register(&mesh(), PeerId::from_bytes([1; 32]), &[])
            .await
            .unwrap();
        assert_eq!(registration.lifetime, NEVER_EXPIRES);
        assert_eq!(
            resolver.refresh(&mesh(), &registration.id).await.unwrap(),
            NEVER_EXPIRES
        );
        resolver
            .unregister(&mesh(), &registration.id)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn looks_up_host_names() {
        let resolver = StaticResolver::new(["localhost:4433"]).unwrap();
        let found = resolver.resolve(&mesh(), 10).await.unwrap();
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4433)
        );
    }

    #[tokio::test]
    async fn fails_only_when_every_lookup_fails() {
        // `.invalid` never resolves (RFC 2606), so no network is needed to fail.
        let resolver = StaticResolver::new(["nowhere.invalid:1", "127.0.0.1:2"]).unwrap();
        assert_eq!(resolver.resolve(&mesh(), 10).await.unwrap().len(), 1);
        let resolver = StaticResolver::new(["nowhere.invalid:1"]).unwrap();
        let err = resolver.resolve(&mesh(), 10).await.unwrap_err();
        assert!(matches!(err, ResolverError::Lookup { .. }), "{err:?}");
        assert!(
            StaticResolver::from_addrs(vec![])
                .resolve(&mesh(), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
