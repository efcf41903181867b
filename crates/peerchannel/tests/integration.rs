//! The integration tests, built as one test binary: each `tests/<name>.rs` is a module of it, one
//! behaviour per file, and its tests are named `<name>::<test>`. One binary builds and links
//! tokio, quinn and rustls once instead of once per file, which was most of the test build's
//! time. `cargo test -p peerchannel --test integration <name>::` runs one file.
//!
//! Nothing here needs a process of its own: logging is set up with `try_init`, no test changes
//! the environment or the current directory, and the mDNS tests run their bodies in child
//! processes (`netns`), in network namespaces of their own.
//!
//! `autotests = false` (Cargo.toml) keeps Cargo from also building each file as a binary of its
//! own; a new file is added below (the simulator's `every_test_file_is_a_module`, which
//! checks every crate of the workspace, fails until it is).

mod common;
mod netns;

mod certificates;
mod channels;
mod crash;
mod events;
mod filter;
mod fuzz_equivalents;
mod garbage;
mod hop_limit;
mod limits;
mod malformed_frames;
mod mdns;
mod message_size;
mod offline;
mod password;
mod resolver_service;
mod resume;
mod signing;
mod stale;
mod tls;
mod two_meshes;
