//! The fuzz targets' checks on a stable toolchain: seeded random inputs through the same entry
//! points as `fuzz/fuzz_targets/{frame_decoder,state_machine}.rs`, and every file of their
//! committed regression corpus (`fuzz/corpus/<target>/`) replayed (see
//! [`peerchannel_proto::fuzzing::replay`] for the settings and where failures are kept).

use peerchannel_proto::fuzzing::{self, replay};
use peerchannel_proto::wire::LEN_PREFIX;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Random inputs per target by default: a few seconds each in the dev test profile.
const CASES: usize = 3_000;

#[test]
fn frame_decoder_random_and_mutated_frames() {
    let (mut rng, cases) = replay::settings("frame_decoder", CASES);
    let seeds = fuzzing::frame_seeds();
    for _ in 0..cases {
        let input = match rng.random_range(0..4) {
            // Any bytes.
            0 => replay::random_bytes(&mut rng, 300),
            // A valid frame with a few bytes changed, cut, or a length prefix rewritten.
            1 | 2 => {
                let mut frame = seeds[rng.random_range(0..seeds.len())].clone();
                mutate(&mut rng, &mut frame);
                frame
            }
            // Several frames back to back, then mutated.
            _ => {
                let mut stream = vec![0];
                for _ in 0..rng.random_range(1..5) {
                    let frame = &seeds[rng.random_range(0..seeds.len())];
                    stream.extend_from_slice(&frame[1..]);
                }
                if rng.random_bool(0.5) {
                    mutate(&mut rng, &mut stream);
                }
                stream
            }
        };
        replay::run_case("frame_decoder", &input, fuzzing::frame_decoder);
    }
}

#[test]
fn state_machine_random_scenarios() {
    let (mut rng, cases) = replay::settings("state_machine", CASES);
    // Fewer, longer inputs: each is a scenario of many steps.
    for _ in 0..cases / 3 {
        let input = replay::random_bytes(&mut rng, 4096);
        replay::run_case("state_machine", &input, fuzzing::state_machine);
    }
}

#[test]
fn regression_corpus_replays() {
    replay::replay_corpus("frame_decoder", fuzzing::frame_decoder);
    replay::replay_corpus("state_machine", fuzzing::state_machine);
}

/// The committed frame seeds are today's encoding of the sample messages: after a wire change
/// they would only exercise the version check.
#[test]
fn frame_seeds_are_current() {
    assert!(
        replay::committed_seeds("frame_decoder") == fuzzing::frame_seeds(),
        "fuzz/corpus/frame_decoder/seed-* are stale: rewrite them with `cargo test -p \
         peerchannel-proto --test fuzz_equivalents -- --ignored write_seed_corpus`"
    );
}

/// Writes the frame decoder's seed files (`cargo test -p peerchannel-proto --test
/// fuzz_equivalents -- --ignored`); the corpus keeps them.
#[test]
#[ignore]
fn write_seed_corpus() {
    replay::write_seeds("frame_decoder", &fuzzing::frame_seeds());
}

// --- helpers --------------------------------------------------------------------------------

/// Changes a frame (after its first byte, which picks the frame limit) the way a broken or
/// hostile peer would.
fn mutate(rng: &mut ChaCha8Rng, frame: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        let len = frame.len();
        match rng.random_range(0..5) {
            0 if len > 1 => {
                let i = rng.random_range(1..len);
                frame[i] = rng.random();
            }
            1 if len > 1 => frame.truncate(rng.random_range(1..len)),
            2 if len > LEN_PREFIX => {
                let prefix: u32 = match rng.random_range(0..3) {
                    0 => rng.random(),
                    1 => u32::MAX,
                    _ => (len - 1 - LEN_PREFIX) as u32 + rng.random_range(0..3),
                };
                frame[1..=LEN_PREFIX].copy_from_slice(&prefix.to_le_bytes());
            }
            3 => {
                let i = rng.random_range(1..=len.max(1));
                frame.insert(i.min(len), rng.random());
            }
            _ if len > 1 => {
                // A varint count made huge: 0xff bytes claim ever more elements.
                let i = rng.random_range(1..len);
                frame[i] = 0xff;
            }
            _ => {}
        }
    }
}
