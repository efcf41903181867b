//! `peerchannel chat`: a console chat over a mesh.
//!
//! Each line read from stdin goes to every member; stdout shows one event per line:
//! `** Online`, `** Offline`, `* <nick> joined`, `* <nick> left`, and `<nick>: <text>` for
//! other members' messages (one's own are not echoed). A line that is exactly `q`, or the end
//! of input, leaves the mesh and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use peerchannel::resolver::{
    AutoResolver, MdnsConfig, MdnsResolver, MultiResolver, Resolver, SERVICE_TYPE, ServiceResolver,
    StaticResolver,
};
use peerchannel::{Event, Identity, MeshAddress, Node, NodeConfig, RecvError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long to wait for a resolver to answer at start.
const RESOLVER_CHECK: Duration = Duration::from_secs(5);

/// The channel path chat messages use when the mesh address names none.
const DEFAULT_PATH: &str = "chat";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The mesh: an id such as `soccerpals`, or an address such as
    /// `net.p2p://soccerpals/chat` (the path names the chat room, `chat` by default).
    #[arg(long)]
    mesh: String,
    /// Your name in the chat.
    #[arg(long)]
    nick: String,
    /// A resolver service URL, such as http://127.0.0.1:7700; may be repeated.
    #[arg(long = "resolver", value_name = "URL")]
    resolvers: Vec<String>,
    /// A member to bootstrap from, HOST:PORT; may be repeated.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// How to find other members. `auto`: the resolver services given while they answer,
    /// else mDNS on the local network (with neither --resolver nor --peer: mDNS alone), plus
    /// the --peer list.
    #[arg(long, value_enum, default_value_t = Discovery::Auto)]
    discovery: Discovery,
    /// The DNS-SD service type for mDNS: nodes with different types do not see each other.
    #[arg(long, value_name = "TYPE", default_value = SERVICE_TYPE)]
    mdns_service: String,
    /// Where to listen for other members.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    /// A key file for a stable peer id (created on first use, mode 0600). Default: a new
    /// identity for this run.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// A password mesh: the password is the contents of FILE (or the PEERCHANNEL_PASSWORD
    /// environment variable). Never give a password on the command line.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// A certificate mesh: the mesh CA's certificate (ca.pem from `peerchannel ca init`).
    #[arg(long, value_name = "CA.pem", requires = "cert")]
    ca_cert: Option<PathBuf>,
    /// This node's member certificate (from `peerchannel cert issue`), for the key in
    /// --identity.
    #[arg(long, value_name = "NODE.pem", requires_all = ["ca_cert", "identity"])]
    cert: Option<PathBuf>,
    /// Sign every message with this node's key.
    #[arg(long)]
    sign: bool,
    /// Refuse messages that are not signed (signed ones are always checked).
    #[arg(long)]
    require_signed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Discovery {
    /// The resolver services given with --resolver while they answer, else mDNS; plus --peer.
    Auto,
    /// The resolver services given with --resolver (and the --peer list, if given).
    Resolver,
    /// mDNS / DNS-SD on the local network only: no server, no configuration.
    Mdns,
    /// The bootstrap peers given with --peer (and the --resolver services, if given).
    Static,
}

/// What chat nodes say to each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ChatMessage {
    Joined { nick: String },
    Line { nick: String, text: String },
    Left { nick: String },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let address = MeshAddress::parse(&args.mesh).context("bad --mesh")?;
    let path = if address.path.is_empty() {
        DEFAULT_PATH.to_owned()
    } else {
        address.path.clone()
    };
    if args.nick.trim().is_empty() {
        bail!("--nick must not be empty");
    }
    let options = crate::chat_security::options(
        args.password_file.as_deref(),
        args.ca_cert.as_deref().zip(args.cert.as_deref()),
        args.sign,
        args.require_signed,
    )?;
    let resolvers = discovery(&args).await?;
    let identity = match &args.identity {
        Some(file) => Identity::load_or_generate(file)?,
        None => Identity::generate().context("cannot generate an identity")?,
    };
    let mut config = NodeConfig::default().listen(args.listen);
    config.resolvers = resolvers;
    let node = Node::bind(identity, config).await?;
    tracing::info!(peer = %node.peer_id(), addr = %node.local_addr(), "chat node started");
    let mesh = node.join(&address.to_string(), options).await?;
    // Subscribe first, then read the state: the mesh may have come online in between.
    let mut events = mesh.events();
    let mut online = false;
    let mut refused = std::collections::HashSet::new();
    if mesh.is_online().await? {
        println!("** Online");
        online = true;
    }
    let mut channel = mesh.channel::<ChatMessage>(&path)?;
    let nick = args.nick.trim().to_owned();
    // Goes out as soon as the mesh is online (it waits in the offline queue until then).
    channel
        .send(&ChatMessage::Joined { nick: nick.clone() })
        .await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = line.context("cannot read stdin")?;
                let Some(line) = line else { break };
                if line == "q" {
                    break;
                }
                if line.is_empty() {
                    continue;
                }
                if let Err(e) = channel.send(&ChatMessage::Line { nick: nick.clone(), text: line }).await {
                    eprintln!("not sent: {e}");
                }
            }
            received = channel.recv() => match received {
                Ok((_, message)) => print_message(message),
                Err(RecvError::Closed) => break,
                Err(e) => eprintln!("{e}"),
            },
            event = events.recv() => match event {
                Ok(Event::Online) if !online => {
                    println!("** Online");
                    online = true;
                }
                Ok(Event::Offline) if online => {
                    println!("** Offline");
                    online = false;
                }
                Ok(Event::AuthenticationFailed { peer, reason }) => {
                    // One line per peer: the handshake is retried, the cause stays the same.
                    if refused.insert(peer) {
                        eprintln!("authentication failed with {}: {reason}", peer.fmt_short());
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let _ = channel.send(&ChatMessage::Left { nick }).await;
    mesh.leave().await?;
    node.shutdown().await;
    Ok(())
}

fn print_message(message: ChatMessage) {
    match message {
        ChatMessage::Joined { nick } => println!("* {nick} joined"),
        ChatMessage::Left { nick } => println!("* {nick} left"),
        ChatMessage::Line { nick, text } => println!("{nick}: {text}"),
    }
}

/// The resolvers to use, checked: with `--discovery resolver`, a resolver that cannot be
/// reached is an error now, not a silent wait later; with `auto` it is a warning, and mDNS
/// stands in until it answers.
async fn discovery(args: &Args) -> anyhow::Result<Vec<Arc<dyn Resolver>>> {
    let mut out: Vec<Arc<dyn Resolver>> = Vec::new();
    match args.discovery {
        Discovery::Auto => {
            let services = services(args, false).await?;
            let mdns = match mdns(args) {
                Ok(mdns) => Some(mdns),
                Err(e) if services.is_some() || !args.peers.is_empty() => {
                    eprintln!("warning: {e:#}; going on without it");
                    None
                }
                Err(e) => return Err(e),
            };
            match (services, mdns) {
                (Some(service), Some(mdns)) => {
                    out.push(Arc::new(AutoResolver::new(Some(service), mdns)))
                }
                (Some(only), None) | (None, Some(only)) => out.push(only),
                (None, None) => {}
            }
        }
        Discovery::Resolver => {
            if args.resolvers.is_empty() {
                bail!("--discovery resolver needs at least one --resolver URL");
            }
            out.extend(services(args, true).await?);
        }
        Discovery::Mdns => {
            if !args.resolvers.is_empty() || !args.peers.is_empty() {
                bail!(
                    "--discovery mdns uses neither --resolver nor --peer; drop them, or use \
                     --discovery auto to combine them with mDNS"
                );
            }
            out.push(mdns(args)?);
        }
        Discovery::Static => {
            if args.peers.is_empty() {
                bail!("--discovery static needs at least one --peer HOST:PORT");
            }
            out.extend(services(args, true).await?);
        }
    }
    if !args.peers.is_empty() {
        let resolver =
            StaticResolver::new(args.peers.iter().map(String::as_str)).context("bad --peer")?;
        out.push(Arc::new(resolver));
    }
    Ok(out)
}

/// The `--resolver` services as one resolver (`None` without any), each asked for its
/// settings first. One that does not answer is an error when `strict`, else a warning.
async fn services(args: &Args, strict: bool) -> anyhow::Result<Option<Arc<dyn Resolver>>> {
    let mut services: Vec<Arc<dyn Resolver>> = Vec::new();
    for url in &args.resolvers {
        let resolver =
            ServiceResolver::new(url).with_context(|| format!("bad --resolver {url}"))?;
        let problem = match tokio::time::timeout(RESOLVER_CHECK, resolver.settings()).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("cannot reach the resolver at {url}: {e}")),
            Err(_) => Some(format!(
                "cannot reach the resolver at {url}: no answer within {RESOLVER_CHECK:?}"
            )),
        };
        match problem {
            Some(problem) if strict => bail!(problem),
            Some(problem) => eprintln!("warning: {problem}; using mDNS until it answers"),
            None => {}
        }
        services.push(Arc::new(resolver));
    }
    Ok(match services.len() {
        0 => None,
        1 => services.pop(),
        _ => Some(Arc::new(MultiResolver::new(services))),
    })
}

/// The mDNS resolver, on the interface of `--listen` when it names one.
fn mdns(args: &Args) -> anyhow::Result<Arc<dyn Resolver>> {
    let mut config = MdnsConfig::default()
        .service_type(&args.mdns_service)
        .context("bad --mdns-service")?;
    if !args.listen.ip().is_unspecified() {
        config = config.interface_addrs(vec![args.listen.ip()]);
    }
    let resolver = MdnsResolver::with_config(config).context(
        "no mDNS on this host; give --resolver URL (a `peerchannel resolver`) or --peer HOST:PORT",
    )?;
    Ok(Arc::new(resolver))
}
