//! The resolver's integration tests, built as one test binary: each `tests/<name>.rs` is a module
//! of it, one behaviour per file, and its tests are named `<name>::<test>`. One binary builds and
//! links axum, tokio and the helpers once instead of once per file.
//! `cargo test -p peerchannel-resolver --test integration <name>::` runs one file.
//!
//! `autotests = false` (Cargo.toml) keeps Cargo from also building each file as a binary of its
//! own; a new file is added below (`every_test_file_is_a_module` fails until it is).

use std::fs;
use std::path::Path;

mod common;

mod abuse;
mod api;
mod bad_input;
mod body_limit;
mod expiry;
mod fuzz_equivalents;
mod idle_connections;
mod keeper;
mod limit_meshes_and_total;
mod limit_per_ip;
mod limit_per_mesh;
mod multi_resolver;
mod rate_limit;
mod restart;
mod unknown_mesh;

/// Every `tests/*.rs` file is a module above: with `autotests = false` a file left out would be
/// neither compiled nor run, and nothing else would say so.
#[test]
fn every_test_file_is_a_module() {
    let this = include_str!("integration.rs");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    for entry in fs::read_dir(&dir).expect("the tests directory") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        let declared = format!("mod {module};");
        assert!(
            module == "integration" || this.lines().any(|l| l == declared),
            "tests/{name} is not in the test binary: add `{declared}` to tests/integration.rs"
        );
    }
}
