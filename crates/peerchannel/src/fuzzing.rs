//! Entry points for the fuzz targets in `fuzz/` and for the tests that replay their corpus on
//! a stable toolchain (`tests/fuzz_equivalents.rs`). Only with the `fuzzing` feature; not a
//! stable API.
//!
//! [`envelope_and_addresses`] feeds the same bytes to every decoder of the runtime that reads
//! what another node wrote, besides the frame decoder (fuzzed in `peerchannel_proto`): the
//! application envelope inside each message, the addresses inside a peer's data, and a frame
//! body with the runtime's own peer id type. Whatever decodes must encode again and decode to
//! the same value; nothing may panic.

use std::net::SocketAddr;

use peerchannel_proto::wire::{self, DEFAULT_MAX_FRAME};
use peerchannel_proto::{Message, PeerData};

use crate::PeerId;
use crate::addresses::{self, MAX_ADDRESSES};
use crate::envelope::{Envelope, EnvelopeRef};

/// Decodes `data` as an envelope, as peer data and as a frame body; checks round trips.
pub fn envelope_and_addresses(data: &[u8]) {
    if let Ok(envelope) = EnvelopeRef::decode(data) {
        let encoded = Envelope {
            path: envelope.path,
            body: envelope.body,
            auth: envelope.auth.clone(),
        }
        .encode();
        assert!(!encoded.is_empty(), "an envelope encodes");
        let again = EnvelopeRef::decode(&encoded).expect("an envelope we encoded decodes");
        assert_eq!(again, envelope);
    }

    if let Some(peer_data) = PeerData::new(data.to_vec())
        && let Some(addrs) = addresses::decode(&peer_data)
    {
        check_addresses(&addrs);
        let encoded = addresses::encode(&addrs).expect("usable addresses encode");
        assert_eq!(addresses::decode(&encoded), Some(addrs));
    }

    if let Ok(message) = wire::decode_body::<Message<PeerId>>(data) {
        let mut frame = Vec::new();
        wire::encode_frame(&message, DEFAULT_MAX_FRAME.max(data.len()), &mut frame)
            .expect("a decoded message encodes again");
        let (again, _) = wire::decode_frame::<Message<PeerId>>(&frame, usize::MAX)
            .expect("a frame we encoded decodes")
            .expect("a frame we encoded is whole");
        assert_eq!(again, message);
    }
}

fn check_addresses(addrs: &[SocketAddr]) {
    assert!(!addrs.is_empty() && addrs.len() <= MAX_ADDRESSES);
    for a in addrs {
        assert!(
            a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast(),
            "an unusable address was accepted: {a}"
        );
    }
}

/// Sample inputs: an envelope with and without a signature, and encoded addresses. Seeds for
/// the corpus.
pub fn seeds() -> Vec<Vec<u8>> {
    let plain = Envelope {
        path: "chat",
        body: b"hello",
        auth: None,
    };
    // A signed envelope, written out by hand so that it stays valid whatever fields `Auth`
    // gains: a timestamp, a 64-byte signature, then `None` for the next optional field (older
    // decoders ignore a trailing byte).
    let mut signed = Envelope {
        path: "scores/live",
        body: &[1, 2, 3],
        auth: None,
    }
    .encode()
    .to_vec();
    signed.pop(); // the `None` of `auth`
    signed.push(1); // `Some`
    signed.extend_from_slice(&[0x80, 0xe0, 0xa6, 0xb4, 0xbc, 0x31]); // a timestamp (varint)
    signed.push(64);
    signed.extend_from_slice(&[7; 64]);
    signed.push(0);
    let addrs: Vec<SocketAddr> = vec![
        SocketAddr::from(([127, 0, 0, 1], 4433)),
        "[::1]:4434".parse().expect("a valid address"),
    ];
    let data = addresses::encode(&addrs).expect("two addresses fit");
    vec![plain.encode().to_vec(), signed, data.as_bytes().to_vec()]
}
