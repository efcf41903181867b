//! Framing: how messages are cut out of a byte stream.
//!
//! A frame is a 4-byte little-endian length, then that many bytes: one version byte and the
//! postcard encoding of the message. The length is checked against the receiver's maximum
//! before anything is allocated, so a peer cannot make a node reserve memory by announcing a
//! large frame. Every decoding error is an [`FrameError`]; nothing here panics on input.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The wire version written in every frame. Bumped whenever a message gains a field.
pub const WIRE_VERSION: u8 = 5;

/// Bytes before the frame body: the length prefix.
pub const LEN_PREFIX: usize = 4;

/// The default largest frame: a 64 KiB payload plus room for the envelope.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 + 4 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a frame larger than this node accepts. The peer is misbehaving or
    /// configured with a larger maximum message size.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The maximum accepted.
        max: usize,
    },
    /// A frame with no version byte.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another wire version.
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    /// The body is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A message could not be encoded (only for types that cannot be serialized).
    #[error("could not encode message: {0}")]
    Encode(String),
}

/// Appends one frame holding `message` to `out`, checking it against `max_frame`.
///
/// On error `out` is left as it was.
pub fn encode_frame<T: Serialize>(
    message: &T,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    // Sized first (a walk over the message that copies nothing): the buffer is then allocated
    // once, where growing it while encoding a 1 KiB message took eight reallocations.
    let size = postcard::experimental::serialized_size(message)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    out.reserve(LEN_PREFIX + 1 + size);
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(WIRE_VERSION);
    let encoded = postcard::to_extend(message, std::mem::take(out));
    *out = match encoded {
        Ok(buf) => buf,
        Err(e) => return Err(FrameError::Encode(e.to_string())),
    };
    let len = out.len() - start - LEN_PREFIX;
    if len > max_frame {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    // `len <= max_frame`, and callers keep `max_frame` far below 4 GiB.
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: max_frame,
    })?;
    out[start..start + LEN_PREFIX].copy_from_slice(&prefix.to_le_bytes());
    Ok(())
}

/// Reads a length prefix and checks it: the number of body bytes that follow.
pub fn frame_len(prefix: [u8; LEN_PREFIX], max_frame: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

/// Decodes a frame body (version byte and message), as [`frame_len`] delimited it.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (&version, rest) = body.split_first().ok_or(FrameError::Empty)?;
    if version != WIRE_VERSION {
        return Err(FrameError::Version(version));
    }
    let (message, trailing) =
        postcard::take_from_bytes(rest).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            trailing.len()
        )));
    }
    Ok(message)
}

/// Cuts the next whole frame off the front of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the message and the number of bytes it used.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max_frame: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(used) = whole_frame(buf, max_frame)? else {
        return Ok(None);
    };
    Ok(Some((decode_body(&buf[LEN_PREFIX..used])?, used)))
}

/// The length (prefix included) of the frame at the front of `buf` if it is all there, its
/// prefix checked.
fn whole_frame(buf: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let mut p = [0; LEN_PREFIX];
    p.copy_from_slice(prefix);
    let used = LEN_PREFIX + frame_len(p, max_frame)?;
    Ok((buf.len() >= used).then_some(used))
}

/// Cuts the next whole frame off the front of `buf` and decodes it: `Ok(None)` when more bytes
/// are needed (`buf` is left as it was). After an error the stream cannot be read on (a bad
/// frame's bytes may or may not have been taken).
///
/// Unlike [`decode_frame`], the payloads in the message (`Gossip::payload`) are not copied:
/// they are slices of `buf`'s memory, which they keep alive. A reader that fills `buf` in large
/// blocks then allocates once per block, not once per message.
pub fn decode_frame_shared<T: DeserializeOwned>(
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<T>, FrameError> {
    let Some(used) = whole_frame(buf, max_frame)? else {
        return Ok(None);
    };
    let frame = buf.split_to(used).freeze();
    let _source = Source::set(frame);
    // Decoded from the frame where the adapter finds it (no second handle on the frame: its
    // count is shared with every payload of the block, read and dropped on other threads).
    SOURCE.with(|s| {
        let source = s.borrow();
        let frame = source.as_ref().expect("set just above");
        decode_body(&frame[LEN_PREFIX..]).map(Some)
    })
}

thread_local! {
    /// The frame being decoded by [`decode_frame_shared`] on this thread, if any.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Sets [`SOURCE`] for the duration of one decoding, and clears it however that ends.
struct Source;

impl Source {
    fn set(frame: Bytes) -> Self {
        SOURCE.with(|s| *s.borrow_mut() = Some(frame));
        Source
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        SOURCE.with(|s| *s.borrow_mut() = None);
    }
}

/// The serde adapter of a message's payloads (`#[serde(with = "crate::wire::shared_bytes")]`):
/// written as [`Bytes`] is (a byte string), read as a slice of the frame when
/// [`decode_frame_shared`] decodes it and the format lends its input (postcard does), as a copy
/// otherwise.
pub(crate) mod shared_bytes {
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    use super::SOURCE;

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Bytes,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Bytes, D::Error> {
        deserializer.deserialize_bytes(SharedVisitor)
    }

    struct SharedVisitor;

    impl<'de> Visitor<'de> for SharedVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_borrowed_bytes<E: Error>(self, bytes: &'de [u8]) -> Result<Bytes, E> {
            let shared = SOURCE.with(|s| {
                let source = s.borrow();
                let source = source.as_ref()?;
                // Only a slice within the frame's memory can be shared.
                let within = source.as_ptr_range();
                let range = bytes.as_ptr_range();
                (within.start <= range.start && range.end <= within.end)
                    .then(|| source.slice_ref(bytes))
            });
            Ok(shared.unwrap_or_else(|| Bytes::copy_from_slice(bytes)))
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(bytes))
        }

        /// Formats that write bytes as a list of numbers (as `Bytes`' own adapter reads them).
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                bytes.push(b);
            }
            Ok(Bytes::from(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::id::{MeshId, MessageId};
    use crate::message::*;

    fn gossip(len: usize) -> Message<u32> {
        Message {
            mesh: MeshId::new("soccerpals").unwrap(),
            body: MeshMessage::Broadcast(BroadcastMessage::Gossip(Gossip {
                id: MessageId { origin: 7, seq: 1 },
                hops: 1,
                hop_limit: None,
                kind: GossipKind::App,
                payload: Bytes::from(vec![0xab; len]),
            })),
        }
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut buf = Vec::new();
        encode_frame(&gossip(10), 1024, &mut buf).unwrap();
        encode_frame(&gossip(20), 1024, &mut buf).unwrap();
        let (a, used) = decode_frame::<Message<u32>>(&buf, 1024).unwrap().unwrap();
        assert_eq!(a, gossip(10));
        let (b, used2) = decode_frame::<Message<u32>>(&buf[used..], 1024)
            .unwrap()
            .unwrap();
        assert_eq!(b, gossip(20));
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn announcements_share_their_origin_on_the_wire() {
        // 32-byte origins, as the runtime's peer ids are.
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let announce = |origin, seq| Announcement {
            id: MessageId { origin, seq },
            hops: 3,
            catch_up: (70_020..70_030).contains(&seq),
        };
        // Interleaved origins stay in order: a group per origin.
        let list: Vec<_> = (0..100u64)
            .map(|seq| announce(if (40..90).contains(&seq) { b } else { a }, 70_000 + seq))
            .collect();
        let batch = Announced::group(&list);
        assert_eq!(
            batch.iter().map(|g| g.origin).collect::<Vec<_>>(),
            vec![a, b, a]
        );
        // Consecutive ids merge into runs, split where the flag changes.
        let runs: Vec<_> = batch
            .iter()
            .flat_map(|g| {
                g.runs
                    .iter()
                    .map(|r| (r.first - 70_000, r.count, r.catch_up))
            })
            .collect();
        assert_eq!(
            runs,
            [
                (0, 20, false),
                (20, 10, true),
                (30, 10, false),
                (40, 50, false),
                (90, 10, false)
            ]
        );
        let message = Message {
            mesh: MeshId::new("soccerpals").unwrap(),
            body: MeshMessage::Broadcast(BroadcastMessage::IHave(batch)),
        };
        let mut buf = Vec::new();
        encode_frame(&message, DEFAULT_MAX_FRAME, &mut buf).unwrap();
        // Origins once per group, then per run 3 bytes of first sequence number, 1 of count, 1
        // of hops and 1 of flag.
        assert!(buf.len() < 3 * 34 + 5 * 6 + 20, "{} bytes", buf.len());
        let (back, _) = decode_frame::<Message<[u8; 32]>>(&buf, DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        let MeshMessage::Broadcast(BroadcastMessage::IHave(groups)) = back.body else {
            panic!("not an announcement: {back:?}");
        };
        let again: Vec<_> = groups.iter().flat_map(Announced::iter).collect();
        assert_eq!(again, list);
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut buf = Vec::new();
        encode_frame(&gossip(10), 1024, &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert_eq!(
                decode_frame::<Message<u32>>(&buf[..cut], 1024),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn shared_decoding_slices_payloads_out_of_the_buffer() {
        let mut stream = Vec::new();
        encode_frame(&gossip(100), 1024, &mut stream).unwrap();
        let first_len = stream.len();
        encode_frame(&gossip(200), 1024, &mut stream).unwrap();
        // Every cut short of the first frame's end asks for more and takes nothing.
        for cut in 0..first_len {
            let mut buf = BytesMut::from(&stream[..cut]);
            assert_eq!(
                decode_frame_shared::<Message<u32>>(&mut buf, 1024),
                Ok(None)
            );
            assert_eq!(&buf[..], &stream[..cut], "cut {cut}");
        }
        let mut buf = BytesMut::from(&stream[..]);
        let memory = buf.as_ptr_range();
        let payload = |m: Message<u32>| match m.body {
            MeshMessage::Broadcast(BroadcastMessage::Gossip(g)) => g.payload,
            other => panic!("not gossip: {other:?}"),
        };
        let a = decode_frame_shared::<Message<u32>>(&mut buf, 1024)
            .unwrap()
            .unwrap();
        let b = decode_frame_shared::<Message<u32>>(&mut buf, 1024)
            .unwrap()
            .unwrap();
        assert_eq!((a.clone(), b.clone()), (gossip(100), gossip(200)));
        assert!(buf.is_empty());
        for p in [payload(a), payload(b)] {
            let range = p.as_ptr_range();
            assert!(
                memory.start <= range.start && range.end <= memory.end,
                "the payload is a slice of the buffer, not a copy"
            );
        }
        // Outside a shared decoding, payloads are copies, as before.
        let (copied, _) = decode_frame::<Message<u32>>(&stream, 1024)
            .unwrap()
            .unwrap();
        let range = payload(copied).as_ptr_range();
        let stream_memory = stream.as_ptr_range();
        assert!(range.end <= stream_memory.start || range.start >= stream_memory.end);
        // Limits and garbage as with `decode_frame`.
        let mut huge = BytesMut::from(&(1u32 << 30).to_le_bytes()[..]);
        assert!(matches!(
            decode_frame_shared::<Message<u32>>(&mut huge, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        let mut garbage = BytesMut::from(&[3, 0, 0, 0, WIRE_VERSION, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame_shared::<Message<u32>>(&mut garbage, 1024),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn payloads_read_from_other_formats_are_copies_of_the_same_bytes() {
        use serde::de::value::{BorrowedBytesDeserializer, BytesDeserializer, SeqDeserializer};
        type E = serde::de::value::Error;
        let data = [1u8, 2, 3];
        let lent = shared_bytes::deserialize(BorrowedBytesDeserializer::<E>::new(&data)).unwrap();
        let temporary = shared_bytes::deserialize(BytesDeserializer::<E>::new(&data)).unwrap();
        let listed =
            shared_bytes::deserialize(SeqDeserializer::<_, E>::new(data.iter().copied())).unwrap();
        for bytes in [lent, temporary, listed] {
            assert_eq!(&bytes[..], &data[..]);
            // Outside a shared decoding nothing is lent: a copy.
            assert_ne!(bytes.as_ptr(), data.as_ptr());
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading_the_body() {
        let mut buf = Vec::new();
        assert!(matches!(
            encode_frame(&gossip(2000), 1024, &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(
            buf.is_empty(),
            "a failed encode leaves the buffer as it was"
        );
        // A prefix alone announcing 1 GiB is refused without the body being present.
        let prefix = (1u32 << 30).to_le_bytes();
        assert_eq!(
            decode_frame::<Message<u32>>(&prefix, 1024),
            Err(FrameError::TooLarge {
                len: 1 << 30,
                max: 1024
            })
        );
    }

    #[test]
    fn bad_versions_and_garbage_are_errors() {
        let mut buf = Vec::new();
        encode_frame(&gossip(1), 1024, &mut buf).unwrap();
        buf[LEN_PREFIX] = 9;
        assert_eq!(
            decode_frame::<Message<u32>>(&buf, 1024),
            Err(FrameError::Version(9))
        );
        let garbage = [3, 0, 0, 0, WIRE_VERSION, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<Message<u32>>(&garbage, 1024),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(
            decode_frame::<Message<u32>>(&[0, 0, 0, 0], 1024),
            Err(FrameError::Empty)
        );
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_malformed() {
        let mut buf = Vec::new();
        encode_frame(&gossip(1), 1024, &mut buf).unwrap();
        buf.push(0);
        let len = (buf.len() - LEN_PREFIX) as u32;
        buf[..LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            decode_frame::<Message<u32>>(&buf, 1024),
            Err(FrameError::Malformed(_))
        ));
    }
}
