//! The node's task's side of closed meshes: which peers are admitted to which mesh, the frames
//! held until they are, and the handshakes under way. The handshake itself and its reasons
//! are in [`crate::security::admission`]; this file is the glue to the actor's links and core.
//!
//! Admission is per (peer, mesh) and bound to the connection the handshake ran on (its TLS
//! exporter is part of the proof): when that connection goes, so does the admission, and the
//! next message either way runs a new handshake.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerchannel_proto::{InEvent, MeshId, Message};
use tokio::task::AbortHandle;
use tracing::{debug, info};

use super::{Actor, Internal};
use crate::PeerId;
use crate::error::JoinError;
use crate::link::Lane;
use crate::mesh::{Event, MeshOptions};
use crate::security::admission::{
    self, AdmissionEvent, Guard, Hello, Outcome, Refusal, Reporter, VERSION,
};
use crate::security::signing::{Signer, Verifier};
use crate::security::{ADMISSION_TIMEOUT, AuthFailure, Counters, MeshSecurity, SecurityMode};

/// Outgoing frames held for one (peer, mesh) while its admission is under way; more are
/// dropped (and counted).
pub(crate) const HELD_FRAMES: usize = 256;

/// After a failed admission, the peer is refused in that mesh for this long without a new
/// handshake: a wrong password is not retried in a loop, and a guesser gets one guess per
/// period per connection.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The admissions of every closed mesh this node is in.
#[derive(Default)]
pub(crate) struct Admissions {
    /// The closed meshes (open ones are not here).
    guards: BTreeMap<MeshId, Guard>,
    /// The meshes that sign.
    signers: BTreeMap<MeshId, Arc<Signer>>,
    states: HashMap<(PeerId, MeshId), State>,
    next_attempt: u64,
}

enum State {
    /// Frames wait for a link to the peer (being dialed).
    WaitingForLink {
        held: VecDeque<(Bytes, Lane)>,
        since: Instant,
    },
    /// A handshake is under way on connection `conn_id`.
    Handshaking {
        conn_id: u64,
        attempt: u64,
        initiator: bool,
        /// The peer has proved itself: its messages pass (ours wait for the verdict).
        inbound: bool,
        held: VecDeque<(Bytes, Lane)>,
        task: AbortHandle,
    },
    /// Admitted both ways on connection `conn_id`.
    Admitted { conn_id: u64 },
    /// Refused until then.
    Refused { until: Instant },
}

impl State {
    fn held(&mut self) -> Option<&mut VecDeque<(Bytes, Lane)>> {
        match self {
            Self::WaitingForLink { held, .. } | Self::Handshaking { held, .. } => Some(held),
            _ => None,
        }
    }
}

impl Actor {
    /// Checks a mesh's security options at join and registers a closed mesh. Returns the
    /// propagation filter's signature verifier and the signer for sends, if the mesh uses them.
    pub(super) fn admission_join(
        &mut self,
        mesh: &MeshId,
        options: &MeshOptions,
        counters: Arc<Counters>,
    ) -> Result<Option<Verifier>, JoinError> {
        let retention = options.protocol.broadcast.seen_retention;
        if options.signature_window >= retention {
            return Err(JoinError::SignatureWindow {
                window: options.signature_window,
                retention,
            });
        }
        let certificate = match &options.security {
            MeshSecurity::Certificate(member) => {
                if !member.own_check_skipped() {
                    member.check(self.me)?;
                }
                Some(member)
            }
            _ => None,
        };
        let verifier = Verifier::new(
            mesh.clone(),
            options.require_signed,
            options.signature_window,
            certificate.map(|c| c.ca().clone()),
            counters,
        );
        if options.sign {
            let signer = Signer::new(
                self.identity.clone(),
                mesh.clone(),
                certificate.map(|c| c.certificate().clone()),
            );
            self.admission
                .signers
                .insert(mesh.clone(), Arc::new(signer));
        }
        if !matches!(options.security, MeshSecurity::Open) {
            self.admission.guards.insert(
                mesh.clone(),
                Guard {
                    mesh: mesh.clone(),
                    security: options.security.clone(),
                    me: self.me,
                },
            );
        }
        Ok(Some(verifier))
    }

    /// The signer of a mesh that signs its messages.
    pub(super) fn admission_signer(&self, mesh: &MeshId) -> Option<Arc<Signer>> {
        self.admission.signers.get(mesh).cloned()
    }

    /// Forgets a mesh's admissions when it is left.
    pub(super) fn admission_leave(&mut self, mesh: &MeshId) {
        self.admission.guards.remove(mesh);
        self.admission.signers.remove(mesh);
        self.admission.states.retain(|(_, m), state| {
            if m != mesh {
                return true;
            }
            if let State::Handshaking { task, .. } = state {
                task.abort();
            }
            false
        });
    }

    /// The outgoing gate: `Some` if the frame may go to `to` now; otherwise it is held (and a
    /// handshake started) or dropped.
    pub(super) fn gate_outgoing(
        &mut self,
        to: PeerId,
        mesh: &MeshId,
        frame: Bytes,
        lane: Lane,
    ) -> Option<Bytes> {
        if self.admission.states.is_empty() && !self.admission.guards.contains_key(mesh) {
            return Some(frame);
        }
        let key = (to, mesh.clone());
        let now = Instant::now();
        let state = self.admission.states.get(&key);
        let (hold, restart) = match state {
            Some(State::Admitted { conn_id }) if self.link_alive(to, *conn_id) => {
                return Some(frame);
            }
            Some(State::Refused { until }) if *until > now => {
                self.count(mesh, |c| &c.held_dropped);
                // Tell the core again, so it stops asking this peer.
                self.deferred.push_back(InEvent::PeerRefused {
                    mesh: mesh.clone(),
                    peer: to,
                });
                return None;
            }
            Some(State::WaitingForLink { since, .. }) => {
                (true, now.duration_since(*since) > ADMISSION_TIMEOUT)
            }
            Some(State::Handshaking { .. }) => (true, false),
            // An admission of a connection that is gone, a refusal that has run out, or none.
            Some(_) | None => (false, true),
        };
        if !hold && !self.admission.guards.contains_key(mesh) {
            self.admission.states.remove(&key);
            return Some(frame);
        }
        let state = self
            .admission
            .states
            .entry(key)
            .or_insert_with(|| State::WaitingForLink {
                held: VecDeque::new(),
                since: now,
            });
        if !hold {
            *state = State::WaitingForLink {
                held: VecDeque::new(),
                since: now,
            };
        }
        if let Some(held) = state.held() {
            if held.len() < HELD_FRAMES {
                held.push_back((frame, lane));
            } else {
                self.count(mesh, |c| &c.held_dropped);
            }
        }
        if restart {
            self.start_admission(to, mesh);
        }
        None
    }

    /// The incoming gate: whether a message from `from` may go to the core.
    pub(super) fn gate_incoming(&mut self, from: PeerId, message: &Message<PeerId>) -> bool {
        let mesh = &message.mesh;
        if !self.admission.guards.contains_key(mesh) {
            return true;
        }
        let key = (from, mesh.clone());
        let pass = match self.admission.states.get(&key) {
            Some(State::Admitted { conn_id }) => self.link_alive(from, *conn_id),
            Some(State::Handshaking { inbound, .. }) => *inbound,
            _ => false,
        };
        if pass {
            return true;
        }
        self.count(mesh, |c| &c.unauthenticated);
        let stale = match self.admission.states.get(&key) {
            None => true,
            Some(State::Admitted { .. }) => true,
            Some(State::Refused { until }) => *until <= Instant::now(),
            Some(_) => false,
        };
        if stale {
            // A peer talking to us in this mesh without an admission: a node without the
            // mesh's security, or one whose admission lapsed. Ask it to authenticate; an open
            // node refuses, and both sides learn that they cannot link.
            debug!(peer = %from.fmt_short(), mesh = %mesh, "message from a peer not admitted");
            self.admission.states.insert(
                key,
                State::WaitingForLink {
                    held: VecDeque::new(),
                    since: Instant::now(),
                },
            );
            self.start_admission(from, mesh);
        }
        false
    }

    /// A link came up: serve the peer's admission streams.
    pub(super) fn admission_link_up(
        &mut self,
        peer: PeerId,
        conn_id: u64,
        conn: quinn::Connection,
    ) {
        admission::spawn_acceptor(peer, conn_id, conn, self.reporter());
    }

    /// The link is in place: start the handshakes that were waiting for it.
    pub(super) fn admission_link_ready(&mut self, peer: PeerId) {
        let waiting: Vec<MeshId> = self
            .admission
            .states
            .iter()
            .filter(|((p, _), s)| *p == peer && matches!(s, State::WaitingForLink { .. }))
            .map(|((_, m), _)| m.clone())
            .collect();
        for mesh in waiting {
            self.start_admission(peer, &mesh);
        }
    }

    /// A dial failed: frames waiting for that link are dropped (the core hears of the failure
    /// as a lost peer).
    pub(super) fn admission_dial_failed(&mut self, peer: PeerId) {
        let dropped: Vec<(MeshId, usize)> = self
            .admission
            .states
            .iter()
            .filter_map(|((p, m), s)| match s {
                State::WaitingForLink { held, .. } if *p == peer => Some((m.clone(), held.len())),
                _ => None,
            })
            .collect();
        for (mesh, count) in dropped {
            self.admission.states.remove(&(peer, mesh.clone()));
            for _ in 0..count {
                self.count(&mesh, |c| &c.held_dropped);
            }
        }
    }

    /// What a handshake task reports.
    pub(super) fn on_admission(&mut self, event: AdmissionEvent) {
        match event {
            AdmissionEvent::Incoming {
                peer,
                conn_id,
                conn,
                hello,
                send,
                recv,
            } => self.on_hello(peer, conn_id, conn, hello, send, recv),
            AdmissionEvent::PeerVerified {
                peer,
                mesh,
                attempt,
                ack,
            } => {
                if let Some(State::Handshaking {
                    attempt: current,
                    inbound,
                    ..
                }) = self.admission.states.get_mut(&(peer, mesh))
                    && *current == attempt
                {
                    *inbound = true;
                    let _ = ack.send(());
                }
                // A stale attempt: dropping `ack` ends that task.
            }
            AdmissionEvent::Admitted {
                peer,
                mesh,
                attempt,
                ack,
            } => {
                let key = (peer, mesh.clone());
                let Some(State::Handshaking {
                    attempt: current,
                    conn_id,
                    ..
                }) = self.admission.states.get(&key)
                else {
                    return;
                };
                if *current != attempt {
                    return;
                }
                let conn_id = *conn_id;
                let Some(State::Handshaking { held, .. }) = self
                    .admission
                    .states
                    .insert(key, State::Admitted { conn_id })
                else {
                    return;
                };
                info!(peer = %peer.fmt_short(), mesh = %mesh, "peer admitted");
                self.count(&mesh, |c| &c.admitted);
                self.flush_held(peer, held);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            AdmissionEvent::Ended {
                peer,
                mesh,
                attempt,
                outcome,
            } => self.admission_ended(peer, mesh, attempt, outcome),
        }
    }

    fn admission_ended(&mut self, peer: PeerId, mesh: MeshId, attempt: u64, outcome: Outcome) {
        let key = (peer, mesh.clone());
        match self.admission.states.get(&key) {
            Some(State::Handshaking {
                attempt: current, ..
            }) if *current == attempt => {}
            // Superseded (a crossing handshake took over, or the mesh was left).
            _ => return,
        }
        let Some(mut state) = self.admission.states.remove(&key) else {
            return;
        };
        if !matches!(outcome, Outcome::Crossed) {
            let held = state.held().map_or(0, |h| h.len());
            for _ in 0..held {
                self.count(&mesh, |c| &c.held_dropped);
            }
        }
        match outcome {
            Outcome::Crossed => {
                // Our handshake gave way to the peer's, whose Hello is on its way: it takes
                // over the held frames. Should it never come, the next send starts again.
                debug!(peer = %peer.fmt_short(), mesh = %mesh, "crossing handshake gives way");
                let held = state.held().map(std::mem::take).unwrap_or_default();
                self.admission.states.insert(
                    key,
                    State::WaitingForLink {
                        held,
                        since: Instant::now(),
                    },
                );
            }
            Outcome::Broken(reason) => {
                debug!(peer = %peer.fmt_short(), mesh = %mesh, "admission broken off: {reason}");
                self.deferred.push_back(InEvent::PeerRefused { mesh, peer });
            }
            Outcome::Failed(reason) => self.refuse(peer, &mesh, reason),
        }
    }

    /// Marks a peer refused in a mesh: the core drops it there, the application hears why.
    fn refuse(&mut self, peer: PeerId, mesh: &MeshId, reason: AuthFailure) {
        // The application gets the event; the log need not shout it a second time.
        info!(peer = %peer.fmt_short(), mesh = %mesh, "authentication failed: {reason}");
        self.admission.states.insert(
            (peer, mesh.clone()),
            State::Refused {
                until: Instant::now() + RETRY_AFTER,
            },
        );
        self.count(mesh, |c| &c.refused);
        self.deferred.push_back(InEvent::PeerRefused {
            mesh: mesh.clone(),
            peer,
        });
        if let Some(runtime) = self.meshes.get(mesh) {
            runtime
                .shared
                .emit(Event::AuthenticationFailed { peer, reason });
        }
    }

    fn on_hello(
        &mut self,
        peer: PeerId,
        conn_id: u64,
        conn: quinn::Connection,
        hello: Hello,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        let mesh = hello.mesh.clone();
        if hello.version != VERSION {
            return admission::refuse(send, Refusal::Version(VERSION));
        }
        if !self.meshes.contains_key(&mesh) {
            return admission::refuse(send, Refusal::NotMember);
        }
        let Some(guard) = self.admission.guards.get(&mesh).cloned() else {
            // We are in the mesh, open: a node with a password (or certificates) and one
            // without never link.
            admission::refuse(send, Refusal::Mode(SecurityMode::Open));
            let reason = AuthFailure::ModeMismatch {
                ours: SecurityMode::Open,
                theirs: hello.mode,
            };
            if !self.recently_refused(peer, &mesh) {
                self.refuse(peer, &mesh, reason);
            }
            return;
        };
        let ours = guard.security.mode();
        if hello.mode != ours {
            admission::refuse(send, Refusal::Mode(ours));
            let reason = AuthFailure::ModeMismatch {
                ours,
                theirs: hello.mode,
            };
            self.abandon(peer, &mesh);
            return self.refuse(peer, &mesh, reason);
        }
        let key = (peer, mesh.clone());
        let mut held = VecDeque::new();
        match self.admission.states.get_mut(&key) {
            Some(State::Refused { until }) if *until > Instant::now() => {
                return admission::refuse(
                    send,
                    Refusal::Reason("refused moments ago; try again later".into()),
                );
            }
            Some(State::Handshaking {
                initiator: true,
                held: waiting,
                task,
                ..
            }) => {
                // Crossing Hellos: the handshake started by the smaller peer id goes on.
                if self.me < peer {
                    return admission::refuse(send, Refusal::Crossing);
                }
                task.abort();
                held = std::mem::take(waiting);
            }
            Some(State::Handshaking {
                initiator: false, ..
            }) => return admission::refuse(send, Refusal::Crossing),
            Some(State::WaitingForLink { held: waiting, .. }) => held = std::mem::take(waiting),
            _ => {}
        }
        let attempt = self.next_attempt();
        let task = tokio::spawn(admission::respond(
            guard,
            conn,
            peer,
            attempt,
            hello,
            send,
            recv,
            self.reporter(),
        ))
        .abort_handle();
        self.admission.states.insert(
            key,
            State::Handshaking {
                conn_id,
                attempt,
                initiator: false,
                inbound: false,
                held,
                task,
            },
        );
    }

    /// Starts a handshake as initiator on the peer's current link, or dials it first.
    fn start_admission(&mut self, peer: PeerId, mesh: &MeshId) {
        let Some(guard) = self.admission.guards.get(mesh).cloned() else {
            return;
        };
        let link = self
            .peers
            .get(&peer)
            .and_then(|entry| entry.current(self.me, peer))
            .map(|link| (link.id, link.conn.clone()));
        let Some((conn_id, conn)) = link else {
            self.ensure_link(peer);
            return;
        };
        let key = (peer, mesh.clone());
        let held = match self.admission.states.get_mut(&key).and_then(State::held) {
            Some(held) => std::mem::take(held),
            None => VecDeque::new(),
        };
        let attempt = self.next_attempt();
        let task = tokio::spawn(admission::initiate(
            guard,
            conn,
            peer,
            attempt,
            self.reporter(),
        ))
        .abort_handle();
        self.admission.states.insert(
            key,
            State::Handshaking {
                conn_id,
                attempt,
                initiator: true,
                inbound: false,
                held,
                task,
            },
        );
    }

    /// Dials a peer that has no link, unless a dial is under way.
    fn ensure_link(&mut self, peer: PeerId) {
        let entry = self.peers.entry(peer).or_default();
        if !entry.links.is_empty() || entry.dialing {
            return;
        }
        if self.dial(peer) {
            if let Some(entry) = self.peers.get_mut(&peer) {
                entry.dialing = true;
            }
        } else {
            // No address for this peer: it cannot be reached.
            self.peers.remove(&peer);
            self.admission_dial_failed(peer);
            self.deferred.push_back(InEvent::PeerDisconnected { peer });
        }
    }

    /// Sends frames held for an admission on the peer's current link. They are few (bounded),
    /// so a full queue drops them like any other full queue.
    fn flush_held(&mut self, peer: PeerId, held: VecDeque<(Bytes, Lane)>) {
        let Some(link) = self
            .peers
            .get(&peer)
            .and_then(|entry| entry.current(self.me, peer))
        else {
            return;
        };
        for (frame, lane) in held {
            // Whether sending returns a value depends on the link's flow control; either way a
            // full queue drops the frame.
            #[allow(clippy::let_unit_value)]
            match lane {
                Lane::Control => {
                    let _ = link.send_control(frame);
                }
                Lane::Data => {
                    let _ = link.try_send_data(frame);
                }
            }
        }
    }

    /// Drops a handshake under way for (peer, mesh), if any.
    fn abandon(&mut self, peer: PeerId, mesh: &MeshId) {
        if let Some(State::Handshaking { task, .. }) =
            self.admission.states.get(&(peer, mesh.clone()))
        {
            task.abort();
        }
    }

    fn recently_refused(&self, peer: PeerId, mesh: &MeshId) -> bool {
        matches!(
            self.admission.states.get(&(peer, mesh.clone())),
            Some(State::Refused { until }) if *until > Instant::now()
        )
    }

    fn link_alive(&self, peer: PeerId, conn_id: u64) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|entry| entry.links.iter().any(|l| l.id == conn_id))
    }

    fn next_attempt(&mut self) -> u64 {
        self.admission.next_attempt += 1;
        self.admission.next_attempt
    }

    fn count(&self, mesh: &MeshId, counter: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) {
        if let Some(runtime) = self.meshes.get(mesh) {
            Counters::bump(counter(&runtime.shared.security));
        }
    }

    fn reporter(&self) -> Reporter {
        let internal = self.internal_tx.clone();
        Arc::new(move |event| {
            let _ = internal.send(Internal::Admission(event));
        })
    }
}
