//! Churn at 1,000 nodes: half, or four fifths, of the nodes die at once without a goodbye
//! (their peers notice only after the 3 s idle timeout). The survivors repair the mesh and the
//! tree while messages keep flowing.

use crate::common;

use peerchannel_sim::{Kind, Scenario};

const NODES: usize = 1_000;
const ROUNDS: usize = 5;

#[test]
fn half_the_nodes_die_and_the_survivors_get_every_message_by_the_second_round() {
    for seed in seeds() {
        let s = churn(seed, 0.5);
        let ctx = common::replay(&s);
        let summary = common::run(&s);
        let rounds = &summary.rounds;
        let table = common::table(rounds);
        assert_eq!(rounds.len(), ROUNDS, "{ctx}");
        assert_eq!(rounds[0].alive, NODES / 2, "{ctx}");
        assert!(
            rounds[0].reliability >= 0.999,
            "first round after the kill; {ctx}\n{table}"
        );
        for r in &rounds[1..] {
            assert_eq!(r.missed, 0, "round {}; {ctx}\n{table}", r.round);
        }
    }
}

#[test]
fn four_fifths_of_the_nodes_die_and_the_survivors_get_every_message_by_the_third_round() {
    for seed in seeds() {
        let s = churn(seed, 0.8);
        let ctx = common::replay(&s);
        let summary = common::run(&s);
        let rounds = &summary.rounds;
        let table = common::table(rounds);
        assert_eq!(rounds.len(), ROUNDS, "{ctx}");
        assert_eq!(rounds[0].alive, NODES / 5, "{ctx}");
        for r in &rounds[2..] {
            assert_eq!(r.missed, 0, "round {}; {ctx}\n{table}", r.round);
        }
    }
}

fn churn(seed: u64, kill_fraction: f64) -> Scenario {
    let mut s = common::scenario(Kind::Churn, NODES, seed, ROUNDS);
    s.kill_fraction = kill_fraction;
    s
}

/// The seed under test and the next one.
fn seeds() -> impl Iterator<Item = u64> {
    let first = common::seed();
    first..first + 2
}
