//! The rustls certificate verifiers of links: the client checks the server's key against the
//! expected peer id, the server accepts any Ed25519 client key. See the parent module.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{ExpectedPeer, TlsError, peer_id_of_certificate};

/// Wraps a verification failure for rustls, which sends the matching alert and fails the
/// handshake with the error's text (quinn keeps only the text).
fn to_rustls(error: TlsError) -> rustls::Error {
    match error {
        TlsError::NoCertificate => rustls::Error::NoCertificatesPresented,
        TlsError::MalformedCertificate { source } => source,
        TlsError::BadServerName { .. } | TlsError::NotAuthenticated => {
            rustls::Error::General(error.to_string())
        }
        TlsError::NotEd25519 { .. } | TlsError::PeerIdMismatch { .. } => {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(VerifierError(error)),
            )))
        }
    }
}

/// A [`TlsError`] inside a rustls error. rustls formats `CertificateError::Other` with `Debug`,
/// so `Debug` here gives the readable message.
struct VerifierError(TlsError);

impl fmt::Debug for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for VerifierError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Checks the handshake signature with the certificate's key, for both verifiers.
fn verify_tls13(
    algorithms: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
}

/// The client's view of the server: its key must be the [`ExpectedPeer`] in the server name.
#[derive(Debug)]
pub(super) struct PeerServerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerServerVerifier {
    pub(super) fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = match server_name {
            ServerName::DnsName(name) => ExpectedPeer::from_server_name(name.as_ref()),
            other => Err(TlsError::BadServerName {
                name: other.to_str().into_owned(),
            }),
        }
        .map_err(to_rustls)?;
        let actual = peer_id_of_certificate(end_entity).map_err(to_rustls)?;
        match expected {
            ExpectedPeer::Id(expected) if expected != actual => {
                Err(to_rustls(TlsError::PeerIdMismatch { expected, actual }))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: the configurations offer TLS 1.3 only.
        Err(rustls::PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // All the provider's schemes, not only Ed25519: a peer with another key type then
        // gets as far as sending its certificate and is refused with a clear "not Ed25519",
        // instead of failing to agree on a scheme.
        self.algorithms.supported_schemes()
    }
}

/// The server's view of a client: it must present a certificate with an Ed25519 key; which
/// one is for the application to judge, through [`peer_id`].
#[derive(Debug)]
pub(super) struct PeerClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerClientVerifier {
    pub(super) fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        peer_id_of_certificate(end_entity).map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: the configurations offer TLS 1.3 only.
        Err(rustls::PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // See `PeerServerVerifier::supported_verify_schemes`.
        self.algorithms.supported_schemes()
    }
}
