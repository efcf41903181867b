//! `peerchannel browse`: the meshes and nodes advertised nearby with mDNS, as they come and go.
//!
//! Output, one node per line: `<mesh id> <peer id> <address>[,<address>...]`. Without `--once`
//! the list so far is printed with `+ ` in front of each line, then `+ ` for each node that
//! appears and `- ` for each that goes, until Ctrl-C. With `--once`, the nodes heard within
//! [`ONCE_WAIT`] are printed without a prefix, and the command exits.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use peerchannel::MeshAddress;
use peerchannel::resolver::{MdnsConfig, MdnsResolver, NearbyNode, SERVICE_TYPE, VERIFY_INTERVAL};

/// How long `--once` listens before printing: a few answer delays and the announcements of
/// nodes that are just starting (they probe for about a second first).
pub const ONCE_WAIT: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this mesh (an id such as `soccerpals`, or an address `net.p2p://soccerpals/chat`).
    #[arg(long)]
    mesh: Option<String>,
    /// Print what is advertised now and exit, for scripts.
    #[arg(long)]
    once: bool,
    /// The DNS-SD service type to browse.
    #[arg(long, value_name = "TYPE", default_value = SERVICE_TYPE)]
    mdns_service: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mesh = match &args.mesh {
        Some(mesh) => Some(MeshAddress::parse(mesh).context("bad --mesh")?.mesh),
        None => None,
    };
    // Known nodes are asked to confirm themselves now and then, so that a node that was killed
    // goes from the list in seconds rather than when its records expire.
    let config = MdnsConfig::default()
        .service_type(&args.mdns_service)
        .context("bad --mdns-service")?
        .verify_interval(VERIFY_INTERVAL);
    let resolver = MdnsResolver::with_config(config).context("cannot browse")?;
    let wanted = |list: &[NearbyNode]| -> BTreeSet<NearbyNode> {
        list.iter()
            .filter(|n| mesh.as_ref().is_none_or(|m| n.mesh == *m))
            .cloned()
            .collect()
    };

    if args.once {
        tokio::time::sleep(ONCE_WAIT).await;
        for node in wanted(&resolver.nearby()) {
            println!("{}", line(&node));
        }
        return Ok(());
    }

    eprintln!(
        "browsing {} on the local network; Ctrl-C stops",
        resolver.service_type()
    );
    let mut watch = resolver.watch();
    let mut shown = BTreeSet::new();
    loop {
        let now = wanted(&Arc::clone(&watch.borrow_and_update()));
        for gone in shown.difference(&now) {
            println!("- {}", line(gone));
        }
        for new in now.difference(&shown) {
            println!("+ {}", line(new));
        }
        shown = now;
        tokio::select! {
            changed = watch.changed() => if changed.is_err() {
                anyhow::bail!("the mDNS browser stopped");
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn line(node: &NearbyNode) -> String {
    let addresses: Vec<String> = node.addresses.iter().map(ToString::to_string).collect();
    format!("{} {} {}", node.mesh, node.peer_id, addresses.join(","))
}
