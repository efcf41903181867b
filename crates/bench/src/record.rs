//! The harness's own bookkeeping: which messages a receiver got (each counted once), their
//! latencies, when they arrived; and the figures computed from that (rates, efficiency,
//! redundancy, percentiles, full delivery). Everything here is plain computation with unit
//! tests; the timing itself lives in the phases.

use std::collections::BTreeMap;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::clock::{NANOS_PER_SEC, ns_to_secs};

/// Width of the buckets in which arrivals are counted over time: 100 ms.
pub const TIMELINE_BUCKET_NS: u64 = 100_000_000;

/// The largest latency the histograms hold: 60 s (larger values are clamped to it).
const MAX_LATENCY_NS: u64 = 60 * NANOS_PER_SEC;

/// Significant figures the latency histograms keep.
const LATENCY_SIGFIG: u8 = 3;

/// A set of sequence numbers, dense from 0: one bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; true if it was not there yet.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.words[word] & mask != 0 {
            return false;
        }
        self.words[word] |= mask;
        self.len += 1;
        true
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// How many sequence numbers are in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many of `0..below` are in the set.
    pub fn count_below(&self, below: u64) -> u64 {
        self.count_between(0, below)
    }

    /// How many of `from..to` are in the set.
    pub fn count_between(&self, from: u64, to: u64) -> u64 {
        (from..to).filter(|s| self.contains(*s)).count() as u64
    }

    /// The runs of `0..below` not in the set, as (first, length), in order.
    pub fn missing_runs(&self, below: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for seq in (0..below).filter(|s| !self.contains(*s)) {
            match runs.last_mut() {
                Some((first, len)) if *first + *len == seq => *len += 1,
                _ => runs.push((seq, 1)),
            }
        }
        runs
    }
}

/// A new latency histogram, in nanoseconds.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low).
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, LATENCY_SIGFIG).expect("valid bounds")
}

/// What one receiver recorded for one phase.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    unique: SeqSet,
    duplicates: u64,
    latency: Histogram<u64>,
    timeline: BTreeMap<u64, u64>,
}

impl Default for PhaseRecord {
    fn default() -> Self {
        Self {
            unique: SeqSet::default(),
            duplicates: 0,
            latency: latency_histogram(),
            timeline: BTreeMap::new(),
        }
    }
}

impl PhaseRecord {
    /// Records message `seq`, sent at `sent_ns` and received at `now_ns`. A copy of a message
    /// already recorded counts as a duplicate and nothing else.
    pub fn record(&mut self, seq: u64, sent_ns: u64, now_ns: u64) {
        if !self.unique.insert(seq) {
            self.duplicates += 1;
            return;
        }
        let latency = now_ns.saturating_sub(sent_ns).clamp(1, MAX_LATENCY_NS);
        // In range by the clamp above.
        let _ = self.latency.record(latency);
        *self
            .timeline
            .entry(now_ns / TIMELINE_BUCKET_NS)
            .or_default() += 1;
    }

    /// Distinct messages recorded.
    pub fn unique(&self) -> u64 {
        self.unique.len()
    }

    /// The record in a form that can cross a process boundary.
    pub fn report(&self, lagged: u64) -> ReceiverReport {
        ReceiverReport {
            unique: self.unique.len(),
            duplicates: self.duplicates,
            lagged,
            seqs: self.unique.clone(),
            latency_ns: self
                .latency
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            timeline: self.timeline.iter().map(|(b, c)| (*b, *c)).collect(),
        }
    }
}

/// What a receiver reports for one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverReport {
    /// Distinct messages received.
    pub unique: u64,
    /// Copies of messages already received (the runtime should deliver none).
    pub duplicates: u64,
    /// Messages the channel dropped because the harness read too slowly (attributed to the
    /// phase of the message received just before).
    pub lagged: u64,
    /// Which messages arrived.
    pub seqs: SeqSet,
    /// One-way latencies: (nanoseconds, count) pairs of the histogram.
    pub latency_ns: Vec<(u64, u64)>,
    /// Arrivals per [`TIMELINE_BUCKET_NS`] bucket of the shared clock: (bucket, count).
    pub timeline: Vec<(u64, u64)>,
}

impl ReceiverReport {
    /// The latencies as a histogram.
    pub fn histogram(&self) -> anyhow::Result<Histogram<u64>> {
        let mut h = latency_histogram();
        for (value, count) in &self.latency_ns {
            h.record_n(*value, *count)
                .context("a latency out of the histogram's range")?;
        }
        Ok(h)
    }

    /// Messages per second that arrived in `[from_ns, to_ns)`, counted by whole buckets
    /// (a bucket counts if it starts inside the window).
    pub fn rate_between(&self, from_ns: u64, to_ns: u64) -> f64 {
        if to_ns <= from_ns {
            return 0.0;
        }
        let (first, last) = (
            from_ns.div_ceil(TIMELINE_BUCKET_NS),
            to_ns / TIMELINE_BUCKET_NS,
        );
        if last <= first {
            return 0.0;
        }
        let count: u64 = self
            .timeline
            .iter()
            .filter(|(b, _)| (first..last).contains(b))
            .map(|(_, c)| c)
            .sum();
        count as f64 / ns_to_secs((last - first) * TIMELINE_BUCKET_NS)
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// The largest.
    pub max_us: f64,
}

impl Percentiles {
    /// The percentiles of a histogram in nanoseconds (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Self {
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            max_us: us(h.max()),
        }
    }
}

/// The percentiles of one-way latency over every receiver's deliveries, and the worst
/// receiver's 99th percentile.
pub fn merged_latency(reports: &[ReceiverReport]) -> anyhow::Result<(Percentiles, f64)> {
    let mut all = latency_histogram();
    let mut p99_worst: f64 = 0.0;
    for r in reports {
        let h = r.histogram()?;
        p99_worst = p99_worst.max(Percentiles::of(&h).p99_us);
        all.add(&h)?;
    }
    Ok((Percentiles::of(&all), p99_worst))
}

/// The share of the `sent` messages (sequence numbers `0..sent`) that every receiver got.
pub fn full_delivery(receivers: &[&SeqSet], sent: u64) -> f64 {
    if sent == 0 {
        return 1.0;
    }
    let everywhere = (0..sent)
        .filter(|s| receivers.iter().all(|r| r.contains(*s)))
        .count();
    everywhere as f64 / sent as f64
}

/// The mesh's delivery efficiency against one raw link: every receiver gets each message, so
/// `receivers` x the slowest receiver's rate is the delivery work the mesh did, compared with
/// what one link alone carries.
pub fn efficiency(receivers: usize, slowest_per_sec: f64, raw_per_sec: f64) -> f64 {
    if raw_per_sec <= 0.0 {
        return 0.0;
    }
    receivers as f64 * slowest_per_sec / raw_per_sec
}

/// Relative message redundancy (Plumtree paper, section 5.1): payload copies received beyond
/// the first at each node, per delivery: `duplicates / received` (0 when nothing arrived).
pub fn rmr(received: u64, duplicates: u64) -> f64 {
    if received == 0 {
        return 0.0;
    }
    duplicates as f64 / received as f64
}

/// Messages per second.
pub fn per_sec(count: u64, window_ns: u64) -> f64 {
    if window_ns == 0 {
        return 0.0;
    }
    count as f64 / ns_to_secs(window_ns)
}

/// Counts length-prefixed frames (a 4-byte little-endian length, then that many bytes) in a
/// byte stream that arrives in pieces of any size.
#[derive(Debug, Default)]
pub struct FrameCounter {
    prefix: [u8; 4],
    prefix_len: usize,
    remaining: usize,
    frames: u64,
}

impl FrameCounter {
    /// Consumes the next piece of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(bytes.len());
                self.remaining -= take;
                bytes = &bytes[take..];
                if self.remaining == 0 {
                    self.frames += 1;
                }
                continue;
            }
            let take = (4 - self.prefix_len).min(bytes.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&bytes[..take]);
            self.prefix_len += take;
            bytes = &bytes[take..];
            if self.prefix_len == 4 {
                self.prefix_len = 0;
                self.remaining = u32::from_le_bytes(self.prefix) as usize;
                if self.remaining == 0 {
                    self.frames += 1;
                }
            }
        }
    }

    /// Complete frames seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_counts_once() {
        let mut r = PhaseRecord::default();
        r.record(0, 100, 1_100);
        r.record(1, 200, 2_200);
        r.record(0, 100, 5_000);
        r.record(70, 300, 3_300);
        let report = r.report(4);
        assert_eq!(report.unique, 3);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.lagged, 4);
        assert!(report.seqs.contains(70) && !report.seqs.contains(2));
        assert_eq!(report.seqs.count_below(2), 2);
        assert_eq!(report.seqs.count_between(1, 71), 2);
        assert_eq!(
            report.histogram().unwrap().len(),
            3,
            "duplicates add no latency"
        );
    }

    #[test]
    fn missing_runs_are_the_holes_below_the_bound() {
        let mut set = SeqSet::default();
        for seq in [0, 1, 4, 5, 6, 64, 200] {
            set.insert(seq);
        }
        assert_eq!(set.missing_runs(70), [(2, 2), (7, 57), (65, 5)]);
        assert_eq!(set.missing_runs(2), []);
        assert_eq!(SeqSet::default().missing_runs(3), [(0, 3)]);
    }

    #[test]
    fn percentiles_come_from_the_latencies() {
        let mut r = PhaseRecord::default();
        for seq in 0..100 {
            // Latencies 1..=100 µs.
            r.record(seq, 0, (seq + 1) * 1_000);
        }
        let p = Percentiles::of(&r.report(0).histogram().unwrap());
        assert!((p.p50_us - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_us - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max_us - 100.0).abs() < 0.1, "{p:?}");
        assert_eq!(
            Percentiles::of(&latency_histogram()),
            Percentiles::default()
        );
    }

    #[test]
    fn latencies_merge_over_receivers_and_the_worst_p99_is_one_receivers() {
        // One receiver at 1..=100 us, another at 1,001..=1,100 us.
        let (mut fast, mut slow) = (PhaseRecord::default(), PhaseRecord::default());
        for seq in 0..100 {
            fast.record(seq, 0, (seq + 1) * 1_000);
            slow.record(seq, 0, (seq + 1_001) * 1_000);
        }
        let (all, worst) = merged_latency(&[fast.report(0), slow.report(0)]).unwrap();
        // The median of all 200 is the fast receiver's largest; the worst p99 is the slow
        // receiver's own.
        assert!((all.p50_us - 100.0).abs() < 0.1, "{all:?}");
        assert!((all.max_us - 1_100.0).abs() < 1.0, "{all:?}");
        assert!((worst - 1_099.0).abs() < 1.0, "{worst}");
        assert_eq!(merged_latency(&[]).unwrap(), (Percentiles::default(), 0.0));
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut r = PhaseRecord::default();
        r.record(0, 0, 1_234_567);
        r.record(1, 0, 89);
        let report = r.report(0);
        let json = serde_json::to_string(&report).unwrap();
        let back: ReceiverReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let h = back.histogram().unwrap();
        assert_eq!(h.len(), 2);
        assert!(h.equivalent(h.max(), 1_234_567));
    }

    #[test]
    fn rates_are_read_off_the_timeline() {
        let mut r = PhaseRecord::default();
        // 10 messages in each of the buckets 10..20 (1 s of arrivals at 100 per second).
        let mut seq = 0;
        for bucket in 10..20 {
            for _ in 0..10 {
                r.record(seq, 0, bucket * TIMELINE_BUCKET_NS + 5);
                seq += 1;
            }
        }
        let report = r.report(0);
        let rate = report.rate_between(10 * TIMELINE_BUCKET_NS, 20 * TIMELINE_BUCKET_NS);
        assert!((rate - 100.0).abs() < 1e-9, "{rate}");
        let half = report.rate_between(15 * TIMELINE_BUCKET_NS, 25 * TIMELINE_BUCKET_NS);
        assert!((half - 50.0).abs() < 1e-9, "{half}");
        assert_eq!(report.rate_between(5, 5), 0.0);
    }

    #[test]
    fn full_delivery_needs_every_receiver() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        for s in 0..4 {
            a.insert(s);
        }
        b.insert(0);
        b.insert(2);
        assert_eq!(full_delivery(&[&a, &b], 4), 0.5);
        assert_eq!(full_delivery(&[&a], 4), 1.0);
        assert_eq!(full_delivery(&[&a, &b], 0), 1.0);
    }

    #[test]
    fn efficiency_and_redundancy() {
        assert!((efficiency(9, 10_000.0, 100_000.0) - 0.9).abs() < 1e-12);
        assert_eq!(efficiency(9, 1.0, 0.0), 0.0);
        assert_eq!(rmr(1_000, 20), 0.02);
        assert_eq!(rmr(0, 5), 0.0);
        assert_eq!(per_sec(500, NANOS_PER_SEC / 2), 1_000.0);
        assert_eq!(per_sec(1, 0), 0.0);
    }

    #[test]
    fn frames_are_counted_across_any_split() {
        let mut stream = Vec::new();
        for len in [0u32, 5, 1024, 1] {
            stream.extend_from_slice(&len.to_le_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for piece in [1, 2, 3, 7, 1000, stream.len()] {
            let mut c = FrameCounter::default();
            for chunk in stream.chunks(piece) {
                c.feed(chunk);
            }
            assert_eq!(c.frames(), 4, "pieces of {piece}");
        }
        let mut partial = FrameCounter::default();
        partial.feed(&stream[..stream.len() - 1]);
        assert_eq!(partial.frames(), 3);
    }
}
