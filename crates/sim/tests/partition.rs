//! Partition at 1,000 nodes: the mesh is cut in two halves for a minute, long enough for
//! every link across the cut to time out and for each half to believe it is whole. After the
//! heal, partition probes find the other half and the two merge; then every message reaches
//! every node again.

use crate::common;

use std::time::Duration;

use peerchannel_sim::Kind;

const NODES: usize = 1_000;
const ROUNDS: usize = 5;

/// Simulated time from the heal until the mesh is one connected graph. Measured 100-300 ms.
const MERGE_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn the_halves_merge_after_the_heal_and_every_message_reaches_everyone() {
    let first = common::seed();
    for seed in first..first + 2 {
        let s = common::scenario(Kind::Partition, NODES, seed, ROUNDS);
        let ctx = common::replay(&s);
        let summary = common::run(&s);
        let rounds = &summary.rounds;
        let table = common::table(rounds);
        assert_eq!(rounds.len(), ROUNDS, "{ctx}");
        let merged_after = rounds[0].merge_time_ms.flatten();
        assert!(
            merged_after.is_some_and(|ms| ms <= MERGE_WITHIN.as_millis() as u64),
            "merged after {merged_after:?} ms; {ctx}"
        );
        for r in rounds {
            assert_eq!(r.messages, 2, "one sender on each side; {ctx}");
            assert_eq!(r.missed, 0, "round {}; {ctx}\n{table}", r.round);
        }
    }
}
