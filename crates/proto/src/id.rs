//! Names: mesh ids, `net.p2p://` addresses, message ids and the peer identity bound.

use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme of a mesh address.
pub const SCHEME: &str = "net.p2p";

/// The longest mesh id: a DNS hostname is at most 253 characters.
pub const MAX_MESH_ID_LEN: usize = 253;

/// The longest label in a mesh id (RFC 1123).
pub const MAX_LABEL_LEN: usize = 63;

/// The longest channel path inside a mesh address.
pub const MAX_PATH_LEN: usize = 1024;

/// What a peer identity must offer to be used as the id of a node.
///
/// The runtime uses a 32-byte Ed25519 public key; tests and the simulator use small integers.
pub trait PeerIdentity:
    Clone
    + Copy
    + Ord
    + Eq
    + Hash
    + fmt::Debug
    + Serialize
    + for<'de> Deserialize<'de>
    + Send
    + Sync
    + 'static
{
}

impl<T> PeerIdentity for T where
    T: Clone
        + Copy
        + Ord
        + Eq
        + Hash
        + fmt::Debug
        + Serialize
        + for<'de> Deserialize<'de>
        + Send
        + Sync
        + 'static
{
}

/// The name of a mesh: a valid DNS hostname, compared case-insensitively.
///
/// It is stored lowercased, so `SoccerPals` and `soccerpals` are the same mesh. Labels are
/// 1 to 63 characters of ASCII letters, digits and `-`, neither starting nor ending with `-`;
/// the whole name is at most 253 characters. A single trailing dot is accepted and dropped.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeshId(Arc<str>);

impl MeshId {
    /// Validates and normalises a mesh id.
    pub fn new(name: &str) -> Result<Self, MeshIdError> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(MeshIdError::Empty);
        }
        if name.len() > MAX_MESH_ID_LEN {
            return Err(MeshIdError::TooLong { len: name.len() });
        }
        for label in name.split('.') {
            validate_label(label)?;
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Ok(Self(Arc::from(name.to_ascii_lowercase())))
        } else {
            Ok(Self(Arc::from(name)))
        }
    }

    /// The normalised (lowercase) name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate_label(label: &str) -> Result<(), MeshIdError> {
    if label.is_empty() {
        return Err(MeshIdError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(MeshIdError::LabelTooLong {
            label: label.to_owned(),
        });
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(MeshIdError::BadCharacter { character: c });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(MeshIdError::HyphenAtEdge {
            label: label.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshId({})", self.0)
    }
}

impl FromStr for MeshId {
    type Err = MeshIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for MeshId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MeshId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(MeshIdVisitor)
    }
}

/// Reads a mesh id from a string the format lends (postcard does), without copying it: every
/// frame names its mesh, and a link's frames nearly always name the same one. The last id
/// decoded on this thread is kept, and a name equal to it (valid and normalised, then) is that
/// id again, without allocating. (serde's own `Cow<str>` always copies.)
struct MeshIdVisitor;

impl serde::de::Visitor<'_> for MeshIdVisitor {
    type Value = MeshId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mesh id")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<MeshId, E> {
        LAST_DECODED.with(|last| {
            let mut last = last.borrow_mut();
            if let Some(id) = last.as_ref().filter(|id| id.as_str() == name) {
                return Ok(id.clone());
            }
            let id = MeshId::new(name).map_err(E::custom)?;
            *last = Some(id.clone());
            Ok(id)
        })
    }
}

thread_local! {
    /// The mesh id decoded last on this thread (see `MeshId::deserialize`).
    static LAST_DECODED: std::cell::RefCell<Option<MeshId>> = const { std::cell::RefCell::new(None) };
}

/// Why a string is not a valid mesh id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshIdError {
    /// The name is empty. Give a hostname such as `soccerpals`.
    #[error("the mesh id is empty; give a hostname such as `soccerpals`")]
    Empty,
    /// The name is longer than a hostname may be (253 characters).
    #[error("the mesh id is {len} characters long; a hostname has at most 253")]
    TooLong {
        /// The length given.
        len: usize,
    },
    /// Two dots in a row, or a leading dot.
    #[error("the mesh id has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    /// One dot-separated label is longer than 63 characters.
    #[error("the label `{label}` is longer than 63 characters")]
    LabelTooLong {
        /// The offending label.
        label: String,
    },
    /// A character other than ASCII letters, digits, `-` and `.`.
    #[error("`{character}` is not allowed in a mesh id: use letters, digits, `-` and `.`")]
    BadCharacter {
        /// The first offending character.
        character: char,
    },
    /// A label starts or ends with `-`.
    #[error("the label `{label}` starts or ends with `-`")]
    HyphenAtEdge {
        /// The offending label.
        label: String,
    },
}

/// A mesh address: `net.p2p://<mesh id>/<path>`.
///
/// The path names a channel inside the mesh (`chat`, `scores/live`); it may be empty. A bare
/// mesh id (`soccerpals`) parses as the mesh with an empty path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeshAddress {
    /// The mesh.
    pub mesh: MeshId,
    /// The channel path, without the leading `/`.
    pub path: String,
}

impl MeshAddress {
    /// Parses `net.p2p://mesh/path` or a bare mesh id.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        let rest = match s.split_once("://") {
            Some((scheme, rest)) => {
                if !scheme.eq_ignore_ascii_case(SCHEME) {
                    return Err(AddressError::Scheme {
                        scheme: scheme.to_owned(),
                    });
                }
                rest
            }
            None => s,
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mesh = MeshId::new(host)?;
        validate_path(path)?;
        Ok(Self {
            mesh,
            path: path.to_owned(),
        })
    }
}

/// Checks a channel path: at most [`MAX_PATH_LEN`] bytes of printable characters.
pub fn validate_path(path: &str) -> Result<(), AddressError> {
    if path.len() > MAX_PATH_LEN {
        return Err(AddressError::PathTooLong { len: path.len() });
    }
    if let Some(c) = path.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(AddressError::PathCharacter { character: c });
    }
    Ok(())
}

impl fmt::Display for MeshAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{}/{}", self.mesh, self.path)
    }
}

impl FromStr for MeshAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why a string is not a valid mesh address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The scheme is not `net.p2p`.
    #[error("unknown scheme `{scheme}://`; mesh addresses look like net.p2p://soccerpals/chat")]
    Scheme {
        /// The scheme given.
        scheme: String,
    },
    /// The mesh id is not a valid hostname.
    #[error("bad mesh id: {0}")]
    MeshId(#[from] MeshIdError),
    /// The channel path is too long.
    #[error("the channel path is {len} bytes long; at most 1024 are allowed")]
    PathTooLong {
        /// The length given.
        len: usize,
    },
    /// The channel path has a space or a control character.
    #[error("the channel path may not contain {character:?}")]
    PathCharacter {
        /// The first offending character.
        character: char,
    },
}

/// The id of a broadcast message: its origin and the origin's sequence number.
///
/// Ids never derive from content, so two identical chat lines are two messages. Each mesh
/// starts its sequence at a random point (below 2^32, chosen when the node joins), so a node
/// restarted with the same identity does not reuse ids that other nodes still hold in their
/// duplicate caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId<PI> {
    /// The node that first sent the message.
    pub origin: PI,
    /// The origin's sequence number in this mesh.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_mesh_ids_are_checked_even_after_a_valid_one() {
        let decode = |name: &str| -> Result<MeshId, postcard::Error> {
            postcard::from_bytes(&postcard::to_allocvec(name).unwrap())
        };
        let first = decode("soccerpals").unwrap();
        let again = decode("soccerpals").unwrap();
        assert_eq!(first, again);
        assert!(
            Arc::ptr_eq(&first.0, &again.0),
            "the same name is the same id"
        );
        assert_eq!(
            decode("SoccerPals.").unwrap(),
            first,
            "normalised as before"
        );
        assert!(decode("soccer_pals").is_err());
        assert!(decode("soccerpals-").is_err());
        assert_eq!(decode("other").unwrap().as_str(), "other");
    }

    #[test]
    fn mesh_ids_are_hostnames_compared_without_case() {
        assert_eq!(MeshId::new("SoccerPals").unwrap().as_str(), "soccerpals");
        assert_eq!(MeshId::new("a.b-c.d1.").unwrap().as_str(), "a.b-c.d1");
        assert_eq!(MeshId::new(""), Err(MeshIdError::Empty));
        assert_eq!(MeshId::new("a..b"), Err(MeshIdError::EmptyLabel));
        assert_eq!(MeshId::new(".a"), Err(MeshIdError::EmptyLabel));
        assert_eq!(
            MeshId::new("-a"),
            Err(MeshIdError::HyphenAtEdge { label: "-a".into() })
        );
        assert_eq!(
            MeshId::new("a_b"),
            Err(MeshIdError::BadCharacter { character: '_' })
        );
        assert_eq!(
            MeshId::new("é"),
            Err(MeshIdError::BadCharacter { character: 'é' })
        );
        let long_label = "a".repeat(64);
        assert!(matches!(
            MeshId::new(&long_label),
            Err(MeshIdError::LabelTooLong { .. })
        ));
        let long_name = vec!["a".repeat(63); 5].join(".");
        assert!(matches!(
            MeshId::new(&long_name),
            Err(MeshIdError::TooLong { len: 319 })
        ));
    }

    #[test]
    fn addresses_parse_with_or_without_scheme() {
        let a = MeshAddress::parse("net.p2p://SoccerPals/chat/main").unwrap();
        assert_eq!(a.mesh.as_str(), "soccerpals");
        assert_eq!(a.path, "chat/main");
        assert_eq!(a.to_string(), "net.p2p://soccerpals/chat/main");
        let b = MeshAddress::parse("soccerpals").unwrap();
        assert_eq!(b.path, "");
        assert!(matches!(
            MeshAddress::parse("http://x/y"),
            Err(AddressError::Scheme { .. })
        ));
        assert!(matches!(
            MeshAddress::parse("net.p2p:///chat"),
            Err(AddressError::MeshId(_))
        ));
        assert!(matches!(
            MeshAddress::parse("net.p2p://x/a b"),
            Err(AddressError::PathCharacter { character: ' ' })
        ));
    }

    #[test]
    fn mesh_id_decoding_validates() {
        let bytes = postcard::to_allocvec(&"bad_name").unwrap();
        assert!(postcard::from_bytes::<MeshId>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"Good").unwrap();
        assert_eq!(
            postcard::from_bytes::<MeshId>(&bytes).unwrap().as_str(),
            "good"
        );
    }
}
