//! Helpers shared by the integration tests: nodes on loopback, waiting with deadlines.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use peerchannel::resolver::StaticResolver;
use peerchannel::{Event, Identity, Mesh, Node, NodeConfig};
use tokio::sync::broadcast;

pub mod security;

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A node on 127.0.0.1 with a fresh identity, bootstrapping from `peers`.
pub async fn node(peers: &[&Node]) -> Node {
    node_with(peers, NodeConfig::default()).await
}

/// Like [`node`], from `config` (its address and resolver are replaced).
pub async fn node_with(peers: &[&Node], config: NodeConfig) -> Node {
    init_logs();
    let mut config = config.listen("127.0.0.1:0".parse().unwrap());
    if !peers.is_empty() {
        let addrs = peers.iter().map(|p| (p.peer_id(), p.local_addr()));
        config = config.resolver(Arc::new(StaticResolver::from_peers(addrs)));
    }
    Node::bind(Identity::generate().unwrap(), config)
        .await
        .unwrap()
}

/// Waits for `f` to finish, failing the test after [`DEADLINE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Waits until the mesh has at least `n` neighbors.
pub async fn neighbors_at_least(mesh: &Mesh, n: usize) {
    within(
        &format!("{n} neighbors of {}", mesh.me().fmt_short()),
        async {
            loop {
                if mesh.neighbors().await.unwrap().len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await
}

/// Waits for a specific event.
pub async fn event(
    events: &mut broadcast::Receiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Event {
    within("an event", async {
        loop {
            match events.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
}

/// `len` bytes from a xorshift generator started at `seed`: junk that is the same every run.
pub fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
