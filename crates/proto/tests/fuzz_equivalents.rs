//! The fuzz targets' checks on a stable toolchain: seeded random inputs through the same entry
//! points as `fuzz/fuzz_targets/{frame_decoder,state_machine}.rs`, and every file of their
//! committed regression corpus (`fuzz/corpus/<target>/`) replayed.
//!
//! The seed comes from `PEERCHANNEL_FUZZ_SEED` (default fixed) and is printed; the number of
//! cases from `PEERCHANNEL_FUZZ_CASES`. A failing case is written to `target/fuzz-failures/`,
//! ready to replay with `cargo +nightly fuzz run <target> <file>` and to add to the corpus.

use std::path::{Path, PathBuf};

use peerchannel_proto::fuzzing;
use peerchannel_proto::wire::LEN_PREFIX;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random inputs per target by default: a few seconds each in the dev test profile.
const CASES: usize = 3_000;

#[test]
fn frame_decoder_random_and_mutated_frames() {
    let (mut rng, cases) = setup("frame_decoder");
    let seeds = fuzzing::frame_seeds();
    for _ in 0..cases {
        let input = match rng.random_range(0..4) {
            // Any bytes.
            0 => random_bytes(&mut rng, 300),
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
        run_case("frame_decoder", &input, fuzzing::frame_decoder);
    }
}

#[test]
fn state_machine_random_scenarios() {
    let (mut rng, cases) = setup("state_machine");
    // Fewer, longer inputs: each is a scenario of many steps.
    for _ in 0..cases / 3 {
        let input = random_bytes(&mut rng, 4096);
        run_case("state_machine", &input, fuzzing::state_machine);
    }
}

#[test]
fn regression_corpus_replays() {
    for (target, check) in [
        ("frame_decoder", fuzzing::frame_decoder as fn(&[u8])),
        ("state_machine", fuzzing::state_machine),
    ] {
        let files = corpus(target);
        assert!(!files.is_empty(), "no corpus for {target}");
        for file in files {
            let input = std::fs::read(&file).expect("a corpus file reads");
            println!("{target}: {}", file.display());
            check(&input);
        }
    }
}

/// Writes the frame decoder's seed files (`cargo test -p peerchannel-proto --test
/// fuzz_equivalents -- --ignored`); the corpus keeps them.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = corpus_dir("frame_decoder");
    std::fs::create_dir_all(&dir).expect("the corpus directory");
    for (i, frame) in fuzzing::frame_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), frame).expect("a seed is written");
    }
}

// --- helpers --------------------------------------------------------------------------------

fn setup(target: &str) -> (ChaCha8Rng, usize) {
    let seed = std::env::var("PEERCHANNEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let cases = std::env::var("PEERCHANNEL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES);
    println!("{target}: seed {seed} (PEERCHANNEL_FUZZ_SEED), {cases} cases");
    (ChaCha8Rng::seed_from_u64(seed), cases)
}

/// Runs one case; on a panic, keeps the input where it can be replayed, then fails.
fn run_case(target: &str, input: &[u8], check: fn(&[u8])) {
    if std::panic::catch_unwind(|| check(input)).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{:016x}", hash(input)));
        let _ = std::fs::write(&file, input);
        panic!("{target} failed; input kept in {}", file.display());
    }
}

fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let mut bytes = vec![0; rng.random_range(0..=max)];
    rng.fill_bytes(&mut bytes);
    bytes
}

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

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable name for a failing input.
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}
