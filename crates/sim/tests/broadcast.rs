//! Broadcast at 1,000 nodes: every message reaches every node, with almost no redundant
//! copies, over short tree paths, fast. The targets and the runs that set them are in
//! `crates/sim/README.md` (default latency 10-50 ms per link).

use crate::common;

use peerchannel_sim::{Kind, Summary};

const NODES: usize = 1_000;
const ROUNDS: usize = 10;

/// Relative message redundancy: redundant full copies per delivery.
const MAX_RMR: f64 = 0.05;
/// Last delivery hop. Measured with `single`: mean 10.7, max 13 over 60 rounds (six seeds).
/// One round's LDH depends on where its sender sits in the tree, so the run's mean is the
/// stable measure: we assert the mean over a run's rounds and, for the worst round, the
/// measured maximum plus one.
const MAX_MEAN_LDH: f64 = 12.0;
const MAX_LDH: u16 = 14;
/// Simulated time until every node has every message of a round. Measured max 211 ms.
const MAX_TIME_TO_FULL_MS: u64 = 300;

#[test]
fn one_sender_at_a_time_meets_every_target_in_every_round() {
    for seed in seeds(3) {
        let s = common::scenario(Kind::Single, NODES, seed, ROUNDS);
        let ctx = common::replay(&s);
        let summary = common::run(&s);
        let table = common::table(&summary.rounds);
        assert_eq!(summary.rounds.len(), ROUNDS, "{ctx}");
        for r in &summary.rounds {
            let round = r.round;
            assert_eq!(r.missed, 0, "round {round} missed; {ctx}\n{table}");
            assert!(r.rmr <= MAX_RMR, "round {round} RMR; {ctx}\n{table}");
            assert!(r.ldh <= MAX_LDH, "round {round} LDH; {ctx}\n{table}");
            let full = r.time_to_full_ms;
            assert!(
                full.is_some_and(|t| t <= MAX_TIME_TO_FULL_MS),
                "round {round} time to full {full:?} ms; {ctx}\n{table}"
            );
        }
        assert_mean_ldh(&summary, &ctx);
    }
}

/// Four senders at once share one tree. In a round during which the tree is being rebuilt (a
/// beacon after a change of neighbors), a message can need one graft (about 400 ms to reach
/// everyone) or meet duplicates over old and new links (measured once: RMR 0.15); 96 of the
/// first 100 rounds (seeds 1-10) meet every per-round target. So each round must miss nothing
/// and stay within the LDH bound, and redundancy, time and LDH are checked on the run's mean.
/// (A round's LDH here is the worst of its four messages: seed 15's mean is 12.2.)
#[test]
fn four_senders_at_a_time_meet_the_targets_on_average() {
    for seed in seeds(2) {
        let s = common::scenario(Kind::Multi, NODES, seed, ROUNDS);
        assert_many_senders_meet_the_targets(&s);
    }
}

/// Regression: with four senders, seed 10 used to send the tree into a graft storm from which
/// it never recovered (RMR 1.1-1.4 and 900 ms per round for good), when the second graft
/// timeout (40 ms) was shorter than a round trip.
#[test]
fn four_senders_seed_10_keep_a_sound_tree() {
    let s = common::scenario(Kind::Multi, NODES, 10, ROUNDS);
    assert_many_senders_meet_the_targets(&s);
}

fn assert_many_senders_meet_the_targets(s: &peerchannel_sim::Scenario) {
    let ctx = common::replay(s);
    let summary = common::run(s);
    let rounds = &summary.rounds;
    let table = common::table(rounds);
    assert_eq!(rounds.len(), ROUNDS, "{ctx}");
    for r in rounds {
        assert_eq!(r.missed, 0, "round {} missed; {ctx}\n{table}", r.round);
        assert!(r.ldh <= MAX_LDH, "round {} LDH; {ctx}\n{table}", r.round);
    }
    let rmr = common::mean(rounds.iter().map(|r| r.rmr));
    assert!(rmr <= MAX_RMR, "mean RMR {rmr:.4}; {ctx}\n{table}");
    let full = common::mean(
        rounds
            .iter()
            .map(|r| r.time_to_full_ms.map_or(f64::INFINITY, |t| t as f64)),
    );
    assert!(
        full <= MAX_TIME_TO_FULL_MS as f64,
        "mean time to full {full:.0} ms; {ctx}\n{table}"
    );
    assert_mean_ldh(&summary, &ctx);
}

fn assert_mean_ldh(summary: &Summary, ctx: &str) {
    let ldh = common::mean(summary.rounds.iter().map(|r| f64::from(r.ldh)));
    assert!(
        ldh <= MAX_MEAN_LDH,
        "mean LDH {ldh:.1} over the run; {ctx}\n{}",
        common::table(&summary.rounds)
    );
}

/// The seed under test and the next ones.
fn seeds(count: u64) -> impl Iterator<Item = u64> {
    let first = common::seed();
    first..first + count
}
