//! The resolver's integration tests, built as one test binary: each `tests/<name>.rs` is a module
//! of it, one behaviour per file, and its tests are named `<name>::<test>`. One binary builds and
//! links axum, tokio and the helpers once instead of once per file.
//! `cargo test -p peerchannel-resolver --test integration <name>::` runs one file.
//!
//! `autotests = false` (Cargo.toml) keeps Cargo from also building each file as a binary of its
//! own; a new file is added below (the simulator's `every_test_file_is_a_module`, which
//! checks every crate of the workspace, fails until it is).

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
