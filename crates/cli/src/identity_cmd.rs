//! `peerchannel identity`: create and inspect key files.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use peerchannel::Identity;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new identity (an Ed25519 key, PKCS#8 PEM, mode 0600) and print its peer id.
    New {
        /// Where to write the key file; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the peer id of an existing identity file.
    Show {
        /// The key file.
        file: PathBuf,
    },
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::New { out } => {
            let identity = Identity::generate().context("cannot generate a key")?;
            identity.save(&out)?;
            println!("{}", identity.peer_id());
        }
        Command::Show { file } => {
            let identity = Identity::load(&file)?;
            println!("{}", identity.peer_id());
        }
    }
    Ok(())
}
