//! What the application's messages look like inside the mesh: the channel path and the body.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The payload of one application message on the wire (encoding side).
///
/// Compatibility rule as for every wire type: never remove or reorder a field; `auth` exists
/// from the first version so that signed messages need no new format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Envelope<'a> {
    /// The channel path inside the mesh (`chat`, `scores/live`).
    pub(crate) path: &'a str,
    /// The application's bytes.
    #[serde(with = "serde_bytes")]
    pub(crate) body: &'a [u8],
    /// End-to-end authentication by the origin, when the mesh signs messages.
    pub(crate) auth: Option<Auth<'a>>,
}

/// The same payload decoded without copying: borrowed from the received frame.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct EnvelopeRef<'a> {
    pub(crate) path: &'a str,
    #[serde(with = "serde_bytes")]
    pub(crate) body: &'a [u8],
    #[serde(borrow)]
    pub(crate) auth: Option<Auth<'a>>,
}

/// An origin's signature over a message (see [`crate::security::signing`]).
///
/// No node sent an `Auth` before signing existed (the field was always `None`), so its layout
/// was free to define with the first signing version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Auth<'a> {
    /// Milliseconds since the Unix epoch at the origin when it signed.
    pub(crate) timestamp_ms: u64,
    /// Ed25519 signature by the origin's key.
    #[serde(with = "serde_bytes")]
    pub(crate) signature: [u8; 64],
    /// In a certificate mesh, the origin's member certificate (DER), so that every receiver
    /// can check that the signer is a member; `None` elsewhere.
    #[serde(borrow, with = "serde_bytes")]
    pub(crate) certificate: Option<&'a [u8]>,
}

impl Envelope<'_> {
    /// Encodes for the wire.
    pub(crate) fn encode(&self) -> Bytes {
        // Serializing these plain structs cannot fail. Sized first: one allocation.
        let size = postcard::experimental::serialized_size(self).unwrap_or_default();
        let buf = postcard::to_extend(self, Vec::with_capacity(size)).unwrap_or_default();
        Bytes::from(buf)
    }
}

impl<'a> EnvelopeRef<'a> {
    /// Decodes a payload that came from the network, borrowing from it.
    pub(crate) fn decode(payload: &'a [u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_an_error() {
        let auth = Some(Auth {
            timestamp_ms: 7,
            signature: [3; 64],
            certificate: Some(&b"cert"[..]),
        });
        let e = Envelope {
            path: "chat",
            body: b"hi",
            auth: auth.clone(),
        };
        let bytes = e.encode();
        let d = EnvelopeRef::decode(&bytes).unwrap();
        assert_eq!((d.path, d.body, d.auth), ("chat", &b"hi"[..], auth));
        assert!(EnvelopeRef::decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(EnvelopeRef::decode(&[]).is_err());
    }
}
