//! Determinism: the same seed gives the same run, byte for byte; another seed another run.
//! Without this, no failure could be replayed from its seed.

use crate::common;

use peerchannel_sim::{Kind, Scenario, run};

const NODES: usize = 300;

/// The JSON lines the simulator prints for a scenario, and its event count.
fn lines(s: &Scenario) -> (Vec<String>, u64) {
    let mut lines = Vec::new();
    let summary = run(s, |r| {
        lines.push(serde_json::to_string(r).expect("a round report serialises"))
    });
    (lines, summary.events)
}

#[test]
fn the_same_seed_gives_the_same_output_byte_for_byte() {
    let seed = common::seed();
    for kind in [Kind::Multi, Kind::Churn, Kind::Partition] {
        let mut s = common::scenario(kind, NODES, seed, 3);
        s.partition = std::time::Duration::from_secs(20);
        let ctx = common::replay(&s);
        let (first, first_events) = lines(&s);
        let (second, second_events) = lines(&s);
        assert_eq!(first.len(), 3, "{ctx}");
        assert_eq!(first, second, "two runs of {ctx}");
        assert_eq!(first_events, second_events, "events processed in {ctx}");
    }
}

#[test]
fn another_seed_gives_another_run() {
    let seed = common::seed();
    let a = common::scenario(Kind::Single, NODES, seed, 3);
    let b = common::scenario(Kind::Single, NODES, seed + 1, 3);
    let (a_lines, a_events) = lines(&a);
    let (b_lines, b_events) = lines(&b);
    // The seed is part of every line; compare the rest too.
    let strip = |lines: &[String], seed: u64| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.replace(&format!("\"seed\":{seed},"), ""))
            .collect()
    };
    let ctx = format!("{} and seed {}", common::replay(&a), seed + 1);
    assert_ne!(strip(&a_lines, seed), strip(&b_lines, seed + 1), "{ctx}");
    assert_ne!(a_events, b_events, "events processed; {ctx}");
}
