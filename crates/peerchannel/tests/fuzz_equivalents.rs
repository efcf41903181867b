//! The `envelope_and_addresses` fuzz target's checks on a stable toolchain: seeded random and
//! mutated inputs through the same entry point as `fuzz/fuzz_targets/envelope_and_addresses.rs`,
//! and every file of its committed regression corpus replayed.
//!
//! The seed comes from `PEERCHANNEL_FUZZ_SEED` (default fixed) and is printed; the number of
//! cases from `PEERCHANNEL_FUZZ_CASES`.

use std::path::{Path, PathBuf};

use peerchannel::fuzzing;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random inputs by default: well under a second.
const CASES: usize = 5_000;

#[test]
fn envelopes_and_addresses_random_and_mutated() {
    let seed = env_or("PEERCHANNEL_FUZZ_SEED", 0x5eed);
    let cases = env_or("PEERCHANNEL_FUZZ_CASES", CASES as u64) as usize;
    println!("envelope_and_addresses: seed {seed} (PEERCHANNEL_FUZZ_SEED), {cases} cases");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let seeds = fuzzing::seeds();
    for _ in 0..cases {
        let mut input = if rng.random_bool(0.3) {
            let mut bytes = vec![0; rng.random_range(0..200)];
            rng.fill_bytes(&mut bytes);
            bytes
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
        fuzzing::envelope_and_addresses(&input);
    }
}

#[test]
fn regression_corpus_replays() {
    let files = corpus();
    assert!(!files.is_empty(), "no corpus for envelope_and_addresses");
    for file in files {
        println!("{}", file.display());
        fuzzing::envelope_and_addresses(&std::fs::read(&file).expect("a corpus file reads"));
    }
}

/// Writes the seed files (`cargo test -p peerchannel --test fuzz_equivalents -- --ignored`).
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("the corpus directory");
    for (i, seed) in fuzzing::seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("a seed is written");
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/envelope_and_addresses")
}

fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}
