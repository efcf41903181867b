//! Logs go to stderr, quiet by default: stdout belongs to the command's output.

use tracing_subscriber::EnvFilter;

/// Sets up logging: warnings only, more with `-v`, or whatever `RUST_LOG` says.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,peerchannel=info",
        _ => "debug,quinn=info,rustls=info,hyper=info,reqwest=info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
