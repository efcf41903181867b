//! The security options of `peerchannel chat`: a password from a file or the environment,
//! member certificates, signing. Kept apart from the chat loop.

use std::path::Path;

use anyhow::{Context, bail};
use peerchannel::MeshOptions;
use peerchannel::security::{MemberCertificate, MeshPassword, MeshSecurity};

/// The environment variable that may hold the mesh password.
pub const PASSWORD_ENV: &str = "PEERCHANNEL_PASSWORD";

/// The mesh options for the given flags. The password is never echoed or logged.
pub fn options(
    password_file: Option<&Path>,
    certificates: Option<(&Path, &Path)>,
    sign: bool,
    require_signed: bool,
) -> anyhow::Result<MeshOptions> {
    let from_env = std::env::var_os(PASSWORD_ENV).filter(|v| !v.is_empty());
    let password = match (password_file, from_env) {
        (Some(_), Some(_)) => {
            bail!("give the password either with --password-file or with {PASSWORD_ENV}, not both")
        }
        (Some(file), None) => Some(MeshPassword::from_file(file)?),
        (None, Some(value)) => Some(
            MeshPassword::new(value.into_encoded_bytes())
                .with_context(|| format!("bad {PASSWORD_ENV}"))?,
        ),
        (None, None) => None,
    };
    let security = match (password, certificates) {
        (Some(_), Some(_)) => {
            bail!("a mesh is protected by a password or by certificates, not both")
        }
        (Some(password), None) => MeshSecurity::Password(password),
        (None, Some((ca, cert))) => MeshSecurity::Certificate(
            MemberCertificate::from_pem_files(ca, cert).context("cannot load the certificates")?,
        ),
        (None, None) => MeshSecurity::Open,
    };
    let mut options = MeshOptions::default().with_security(security);
    options.sign = sign;
    options.require_signed = require_signed;
    Ok(options)
}
