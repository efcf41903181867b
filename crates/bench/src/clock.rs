//! One clock for every node, in this process or another one on the same host.
//!
//! Latencies are measured one way: the sender writes the time into the message and the
//! receiver subtracts it from its own reading. That needs a clock both can read. On Linux,
//! `CLOCK_MONOTONIC` is one system-wide clock (it is not per process), so readings taken in
//! different processes on one host are comparable; std's `Instant` reads the same clock but
//! cannot be sent to another process, hence nanoseconds from `clock_gettime`.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Now, in nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC exists on every Linux kernel; reading it cannot fail with a valid
    // clock id and a valid pointer, which nix provides.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is readable");
    // Both fields are non-negative for CLOCK_MONOTONIC.
    ts.tv_sec() as u64 * NANOS_PER_SEC + ts.tv_nsec() as u64
}

/// Seconds as nanoseconds.
pub fn secs_to_ns(secs: f64) -> u64 {
    (secs * NANOS_PER_SEC as f64) as u64
}

/// Nanoseconds as seconds.
pub fn ns_to_secs(ns: u64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }

    #[test]
    fn conversions_round_trip() {
        assert_eq!(secs_to_ns(1.5), 1_500_000_000);
        assert_eq!(ns_to_secs(250_000_000), 0.25);
    }
}
