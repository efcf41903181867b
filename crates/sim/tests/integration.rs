//! The scenario tests, built as one test binary: each `tests/<name>.rs` is a module of it, one
//! behaviour per file, and its tests are named `<name>::<test>`. The test profile optimises this
//! crate, so each binary of its own cost an optimised build and a link of the simulator; one
//! binary costs one. `cargo test -p peerchannel-sim --test integration <name>::` runs one file.
//!
//! `autotests = false` (Cargo.toml) keeps Cargo from also building each file as a binary of its
//! own; a new file is added below (`every_test_file_is_a_module` fails until it is).

use std::fs;
use std::path::Path;

mod common;

mod broadcast;
mod churn;
mod determinism;
mod filter;
mod hop_limit;
mod join;
mod offline;
mod partition;
mod revive;
mod slow_node;

/// Every `tests/*.rs` file of every crate built with `autotests = false` (this one, the
/// runtime, the resolver and the command line) is a module of that crate's
/// `tests/integration.rs`: a file left out would be neither compiled nor run, and nothing else
/// would say so. Checked here once for the workspace: this test binary builds first and
/// fastest.
#[test]
fn every_test_file_is_a_module() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for krate in fs::read_dir(&crates).expect("the crates directory") {
        let krate = krate.expect("a directory entry").path();
        let manifest = fs::read_to_string(krate.join("Cargo.toml")).unwrap_or_default();
        if !manifest.lines().any(|l| l.trim() == "autotests = false") {
            continue;
        }
        let tests = krate.join("tests");
        let binary = fs::read_to_string(tests.join("integration.rs"))
            .unwrap_or_else(|e| panic!("{}: no tests/integration.rs: {e}", krate.display()));
        for entry in fs::read_dir(&tests).expect("the tests directory") {
            let name = entry.expect("a directory entry").file_name();
            let name = name.to_string_lossy();
            let Some(module) = name.strip_suffix(".rs") else {
                continue;
            };
            let declared = format!("mod {module};");
            assert!(
                module == "integration" || binary.lines().any(|l| l == declared),
                "{}: tests/{name} is not in the test binary: add `{declared}` to \
                 tests/integration.rs",
                krate.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "found {checked} crates with autotests = false, expected 4"
    );
}
