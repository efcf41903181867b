//! `peerchannel ca init` and `peerchannel cert issue`: the CA of a certificate mesh, and member
//! certificates for node identities. The files are ordinary PEM X.509
//! (`openssl verify -CAfile ca.pem node.pem` accepts them).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use peerchannel::security::certificate::{self, DEFAULT_VALIDITY_DAYS, MeshCa};
use peerchannel::{Identity, MeshId};

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a mesh CA in DIR: ca.key (the CA's private key, mode 0600: keep it secret) and
    /// ca.pem (its certificate: give it to every member, as --ca-cert).
    Init {
        /// The mesh the CA admits members to (its certificate names it).
        #[arg(long)]
        mesh: String,
        /// The directory to write to (created if missing; an existing CA is not overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a member certificate for a node's identity (its key file, as given to
    /// `peerchannel chat --identity`).
    Issue {
        /// The CA directory made by `peerchannel ca init`.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node's identity key file: the certificate is for its public key.
        #[arg(long, value_name = "KEYFILE")]
        identity: PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// How many days the certificate is valid.
        #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
        days: u32,
    },
}

pub fn run_ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { mesh, out } => {
            let mesh = MeshId::new(&mesh).context("bad --mesh")?;
            let ca = MeshCa::generate(&mesh)?;
            let (key, cert) = ca.save(&out)?;
            println!("mesh CA for {mesh}");
            println!("  {} (private key: keep it secret)", key.display());
            println!(
                "  {} (give it to every member as --ca-cert)",
                cert.display()
            );
            Ok(())
        }
    }
}

pub fn run_cert(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Issue {
            ca,
            identity,
            out,
            days,
        } => {
            anyhow::ensure!(days > 0, "--days must be at least 1");
            let ca = MeshCa::load(&ca)?;
            let member = Identity::load(&identity)?.peer_id();
            let issued = ca.issue(member, days)?;
            std::fs::write(&out, certificate::to_pem(&issued))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "issued a member certificate for {member}, valid {days} days: {}",
                out.display()
            );
            Ok(())
        }
    }
}
