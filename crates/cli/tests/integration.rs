//! The end-to-end tests of the `peerchannel` command, built as one test binary: each
//! `tests/<name>.rs` is a module of it, one behaviour per file, and its tests are named
//! `<name>::<test>`. They run the command as child processes (`CARGO_BIN_EXE_peerchannel`), the
//! mDNS ones in network namespaces of their own (`netns`), so they share no state in the test
//! process. `cargo test -p peerchannel-cli --test integration <name>::` runs one file.
//!
//! `autotests = false` (Cargo.toml) keeps Cargo from also building each file as a binary of its
//! own; a new file is added below (the simulator's `every_test_file_is_a_module`, which
//! checks every crate of the workspace, fails until it is).

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
