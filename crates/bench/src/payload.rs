//! What the harness sends: a small header (which phase, a sequence number, the send time)
//! followed by filler up to the message size.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Bytes of the header at the start of every message: phase (1), sequence number (8), send
/// time in nanoseconds on the shared clock (8), little-endian.
pub const HEADER_LEN: usize = 17;

/// The byte that fills the rest of a message.
const FILLER: u8 = 0xa5;

/// Which part of the run a message belongs to, so that late copies of one phase never count
/// in the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Messages that form the broadcast tree before anything is measured.
    Warmup,
    /// As fast as backpressure allows.
    Throughput,
    /// At a fixed rate.
    Latency,
    /// As fast as possible while one receiver is paused.
    Pause,
}

impl Phase {
    /// Every phase, in the order of their wire codes.
    pub const ALL: [Phase; 4] = [
        Phase::Warmup,
        Phase::Throughput,
        Phase::Latency,
        Phase::Pause,
    ];

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// The header of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The phase it was sent in.
    pub phase: Phase,
    /// Its sequence number within the phase, from 0.
    pub seq: u64,
    /// When it was handed to `send`, on the shared clock.
    pub sent_ns: u64,
}

/// A message of `size` bytes (at least [`HEADER_LEN`]) carrying `header`.
pub fn make(header: Header, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(HEADER_LEN));
    buf.put_u8(header.phase.code());
    buf.put_u64_le(header.seq);
    buf.put_u64_le(header.sent_ns);
    buf.resize(size.max(HEADER_LEN), FILLER);
    buf.freeze()
}

/// Reads the header of a received message; `None` for a body that is not the harness's.
pub fn parse(body: &[u8]) -> Option<Header> {
    let header = body.get(..HEADER_LEN)?;
    let phase = Phase::from_code(header[0])?;
    let seq = u64::from_le_bytes(header[1..9].try_into().ok()?);
    let sent_ns = u64::from_le_bytes(header[9..17].try_into().ok()?);
    Some(Header {
        phase,
        seq,
        sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_at_the_requested_size() {
        let header = Header {
            phase: Phase::Latency,
            seq: 42,
            sent_ns: 123_456_789,
        };
        let body = make(header, 1024);
        assert_eq!(body.len(), 1024);
        assert_eq!(parse(&body), Some(header));
    }

    #[test]
    fn a_small_size_still_carries_the_header() {
        let header = Header {
            phase: Phase::Warmup,
            seq: 1,
            sent_ns: 2,
        };
        assert_eq!(make(header, 3).len(), HEADER_LEN);
    }

    #[test]
    fn foreign_bodies_are_not_headers() {
        assert_eq!(parse(b"short"), None);
        let mut body = make(
            Header {
                phase: Phase::Pause,
                seq: 0,
                sent_ns: 0,
            },
            64,
        )
        .to_vec();
        body[0] = 200;
        assert_eq!(parse(&body), None);
    }
}
