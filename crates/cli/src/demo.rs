//! `peerchannel demo`: a resolver and a mesh of nodes in one process, on loopback. They come
//! online, talk, lose a node without a goodbye, repair the mesh, talk again, and the demo
//! prints what happened. It fails (exit code 1) if a message missed a live node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use peerchannel::resolver::ServiceResolver;
use peerchannel::{Event, Identity, Mesh, MeshOptions, Node, NodeConfig, PeerId};
use peerchannel_resolver::{ResolverConfig, ResolverServer};
use serde::{Deserialize, Serialize};

/// The mesh the demo uses.
const ADDRESS: &str = "net.p2p://demo/chat";

/// How long each step may take before the demo gives up.
const STEP_LIMIT: Duration = Duration::from_secs(15);

/// A pause between lines, so a person can follow.
const PACE: Duration = Duration::from_millis(150);

const NAMES: [&str; 12] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj",
];

const BEFORE: [(usize, &str); 8] = [
    (0, "hi everyone, is this thing on?"),
    (1, "loud and clear, alice"),
    (2, "no server in sight, and yet here we all are"),
    (4, "every line reaches every one of us"),
    (3, "I am dave, and I am about to crash"),
    (5, "we will route around you, dave"),
    (6, "the tree follows the fastest links"),
    (7, "and repairs itself when a node goes"),
];

const AFTER: [(usize, &str); 4] = [
    (
        1,
        "dave has gone quiet: his links will time out in about 3 s",
    ),
    (0, "still here, and the mesh has healed"),
    (6, "every live node got every line"),
    (2, "goodbye for now!"),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many nodes (3 to 12).
    #[arg(long, default_value_t = 8)]
    nodes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    seq: u64,
    speaker: String,
    text: String,
}

/// Who received what, and when: filled by the receiving tasks.
#[derive(Default)]
struct Tracker {
    sent: BTreeMap<u64, Instant>,
    received: BTreeMap<u64, BTreeMap<usize, Instant>>,
    duplicates: u64,
}

struct DemoNode {
    name: &'static str,
    node: Node,
    mesh: Mesh,
    channel: peerchannel::Channel<Line>,
    alive: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(3..=NAMES.len()).contains(&args.nodes) {
        bail!("--nodes must be between 3 and {}", NAMES.len());
    }
    let started = Instant::now();
    let resolver = ResolverServer::bind("127.0.0.1:0".parse()?, ResolverConfig::relaxed())
        .await
        .context("cannot start the embedded resolver")?;
    println!(
        "peerchannel demo: a resolver at {} and {} nodes on 127.0.0.1",
        resolver.url(),
        args.nodes
    );
    println!("mesh {ADDRESS}\n");

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let mut nodes = Vec::new();
    let mut names_by_peer = BTreeMap::new();
    for (i, name) in NAMES.iter().take(args.nodes).enumerate() {
        let config = NodeConfig::default()
            .listen("127.0.0.1:0".parse()?)
            .resolver(Arc::new(ServiceResolver::new(&resolver.url())?));
        let node = Node::bind(Identity::generate()?, config).await?;
        let mesh = node.join(ADDRESS, MeshOptions::default()).await?;
        let channel = mesh.channel::<Line>("chat")?;
        names_by_peer.insert(node.peer_id(), *name);
        let receiver = mesh.channel::<Line>("chat")?;
        spawn_receiver(i, receiver, tracker.clone());
        nodes.push(DemoNode {
            name,
            node,
            mesh,
            channel,
            alive: true,
        });
    }
    let names_by_peer = Arc::new(names_by_peer);

    // Online.
    let waits = nodes.iter().map(|n| wait_online(n.name, n.mesh.clone()));
    for result in join_all(waits).await {
        let (name, after) = result?;
        println!("** {name:<8} online after {:>4} ms", after.as_millis());
    }
    settle(&nodes, args.nodes - 1).await;
    println!();

    // Talk.
    let mut seq = 0;
    for (speaker, text) in BEFORE {
        say(&nodes, &tracker, &mut seq, speaker % nodes.len(), text).await?;
    }

    // Crash one node, and talk before anyone has noticed.
    let victim = 3 % nodes.len();
    println!(
        "\n** {} crashes: no goodbye, its links just go silent",
        nodes[victim].name
    );
    let crashed_at = Instant::now();
    nodes[victim].node.crash();
    nodes[victim].alive = false;
    let mut down = Vec::new();
    for n in nodes.iter().filter(|n| n.alive) {
        down.push(n.mesh.events());
    }
    say(
        &nodes,
        &tracker,
        &mut seq,
        0,
        "did everyone get this, even across dave's old links?",
    )
    .await?;

    // Repair: every live node drops the dead one and the mesh is connected again.
    let victim_id = nodes[victim].node.peer_id();
    let repaired = tokio::time::timeout(STEP_LIMIT, async {
        loop {
            if repaired(&nodes, victim_id).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if repaired.is_err() {
        bail!("the mesh did not repair within {STEP_LIMIT:?}");
    }
    let mut noticed = 0;
    for mut events in down {
        while let Ok(e) = events.try_recv() {
            if matches!(e, Event::NeighborDown(p, _) if p == victim_id) {
                noticed += 1;
            }
        }
    }
    println!(
        "** mesh repaired {:.1} s after the crash: {noticed} former neighbors noticed the silence, every live node is connected\n",
        crashed_at.elapsed().as_secs_f64()
    );
    for (speaker, text) in AFTER {
        say(&nodes, &tracker, &mut seq, speaker % nodes.len(), text).await?;
    }

    // Summary.
    let live: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].alive).collect();
    let mut duplicates = 0;
    for i in &live {
        if let Ok(Some(stats)) = nodes[*i].mesh.stats().await {
            duplicates += stats.broadcast.duplicates;
        }
    }
    let (complete, deliveries, histogram) = {
        let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
        let mut histogram = Histogram::<u64>::new(3).context("histogram")?;
        let mut complete = 0;
        let mut deliveries = 0;
        for (seq, sent) in &t.sent {
            let got = t.received.get(seq).cloned().unwrap_or_default();
            deliveries += got.len();
            for at in got.values() {
                let _ = histogram.record(at.duration_since(*sent).as_micros() as u64);
            }
            if live
                .iter()
                .all(|i| got.contains_key(i) || sender_of(&t, *seq) == Some(*i))
            {
                complete += 1;
            }
        }
        (complete, deliveries, histogram)
    };
    println!("\nsummary");
    println!("  messages sent:                  {seq}");
    println!("  delivered to every live node:   {complete} of {seq} ({deliveries} deliveries)");
    println!(
        "  duplicate copies received:      {duplicates} (across live nodes, all protocol traffic)"
    );
    println!(
        "  delivery latency:               median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    );
    println!("  neighbors:");
    for i in &live {
        let n = &nodes[*i];
        let mut names: Vec<&str> = n
            .mesh
            .neighbors()
            .await?
            .iter()
            .map(|p| *names_by_peer.get(p).unwrap_or(&"?"))
            .collect();
        names.sort_unstable();
        println!("    {:<8} {}", n.name, names.join(", "));
    }
    println!(
        "  time:                           {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let shutdowns = nodes.iter().filter(|n| n.alive).map(|n| n.node.shutdown());
    join_all(shutdowns).await;
    let _ = resolver.shutdown().await;
    if complete != seq {
        bail!("{} messages missed a live node", seq - complete);
    }
    Ok(())
}

fn sender_of(t: &Tracker, seq: u64) -> Option<usize> {
    // Senders never receive their own line; `say` records the sender under this key.
    t.received
        .get(&seq)
        .and_then(|m| m.iter().find(|(_, at)| t.sent.get(&seq) == Some(at)))
        .map(|(i, _)| *i)
}

fn spawn_receiver(
    index: usize,
    mut channel: peerchannel::Channel<Line>,
    tracker: Arc<Mutex<Tracker>>,
) {
    tokio::spawn(async move {
        while let Ok((_, line)) = channel.recv().await {
            let now = Instant::now();
            let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
            let got = t.received.entry(line.seq).or_default();
            if got.insert(index, now).is_some() {
                t.duplicates += 1;
            }
        }
    });
}

/// One line of the conversation: sent, then checked at every live node.
async fn say(
    nodes: &[DemoNode],
    tracker: &Arc<Mutex<Tracker>>,
    seq: &mut u64,
    speaker: usize,
    text: &str,
) -> anyhow::Result<()> {
    let speaker = if nodes[speaker].alive {
        speaker
    } else {
        (speaker + 1) % nodes.len()
    };
    let n = &nodes[speaker];
    *seq += 1;
    let line = Line {
        seq: *seq,
        speaker: n.name.into(),
        text: text.into(),
    };
    let sent_at = Instant::now();
    {
        let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
        t.sent.insert(*seq, sent_at);
        // The speaker's own receiving channel sees the line locally: not a delivery.
        t.received.entry(*seq).or_default().insert(speaker, sent_at);
    }
    n.channel.send(&line).await?;
    let others: BTreeSet<usize> = (0..nodes.len())
        .filter(|i| *i != speaker && nodes[*i].alive)
        .collect();
    let deadline = Instant::now() + STEP_LIMIT;
    let last = loop {
        let (got, last) = {
            let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
            let r = t.received.get(seq).cloned().unwrap_or_default();
            let got = others.iter().filter(|i| r.contains_key(i)).count();
            let last = others.iter().filter_map(|i| r.get(i)).max().copied();
            (got, last)
        };
        if got == others.len() {
            break last.unwrap_or(sent_at);
        }
        if Instant::now() > deadline {
            bail!(
                "\"{text}\" reached {got} of {} nodes within {STEP_LIMIT:?}",
                others.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    println!(
        "{:>8}: {text:<58} [{}/{} in {:.1} ms]",
        n.name,
        others.len(),
        others.len(),
        last.duration_since(sent_at).as_secs_f64() * 1000.0
    );
    tokio::time::sleep(PACE).await;
    Ok(())
}

async fn wait_online(name: &'static str, mesh: Mesh) -> anyhow::Result<(&'static str, Duration)> {
    let started = Instant::now();
    let mut events = mesh.events();
    if mesh.is_online().await? {
        return Ok((name, started.elapsed()));
    }
    tokio::time::timeout(STEP_LIMIT, async {
        loop {
            match events.recv().await {
                Ok(Event::Online) => return Ok((name, started.elapsed())),
                Ok(_) => {}
                Err(_) if mesh.is_online().await? => return Ok((name, started.elapsed())),
                Err(e) => bail!("{name}: events ended: {e}"),
            }
        }
    })
    .await
    .with_context(|| format!("{name} did not come online within {STEP_LIMIT:?}"))?
}

/// Waits (briefly) until every node has a few neighbors, so the first lines show a formed
/// mesh rather than one still being wired.
async fn settle(nodes: &[DemoNode], others: usize) {
    let want = others.min(3);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut ok = true;
            for n in nodes {
                if n.mesh.neighbors().await.map(|v| v.len()).unwrap_or(0) < want {
                    ok = false;
                }
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Whether no live node still counts the dead one as a neighbor and the live nodes form one
/// connected graph.
async fn repaired(nodes: &[DemoNode], dead: PeerId) -> bool {
    let mut graph: BTreeMap<PeerId, Vec<PeerId>> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.alive) {
        let Ok(neighbors) = n.mesh.neighbors().await else {
            return false;
        };
        if neighbors.contains(&dead) {
            return false;
        }
        graph.insert(n.node.peer_id(), neighbors);
    }
    let Some(&first) = graph.keys().next() else {
        return true;
    };
    let mut seen = BTreeSet::from([first]);
    let mut stack = vec![first];
    while let Some(p) = stack.pop() {
        for q in graph.get(&p).into_iter().flatten() {
            if graph.contains_key(q) && seen.insert(*q) {
                stack.push(*q);
            }
        }
    }
    seen.len() == graph.len()
}
