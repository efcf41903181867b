//! A deterministic simulator for the peerchannel mesh protocol.
//!
//! Thousands of nodes run the real protocol core ([`peerchannel_proto::State`]) on one thread
//! over a simulated network with a virtual clock: per-link latency, retransmissions, deaths
//! without goodbye, partitions, slow nodes and a resolver. The same seed gives the same run,
//! byte for byte. The `peerchannel-sim` binary runs the scenarios in [`scenario`] and prints
//! one JSON object per round. `README.md` says what is modelled and what is not, and records
//! the measured results; `tests/` holds one scenario test per behaviour.
//!
//! ```
//! use peerchannel_sim::scenario::{run, Kind, Scenario};
//!
//! let mut s = Scenario::new(Kind::Single, 50, 7);
//! s.rounds = 2;
//! let summary = run(&s, |_| {});
//! assert!(summary.rounds.iter().all(|r| r.missed == 0));
//! ```
#![warn(missing_docs)]

pub mod network;
pub mod scenario;

pub use network::{NetConfig, Network, NodeId};
pub use scenario::{Kind, RoundReport, Scenario, Summary, run};
