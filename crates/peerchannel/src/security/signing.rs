//! End-to-end signed messages.
//!
//! # What is signed
//!
//! The origin signs, with the Ed25519 key of its peer id, this byte string:
//!
//! ```text
//! "peerchannel/1 signed message\0" | origin (32) | seq (u64 BE) | timestamp_ms (u64 BE)
//!   | len(mesh) (u32 BE) | mesh | len(path) (u32 BE) | path | len(body) (u32 BE) | body
//! ```
//!
//! The origin and sequence number are the message's id (the core assigns it; the payload is
//! built from it with `State::broadcast_with`), so a signature cannot be moved to another
//! message, another mesh or another channel. The signature and timestamp travel in the
//! envelope's `auth` field, with the origin's member certificate in a certificate mesh. The hop
//! count and hop limit are not signed: forwarders change the first, and lowering the second is
//! no worse than a forwarder that drops the message.
//!
//! # What a receiver checks
//!
//! Before a message is delivered or passed on (in the mesh's propagation filter, so a refused
//! message is neither, and is not remembered as seen), in this order:
//!
//! 1. unsigned: refused if the mesh requires signatures ([`super::SecurityStats::unsigned`]);
//! 2. the signature is the origin's, over the content above ([`super::SecurityStats::bad_signatures`]);
//! 3. the timestamp is within the window of the local clock, [`super::SIGNATURE_WINDOW`] by
//!    default ([`super::SecurityStats::stale_signatures`]): below the two minutes for which
//!    message ids are remembered, so a replay after the duplicate cache forgot the id is too
//!    old;
//! 4. in a certificate mesh, the certificate in the message is a valid member certificate of
//!    this mesh for the origin's key ([`super::SecurityStats::uncertified_signers`]). Checked
//!    certificates are cached by digest for [`CERTIFICATE_CACHE_TTL`].
//!
//! A signed message that waited in the offline queue longer than the window is refused by its
//! receivers: it was signed when sent.
//!
//! # Cost
//!
//! One Ed25519 signature per message sent, one verification per message received (ring), and
//! 80 bytes on the wire (a few hundred more in a certificate mesh, for the certificate). See
//! the README's Security section for measured rates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use peerchannel_proto::{Gossip, MeshId, MessageId};
use ring::digest;

use super::certificate::verify_member;
use super::{Counters, Der};
use crate::PeerId;
use crate::envelope::{Auth, Envelope, EnvelopeRef};
use crate::identity::{self, Identity};

/// How long a verified signer certificate is trusted without checking it again: 60 s. Its
/// validity period is checked again after that.
pub const CERTIFICATE_CACHE_TTL: Duration = Duration::from_secs(60);

/// Signer certificates remembered; the cache is emptied when full.
const CERTIFICATE_CACHE: usize = 4096;

/// The domain separation prefix of signed content.
const DOMAIN: &[u8] = b"peerchannel/1 signed message\0";

/// Signs this node's messages in one mesh.
#[derive(Clone)]
pub(crate) struct Signer {
    identity: Identity,
    mesh: MeshId,
    certificate: Option<Der>,
}

impl Signer {
    pub(crate) fn new(identity: Identity, mesh: MeshId, certificate: Option<Der>) -> Self {
        Self {
            identity,
            mesh,
            certificate,
        }
    }

    /// The signed envelope of a message, for the wire.
    pub(crate) fn envelope(&self, id: MessageId<PeerId>, path: &str, body: &[u8]) -> Bytes {
        let timestamp_ms = unix_ms(SystemTime::now());
        let content = signed_content(&self.mesh, &id, path, body, timestamp_ms);
        let signature = self.identity.sign(&content);
        Envelope {
            path,
            body,
            auth: Some(Auth {
                timestamp_ms,
                signature,
                certificate: self.certificate.as_ref().map(|c| c.as_ref()),
            }),
        }
        .encode()
    }
}

/// Checks the signatures of one mesh's incoming messages.
pub(crate) struct Verifier {
    mesh: MeshId,
    require: bool,
    window: Duration,
    ca: Option<Der>,
    counters: Arc<Counters>,
    certified: HashMap<[u8; 32], (PeerId, Instant)>,
}

/// Why a message was refused (already counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Unsigned,
    BadSignature,
    Stale,
    Uncertified,
}

impl Verifier {
    pub(crate) fn new(
        mesh: MeshId,
        require: bool,
        window: Duration,
        ca: Option<Der>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            mesh,
            require,
            window,
            ca,
            counters,
            certified: HashMap::new(),
        }
    }

    /// Checks one message; a refusal is counted.
    pub(crate) fn check(
        &mut self,
        gossip: &Gossip<PeerId>,
        envelope: &EnvelopeRef<'_>,
    ) -> Result<(), Refused> {
        let result = self.verify(gossip, envelope, SystemTime::now());
        if let Err(refused) = result {
            let c = &self.counters;
            Counters::bump(match refused {
                Refused::Unsigned => &c.unsigned,
                Refused::BadSignature => &c.bad_signatures,
                Refused::Stale => &c.stale_signatures,
                Refused::Uncertified => &c.uncertified_signers,
            });
            tracing::debug!(mesh = %self.mesh, origin = %gossip.id.origin.fmt_short(), ?refused, "refused a message");
        }
        result
    }

    fn verify(
        &mut self,
        gossip: &Gossip<PeerId>,
        envelope: &EnvelopeRef<'_>,
        now: SystemTime,
    ) -> Result<(), Refused> {
        let Some(auth) = &envelope.auth else {
            return if self.require {
                Err(Refused::Unsigned)
            } else {
                Ok(())
            };
        };
        let content = signed_content(
            &self.mesh,
            &gossip.id,
            envelope.path,
            envelope.body,
            auth.timestamp_ms,
        );
        identity::verify(&gossip.id.origin, &content, &auth.signature)
            .map_err(|_| Refused::BadSignature)?;
        let now_ms = unix_ms(now);
        if now_ms.abs_diff(auth.timestamp_ms) > self.window.as_millis() as u64 {
            return Err(Refused::Stale);
        }
        if let Some(ca) = &self.ca {
            let certificate = auth.certificate.ok_or(Refused::Uncertified)?;
            self.check_certificate(ca.clone(), certificate, gossip.id.origin, now)?;
        }
        Ok(())
    }

    fn check_certificate(
        &mut self,
        ca: Der,
        certificate: &[u8],
        origin: PeerId,
        now: SystemTime,
    ) -> Result<(), Refused> {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, certificate).as_ref());
        let fresh = |at: &Instant| at.elapsed() < CERTIFICATE_CACHE_TTL;
        if let Some((certified, at)) = self.certified.get(&key)
            && fresh(at)
        {
            return if *certified == origin {
                Ok(())
            } else {
                Err(Refused::Uncertified)
            };
        }
        verify_member(&ca, certificate, origin, now).map_err(|_| Refused::Uncertified)?;
        if self.certified.len() >= CERTIFICATE_CACHE {
            self.certified.clear();
        }
        self.certified.insert(key, (origin, Instant::now()));
        Ok(())
    }
}

/// The bytes an origin signs (see the module docs).
fn signed_content(
    mesh: &MeshId,
    id: &MessageId<PeerId>,
    path: &str,
    body: &[u8],
    timestamp_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        DOMAIN.len() + 32 + 16 + 12 + mesh.as_str().len() + path.len() + body.len(),
    );
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(id.origin.as_bytes());
    out.extend_from_slice(&id.seq.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    for part in [mesh.as_str().as_bytes(), path.as_bytes(), body] {
        // Paths, mesh ids and bodies are far below 4 GiB (frames are bounded).
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use peerchannel_proto::GossipKind;

    use super::*;
    use crate::security::certificate::MeshCa;

    fn mesh() -> MeshId {
        MeshId::new("team").unwrap()
    }

    fn gossip(origin: PeerId, seq: u64, payload: Bytes) -> Gossip<PeerId> {
        Gossip {
            id: MessageId { origin, seq },
            hops: 1,
            hop_limit: None,
            kind: GossipKind::App,
            payload,
        }
    }

    fn verifier(require: bool, ca: Option<Der>) -> (Verifier, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let v = Verifier::new(
            mesh(),
            require,
            Duration::from_secs(60),
            ca,
            counters.clone(),
        );
        (v, counters)
    }

    fn check(v: &mut Verifier, g: &Gossip<PeerId>) -> Result<(), Refused> {
        let envelope = EnvelopeRef::decode(&g.payload).unwrap();
        v.check(g, &envelope)
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_breaks_it() {
        let me = Identity::generate().unwrap();
        let signer = Signer::new(me.clone(), mesh(), None);
        let id = MessageId {
            origin: me.peer_id(),
            seq: 5,
        };
        let payload = signer.envelope(id, "chat", b"hello");
        let (mut v, counters) = verifier(true, None);
        assert_eq!(
            check(&mut v, &gossip(me.peer_id(), 5, payload.clone())),
            Ok(())
        );

        // Another sequence number, another origin, another mesh: the signature no longer fits.
        assert_eq!(
            check(&mut v, &gossip(me.peer_id(), 6, payload.clone())),
            Err(Refused::BadSignature)
        );
        let other = Identity::generate().unwrap().peer_id();
        assert_eq!(
            check(&mut v, &gossip(other, 5, payload.clone())),
            Err(Refused::BadSignature)
        );
        let mut elsewhere = Verifier::new(
            MeshId::new("other").unwrap(),
            true,
            Duration::from_secs(60),
            None,
            counters.clone(),
        );
        assert_eq!(
            check(&mut elsewhere, &gossip(me.peer_id(), 5, payload.clone())),
            Err(Refused::BadSignature)
        );
        // An altered body.
        let altered = Bytes::from(
            payload
                .to_vec()
                .iter()
                .map(|&b| if b == b'h' { b'j' } else { b })
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            check(&mut v, &gossip(me.peer_id(), 5, altered)),
            Err(Refused::BadSignature)
        );
        assert_eq!(counters.snapshot().bad_signatures, 4);
    }

    #[test]
    fn unsigned_messages_pass_only_where_signatures_are_not_required() {
        let origin = Identity::generate().unwrap().peer_id();
        let payload = Envelope {
            path: "chat",
            body: b"hi",
            auth: None,
        }
        .encode();
        let (mut lax, _) = verifier(false, None);
        assert_eq!(check(&mut lax, &gossip(origin, 1, payload.clone())), Ok(()));
        let (mut strict, counters) = verifier(true, None);
        assert_eq!(
            check(&mut strict, &gossip(origin, 1, payload)),
            Err(Refused::Unsigned)
        );
        assert_eq!(counters.snapshot().unsigned, 1);
    }

    #[test]
    fn a_timestamp_outside_the_window_is_stale() {
        let me = Identity::generate().unwrap();
        let (mut v, counters) = verifier(true, None);
        let now = SystemTime::now();
        let cases = [
            (now - Duration::from_secs(61), Err(Refused::Stale)),
            (now, Ok(())),
            // From the future too.
            (now + Duration::from_secs(120), Err(Refused::Stale)),
        ];
        for (at, expected) in cases {
            let g = gossip(me.peer_id(), 1, signed_at(&me, 1, unix_ms(at)));
            assert_eq!(check(&mut v, &g), expected, "signed at {at:?}");
        }
        assert_eq!(counters.snapshot().stale_signatures, 2);
    }

    /// An envelope signed by `me` as if at `timestamp_ms`.
    fn signed_at(me: &Identity, seq: u64, timestamp_ms: u64) -> Bytes {
        let id = MessageId {
            origin: me.peer_id(),
            seq,
        };
        let content = signed_content(&mesh(), &id, "chat", b"x", timestamp_ms);
        Envelope {
            path: "chat",
            body: b"x",
            auth: Some(Auth {
                timestamp_ms,
                signature: me.sign(&content),
                certificate: None,
            }),
        }
        .encode()
    }

    #[test]
    fn in_a_certificate_mesh_the_signer_must_show_a_member_certificate() {
        let ca = MeshCa::generate(&mesh()).unwrap();
        let member = Identity::generate().unwrap();
        let cert = ca.issue(member.peer_id(), 1).unwrap();
        let id = MessageId {
            origin: member.peer_id(),
            seq: 1,
        };
        let (mut v, counters) = verifier(true, Some(ca.certificate().clone()));

        let with = Signer::new(member.clone(), mesh(), Some(cert.clone())).envelope(id, "c", b"x");
        assert_eq!(
            check(&mut v, &gossip(member.peer_id(), 1, with.clone())),
            Ok(())
        );
        // Cached now, and still only for its own key.
        assert_eq!(check(&mut v, &gossip(member.peer_id(), 1, with)), Ok(()));

        let without = Signer::new(member.clone(), mesh(), None).envelope(id, "c", b"x");
        assert_eq!(
            check(&mut v, &gossip(member.peer_id(), 1, without)),
            Err(Refused::Uncertified)
        );

        // A non-member signing its own messages with a member's (public) certificate.
        let outsider = Identity::generate().unwrap();
        let oid = MessageId {
            origin: outsider.peer_id(),
            seq: 1,
        };
        let stolen = Signer::new(outsider.clone(), mesh(), Some(cert)).envelope(oid, "c", b"x");
        assert_eq!(
            check(&mut v, &gossip(outsider.peer_id(), 1, stolen)),
            Err(Refused::Uncertified)
        );
        assert_eq!(counters.snapshot().uncertified_signers, 2);
    }
}
