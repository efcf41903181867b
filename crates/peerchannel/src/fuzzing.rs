//! Entry points for the fuzz targets in `fuzz/` and for the tests that replay their corpus on
//! a stable toolchain (`tests/fuzz_equivalents.rs`). Only with the `fuzzing` feature; not a
//! stable API.
//!
//! [`envelope_and_addresses`] feeds the same bytes to every decoder of the runtime that reads
//! what another node wrote, besides the frame decoder (fuzzed in `peerchannel_proto` with
//! `[u8; 32]` peer ids, which is how [`PeerId`](crate::PeerId) encodes): the application
//! envelope inside each message and the addresses inside a peer's data. Whatever decodes must
//! encode again and decode to the same value; nothing may panic.

use std::net::SocketAddr;

use peerchannel_proto::PeerData;

use crate::addresses::{self, MAX_ADDRESSES};
use crate::envelope::{Auth, Envelope, EnvelopeRef};

/// Decodes `data` as an envelope and as peer data; checks round trips.
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

/// Sample inputs: an envelope without a signature, signed, and signed with a member
/// certificate, and encoded addresses. Seeds for the corpus.
pub fn seeds() -> Vec<Vec<u8>> {
    let envelope = |certificate: Option<&[u8]>| {
        let auth = Auth {
            timestamp_ms: 1_700_000_000_000,
            signature: [7; 64],
            certificate,
        };
        Envelope {
            path: "scores/live",
            body: &[1, 2, 3],
            auth: Some(auth),
        }
        .encode()
        .to_vec()
    };
    let plain = Envelope {
        path: "chat",
        body: b"hello",
        auth: None,
    };
    let addrs: Vec<SocketAddr> = vec![
        SocketAddr::from(([127, 0, 0, 1], 4433)),
        "[::1]:4434".parse().expect("a valid address"),
    ];
    let data = addresses::encode(&addrs).expect("two addresses fit");
    vec![
        plain.encode().to_vec(),
        envelope(None),
        envelope(Some(b"a member certificate")),
        data.as_bytes().to_vec(),
    ]
}
