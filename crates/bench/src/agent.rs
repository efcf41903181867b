//! One node as the harness drives it: a peerchannel node in the benchmark mesh, a sender,
//! and (on receivers) a task that reads every message and records it.
//!
//! The same agent runs inside the harness's process (the default) or in a node process of
//! its own (`--processes`, see [`crate::child`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerchannel::resolver::ServiceResolver;
use peerchannel::{
    Event, Identity, Mesh, MeshOptions, Node, NodeConfig, RawChannel, RecvError, SendStatus,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock::{now_ns, secs_to_ns};
use crate::payload::{self, Header, Phase};
use crate::record::{PhaseRecord, ReceiverReport, TIMELINE_BUCKET_NS};

/// The mesh every node joins, and the channel path the messages travel on.
pub const MESH_ADDRESS: &str = "net.p2p://bench/data";

/// The channel path inside the mesh.
const PATH: &str = "data";

/// What a sender is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SendPlan {
    /// The phase the messages belong to.
    pub phase: Phase,
    /// How long to send.
    pub secs: f64,
    /// Messages per second; `None` for as fast as backpressure allows.
    pub rate: Option<f64>,
}

/// What a sender did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReport {
    /// Messages handed to `send` (sequence numbers `0..sent`).
    pub sent: u64,
    /// Of those, how many the mesh queued because it was offline.
    pub queued: u64,
    /// Of those, how many `send` refused.
    pub failed: u64,
    /// When sending started, on the shared clock.
    pub start_ns: u64,
    /// When sending stopped.
    pub end_ns: u64,
    /// The first sequence number sent in each timeline bucket: (bucket, seq).
    pub marks: Vec<(u64, u64)>,
}

impl SendReport {
    /// The first sequence number sent at or after `at_ns` (`sent` if none was).
    pub fn seq_at(&self, at_ns: u64) -> u64 {
        let bucket = at_ns.div_ceil(TIMELINE_BUCKET_NS);
        self.marks
            .iter()
            .find(|(b, _)| *b >= bucket)
            .map_or(self.sent, |(_, seq)| *seq)
    }
}

/// The protocol counters the harness reads (a copy of part of the mesh's `MeshStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Distinct messages received from neighbors.
    pub received: u64,
    /// Copies received of messages already seen.
    pub duplicates: u64,
    /// Full messages sent.
    pub gossip_sent: u64,
    /// Message ids announced lazily.
    pub ihave_sent: u64,
    /// Bytes of lazy announcements.
    pub ihave_bytes: u64,
    /// Grafts sent.
    pub grafts_sent: u64,
    /// Grafts held back (the tree was still bringing the origin's messages, or too many
    /// were unanswered).
    pub grafts_deferred: u64,
    /// Announcements ignored (too many ids awaited at once, or too long a batch).
    pub announcements_dropped: u64,
    /// Announced messages given up on (every announcer asked, none had it any more).
    pub lost: u64,
    /// Resumes sent (also in `grafts_sent`): an origin's messages stopped coming and a
    /// neighbor was asked for all of them from the first one missing.
    pub resumes_sent: u64,
    /// Stored messages sent answering resumes (also in `gossip_sent`).
    pub resumed: u64,
    /// Prunes sent.
    pub prunes_sent: u64,
    /// Messages neighbors asked for that were no longer stored.
    pub unanswerable: u64,
    /// Announcements ignored as older than the duplicate cache remembers.
    pub stale_ignored: u64,
}

impl Counters {
    /// What changed from `before` to `self`.
    pub fn since(&self, before: &Counters) -> Counters {
        self.combine(before, u64::saturating_sub)
    }

    /// The sum of two.
    pub fn plus(&self, other: &Counters) -> Counters {
        self.combine(other, |a, b| a + b)
    }

    /// `op` applied field by field.
    fn combine(&self, other: &Counters, op: impl Fn(u64, u64) -> u64) -> Counters {
        Counters {
            received: op(self.received, other.received),
            duplicates: op(self.duplicates, other.duplicates),
            gossip_sent: op(self.gossip_sent, other.gossip_sent),
            ihave_sent: op(self.ihave_sent, other.ihave_sent),
            ihave_bytes: op(self.ihave_bytes, other.ihave_bytes),
            grafts_sent: op(self.grafts_sent, other.grafts_sent),
            grafts_deferred: op(self.grafts_deferred, other.grafts_deferred),
            announcements_dropped: op(self.announcements_dropped, other.announcements_dropped),
            lost: op(self.lost, other.lost),
            resumes_sent: op(self.resumes_sent, other.resumes_sent),
            resumed: op(self.resumed, other.resumed),
            prunes_sent: op(self.prunes_sent, other.prunes_sent),
            unanswerable: op(self.unanswerable, other.unanswerable),
            stale_ignored: op(self.stale_ignored, other.stale_ignored),
        }
    }
}

/// Mesh events seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Times the mesh came online.
    pub online: u64,
    /// Times it went offline.
    pub offline: u64,
    /// Links to neighbors that came up.
    pub neighbor_up: u64,
    /// Links to neighbors that went down.
    pub neighbor_down: u64,
}

/// One node of the benchmark mesh.
pub struct Agent {
    node: Node,
    mesh: Mesh,
    sender: RawChannel,
    size: usize,
    recorder: Arc<Mutex<Recorder>>,
    health: Arc<Mutex<Health>>,
}

#[derive(Default)]
struct Recorder {
    phases: BTreeMap<Phase, PhaseRecord>,
    /// Messages the channel dropped, by the phase of the message received last before.
    lagged: BTreeMap<Phase, u64>,
    /// The phase of the message received last.
    current: Option<Phase>,
}

/// Messages a node's channels hold for a reader that is behind. The default (1,024, a tenth of
/// a second at full load) let the harness's own receivers, starved of CPU for a moment among
/// ten busy nodes on two cores, drop thousands of messages per phase that the mesh had
/// delivered: the harness must not be what it measures. The cost shows in the RSS under load:
/// a channel keeps its last messages until they are overwritten (8 MiB of 1 KiB payloads per
/// node, some of them shared with the node's store).
const CHANNEL_CAPACITY: usize = 8_192;

impl Agent {
    /// Starts a node on 127.0.0.1 that finds the mesh through the resolver at `resolver_url`;
    /// a receiver records every message that arrives. Must run on the runtime the node
    /// should live on.
    ///
    /// With `sign`, every message is signed by its origin and checked by every receiver (the
    /// cost of end-to-end signatures).
    pub async fn start(
        resolver_url: &str,
        size: usize,
        receive: bool,
        sign: bool,
    ) -> anyhow::Result<Self> {
        let mut config = NodeConfig::default()
            .listen("127.0.0.1:0".parse()?)
            .resolver(Arc::new(ServiceResolver::new(resolver_url)?));
        config.channel_capacity = CHANNEL_CAPACITY;
        let node = Node::bind(Identity::generate()?, config).await?;
        let options = if sign {
            MeshOptions::default().signed()
        } else {
            MeshOptions::default()
        };

        let mesh = node.join(MESH_ADDRESS, options).await?;
        let health = Arc::new(Mutex::new(Health::default()));
        tokio::spawn(watch(mesh.events(), health.clone()));
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        if receive {
            tokio::spawn(receive_loop(mesh.raw_channel(PATH)?, recorder.clone()));
        }
        let sender = mesh.raw_channel(PATH)?;
        Ok(Self {
            node,
            mesh,
            sender,
            size,
            recorder,
            health,
        })
    }

    /// How many neighbors the node has.
    pub async fn neighbors(&self) -> anyhow::Result<usize> {
        Ok(self.mesh.neighbors().await?.len())
    }

    /// The protocol's counters.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let Some(s) = self.mesh.stats().await? else {
            return Ok(Counters::default());
        };
        Ok(Counters {
            received: s.broadcast.received,
            duplicates: s.broadcast.duplicates,
            gossip_sent: s.broadcast.gossip_sent,
            ihave_sent: s.broadcast.ihave_sent,
            ihave_bytes: s.broadcast.ihave_bytes,
            grafts_sent: s.broadcast.grafts_sent,
            grafts_deferred: s.broadcast.grafts_deferred,
            announcements_dropped: s.broadcast.announcements_dropped,
            lost: s.broadcast.lost,
            resumes_sent: s.broadcast.resumes_sent,
            resumed: s.broadcast.resumed,
            prunes_sent: s.broadcast.prunes_sent,
            unanswerable: s.broadcast.unanswerable,
            stale_ignored: s.broadcast.stale_ignored,
        })
    }

    /// Mesh events so far.
    pub fn health(&self) -> Health {
        *lock(&self.health)
    }

    /// Distinct messages of `phase` received so far.
    pub fn count(&self, phase: Phase) -> u64 {
        lock(&self.recorder)
            .phases
            .get(&phase)
            .map_or(0, PhaseRecord::unique)
    }

    /// What arrived in `phase`.
    pub fn report(&self, phase: Phase) -> ReceiverReport {
        let recorder = lock(&self.recorder);
        let lagged = recorder.lagged.get(&phase).copied().unwrap_or(0);
        recorder
            .phases
            .get(&phase)
            .map(|r| r.report(lagged))
            .unwrap_or_else(|| PhaseRecord::default().report(lagged))
    }

    /// Sends as the plan says, and reports what was sent.
    pub async fn send(&self, plan: SendPlan) -> SendReport {
        let start = now_ns();
        let deadline = start + secs_to_ns(plan.secs);
        let mut report = SendReport {
            start_ns: start,
            ..SendReport::default()
        };
        let mut seq = 0;
        loop {
            let now = now_ns();
            if now >= deadline {
                break;
            }
            if let Some(rate) = plan.rate {
                let due = start + secs_to_ns(seq as f64 / rate);
                if due > now {
                    tokio::time::sleep(Duration::from_nanos(due - now)).await;
                    continue;
                }
            }
            let bucket = now / TIMELINE_BUCKET_NS;
            if report.marks.last().is_none_or(|(b, _)| *b < bucket) {
                report.marks.push((bucket, seq));
            }
            let header = Header {
                phase: plan.phase,
                seq,
                sent_ns: now_ns(),
            };
            match self.sender.send(payload::make(header, self.size)).await {
                Ok(SendStatus::Sent) => {}
                Ok(SendStatus::Queued) => report.queued += 1,
                Err(_) => report.failed += 1,
            }
            seq += 1;
        }
        report.sent = seq;
        report.end_ns = now_ns();
        report
    }

    /// Leaves the mesh and stops the node.
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
    }
}

/// Reads every message on the channel and records it under its phase.
async fn receive_loop(mut channel: RawChannel, recorder: Arc<Mutex<Recorder>>) {
    loop {
        match channel.recv().await {
            Ok(received) => {
                let now = now_ns();
                if let Some(h) = payload::parse(&received.body) {
                    let mut recorder = lock(&recorder);
                    recorder.current = Some(h.phase);
                    recorder
                        .phases
                        .entry(h.phase)
                        .or_default()
                        .record(h.seq, h.sent_ns, now);
                }
            }
            Err(RecvError::Lagged(n)) => {
                let mut recorder = lock(&recorder);
                if let Some(phase) = recorder.current {
                    *recorder.lagged.entry(phase).or_default() += n;
                }
            }
            Err(RecvError::Closed) => return,
            // Undecodable messages cannot happen on a raw channel; anything new is skipped.
            Err(_) => {}
        }
    }
}

/// Counts the mesh's events.
async fn watch(mut events: broadcast::Receiver<Event>, health: Arc<Mutex<Health>>) {
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let mut h = lock(&health);
        match event {
            Event::Online => h.online += 1,
            Event::Offline => h.offline += 1,
            Event::NeighborUp(_) => h.neighbor_up += 1,
            Event::NeighborDown(..) => h.neighbor_down += 1,
            _ => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The harness's records stay consistent even if a holder panicked (single updates).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_map_times_to_sequence_numbers() {
        let report = SendReport {
            sent: 300,
            marks: vec![(10, 0), (11, 100), (13, 200)],
            ..SendReport::default()
        };
        assert_eq!(report.seq_at(10 * TIMELINE_BUCKET_NS), 0);
        assert_eq!(report.seq_at(10 * TIMELINE_BUCKET_NS + 1), 100);
        assert_eq!(report.seq_at(12 * TIMELINE_BUCKET_NS), 200);
        assert_eq!(report.seq_at(14 * TIMELINE_BUCKET_NS), 300);
    }

    #[test]
    fn counters_subtract_and_add() {
        let a = Counters {
            received: 10,
            duplicates: 2,
            ihave_bytes: 100,
            ..Counters::default()
        };
        let b = Counters {
            received: 4,
            duplicates: 1,
            ihave_bytes: 40,
            ..Counters::default()
        };
        assert_eq!(a.since(&b).received, 6);
        assert_eq!(a.since(&b).ihave_bytes, 60);
        assert_eq!(a.plus(&b).duplicates, 3);
        assert_eq!(b.since(&a), Counters::default(), "never negative");
    }
}
