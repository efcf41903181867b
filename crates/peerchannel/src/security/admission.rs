//! The admission handshake: how two linked nodes admit each other to one closed mesh.
//!
//! # Message flow
//!
//! On a bidirectional QUIC stream of the link, opened by the side that first needs the peer
//! in that mesh (the *initiator*), in length-prefixed postcard frames (a 4-byte big-endian
//! length, at most [`MAX_FRAME`] bytes, checked before anything is allocated):
//!
//! ```text
//! initiator                                        responder
//!   Open::Admission(Hello { version, mesh, mode,
//!                           pake | certificate }) ->
//!                                                  checks version, membership, mode;
//!                                                  certificate mesh: verifies the initiator's
//!                                    <- Reply { pake + confirmation | certificate }
//!   verifies the responder (password confirmation,
//!   or certificate); from now on accepts the
//!   responder's mesh messages
//!   Confirm { confirmation } ->
//!                                                  verifies the initiator; admits it: flushes
//!                                                  the frames it held, passes its messages on
//!                                    <- Welcome
//!   admits the responder: flushes its held frames
//! ```
//!
//! Either side may answer any step with `Refuse(reason)` instead, and the other reports it
//! ([`super::AuthFailure::RefusedByPeer`] and kin). Each side starts accepting the other's
//! messages just before its last message, so nothing the other sends after reading it can
//! arrive too early. The whole exchange is bounded by [`super::ADMISSION_TIMEOUT`].
//!
//! Two nodes that start a handshake for the same mesh at the same moment (crossing Hellos)
//! keep the one initiated by the smaller peer id: the larger one answers it and drops its own;
//! the smaller one refuses the other's with `Refusal::Crossing`, which is not a failure.
//!
//! A node in an *open* mesh answers a Hello for it with a refusal naming its mode, so a node
//! with a password and one without learn at once that they cannot link; a closed node that
//! receives protocol messages from a peer it has not admitted drops them and starts a
//! handshake itself, which the open node refuses the same way.
//!
//! # Versioning
//!
//! The first frame of every bidirectional stream is an `Open` value: the admission is its
//! first variant, and other stream kinds (services, files) become later variants. `Hello`
//! carries [`VERSION`]; a responder with another version refuses with its own.

use std::time::SystemTime;

use peerchannel_proto::MeshId;
use quinn::VarInt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;

use super::certificate::verify_member;
use super::password::{EXPORTER_LABEL, EXPORTER_LEN, PasswordExchange};
use super::{ADMISSION_TIMEOUT, AuthFailure, MeshSecurity, SecurityMode};
use crate::PeerId;

/// The admission protocol's version.
pub const VERSION: u16 = 1;

/// The largest admission frame accepted: 16 KiB (a member certificate is well under 1 KiB).
pub const MAX_FRAME: usize = 16 * 1024;

/// The stream error code sent when a handshake is abandoned.
const ABANDONED: VarInt = VarInt::from_u32(1);

/// The first frame of a bidirectional stream: what the stream is for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Open {
    /// An admission handshake.
    Admission(Hello),
}

/// The initiator's first message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`VERSION`].
    pub(crate) version: u16,
    /// The mesh the initiator wants the responder in.
    pub(crate) mesh: MeshId,
    /// How the initiator protects it.
    pub(crate) mode: SecurityMode,
    /// The initiator's SPAKE2 message, in a password mesh.
    pub(crate) pake: Option<ByteBuf>,
    /// The initiator's member certificate (DER), in a certificate mesh.
    pub(crate) certificate: Option<ByteBuf>,
}

/// The later steps of a handshake.
#[derive(Debug, Serialize, Deserialize)]
enum Step {
    Reply {
        pake: Option<ByteBuf>,
        confirmation: Option<ByteBuf>,
        certificate: Option<ByteBuf>,
    },
    Confirm {
        confirmation: Option<ByteBuf>,
    },
    Welcome,
    Refuse(Refusal),
}

/// Why a side said no, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// The password confirmation failed.
    WrongPassword,
    /// The refusing side protects the mesh this way.
    Mode(SecurityMode),
    /// The refusing side is not in that mesh.
    NotMember,
    /// Both sides started a handshake; the refusing side's own one goes on.
    Crossing,
    /// The refusing side speaks this admission version.
    Version(u16),
    /// Anything else, in words, from the refusing side's point of view.
    Reason(String),
}

/// How a handshake ended, for the node's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Authentication failed or was refused.
    Failed(AuthFailure),
    /// Crossing handshakes: this one gave way to the other.
    Crossed,
    /// The link or stream broke, or the node is going away: not the peer's fault.
    Broken(String),
}

/// What handshake tasks report to the node's task.
#[derive(Debug)]
pub(crate) enum AdmissionEvent {
    /// A peer opened an admission stream and sent its Hello.
    Incoming {
        peer: PeerId,
        conn_id: u64,
        conn: quinn::Connection,
        hello: Hello,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    /// The initiator verified the responder: its messages may pass from now on. The task waits
    /// for `ack` before sending its confirmation.
    PeerVerified {
        peer: PeerId,
        mesh: MeshId,
        attempt: u64,
        ack: oneshot::Sender<()>,
    },
    /// The peer is admitted both ways. A responder waits for `ack` before its Welcome.
    Admitted {
        peer: PeerId,
        mesh: MeshId,
        attempt: u64,
        ack: Option<oneshot::Sender<()>>,
    },
    /// The handshake ended without admission.
    Ended {
        peer: PeerId,
        mesh: MeshId,
        attempt: u64,
        outcome: Outcome,
    },
}

/// Where handshake tasks send their reports.
pub(crate) type Reporter = std::sync::Arc<dyn Fn(AdmissionEvent) + Send + Sync>;

/// What one side needs to run a handshake for one mesh.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) mesh: MeshId,
    pub(crate) security: MeshSecurity,
    pub(crate) me: PeerId,
}

/// Accepts the peer's bidirectional streams for the life of a link, reads each one's first
/// frame (within the admission timeout) and reports admission Hellos.
pub(crate) fn spawn_acceptor(
    peer: PeerId,
    conn_id: u64,
    conn: quinn::Connection,
    report: Reporter,
) {
    tokio::spawn(async move {
        while let Ok((send, mut recv)) = conn.accept_bi().await {
            let conn = conn.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let first = tokio::time::timeout(ADMISSION_TIMEOUT, read_frame::<Open>(&mut recv));
                match first.await {
                    Ok(Ok(Open::Admission(hello))) => report(AdmissionEvent::Incoming {
                        peer,
                        conn_id,
                        conn,
                        hello,
                        send,
                        recv,
                    }),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer.fmt_short(), "bad first frame on a stream: {e:?}");
                        let _ = recv.stop(ABANDONED);
                    }
                    Err(_) => {
                        let _ = recv.stop(ABANDONED);
                    }
                }
            });
        }
    });
}

/// Runs the initiator's side; reports the outcome. Returns when done.
pub(crate) async fn initiate(
    guard: Guard,
    conn: quinn::Connection,
    peer: PeerId,
    attempt: u64,
    report: Reporter,
) {
    let mesh = guard.mesh.clone();
    let run = initiator(&guard, &conn, peer, attempt, &report);
    let outcome = match tokio::time::timeout(ADMISSION_TIMEOUT, run).await {
        Ok(Ok(())) => {
            report(AdmissionEvent::Admitted {
                peer,
                mesh,
                attempt,
                ack: None,
            });
            return;
        }
        Ok(Err(outcome)) => outcome,
        Err(_) => Outcome::Failed(AuthFailure::TimedOut),
    };
    report(AdmissionEvent::Ended {
        peer,
        mesh,
        attempt,
        outcome,
    });
}

/// Runs the responder's side for a Hello the node accepted to answer; reports the outcome.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn respond(
    guard: Guard,
    conn: quinn::Connection,
    peer: PeerId,
    attempt: u64,
    hello: Hello,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    report: Reporter,
) {
    let mesh = guard.mesh.clone();
    let run = responder(
        &guard, &conn, peer, attempt, hello, &mut send, &mut recv, &report,
    );
    let outcome = match tokio::time::timeout(ADMISSION_TIMEOUT, run).await {
        Ok(Ok(())) => return,
        Ok(Err(outcome)) => outcome,
        Err(_) => Outcome::Failed(AuthFailure::TimedOut),
    };
    report(AdmissionEvent::Ended {
        peer,
        mesh,
        attempt,
        outcome,
    });
}

/// Answers a Hello with a refusal and closes the stream (a mesh this node is not in, an open
/// mesh, another version, a crossing handshake).
pub(crate) fn refuse(mut send: quinn::SendStream, refusal: Refusal) {
    tokio::spawn(async move {
        if write_frame(&mut send, &Step::Refuse(refusal)).await.is_ok() {
            let _ = send.finish();
            let _ = tokio::time::timeout(ADMISSION_TIMEOUT, send.stopped()).await;
        }
    });
}

/// The refusal this side sends for one of its own failures, worded for the other side.
pub(crate) fn refusal_for(failure: &AuthFailure) -> Refusal {
    match failure {
        AuthFailure::WrongPassword => Refusal::WrongPassword,
        AuthFailure::ModeMismatch { ours, .. } => Refusal::Mode(*ours),
        AuthFailure::NoCertificate => {
            Refusal::Reason("a member certificate is required and you sent none".into())
        }
        AuthFailure::UnknownIssuer => {
            Refusal::Reason("your certificate was not issued by this mesh's CA".into())
        }
        AuthFailure::CertificateExpired(detail) => Refusal::Reason(format!(
            "your certificate is outside its validity period ({detail})"
        )),
        AuthFailure::CertificateKeyMismatch { certified } => Refusal::Reason(format!(
            "your certificate is for {certified}, not for your key"
        )),
        AuthFailure::BadCertificate(detail) => {
            Refusal::Reason(format!("your certificate is not acceptable: {detail}"))
        }
        AuthFailure::RefusedByPeer(reason) => Refusal::Reason(reason.clone()),
        AuthFailure::TimedOut => Refusal::Reason("the handshake timed out".into()),
        AuthFailure::Protocol(detail) => Refusal::Reason(format!("protocol error: {detail}")),
    }
}

/// What a refusal received means here.
pub(crate) fn outcome_of(refusal: Refusal, ours: SecurityMode) -> Outcome {
    Outcome::Failed(match refusal {
        Refusal::WrongPassword => AuthFailure::WrongPassword,
        Refusal::Mode(theirs) => AuthFailure::ModeMismatch { ours, theirs },
        Refusal::NotMember => AuthFailure::RefusedByPeer("it is not in this mesh".into()),
        Refusal::Crossing => return Outcome::Crossed,
        Refusal::Version(v) => AuthFailure::Protocol(format!(
            "the peer speaks admission version {v}, we {VERSION}"
        )),
        Refusal::Reason(reason) => AuthFailure::RefusedByPeer(reason),
    })
}

// --- the two sides ------------------------------------------------------------------------------

/// This side's credentials for a Hello or a Reply.
enum Credentials {
    Password(Box<PasswordExchange>, Vec<u8>),
    Certificate(ByteBuf),
}

fn credentials(
    guard: &Guard,
    conn: &quinn::Connection,
    peer: PeerId,
) -> Result<Credentials, Outcome> {
    match &guard.security {
        MeshSecurity::Password(password) => {
            let exporter = exporter(conn, &guard.mesh)?;
            let (exchange, message) =
                PasswordExchange::start(password, &guard.mesh, guard.me, peer, exporter);
            Ok(Credentials::Password(Box::new(exchange), message))
        }
        MeshSecurity::Certificate(member) => Ok(Credentials::Certificate(ByteBuf::from(
            member.certificate().to_vec(),
        ))),
        MeshSecurity::Open => Err(Outcome::Broken("an open mesh has no handshake".into())),
    }
}

async fn initiator(
    guard: &Guard,
    conn: &quinn::Connection,
    peer: PeerId,
    attempt: u64,
    report: &Reporter,
) -> Result<(), Outcome> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(broken)?;
    let ours = guard.security.mode();
    let creds = credentials(guard, conn, peer)?;
    let (pake, certificate) = match &creds {
        Credentials::Password(_, message) => (Some(ByteBuf::from(message.clone())), None),
        Credentials::Certificate(cert) => (None, Some(cert.clone())),
    };
    let hello = Hello {
        version: VERSION,
        mesh: guard.mesh.clone(),
        mode: ours,
        pake,
        certificate,
    };
    write_frame(&mut send, &Open::Admission(hello)).await?;
    let (their_pake, their_confirmation, their_certificate) =
        match read_frame::<Step>(&mut recv).await? {
            Step::Reply {
                pake,
                confirmation,
                certificate,
            } => (pake, confirmation, certificate),
            Step::Refuse(refusal) => return Err(outcome_of(refusal, ours)),
            other => return Err(protocol(format!("expected a reply, got {other:?}"))),
        };
    // Verify the responder before saying anything that depends on the secret.
    let verified = match creds {
        Credentials::Password(exchange, _) => {
            let theirs = their_pake.ok_or_else(|| protocol("no password message".into()))?;
            exchange
                .finish(&theirs, peer, true)
                .and_then(|confirmation| {
                    let theirs = their_confirmation.unwrap_or_default();
                    confirmation.check(&theirs)?;
                    Ok(Some(confirmation.mine().to_vec()))
                })
        }
        Credentials::Certificate(_) => check_certificate(
            guard,
            their_certificate.as_ref().map(|c| c.as_slice()),
            peer,
        )
        .map(|()| None),
    };
    let mine = match verified {
        Ok(mine) => mine,
        Err(failure) => {
            let _ = write_frame(&mut send, &Step::Refuse(refusal_for(&failure))).await;
            let _ = send.finish();
            return Err(Outcome::Failed(failure));
        }
    };
    let (ack, acked) = oneshot::channel();
    report(AdmissionEvent::PeerVerified {
        peer,
        mesh: guard.mesh.clone(),
        attempt,
        ack,
    });
    acked
        .await
        .map_err(|_| Outcome::Broken("the node stopped".into()))?;
    let confirm = Step::Confirm {
        confirmation: mine.map(ByteBuf::from),
    };
    write_frame(&mut send, &confirm).await?;
    match read_frame::<Step>(&mut recv).await? {
        Step::Welcome => {
            let _ = send.finish();
            Ok(())
        }
        Step::Refuse(refusal) => Err(outcome_of(refusal, ours)),
        other => Err(protocol(format!("expected a welcome, got {other:?}"))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn responder(
    guard: &Guard,
    conn: &quinn::Connection,
    peer: PeerId,
    attempt: u64,
    hello: Hello,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    report: &Reporter,
) -> Result<(), Outcome> {
    let creds = credentials(guard, conn, peer)?;
    // Check what can be checked from the Hello alone, and answer.
    let checked = match &creds {
        Credentials::Password(..) if hello.pake.is_none() => {
            Err(AuthFailure::Protocol("no password message".into()))
        }
        Credentials::Password(..) => Ok(()),
        Credentials::Certificate(_) => check_certificate(
            guard,
            hello.certificate.as_ref().map(|c| c.as_slice()),
            peer,
        ),
    };
    if let Err(failure) = checked {
        let _ = write_frame(send, &Step::Refuse(refusal_for(&failure))).await;
        let _ = send.finish();
        return Err(Outcome::Failed(failure));
    }
    let (confirmation, reply) = match creds {
        Credentials::Password(exchange, message) => {
            // The Hello's message was checked to be there above.
            let theirs = hello.pake.unwrap_or_default();
            let confirmation = match exchange.finish(&theirs, peer, false) {
                Ok(c) => c,
                Err(failure) => {
                    let _ = write_frame(send, &Step::Refuse(refusal_for(&failure))).await;
                    return Err(Outcome::Failed(failure));
                }
            };
            let reply = Step::Reply {
                pake: Some(ByteBuf::from(message)),
                confirmation: Some(ByteBuf::from(confirmation.mine().to_vec())),
                certificate: None,
            };
            (Some(confirmation), reply)
        }
        Credentials::Certificate(certificate) => (
            None,
            Step::Reply {
                pake: None,
                confirmation: None,
                certificate: Some(certificate),
            },
        ),
    };
    write_frame(send, &reply).await?;
    let their_confirmation = match read_frame::<Step>(recv).await? {
        Step::Confirm { confirmation } => confirmation,
        Step::Refuse(refusal) => return Err(outcome_of(refusal, guard.security.mode())),
        other => return Err(protocol(format!("expected a confirmation, got {other:?}"))),
    };
    if let Some(confirmation) = confirmation
        && let Err(failure) = confirmation.check(&their_confirmation.unwrap_or_default())
    {
        let _ = write_frame(send, &Step::Refuse(refusal_for(&failure))).await;
        let _ = send.finish();
        return Err(Outcome::Failed(failure));
    }
    let (ack, acked) = oneshot::channel();
    report(AdmissionEvent::Admitted {
        peer,
        mesh: guard.mesh.clone(),
        attempt,
        ack: Some(ack),
    });
    acked
        .await
        .map_err(|_| Outcome::Broken("the node stopped".into()))?;
    write_frame(send, &Step::Welcome).await?;
    let _ = send.finish();
    Ok(())
}

fn check_certificate(
    guard: &Guard,
    certificate: Option<&[u8]>,
    peer: PeerId,
) -> Result<(), AuthFailure> {
    let MeshSecurity::Certificate(member) = &guard.security else {
        return Err(AuthFailure::Protocol("not a certificate mesh".into()));
    };
    let certificate = certificate.ok_or(AuthFailure::NoCertificate)?;
    verify_member(member.ca(), certificate, peer, SystemTime::now())
}

/// The TLS exporter of this connection for this mesh.
fn exporter(conn: &quinn::Connection, mesh: &MeshId) -> Result<[u8; EXPORTER_LEN], Outcome> {
    let mut out = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, mesh.as_str().as_bytes())
        .map_err(|_| Outcome::Broken("the TLS session cannot export keying material".into()))?;
    Ok(out)
}

// --- framing ------------------------------------------------------------------------------------

async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, value: &T) -> Result<(), Outcome> {
    let body = postcard::to_allocvec(value).map_err(|e| Outcome::Broken(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(Outcome::Broken("admission frame too large".into()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    send.write_all(&frame).await.map_err(broken)
}

async fn read_frame<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<T, Outcome> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.map_err(broken)?;
    let len = u32::from_be_bytes(prefix) as usize;
    // Checked before allocating: a peer cannot make us reserve more than MAX_FRAME.
    if len > MAX_FRAME {
        return Err(protocol(format!(
            "a frame of {len} bytes (at most {MAX_FRAME})"
        )));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(broken)?;
    postcard::from_bytes(&body).map_err(|e| protocol(format!("malformed frame: {e}")))
}

fn broken(e: impl std::fmt::Display) -> Outcome {
    Outcome::Broken(e.to_string())
}

fn protocol(detail: String) -> Outcome {
    Outcome::Failed(AuthFailure::Protocol(detail))
}
