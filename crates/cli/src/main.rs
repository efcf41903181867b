//! `peerchannel`: chat over a mesh, run a resolver, manage identities, watch a demo.

mod browse;
mod ca_cmd;
mod chat;
mod chat_security;
mod demo;
mod identity_cmd;
mod logging;
mod resolver_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Multiparty peer-to-peer messaging over named meshes: every message sent on a mesh reaches
/// every member, with no server in the path.
#[derive(Parser, Debug)]
#[command(name = "peerchannel", version, about, long_about = None)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Chat with everyone in a mesh: each line you type goes to every member.
    Chat(chat::Args),
    /// Run a resolver service: nodes register in meshes and find each other through it.
    Resolver(resolver_cmd::Args),
    /// Create or inspect node identity files (Ed25519 keys).
    #[command(subcommand)]
    Identity(identity_cmd::Command),
    /// Watch a mesh of nodes form, talk, lose a node and repair itself, in one process.
    Demo(demo::Args),
    /// List the meshes and nodes advertised nearby (mDNS), as they come and go.
    Browse(browse::Args),
    /// Create the certificate authority of a certificate mesh.
    #[command(subcommand)]
    Ca(ca_cmd::CaCommand),
    /// Issue member certificates with a mesh CA.
    #[command(subcommand)]
    Cert(ca_cmd::CertCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Chat(args) => chat::run(args).await,
            Command::Resolver(args) => resolver_cmd::run(args).await,
            Command::Identity(command) => identity_cmd::run(command),
            Command::Demo(args) => demo::run(args).await,
            Command::Browse(args) => browse::run(args).await,
            Command::Ca(command) => ca_cmd::run_ca(command),
            Command::Cert(command) => ca_cmd::run_cert(command),
        }
    });
    // Background tasks (links, registrations) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
