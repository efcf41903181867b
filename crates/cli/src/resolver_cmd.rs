//! `peerchannel resolver`: the resolver service.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use peerchannel_resolver::{ResolverConfig, serve};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to listen for HTTP.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// How long a registration lives without a refresh, in seconds.
    #[arg(long, default_value_t = 60)]
    lifetime: u64,
    /// Lift the per-address limits (registrations and request rate per source address), for
    /// many nodes behind one address, as in tests and demos on one machine.
    #[arg(long)]
    relaxed: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = if args.relaxed {
        ResolverConfig::relaxed()
    } else {
        ResolverConfig::default()
    };
    config.lifetime = Duration::from_secs(args.lifetime);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("the listening socket has no address")?;
    eprintln!(
        "resolver listening on http://{addr} (registrations live {} s); Ctrl-C stops it",
        args.lifetime
    );
    serve(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("the resolver stopped")?;
    Ok(())
}
