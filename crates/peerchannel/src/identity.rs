//! Node identity: the Ed25519 key pair whose public key is the node's [`PeerId`].
//!
//! A node has one identity for its lifetime. It signs the TLS handshake of every link (see
//! [`crate::tls`]), so a peer that knows our [`PeerId`] can check it is talking to us, and it
//! signs application messages when message signing is on.
//!
//! # Keeping an identity across restarts
//!
//! ```no_run
//! use peerchannel::identity::Identity;
//!
//! # fn main() -> Result<(), peerchannel::identity::IdentityError> {
//! // Created (mode 0600) the first time, loaded on every later start.
//! let identity = Identity::load_or_generate("/var/lib/peerchannel/key.pem")?;
//! println!("I am {}", identity.peer_id());
//! # Ok(())
//! # }
//! ```
//!
//! # Key file format
//!
//! A key file is a PEM-encoded PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`), the format
//! that `openssl pkey -in key.pem -text` reads and `openssl genpkey -algorithm ed25519` writes,
//! so keys can be inspected and made with standard tools. [`Identity::generate`] makes PKCS#8 v1
//! keys (the seed only, as OpenSSL does); loading also accepts v2 (with the public key, as
//! ring's `generate_pkcs8` writes).
//!
//! # Signing
//!
//! ```
//! use peerchannel::identity::{self, Identity};
//!
//! # fn main() -> Result<(), peerchannel::identity::IdentityError> {
//! let identity = Identity::generate()?;
//! let signature = identity.sign(b"hello");
//! assert!(identity::verify(&identity.peer_id(), b"hello", &signature).is_ok());
//! assert!(identity::verify(&identity.peer_id(), b"hellO", &signature).is_err());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rustls::pki_types::PrivatePkcs8KeyDer;

use crate::id::PeerId;

/// The PEM label of a PKCS#8 private key (RFC 7468, section 10).
pub const PEM_LABEL: &str = "PRIVATE KEY";

/// The length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A PKCS#8 v1 `PrivateKeyInfo` for Ed25519 up to the 32-byte seed (RFC 8410, section 7):
/// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The Unix permissions a key file is created with: read and write for the owner only.
#[cfg(unix)]
const KEY_FILE_MODE: u32 = 0o600;

/// The Unix permissions of directories [`Identity::load_or_generate`] creates.
#[cfg(unix)]
const KEY_DIR_MODE: u32 = 0o700;

/// A node's Ed25519 key pair. Its public key is the node's [`PeerId`].
///
/// Cloning is cheap (the key is shared) and the private key never appears in `Debug` output.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    key_pair: Ed25519KeyPair,
    /// The PKCS#8 document the key pair was made from, kept for TLS and for saving. Zeroed on
    /// drop by `rustls-pki-types`.
    pkcs8: PrivatePkcs8KeyDer<'static>,
    peer_id: PeerId,
}

impl Identity {
    /// A new random identity, from the operating system's random source.
    pub fn generate() -> Result<Self, IdentityError> {
        // Not `Ed25519KeyPair::generate_pkcs8`: ring writes PKCS#8 v2 with the public key in an
        // explicitly tagged field that OpenSSL 3 refuses to read. A v1 document (the seed only,
        // what `openssl genpkey` writes) is a fixed prefix and the 32-byte seed (RFC 8410,
        // section 7), and every tool reads it.
        let mut der = Vec::with_capacity(PKCS8_V1_PREFIX.len() + 32);
        der.extend_from_slice(&PKCS8_V1_PREFIX);
        der.resize(PKCS8_V1_PREFIX.len() + 32, 0);
        let result = SystemRandom::new()
            .fill(&mut der[PKCS8_V1_PREFIX.len()..])
            .map_err(|_| IdentityError::Random)
            .and_then(|()| Self::from_pkcs8_der(&der));
        // `from_pkcs8_der` keeps its own copy (zeroed on drop); clear this one.
        der.fill(0);
        result
    }

    /// The identity held in a DER-encoded PKCS#8 document (v1 or v2) holding an Ed25519 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, IdentityError> {
        // `maybe_unchecked` accepts PKCS#8 v1 (no public key, what OpenSSL writes) as well as v2;
        // for v2 it still checks that the public key matches the private one.
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|rejected| {
            IdentityError::InvalidKey {
                reason: rejected_reason(rejected),
            }
        })?;
        let public: [u8; 32] =
            key_pair
                .public_key()
                .as_ref()
                .try_into()
                .map_err(|_| IdentityError::InvalidKey {
                    reason: "public key is not 32 bytes".into(),
                })?;
        Ok(Self {
            inner: Arc::new(Inner {
                key_pair,
                pkcs8: PrivatePkcs8KeyDer::from(der.to_vec()),
                peer_id: PeerId::from_bytes(public),
            }),
        })
    }

    /// The identity in a PEM-encoded PKCS#8 key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, IdentityError> {
        Self::from_pem_inner(pem).map_err(|e| e.into_error(None))
    }

    /// Loads the identity from a key file written by [`save`](Self::save) or by
    /// `openssl genpkey -algorithm ed25519`.
    ///
    /// Logs a warning if the file can be read by the group or by other users.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let contents = match fs::read(path) {
            Ok(contents) => contents,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IdentityError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(IdentityError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        warn_if_readable_by_others(path);
        let identity =
            Self::from_pem_inner(&contents).map_err(|e| e.into_error(Some(path.to_owned())))?;
        tracing::debug!(path = %path.display(), peer_id = %identity.peer_id(), "loaded identity");
        Ok(identity)
    }

    /// Loads the identity from `path`, or, if there is no such file, generates a new one and
    /// saves it there, creating missing parent directories (mode 0700 on Unix).
    ///
    /// This is what a node wants for "use this key file, create it the first time". Any other
    /// problem with an existing file (unreadable, not a key) is an error: it never replaces a
    /// file it could not read.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(IdentityError::NotFound { .. }) => {}
            other => return other,
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_all(parent).map_err(|source| IdentityError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        let identity = Self::generate()?;
        match identity.save(path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), peer_id = %identity.peer_id(), "generated a new identity");
                Ok(identity)
            }
            // Another process created it between our load and our save: use theirs.
            Err(IdentityError::AlreadyExists { .. }) => Self::load(path),
            Err(e) => Err(e),
        }
    }

    /// Saves the key to a new file at `path`, readable and writable by the owner only.
    ///
    /// The file is created with mode 0600 on Unix (never briefly readable by others) and the
    /// call fails with [`IdentityError::AlreadyExists`] if `path` exists: an identity is not
    /// replaced by accident. Use [`save_overwrite`](Self::save_overwrite) to replace one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        write_new_file(path, self.to_pem().as_bytes()).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                IdentityError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                IdentityError::Write {
                    path: path.to_owned(),
                    source,
                }
            }
        })
    }

    /// Saves the key to `path`, replacing any file there.
    ///
    /// The key is written to a new file (mode 0600) beside `path` and renamed over it, so a
    /// crash leaves either the old or the new key, never a mix. The key that was in the file
    /// is lost: its peer id is gone for good.
    pub fn save_overwrite(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        let write_error = |source| IdentityError::Write {
            path: path.to_owned(),
            source,
        };
        let file_name = path.file_name().ok_or_else(|| {
            write_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path names no file",
            ))
        })?;
        // A hidden name in the same directory, so that the rename stays on one file system.
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result =
            write_new_file(&tmp, self.to_pem().as_bytes()).and_then(|()| fs::rename(&tmp, path));
        if result.is_err() {
            // Best effort: the error that matters is the one we return.
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(write_error)
    }

    /// The peer id: this identity's public key.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// Signs `msg` with the private key. Anyone who knows the [`PeerId`] can check the
    /// signature with [`verify`].
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let signature = self.inner.key_pair.sign(msg);
        let mut out = [0; SIGNATURE_LEN];
        // An Ed25519 signature is always 64 bytes (RFC 8032, section 5.1.6).
        out.copy_from_slice(signature.as_ref());
        out
    }

    /// The private key as a DER-encoded PKCS#8 document: v1 for keys made by
    /// [`generate`](Self::generate), otherwise the document the key was loaded from.
    ///
    /// This is secret: it is what rustls and rcgen take, and what [`save`](Self::save) writes.
    pub fn pkcs8_der(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.inner.pkcs8
    }

    /// The key pair in the form rcgen signs certificates with: for the TLS self-signed
    /// certificate, and for issuing certificates with this key (a mesh CA).
    pub fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair, rcgen::Error> {
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(self.pkcs8_der(), &rcgen::PKCS_ED25519)
    }

    /// The private key as PEM-encoded PKCS#8, the contents of a key file. This is secret.
    pub fn to_pem(&self) -> String {
        let pem = pem::Pem::new(PEM_LABEL, self.inner.pkcs8.secret_pkcs8_der());
        pem::encode_config(
            &pem,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    fn from_pem_inner(contents: &[u8]) -> Result<Self, PemProblem> {
        if contents.iter().all(u8::is_ascii_whitespace) {
            return Err(PemProblem::Empty);
        }
        let pem = pem::parse(contents).map_err(|_| PemProblem::NotPem)?;
        if pem.tag() != PEM_LABEL {
            return Err(PemProblem::WrongLabel(pem.tag().to_owned()));
        }
        Self::from_pkcs8_der(pem.contents()).map_err(PemProblem::Key)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.inner.peer_id)
            .finish_non_exhaustive()
    }
}

/// Checks that `signature` is `peer`'s Ed25519 signature of `msg`.
///
/// A signature of the wrong length is simply not valid.
pub fn verify(peer: &PeerId, msg: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
    UnparsedPublicKey::new(&ED25519, peer.as_bytes())
        .verify(msg, signature)
        .map_err(|_| BadSignature)
}

/// A signature that is not the claimed peer's signature of the message: the message or the
/// signature was altered, or another key signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the signature is not this peer's signature of this message")]
pub struct BadSignature;

/// Why an identity could not be made, loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file does not exist.
    ///
    /// Fix: check the path, or use [`Identity::load_or_generate`] to create it the first time.
    #[error("no key file at {path}")]
    NotFound {
        /// The path that was read.
        path: PathBuf,
    },
    /// The key file exists but could not be read (permissions, a directory, an I/O error).
    ///
    /// Fix: check the file's owner and permissions; the source error says more.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The path that was read.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The key file is empty.
    ///
    /// Fix: delete it so that a new key is generated, or restore the key from a backup.
    #[error("key file {path} is empty")]
    Empty {
        /// The path that was read.
        path: PathBuf,
    },
    /// The key file is not PEM (no `-----BEGIN PRIVATE KEY-----` block).
    ///
    /// Fix: point at the private key file (not a certificate or a public key); a DER file can
    /// be converted with `openssl pkey -inform der -in key.der -out key.pem`.
    #[error("key file {path} is not PEM: expected a -----BEGIN {PEM_LABEL}----- block")]
    NotPem {
        /// The path that was read.
        path: PathBuf,
    },
    /// The key file is PEM but holds something other than a PKCS#8 private key, such as a
    /// certificate or an `EC PRIVATE KEY`.
    ///
    /// Fix: point at the private key file; another key type cannot be used, generate an
    /// Ed25519 key (`openssl genpkey -algorithm ed25519`).
    #[error("key file {path} holds a {label:?} PEM block, not a {PEM_LABEL:?}")]
    WrongPemLabel {
        /// The path that was read.
        path: PathBuf,
        /// The label found, e.g. `CERTIFICATE`.
        label: String,
    },
    /// The key file holds a PKCS#8 key that is not an Ed25519 key (RSA, ECDSA, ...) or is
    /// malformed.
    ///
    /// Fix: peer ids are Ed25519 keys; generate one with [`Identity::generate`] or
    /// `openssl genpkey -algorithm ed25519`.
    #[error("key file {path} is not an Ed25519 PKCS#8 key: {reason}")]
    NotEd25519 {
        /// The path that was read.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The bytes given to [`Identity::from_pkcs8_der`] or [`Identity::from_pem`] are not an
    /// Ed25519 PKCS#8 key. ([`Identity::load`] reports this as one of the variants with a
    /// path.)
    ///
    /// Fix: pass an Ed25519 key in PKCS#8 form.
    #[error("not an Ed25519 PKCS#8 key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// [`Identity::save`] found a file at the path already: it never replaces an identity.
    ///
    /// Fix: load the existing key with [`Identity::load`], pick another path, or replace it
    /// on purpose with [`Identity::save_overwrite`].
    #[error("refusing to overwrite existing key file {path}")]
    AlreadyExists {
        /// The path that was written.
        path: PathBuf,
    },
    /// The key file (or its directory) could not be created or written.
    ///
    /// Fix: check that the directory exists and is writable, and that the disk is not full.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The path that was written.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The operating system's random source failed while generating a key.
    ///
    /// Fix: none in the program; this points at a broken system (no `getrandom`, no
    /// `/dev/urandom`).
    #[error("the system random source failed while generating a key")]
    Random,
}

/// What is wrong with PEM text, before we know whether it came from a file.
enum PemProblem {
    Empty,
    NotPem,
    WrongLabel(String),
    Key(IdentityError),
}

impl PemProblem {
    fn into_error(self, path: Option<PathBuf>) -> IdentityError {
        let Some(path) = path else {
            return match self {
                Self::Empty => IdentityError::InvalidKey {
                    reason: "empty input".into(),
                },
                Self::NotPem => IdentityError::InvalidKey {
                    reason: "not PEM".into(),
                },
                Self::WrongLabel(label) => IdentityError::InvalidKey {
                    reason: format!("a {label:?} PEM block"),
                },
                Self::Key(e) => e,
            };
        };
        match self {
            Self::Empty => IdentityError::Empty { path },
            Self::NotPem => IdentityError::NotPem { path },
            Self::WrongLabel(label) => IdentityError::WrongPemLabel { path, label },
            Self::Key(IdentityError::InvalidKey { reason }) => {
                IdentityError::NotEd25519 { path, reason }
            }
            Self::Key(e) => e,
        }
    }
}

fn rejected_reason(rejected: ring::error::KeyRejected) -> String {
    match rejected.to_string().as_str() {
        "WrongAlgorithm" => "it is a key of another algorithm (RSA, ECDSA, ...)".into(),
        "InvalidEncoding" => "the DER encoding is malformed".into(),
        "InconsistentComponents" => "its public key does not match its private key".into(),
        other => format!("rejected by ring: {other}"),
    }
}

/// Creates `path`, failing if it exists, with owner-only permissions from the start, writes
/// `contents` and syncs. Removes the file again if writing fails.
fn write_new_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, KEY_FILE_MODE);
    let mut file: File = options.open(path)?;
    let result = file.write_all(contents).and_then(|()| file.sync_all());
    if result.is_err() {
        drop(file);
        // Best effort: leave no half-written key behind.
        let _ = fs::remove_file(path);
    }
    result
}

fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, KEY_DIR_MODE);
    builder.create(dir)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;

    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "private key file is accessible to other users; run `chmod 600` on it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip_and_a_flipped_bit_fails() {
        let identity = Identity::generate().unwrap();
        let msg = b"a chat line";
        let signature = identity.sign(msg);
        assert_eq!(verify(&identity.peer_id(), msg, &signature), Ok(()));

        let mut bad_signature = signature;
        bad_signature[10] ^= 0x01;
        assert_eq!(
            verify(&identity.peer_id(), msg, &bad_signature),
            Err(BadSignature)
        );

        let mut bad_msg = *msg;
        bad_msg[0] ^= 0x80;
        assert_eq!(
            verify(&identity.peer_id(), &bad_msg, &signature),
            Err(BadSignature)
        );

        let other = Identity::generate().unwrap();
        assert_eq!(verify(&other.peer_id(), msg, &signature), Err(BadSignature));
        assert_eq!(
            verify(&identity.peer_id(), msg, &signature[..63]),
            Err(BadSignature)
        );
    }

    #[test]
    fn generated_identities_differ_and_debug_hides_the_key() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.peer_id(), b.peer_id());
        let debug = format!("{a:?}");
        assert!(debug.contains(&a.peer_id().fmt_short()), "{debug}");
        assert!(!debug.contains("pkcs8"), "{debug}");
    }

    #[test]
    fn save_then_load_gives_the_same_identity_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let identity = Identity::generate().unwrap();
        identity.save(&path).unwrap();

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.peer_id(), identity.peer_id());
        assert_eq!(
            loaded.pkcs8_der().secret_pkcs8_der(),
            identity.pkcs8_der().secret_pkcs8_der()
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "mode {mode:o}");
        }
    }

    #[test]
    fn save_refuses_to_overwrite_and_save_overwrite_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let first = Identity::generate().unwrap();
        let second = Identity::generate().unwrap();
        first.save(&path).unwrap();

        let err = second.save(&path).unwrap_err();
        assert!(
            matches!(&err, IdentityError::AlreadyExists { path: p } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(Identity::load(&path).unwrap().peer_id(), first.peer_id());

        second.save_overwrite(&path).unwrap();
        assert_eq!(Identity::load(&path).unwrap().peer_id(), second.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "mode {mode:o}");
        }
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn load_or_generate_creates_once_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("dir").join("key.pem");
        let created = Identity::load_or_generate(&path).unwrap();
        assert!(path.exists());
        let loaded = Identity::load_or_generate(&path).unwrap();
        assert_eq!(created.peer_id(), loaded.peer_id());
    }

    #[test]
    fn load_or_generate_does_not_replace_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        fs::write(&path, "garbage").unwrap();
        let err = Identity::load_or_generate(&path).unwrap_err();
        assert!(matches!(err, IdentityError::NotPem { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
    }

    #[test]
    fn clear_errors_for_missing_and_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let write = |name: &str, contents: &[u8]| {
            fs::write(path(name), contents).unwrap();
            path(name)
        };

        let err = Identity::load(path("missing.pem")).unwrap_err();
        assert!(matches!(err, IdentityError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = Identity::load(write("empty.pem", b"")).unwrap_err();
        assert!(matches!(err, IdentityError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");

        let err = Identity::load(write("random.pem", &[0x8f, 0x00, 0xff, 0x13, 0x37])).unwrap_err();
        assert!(matches!(err, IdentityError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("random.pem"), "{err}");

        let err = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Read { .. }), "{err}");

        // A certificate is PEM, but not a private key.
        let cert = rcgen::generate_simple_self_signed(vec!["x.invalid".to_owned()]).unwrap();
        let err = Identity::load(write("cert.pem", cert.cert.pem().as_bytes())).unwrap_err();
        assert!(
            matches!(&err, IdentityError::WrongPemLabel { label, .. } if label == "CERTIFICATE"),
            "{err}"
        );

        // A PKCS#8 key of another algorithm.
        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = Identity::load(write("ecdsa.pem", ecdsa.serialize_pem().as_bytes())).unwrap_err();
        assert!(matches!(err, IdentityError::NotEd25519 { .. }), "{err}");
        assert!(err.to_string().contains("ecdsa.pem"), "{err}");
        assert!(err.to_string().contains("another algorithm"), "{err}");

        // A PRIVATE KEY block whose contents are random bytes.
        let junk = pem::encode(&pem::Pem::new(
            PEM_LABEL,
            vec![0x30, 0x03, 0x02, 0x01, 0x07],
        ));
        let err = Identity::load(write("junk.pem", junk.as_bytes())).unwrap_err();
        assert!(matches!(err, IdentityError::NotEd25519 { .. }), "{err}");
    }

    #[test]
    fn accepts_an_openssl_style_pkcs8_v1_key() {
        // `openssl genpkey -algorithm ed25519 -outform der`: PKCS#8 v1, seed only (RFC 8410,
        // section 10.3 test vector).
        let v1 = data_encoding::HEXLOWER
            .decode(
                b"302e020100300506032b657004220420\
                  d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842",
            )
            .unwrap();
        let identity = Identity::from_pkcs8_der(&v1).unwrap();
        let expected = data_encoding::HEXLOWER
            .decode(b"19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1")
            .unwrap();
        assert_eq!(
            identity.peer_id().as_bytes().as_slice(),
            expected.as_slice()
        );
        let again = Identity::from_pem(identity.to_pem().as_bytes()).unwrap();
        assert_eq!(again.peer_id(), identity.peer_id());
    }

    #[test]
    fn generated_keys_are_pkcs8_v1_and_ring_v2_keys_load() {
        let identity = Identity::generate().unwrap();
        let der = identity.pkcs8_der().secret_pkcs8_der();
        assert_eq!(der.len(), PKCS8_V1_PREFIX.len() + 32);
        assert!(der.starts_with(&PKCS8_V1_PREFIX));

        let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let from_v2 = Identity::from_pkcs8_der(v2.as_ref()).unwrap();
        let ring_key = Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        assert_eq!(
            from_v2.peer_id().as_bytes().as_slice(),
            ring_key.public_key().as_ref()
        );
    }

    #[test]
    fn rcgen_key_pair_has_the_same_public_key() {
        let identity = Identity::generate().unwrap();
        let key_pair = identity.rcgen_key_pair().unwrap();
        assert_eq!(key_pair.public_key_raw(), identity.peer_id().as_bytes());
    }
}
