//! Password meshes: SPAKE2 bound to the TLS session, with key confirmation.
//!
//! # The exchange
//!
//! Both sides of a link run SPAKE2 in its symmetric mode (Abdalla and Pointcheval, "Simple
//! Password-Based Encrypted Key Exchange Protocols", 2005; the RustCrypto `spake2` crate on
//! Ed25519) with the mesh password and an identity string naming the mesh and both peer ids
//! in a canonical order:
//!
//! ```text
//! initiator -> responder   X = x·B + pw·S
//! responder -> initiator   Y = y·B + pw·S,  confirm_R = HMAC(k, "responder" | id_R | T)
//! initiator -> responder   confirm_I = HMAC(k, "initiator" | id_I | T)   (only if confirm_R checks)
//!
//! K = SPAKE2 key (a hash of pw, the identity string, X, Y and x·y·B)
//! E = TLS exporter of this connection (label EXPORTER_LABEL, context = mesh id)
//! k = HKDF-SHA256(salt = E, ikm = K, info = CONFIRM_INFO)
//! T = SHA-256(identity string | X | Y)
//! ```
//!
//! The two confirmations name their sender's role and peer id, so neither can be reflected
//! back to the side that made it.
//!
//! # Why a rogue listener or a recorded transcript yields no offline guess
//!
//! WCF's password meshes sent an HMAC keyed with the password first. Anyone who accepted the
//! connection, or recorded it, held a value they could test every candidate password against
//! at leisure (an offline dictionary attack). Here nothing sent depends on the password alone:
//!
//! - `X` and `Y` are the password's point `pw·S` blinded by a fresh random `x·B` / `y·B`.
//!   Without the discrete logarithm `x`, a candidate password cannot be checked against `X`:
//!   every candidate is consistent with it.
//! - A confirmation is keyed with `K`, which needs `x·y·B`; an observer who knows neither `x`
//!   nor `y` cannot compute it for any candidate (computational Diffie-Hellman). So a recorded
//!   transcript, confirmations included, gives nothing to test guesses against.
//! - An active attacker (a rogue listener, or a rogue initiator) who runs the exchange with a
//!   guessed password learns whether that *one* guess was right, and nothing about the others:
//!   one guess per handshake, online, and each failure is an
//!   [`crate::Event::AuthenticationFailed`] on the victim. The initiator checks the responder's
//!   confirmation before sending its own, so a rogue responder does not even get a MAC to look
//!   at.
//!
//! # Why a relayed handshake fails
//!
//! A man in the middle `M` between `A` and `B` has two TLS sessions, `A-M` and `M-B`, each
//! authenticated with `M`'s own key (TLS proves peer ids: `M` cannot pass as `A` or `B`). If it
//! relays the SPAKE2 messages, `A` and `B` do derive the same `K`, but:
//!
//! - their identity strings differ (`A` names `(A, M)`, `B` names `(M, B)`), and
//! - their exporters differ: `E` is derived from each TLS session's own secrets, which `M`
//!   cannot make equal on the two sessions.
//!
//! Either one makes the confirmation keys `k` of `A` and `B` differ, so the confirmations
//! fail, and `M`, without the password, cannot compute the right ones for either session.
//! The admission is thereby tied to the very connection whose messages it lets through.

use ring::{digest, hkdf, hmac};
use spake2::{Ed25519Group, Identity as SpakeIdentity, Password as SpakePassword, Spake2};

use super::{AuthFailure, MeshPassword};
use crate::PeerId;
use peerchannel_proto::MeshId;

/// The label of the TLS exporter mixed into the confirmation key (RFC 8446, section 7.5). The
/// context is the mesh id, so each mesh on a link gets its own value.
pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-peerchannel-mesh-password";

/// Length of the exported keying material.
pub(crate) const EXPORTER_LEN: usize = 32;

/// The HKDF info string of the confirmation key.
const CONFIRM_INFO: &[u8] = b"peerchannel/1 password confirmation key";

/// The length of a SPAKE2 message on Ed25519: a side byte and a 32-byte point.
#[cfg(test)]
pub(crate) const MESSAGE_LEN: usize = 33;

/// The length of a confirmation (HMAC-SHA256).
pub(crate) const CONFIRMATION_LEN: usize = 32;

/// One side's SPAKE2 exchange, started.
pub(crate) struct PasswordExchange {
    spake: Spake2<Ed25519Group>,
    identity: Vec<u8>,
    mine: Vec<u8>,
    me: PeerId,
    exporter: [u8; EXPORTER_LEN],
}

/// The keys after the exchange: what to send, and what to expect.
pub(crate) struct Confirmation {
    key: hmac::Key,
    transcript: digest::Digest,
    me: PeerId,
    peer: PeerId,
    initiator: bool,
}

impl PasswordExchange {
    /// Starts an exchange with `peer` in `mesh`, bound to the link's exporter. Returns the
    /// message to send.
    pub(crate) fn start(
        password: &MeshPassword,
        mesh: &MeshId,
        me: PeerId,
        peer: PeerId,
        exporter: [u8; EXPORTER_LEN],
    ) -> (Self, Vec<u8>) {
        let identity = identity_string(mesh, me, peer);
        let (spake, mine) = Spake2::<Ed25519Group>::start_symmetric(
            &SpakePassword::new(password.expose()),
            &SpakeIdentity::new(&identity),
        );
        let exchange = Self {
            spake,
            identity,
            mine: mine.clone(),
            me,
            exporter,
        };
        (exchange, mine)
    }

    /// Finishes with the peer's message. `initiator` says which side this is, to order the
    /// transcript and name the confirmations.
    pub(crate) fn finish(
        self,
        theirs: &[u8],
        peer: PeerId,
        initiator: bool,
    ) -> Result<Confirmation, AuthFailure> {
        if theirs == self.mine.as_slice() {
            // Our own message reflected: never what an honest peer sends.
            return Err(AuthFailure::Protocol("reflected password message".into()));
        }
        let key = self
            .spake
            .finish(theirs)
            .map_err(|e| AuthFailure::Protocol(format!("password message: {e}")))?;
        // k = HKDF(salt = the TLS exporter, ikm = the SPAKE2 key): equal on both sides only if
        // the passwords, the identity strings and the TLS sessions are.
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &self.exporter);
        let prk = salt.extract(&key);
        let okm = prk
            .expand(&[CONFIRM_INFO], hmac::HMAC_SHA256)
            .map_err(|_| AuthFailure::Protocol("key derivation failed".into()))?;
        let key = hmac::Key::from(okm);
        let (first, second) = if initiator {
            (self.mine.as_slice(), theirs)
        } else {
            (theirs, self.mine.as_slice())
        };
        let mut transcript = digest::Context::new(&digest::SHA256);
        for part in [self.identity.as_slice(), first, second] {
            transcript.update(&(part.len() as u32).to_be_bytes());
            transcript.update(part);
        }
        Ok(Confirmation {
            key,
            transcript: transcript.finish(),
            me: self.me,
            peer,
            initiator,
        })
    }
}

impl Confirmation {
    /// This side's confirmation, to send.
    pub(crate) fn mine(&self) -> [u8; CONFIRMATION_LEN] {
        let tag = hmac::sign(&self.key, &self.input(self.initiator, self.me));
        let mut out = [0; CONFIRMATION_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks the peer's confirmation (in constant time).
    pub(crate) fn check(&self, theirs: &[u8]) -> Result<(), AuthFailure> {
        hmac::verify(&self.key, &self.input(!self.initiator, self.peer), theirs)
            .map_err(|_| AuthFailure::WrongPassword)
    }

    fn input(&self, initiator: bool, sender: PeerId) -> Vec<u8> {
        let role: &[u8] = if initiator {
            b"initiator"
        } else {
            b"responder"
        };
        let mut input = Vec::with_capacity(role.len() + 64);
        input.extend_from_slice(role);
        input.extend_from_slice(sender.as_bytes());
        input.extend_from_slice(self.transcript.as_ref());
        input
    }
}

/// The SPAKE2 identity string: the protocol, the mesh id and both peer ids, smaller first, so
/// both sides build the same string.
fn identity_string(mesh: &MeshId, a: PeerId, b: PeerId) -> Vec<u8> {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut id = Vec::with_capacity(64 + mesh.as_str().len() + 32);
    id.extend_from_slice(b"peerchannel/1 mesh password\0");
    id.extend_from_slice(mesh.as_str().as_bytes());
    id.push(0);
    id.extend_from_slice(low.as_bytes());
    id.extend_from_slice(high.as_bytes());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn mesh() -> MeshId {
        MeshId::new("team").unwrap()
    }

    /// Runs both sides; the result of each side's check of the other's confirmation.
    fn run(
        pw_i: &str,
        pw_r: &str,
        exporter_i: [u8; 32],
        exporter_r: [u8; 32],
        ids_i: (PeerId, PeerId),
        ids_r: (PeerId, PeerId),
    ) -> (Result<(), AuthFailure>, Result<(), AuthFailure>) {
        let (i, x) = PasswordExchange::start(
            &MeshPassword::new(pw_i).unwrap(),
            &mesh(),
            ids_i.0,
            ids_i.1,
            exporter_i,
        );
        let (r, y) = PasswordExchange::start(
            &MeshPassword::new(pw_r).unwrap(),
            &mesh(),
            ids_r.0,
            ids_r.1,
            exporter_r,
        );
        assert_eq!((x.len(), y.len()), (MESSAGE_LEN, MESSAGE_LEN));
        let ci = i.finish(&y, ids_i.1, true).unwrap();
        let cr = r.finish(&x, ids_r.1, false).unwrap();
        (ci.check(&cr.mine()), cr.check(&ci.mine()))
    }

    #[test]
    fn the_same_password_on_the_same_session_confirms_both_ways() {
        let (a, b) = (peer(1), peer(2));
        let (i, r) = run("pw", "pw", [7; 32], [7; 32], (a, b), (b, a));
        assert_eq!((i, r), (Ok(()), Ok(())));
    }

    #[test]
    fn a_wrong_password_fails_both_ways() {
        let (a, b) = (peer(1), peer(2));
        let (i, r) = run("pw", "pW", [7; 32], [7; 32], (a, b), (b, a));
        assert_eq!(i, Err(AuthFailure::WrongPassword));
        assert_eq!(r, Err(AuthFailure::WrongPassword));
    }

    #[test]
    fn a_relay_fails_different_exporters_or_identities() {
        let (a, b, m) = (peer(1), peer(2), peer(3));
        // Same password, but two TLS sessions: different exporters.
        let (i, r) = run("pw", "pw", [7; 32], [8; 32], (a, b), (b, a));
        assert_eq!(
            (i, r),
            (
                Err(AuthFailure::WrongPassword),
                Err(AuthFailure::WrongPassword)
            )
        );
        // Same exporter (as if M could make them equal), but A talks to M and B to M.
        let (i, r) = run("pw", "pw", [7; 32], [7; 32], (a, m), (b, m));
        assert_eq!(
            (i, r),
            (
                Err(AuthFailure::WrongPassword),
                Err(AuthFailure::WrongPassword)
            )
        );
    }

    #[test]
    fn a_confirmation_cannot_be_reflected() {
        let (a, b) = (peer(1), peer(2));
        let pw = MeshPassword::new("pw").unwrap();
        let (i, x) = PasswordExchange::start(&pw, &mesh(), a, b, [7; 32]);
        let (r, y) = PasswordExchange::start(&pw, &mesh(), b, a, [7; 32]);
        let ci = i.finish(&y, b, true).unwrap();
        let cr = r.finish(&x, a, false).unwrap();
        assert!(
            ci.check(&ci.mine()).is_err(),
            "our own confirmation is not the peer's"
        );
        assert!(cr.check(&cr.mine()).is_err());
        // Our own message sent back to us is refused outright.
        let (i, x) = PasswordExchange::start(&pw, &mesh(), a, b, [7; 32]);
        assert!(matches!(
            i.finish(&x, b, true),
            Err(AuthFailure::Protocol(_))
        ));
    }

    #[test]
    fn garbage_messages_are_errors_not_panics() {
        let pw = MeshPassword::new("pw").unwrap();
        for bad in [
            &[][..],
            &[0x53; 5][..],
            &[0x41; MESSAGE_LEN][..],
            &[0xff; 100][..],
        ] {
            let (i, _) = PasswordExchange::start(&pw, &mesh(), peer(1), peer(2), [7; 32]);
            assert!(i.finish(bad, peer(2), true).is_err());
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        let pw = MeshPassword::new("hunter2").unwrap();
        assert_eq!(format!("{pw:?}"), "MeshPassword(<redacted>)");
        let security = super::super::MeshSecurity::Password(pw);
        assert!(!format!("{security:?}").contains("hunter2"));
    }
}
