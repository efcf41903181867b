//! The peer id: a node's Ed25519 public key.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE32_NOPAD, HEXLOWER_PERMISSIVE};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node's identity: its Ed25519 public key (32 bytes).
///
/// Printed as 52 characters of lowercase base32 without padding, everywhere (logs, the CLI,
/// the resolver API). Parsing also accepts 64 hex digits, and base32 in either case.
///
/// Ordered as its bytes are. Compared as words, not through `memcmp`: the mesh core keeps
/// its neighbors in ordered sets and maps looked up for every message (a tenth of the core's
/// time went into calls comparing 32-byte keys).
#[derive(Clone, Copy)]
pub struct PeerId([u8; 32]);

impl PeerId {
    /// Word `i` of the four big-endian words of the bytes: their order is the bytes' order.
    #[inline]
    fn word(&self, i: usize) -> u64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
        u64::from_be_bytes(bytes)
    }
}

impl PartialEq for PeerId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for PeerId {}

impl PartialOrd for PeerId {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerId {
    /// Word by word, stopping at the first that differs (for two keys, nearly always the
    /// first): building all four words of both first cost a stall of the load that compared
    /// them, three quarters of the mesh core's `forward` (where it looks up each lazy peer's queue).
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (0..4)
            .map(|i| self.word(i).cmp(&other.word(i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl std::hash::Hash for PeerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The 32 bytes and no length: they are always 32.
        state.write(&self.0);
    }
}

impl PeerId {
    /// The length of a peer id in bytes.
    pub const LEN: usize = 32;

    /// A peer id from the raw public key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw public key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 10 characters of the printed id: enough to tell nodes apart in logs.
    pub fn fmt_short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(10);
        s
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.fmt_short())
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let decoded = match s.len() {
            52 => BASE32_NOPAD.decode(s.to_ascii_uppercase().as_bytes()),
            64 => HEXLOWER_PERMISSIVE.decode(s.as_bytes()),
            len => return Err(PeerIdError::Length { len }),
        };
        let bytes = decoded.map_err(|_| PeerIdError::Encoding)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| PeerIdError::Encoding)?;
        Ok(Self(bytes))
    }
}

/// Why a string is not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdError {
    /// Neither 52 (base32) nor 64 (hex) characters.
    #[error("a peer id is 52 base32 or 64 hex characters, not {len}")]
    Length {
        /// The length given.
        len: usize,
    },
    /// A character outside the alphabet.
    #[error("a peer id is lowercase base32 (a-z, 2-7) or hex")]
    Encoding,
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_lowercase_base32_and_parses_back() {
        let id = PeerId::from_bytes([7; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 52);
        assert_eq!(s, s.to_ascii_lowercase());
        assert_eq!(s.parse::<PeerId>().unwrap(), id);
        assert_eq!(s.to_ascii_uppercase().parse::<PeerId>().unwrap(), id);
        assert_eq!("07".repeat(32).parse::<PeerId>().unwrap(), id);
        assert_eq!("x".parse::<PeerId>(), Err(PeerIdError::Length { len: 1 }));
        assert_eq!("1".repeat(52).parse::<PeerId>(), Err(PeerIdError::Encoding));
    }

    #[test]
    fn serializes_as_string_in_json_and_bytes_in_postcard() {
        let id = PeerId::from_bytes([1; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), id);
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(postcard::from_bytes::<PeerId>(&bytes).unwrap(), id);
    }

    #[test]
    fn orders_and_compares_as_its_bytes() {
        // Ids differing in each byte position, in both directions, and equal ones.
        let mut ids = vec![PeerId::from_bytes([0; 32]), PeerId::from_bytes([255; 32])];
        for i in 0..32 {
            for value in [1, 127, 128, 255] {
                let mut bytes = [9; 32];
                bytes[i] = value;
                ids.push(PeerId::from_bytes(bytes));
            }
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(a.cmp(b), a.as_bytes().cmp(b.as_bytes()), "{a:?} {b:?}");
                assert_eq!(a == b, a.as_bytes() == b.as_bytes());
            }
        }
    }
}
