//! The `envelope_and_addresses` fuzz target's checks on a stable toolchain: seeded random and
//! mutated inputs through the same entry point as `fuzz/fuzz_targets/envelope_and_addresses.rs`,
//! and every file of its committed regression corpus replayed (see
//! [`peerchannel_proto::fuzzing::replay`] for the settings and where failures are kept).

use peerchannel::fuzzing;
use peerchannel_proto::fuzzing::replay;
use rand::RngExt;

const TARGET: &str = "envelope_and_addresses";

/// Random inputs by default: well under a second.
const CASES: usize = 5_000;

#[test]
fn envelopes_and_addresses_random_and_mutated() {
    let (mut rng, cases) = replay::settings(TARGET, CASES);
    let seeds = fuzzing::seeds();
    for _ in 0..cases {
        let mut input = if rng.random_bool(0.3) {
            replay::random_bytes(&mut rng, 200)
        } else {
            seeds[rng.random_range(0..seeds.len())].clone()
        };
        for _ in 0..rng.random_range(0..4) {
            let len = input.len();
            match rng.random_range(0..4) {
                0 if len > 0 => input[rng.random_range(0..len)] = rng.random(),
                1 if len > 0 => input.truncate(rng.random_range(0..len)),
                2 if len > 0 => input[rng.random_range(0..len)] = 0xff,
                _ => input.insert(rng.random_range(0..=len), rng.random()),
            }
        }
        replay::run_case(TARGET, &input, fuzzing::envelope_and_addresses);
    }
}

#[test]
fn regression_corpus_replays() {
    replay::replay_corpus(TARGET, fuzzing::envelope_and_addresses);
}

/// The committed seeds are today's encoding of the samples.
#[test]
fn seeds_are_current() {
    assert!(
        replay::committed_seeds(TARGET) == fuzzing::seeds(),
        "fuzz/corpus/{TARGET}/seed-* are stale: rewrite them with `cargo test -p peerchannel \
         --test integration -- --ignored fuzz_equivalents::write_seed_corpus`"
    );
}

/// Writes the seed files (`cargo test -p peerchannel --test integration -- --ignored
/// fuzz_equivalents::write_seed_corpus`).
#[test]
#[ignore]
fn write_seed_corpus() {
    replay::write_seeds(TARGET, &fuzzing::seeds());
}
