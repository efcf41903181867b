//! The `resolver_request` fuzz target's checks on a stable toolchain: seeded random sessions of
//! requests through the same entry point as `fuzz/fuzz_targets/resolver_request.rs`, and every
//! file of its committed regression corpus replayed.
//!
//! The seed comes from `PEERCHANNEL_FUZZ_SEED` (default fixed) and is printed; the number of
//! cases from `PEERCHANNEL_FUZZ_CASES`.

use std::path::{Path, PathBuf};

use peerchannel_resolver::fuzzing;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

/// Random sessions by default: a few seconds in the dev test profile.
const CASES: usize = 500;

#[test]
fn random_request_sessions() {
    let seed = env_or("PEERCHANNEL_FUZZ_SEED", 0x5eed);
    let cases = env_or("PEERCHANNEL_FUZZ_CASES", CASES as u64) as usize;
    println!("resolver_request: seed {seed} (PEERCHANNEL_FUZZ_SEED), {cases} cases");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..cases {
        let mut input = vec![0; rng.random_range(0..2048)];
        rng.fill_bytes(&mut input);
        fuzzing::requests(&input);
    }
}

#[test]
fn regression_corpus_replays() {
    let files = corpus();
    assert!(!files.is_empty(), "no corpus for resolver_request");
    for file in files {
        println!("{}", file.display());
        fuzzing::requests(&std::fs::read(&file).expect("a corpus file reads"));
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/resolver_request");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}
