//! The end-to-end tests of the `peerchannel` command, built as one test binary: each
//! `tests/<name>.rs` is a module of it, one behaviour per file, and its tests are named
//! `<name>::<test>`. They run the command as child processes (`CARGO_BIN_EXE_peerchannel`), the
//! mDNS ones in network namespaces of their own (`netns`), so they share no state in the test
//! process. `cargo test -p peerchannel-cli --test integration <name>::` runs one file.
//!
//! `autotests = false` (Cargo.toml) keeps Cargo from also building each file as a binary of its
//! own; a new file is added below (`every_test_file_is_a_module` fails until it is).

use std::fs;
use std::path::Path;

mod common;
mod mdns_common;
#[path = "../../peerchannel/tests/netns/mod.rs"]
mod netns;

mod ca;
mod chat;
mod errors;
mod identity;
mod mdns_auto;
mod mdns_browse;
mod mdns_chat;
mod password_chat;

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
