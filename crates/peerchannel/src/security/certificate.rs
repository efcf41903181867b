//! Certificate meshes: a mesh CA, member certificates for node keys, and their verification.
//!
//! A mesh CA is an Ed25519 key and a self-signed X.509 CA certificate naming the mesh
//! ([`MeshCa::generate`], `peerchannel ca init`). It issues each member a certificate whose
//! subject key **is the member's peer id** ([`MeshCa::issue`], `peerchannel cert issue`). The
//! certificates are ordinary X.509 v3: `openssl verify -CAfile ca.pem node.pem` accepts them.
//!
//! In the admission handshake each side sends its member certificate and the other checks,
//! with rustls's own verifier (`rustls-webpki`, ring's Ed25519), that:
//!
//! 1. it chains to the mesh CA, the one trust anchor, with a valid signature;
//! 2. now lies within its validity period;
//! 3. its key is the peer id of the link: TLS already proved that the peer holds that key, so
//!    a copied certificate is worthless without the member's private key.
//!
//! ```no_run
//! use peerchannel::security::certificate::{MeshCa, DEFAULT_VALIDITY_DAYS};
//! use peerchannel::security::{MemberCertificate, MeshSecurity};
//! use peerchannel::{Identity, MeshId, MeshOptions};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = MeshCa::generate(&MeshId::new("plant-floor")?)?;
//! let node_key = Identity::generate()?;
//! let cert = ca.issue(node_key.peer_id(), DEFAULT_VALIDITY_DAYS)?;
//! let member = MemberCertificate::new(ca.certificate().clone(), cert);
//! let options = MeshOptions::default().with_security(MeshSecurity::Certificate(member));
//! # Ok(()) }
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use peerchannel_proto::MeshId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, UnixTime};

use super::{AuthFailure, Der};
use crate::PeerId;
use crate::identity::{Identity, IdentityError};
use crate::tls::{self, ExpectedPeer};

/// The CA's key file in a CA directory (PKCS#8 PEM, mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";

/// The CA's certificate file in a CA directory (PEM), given to members as `--ca-cert`.
pub const CA_CERT_FILE: &str = "ca.pem";

/// How long a member certificate is valid by default: 365 days.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;

/// How long a mesh CA certificate is valid: about 10 years. Members' certificates, not the
/// CA's, are what expire in practice.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// How far back a new certificate's validity starts: 1 hour, for members whose clocks are a
/// little behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The PEM label of certificates.
const PEM_CERTIFICATE: &str = "CERTIFICATE";

/// A node's credentials in a certificate mesh: the mesh CA's certificate (the trust anchor)
/// and the node's own member certificate, issued by that CA for the node's key.
#[derive(Clone)]
pub struct MemberCertificate {
    ca: Der,
    certificate: Der,
    skip_own_check: bool,
}

impl MemberCertificate {
    /// Credentials from DER certificates.
    pub fn new(ca: CertificateDer<'static>, certificate: CertificateDer<'static>) -> Self {
        Self {
            ca,
            certificate,
            skip_own_check: false,
        }
    }

    /// Skips the check of this node's own certificate when joining ([`Self::check`]): the
    /// node presents it even though its peers will refuse it. Only for tests of how peers
    /// refuse bad certificates (expired, another CA's, another key's); a real node wants the
    /// early, clear error.
    #[doc(hidden)]
    pub fn danger_skip_own_check(mut self) -> Self {
        self.skip_own_check = true;
        self
    }

    pub(crate) fn own_check_skipped(&self) -> bool {
        self.skip_own_check
    }

    /// Credentials from PEM files: the CA's certificate (`ca.pem`) and the node's.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        certificate: impl AsRef<Path>,
    ) -> Result<Self, CertificateError> {
        Ok(Self::new(
            read_pem(ca.as_ref())?,
            read_pem(certificate.as_ref())?,
        ))
    }

    /// The mesh CA's certificate.
    pub fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The node's member certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// Checks the node's own certificate before joining: issued by the CA, valid now, and for
    /// `me`. The same checks a peer will make.
    pub fn check(&self, me: PeerId) -> Result<(), CertificateError> {
        verify_member(&self.ca, &self.certificate, me, SystemTime::now())
            .map_err(|reason| CertificateError::OwnCertificate { reason })
    }
}

impl std::fmt::Debug for MemberCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = tls::peer_id_of_certificate(&self.certificate).ok();
        f.debug_struct("MemberCertificate")
            .field("for", &key)
            .finish_non_exhaustive()
    }
}

/// A mesh certificate authority: its key and self-signed CA certificate.
pub struct MeshCa {
    key: Identity,
    certificate: Der,
}

impl MeshCa {
    /// A new CA for `mesh`, with a fresh Ed25519 key; its certificate's common name is
    /// `peerchannel mesh CA <mesh>`, valid for [`CA_VALIDITY_DAYS`].
    pub fn generate(mesh: &MeshId) -> Result<Self, CertificateError> {
        let key = Identity::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("peerchannel mesh CA {mesh}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "peerchannel");
        // Constrained(0): it issues member certificates, never intermediate CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, SystemTime::now(), days(CA_VALIDITY_DAYS))?;
        params.serial_number = Some(random_serial()?);
        let key_pair = key.rcgen_key_pair()?;
        let certificate = params.self_signed(&key_pair)?.der().clone();
        Ok(Self { key, certificate })
    }

    /// Loads a CA from a directory written by [`MeshCa::save`] (`ca.key`, `ca.pem`), checking
    /// that the key is the certificate's.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, CertificateError> {
        let dir = dir.as_ref();
        let key = Identity::load(dir.join(CA_KEY_FILE))?;
        let certificate = read_pem(&dir.join(CA_CERT_FILE))?;
        let certified = tls::peer_id_of_certificate(&certificate)
            .map_err(|e| CertificateError::NotACa(format!("{}: {e}", CA_CERT_FILE)))?;
        if certified != key.peer_id() {
            return Err(CertificateError::NotACa(format!(
                "{CA_KEY_FILE} is not the key of {CA_CERT_FILE}"
            )));
        }
        Ok(Self { key, certificate })
    }

    /// Writes `ca.key` (mode 0600, never over an existing file) and `ca.pem` into `dir`,
    /// creating it. Returns the two paths.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(PathBuf, PathBuf), CertificateError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| CertificateError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        if cert_path.exists() {
            return Err(CertificateError::Write {
                path: cert_path,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "refusing to overwrite an existing CA",
                ),
            });
        }
        self.key.save(&key_path)?;
        fs::write(&cert_path, self.certificate_pem()).map_err(|source| {
            CertificateError::Write {
                path: cert_path.clone(),
                source,
            }
        })?;
        Ok((key_path, cert_path))
    }

    /// The CA's certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The CA's certificate as PEM.
    pub fn certificate_pem(&self) -> String {
        to_pem(&self.certificate)
    }

    /// Issues a member certificate for `member`'s key, valid from an hour ago for `days` days.
    pub fn issue(&self, member: PeerId, days_valid: u32) -> Result<Der, CertificateError> {
        let now = SystemTime::now();
        self.issue_valid(member, now - BACKDATE, now + days(days_valid))
    }

    /// Issues a member certificate valid from `not_before` to `not_after` (for tests of
    /// expired and future certificates, and for planned rollovers).
    pub fn issue_valid(
        &self,
        member: PeerId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Der, CertificateError> {
        // The subject alternative name is the name TLS links use for this peer; readers of the
        // certificate see whose it is. Verification looks at the key, not the names.
        let mut params = CertificateParams::new(vec![ExpectedPeer::Id(member).server_name()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, member.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        let issuer = Issuer::from_ca_cert_der(&self.certificate, self.key.rcgen_key_pair()?)?;
        Ok(params.signed_by(&MemberKey(member), &issuer)?.der().clone())
    }
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("key", &self.key.peer_id())
            .finish_non_exhaustive()
    }
}

/// Encodes a certificate as PEM.
pub fn to_pem(certificate: &CertificateDer<'_>) -> String {
    pem::encode_config(
        &pem::Pem::new(PEM_CERTIFICATE, certificate.as_ref()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Reads the first certificate of a PEM file.
pub fn read_pem(path: &Path) -> Result<Der, CertificateError> {
    let contents = fs::read(path).map_err(|source| CertificateError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: &str| CertificateError::NotACertificate {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let blocks = pem::parse_many(&contents).map_err(|_| bad("not PEM"))?;
    let block = blocks
        .into_iter()
        .find(|b| b.tag() == PEM_CERTIFICATE)
        .ok_or_else(|| bad("no -----BEGIN CERTIFICATE----- block"))?;
    Ok(CertificateDer::from(block.into_contents()))
}

/// Checks a peer's member certificate: issued by `ca`, valid at `now`, for `peer`'s key.
pub(crate) fn verify_member(
    ca: &CertificateDer<'_>,
    certificate: &[u8],
    peer: PeerId,
    now: SystemTime,
) -> Result<(), AuthFailure> {
    let certificate = CertificateDer::from(certificate);
    let anchor = webpki::anchor_from_trusted_cert(ca)
        .map_err(|e| AuthFailure::BadCertificate(format!("the mesh CA certificate: {e}")))?;
    let end_entity = webpki::EndEntityCert::try_from(&certificate)
        .map_err(|e| AuthFailure::BadCertificate(e.to_string()))?;
    let time = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    end_entity
        .verify_for_usage(
            &[webpki::ring::ED25519],
            &[anchor],
            &[],
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer
            | webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | webpki::Error::UnsupportedSignatureAlgorithmContext(_) => AuthFailure::UnknownIssuer,
            e @ (webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }) => {
                AuthFailure::CertificateExpired(e.to_string())
            }
            e => AuthFailure::BadCertificate(e.to_string()),
        })?;
    let certified = tls::peer_id_of_certificate(&certificate)
        .map_err(|e| AuthFailure::BadCertificate(e.to_string()))?;
    if certified != peer {
        return Err(AuthFailure::CertificateKeyMismatch { certified });
    }
    Ok(())
}

/// Why a CA or a certificate could not be made, read, written or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The CA's key file could not be read, made or written (see the inner error).
    #[error(transparent)]
    Key(#[from] IdentityError),
    /// A certificate file could not be read.
    ///
    /// Fix: check the path and its permissions.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file could not be written (or exists and is not overwritten).
    ///
    /// Fix: check the path and its permissions; move an existing CA out of the way.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file holds no PEM certificate.
    ///
    /// Fix: point at the `.pem` file written by `peerchannel ca init` or `cert issue`.
    #[error("{} is not a certificate file: {reason}", path.display())]
    NotACertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The CA directory's key and certificate do not belong together, or the certificate is
    /// not an Ed25519 one.
    ///
    /// Fix: use a directory written by `peerchannel ca init`.
    #[error("not a usable mesh CA: {0}")]
    NotACa(String),
    /// This node's own member certificate would be refused by its peers: not from the given
    /// CA, expired, or for another key than the node's identity.
    ///
    /// Fix: issue a certificate for this node's identity (`peerchannel cert issue --identity`).
    #[error("this node's member certificate is not usable: {reason}")]
    OwnCertificate {
        /// What a peer would say.
        reason: AuthFailure,
    },
    /// rcgen could not make the certificate.
    ///
    /// Cause: a bug, or a CA certificate rcgen cannot read. Fix: report it.
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The system random source failed (for a serial number).
    #[error("the system random source failed")]
    Random,
}

/// An Ed25519 public key as rcgen takes a subject key: a member is certified without its
/// private key ever leaving the member.
struct MemberKey(PeerId);

impl PublicKeyData for MemberKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    valid_for: Duration,
) -> Result<(), CertificateError> {
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + valid_for).into();
    Ok(())
}

/// A random positive 128-bit serial number (RFC 5280: unique per CA, at most 20 bytes).
fn random_serial() -> Result<SerialNumber, CertificateError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertificateError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> MeshId {
        MeshId::new("plant").unwrap()
    }

    #[test]
    fn a_member_certificate_verifies_for_its_key_only() {
        let ca = MeshCa::generate(&mesh()).unwrap();
        let member = Identity::generate().unwrap();
        let cert = ca.issue(member.peer_id(), 30).unwrap();
        let now = SystemTime::now();
        assert_eq!(
            verify_member(ca.certificate(), &cert, member.peer_id(), now),
            Ok(())
        );
        let other = Identity::generate().unwrap().peer_id();
        assert_eq!(
            verify_member(ca.certificate(), &cert, other, now),
            Err(AuthFailure::CertificateKeyMismatch {
                certified: member.peer_id()
            })
        );
        let credentials = MemberCertificate::new(ca.certificate().clone(), cert);
        assert!(credentials.check(member.peer_id()).is_ok());
        assert!(credentials.check(other).is_err());
    }

    #[test]
    fn another_cas_certificate_is_an_unknown_issuer() {
        let ours = MeshCa::generate(&mesh()).unwrap();
        // Same mesh id, same name, another key: only the signature tells them apart.
        let theirs = MeshCa::generate(&mesh()).unwrap();
        let member = Identity::generate().unwrap().peer_id();
        let cert = theirs.issue(member, 30).unwrap();
        assert_eq!(
            verify_member(ours.certificate(), &cert, member, SystemTime::now()),
            Err(AuthFailure::UnknownIssuer)
        );
    }

    #[test]
    fn expired_and_future_certificates_are_refused() {
        let ca = MeshCa::generate(&mesh()).unwrap();
        let member = Identity::generate().unwrap().peer_id();
        let now = SystemTime::now();
        let day = days(1);
        let expired = ca.issue_valid(member, now - 3 * day, now - day).unwrap();
        let future = ca.issue_valid(member, now + day, now + 3 * day).unwrap();
        for cert in [expired, future] {
            assert!(matches!(
                verify_member(ca.certificate(), &cert, member, now),
                Err(AuthFailure::CertificateExpired(_))
            ));
        }
    }

    #[test]
    fn the_ca_certificate_is_not_a_member_certificate_and_garbage_is_refused() {
        let ca = MeshCa::generate(&mesh()).unwrap();
        let ca_key = tls::peer_id_of_certificate(ca.certificate()).unwrap();
        assert!(
            verify_member(
                ca.certificate(),
                ca.certificate(),
                ca_key,
                SystemTime::now()
            )
            .is_err()
        );
        for garbage in [
            &[][..],
            &[0x30, 0x03, 0x02, 0x01, 0x00][..],
            &[0xff; 300][..],
        ] {
            assert!(matches!(
                verify_member(ca.certificate(), garbage, ca_key, SystemTime::now()),
                Err(AuthFailure::BadCertificate(_))
            ));
        }
    }

    #[test]
    fn a_ca_round_trips_through_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ca = MeshCa::generate(&mesh()).unwrap();
        let (key, cert) = ca.save(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(
            ca.save(dir.path()).is_err(),
            "an existing CA is not overwritten"
        );
        let loaded = MeshCa::load(dir.path()).unwrap();
        assert_eq!(loaded.certificate(), ca.certificate());
        assert_eq!(read_pem(&cert).unwrap(), *ca.certificate());
        let member = Identity::generate().unwrap().peer_id();
        let issued = loaded.issue(member, 1).unwrap();
        assert_eq!(
            verify_member(ca.certificate(), &issued, member, SystemTime::now()),
            Ok(())
        );
    }
}
