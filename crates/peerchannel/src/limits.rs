//! Bounds on what one peer can make a node do or hold.

/// Limits applied to every link. A peer that exceeds them is disconnected with a reason; the
/// node goes on serving everyone else.
///
/// The defaults are far above what one link carries in normal use (the benchmark's busiest
/// link carries about 30,000 frames per second on loopback) and far below what a flooding
/// peer's loop produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Frames per second a peer may send on one link, sustained. Default 100,000.
    pub frames_per_second: u32,
    /// Frames a peer may send in a burst above the sustained rate. Default 200,000.
    pub frames_burst: u32,
    /// Requests for stored messages (grafts, fetches of up to 256, resumes: see
    /// [`peerchannel_proto::message::BroadcastMessage`]) per second from one peer. Default
    /// 5,000, burst twice that: a node catching up asks for at most a few hundred at once. The
    /// core answers a peer's resume of one origin at most once a second, whatever this allows.
    pub grafts_per_second: u32,
    /// Bytes waiting to be sent to one peer. Beyond it, full messages to that peer are routed
    /// around (it becomes lazy), and if even the protocol's own small frames pile up past it,
    /// the link is closed. Default 16 MiB.
    pub queued_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frames_per_second: 100_000,
            frames_burst: 200_000,
            grafts_per_second: 5_000,
            queued_bytes: 16 * 1024 * 1024,
        }
    }
}
