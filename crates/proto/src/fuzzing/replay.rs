//! What every crate's `tests/fuzz_equivalents.rs` shares: the fuzz targets' checks run on a
//! stable toolchain with seeded random inputs, and their committed corpus replayed.
//!
//! The seed comes from `PEERCHANNEL_FUZZ_SEED` (default fixed) and is printed, the number of
//! cases from `PEERCHANNEL_FUZZ_CASES`. A failing input is written to `target/fuzz-failures/`,
//! ready to replay with `cargo +nightly fuzz run <target> <file>` and to add to the corpus.

use std::panic::{RefUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seed when `PEERCHANNEL_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5eed;

/// The random source and the number of cases for `target` (`default_cases` unless
/// `PEERCHANNEL_FUZZ_CASES` says otherwise); prints both, so a failure can be reproduced.
pub fn settings(target: &str, default_cases: usize) -> (ChaCha8Rng, usize) {
    let seed = env_or("PEERCHANNEL_FUZZ_SEED", DEFAULT_SEED);
    let cases = env_or("PEERCHANNEL_FUZZ_CASES", default_cases as u64) as usize;
    println!("{target}: seed {seed} (PEERCHANNEL_FUZZ_SEED), {cases} cases");
    (ChaCha8Rng::seed_from_u64(seed), cases)
}

/// Runs `check` on one input; on a panic, keeps the input where it can be replayed, then
/// fails.
pub fn run_case(target: &str, input: &[u8], check: impl Fn(&[u8]) + RefUnwindSafe) {
    if catch_unwind(|| check(input)).is_err() {
        let dir = workspace().join("target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{:016x}", fnv1a(input)));
        let _ = std::fs::write(&file, input);
        panic!("{target} failed; input kept in {}", file.display());
    }
}

/// Runs `check` on every file of `fuzz/corpus/<target>/`, of which there must be some.
pub fn replay_corpus(target: &str, check: impl Fn(&[u8]) + RefUnwindSafe) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in files {
        println!("{target}: {}", file.display());
        let input = std::fs::read(&file).expect("a corpus file reads");
        run_case(target, &input, &check);
    }
}

/// The seed files of `target` (`seed-00`, `seed-01`, ...) as committed.
pub fn committed_seeds(target: &str) -> Vec<Vec<u8>> {
    (0..)
        .map_while(|i| std::fs::read(corpus_dir(target).join(format!("seed-{i:02}"))).ok())
        .collect()
}

/// Writes `seeds` as the seed files of `target`.
pub fn write_seeds(target: &str, seeds: &[Vec<u8>]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("the corpus directory");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("a seed is written");
    }
}

/// Up to `max` random bytes.
pub fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let mut bytes = vec![0; rng.random_range(0..=max)];
    rng.fill_bytes(&mut bytes);
    bytes
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus_dir(target: &str) -> PathBuf {
    workspace().join("fuzz/corpus").join(target)
}

/// FNV-1a: a stable name for a failing input.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
