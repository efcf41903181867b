//! The `resolver_request` fuzz target's checks on a stable toolchain: seeded random sessions of
//! requests through the same entry point as `fuzz/fuzz_targets/resolver_request.rs`, and every
//! file of its committed regression corpus replayed (see
//! [`peerchannel_proto::fuzzing::replay`] for the settings and where failures are kept).

use peerchannel_proto::fuzzing::replay;
use peerchannel_resolver::fuzzing;

const TARGET: &str = "resolver_request";

/// Random sessions by default: a few seconds in the dev test profile.
const CASES: usize = 500;

#[test]
fn random_request_sessions() {
    let (mut rng, cases) = replay::settings(TARGET, CASES);
    for _ in 0..cases {
        let input = replay::random_bytes(&mut rng, 2047);
        replay::run_case(TARGET, &input, fuzzing::requests);
    }
}

#[test]
fn regression_corpus_replays() {
    replay::replay_corpus(TARGET, fuzzing::requests);
}
