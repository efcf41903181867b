//! mDNS discovery between nodes in one process, each test in a network namespace of its own
//! with only loopback (see `netns`): nodes find each other with no server, meshes advertise
//! independently, a leave withdraws the record, and hostile records change nothing.

use crate::common;
use crate::netns;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use peerchannel::resolver::{MdnsResolver, NearbyNode, RECORD_TTL, Resolver, SERVICE_TYPE};
use peerchannel::{Identity, MeshId, MeshOptions, Node, NodeConfig, PeerId};

use common::{neighbors_at_least, within};

/// The name of the helper test that runs the node to be killed, and the variable that tells
/// it to run.
const KILLED_NODE_HELPER: &str = "mdns::killed_node_helper";
const KILLED_NODE_ENV: &str = "PEERCHANNEL_TEST_KILLED_NODE";

/// How long past the TTL a killed node may stay listed: timers, and the last answer it gave.
const TTL_SLACK: Duration = Duration::from_secs(15);

/// How often the hostile sender repeats its packets while the nodes work.
const HOSTILE_REPEAT: Duration = Duration::from_millis(200);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A node on 127.0.0.1 that finds others with mDNS alone.
async fn mdns_node() -> Node {
    let resolver = Arc::new(MdnsResolver::new().unwrap());
    let config = NodeConfig::default()
        .listen("127.0.0.1:0".parse().unwrap())
        .resolver(resolver);
    Node::bind(Identity::generate().unwrap(), config)
        .await
        .unwrap()
}

/// Waits until `observer` lists what `want` accepts.
async fn until_nearby(
    observer: &MdnsResolver,
    what: &str,
    want: impl Fn(&[NearbyNode]) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut watch = observer.watch();
    within(what, async {
        loop {
            if want(&watch.borrow_and_update()) {
                return started.elapsed();
            }
            watch.changed().await.unwrap();
        }
    })
    .await
}

#[test]
fn nodes_find_each_other_with_mdns_alone() {
    netns::isolated("mdns::nodes_find_each_other_with_mdns_alone", || {
        runtime().block_on(async {
            let started = Instant::now();
            let nodes = [mdns_node().await, mdns_node().await, mdns_node().await];
            let mut meshes = Vec::new();
            for node in &nodes {
                meshes.push(
                    node.join("soccerpals", MeshOptions::default())
                        .await
                        .unwrap(),
                );
            }
            for mesh in &meshes {
                neighbors_at_least(mesh, 2).await;
            }
            println!("three nodes linked up in {:?}", started.elapsed());

            let mut inbox = meshes[1].channel::<String>("chat").unwrap();
            let mut inbox2 = meshes[2].channel::<String>("chat").unwrap();
            let outbox = meshes[0].channel::<String>("chat").unwrap();
            outbox.send(&"hello".to_owned()).await.unwrap();
            for inbox in [&mut inbox, &mut inbox2] {
                let (from, text) = within("the message", inbox.recv()).await.unwrap();
                assert_eq!((from, text.as_str()), (nodes[0].peer_id(), "hello"));
            }
            for node in &nodes {
                node.shutdown().await;
            }
        });
    });
}

#[test]
fn meshes_advertise_independently_and_leaving_withdraws() {
    netns::isolated(
        "mdns::meshes_advertise_independently_and_leaving_withdraws",
        || {
            runtime().block_on(async {
                let observer = MdnsResolver::new().unwrap();
                let node = mdns_node().await;
                let me = node.peer_id();
                let alpha = node.join("alpha", MeshOptions::default()).await.unwrap();
                let beta = node.join("beta", MeshOptions::default()).await.unwrap();
                let meshes_of_node = |list: &[NearbyNode]| -> Vec<String> {
                    list.iter()
                        .filter(|n| n.peer_id == me)
                        .map(|n| n.mesh.to_string())
                        .collect()
                };
                let took = until_nearby(&observer, "both meshes listed", |list| {
                    meshes_of_node(list) == ["alpha", "beta"]
                })
                .await;
                println!("both meshes advertised after {took:?}");
                let listed = observer.nearby();
                let instances: Vec<&str> = listed.iter().map(|n| n.instance.as_str()).collect();
                assert_ne!(instances[0], instances[1], "one instance per mesh");
                assert!(listed.iter().all(|n| n.addresses == node.addresses()));

                // The resolver answers per mesh.
                let found = observer
                    .resolve(&MeshId::new("beta").unwrap(), 8)
                    .await
                    .unwrap();
                assert_eq!(found.len(), 1);
                assert_eq!(found[0].peer_id, Some(me));

                let leaving = Instant::now();
                beta.leave().await.unwrap();
                until_nearby(&observer, "beta withdrawn", |list| {
                    meshes_of_node(list) == ["alpha"]
                })
                .await;
                println!(
                    "a left mesh disappeared {:?} after leave()",
                    leaving.elapsed()
                );

                let stopping = Instant::now();
                node.shutdown().await;
                drop(alpha);
                until_nearby(&observer, "alpha withdrawn", |list| {
                    meshes_of_node(list).is_empty()
                })
                .await;
                println!(
                    "a shut-down node disappeared {:?} after shutdown()",
                    stopping.elapsed()
                );
            });
        },
    );
}

#[test]
fn a_killed_node_expires_within_the_record_ttl() {
    netns::isolated("mdns::a_killed_node_expires_within_the_record_ttl", || {
        runtime().block_on(async {
            // No verification: only the records' TTL makes a dead node go, as in the nodes'
            // own resolvers.
            let observer = MdnsResolver::new().unwrap();
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([KILLED_NODE_HELPER, "--exact", "--ignored", "--nocapture"])
                .env(KILLED_NODE_ENV, "1")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let ready = tokio::task::spawn_blocking(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .find_map(|l| l.strip_prefix("ready ").map(str::to_owned))
            });
            let id: PeerId = within("the helper node", ready)
                .await
                .unwrap()
                .expect("the helper says ready")
                .parse()
                .unwrap();
            until_nearby(&observer, "the helper listed", |list| {
                list.iter().any(|n| n.peer_id == id)
            })
            .await;

            let killed = Instant::now();
            child.kill().unwrap();
            child.wait().unwrap();
            let gone = async {
                let mut watch = observer.watch();
                while watch.borrow_and_update().iter().any(|n| n.peer_id == id) {
                    watch.changed().await.unwrap();
                }
            };
            tokio::time::timeout(RECORD_TTL + TTL_SLACK, gone)
                .await
                .expect("the killed node's records expired");
            println!(
                "a killed node dropped out {:?} after it was killed (TTL {RECORD_TTL:?})",
                killed.elapsed()
            );
        });
    });
}

/// Not a test on its own: the node that `a_killed_node_expires_within_the_record_ttl` runs in
/// a child process and kills.
#[test]
#[ignore = "a helper process of a_killed_node_expires_within_the_record_ttl"]
fn killed_node_helper() {
    if std::env::var_os(KILLED_NODE_ENV).is_none() {
        return;
    }
    runtime().block_on(async {
        let node = mdns_node().await;
        let _mesh = node.join("doomed", MeshOptions::default()).await.unwrap();
        println!("ready {}", node.peer_id());
        std::future::pending::<()>().await;
    });
}

#[test]
fn hostile_records_are_ignored_without_disturbing_the_nodes() {
    netns::isolated(
        "mdns::hostile_records_are_ignored_without_disturbing_the_nodes",
        || {
            runtime().block_on(async {
                let observer = MdnsResolver::new().unwrap();
                let stop = Arc::new(AtomicBool::new(false));
                let sender = std::thread::spawn({
                    let stop = stop.clone();
                    move || {
                        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                        while !stop.load(Ordering::Relaxed) {
                            for packet in hostile_packets() {
                                // A full queue or a transient error is as good as a lost packet.
                                let _ = socket.send_to(&packet, ("224.0.0.251", 5353));
                            }
                            std::thread::sleep(HOSTILE_REPEAT);
                        }
                    }
                });

                // The nodes form a mesh and talk while the garbage keeps coming.
                let a = mdns_node().await;
                let b = mdns_node().await;
                let mesh_a = a.join("m", MeshOptions::default()).await.unwrap();
                let mesh_b = b.join("m", MeshOptions::default()).await.unwrap();
                neighbors_at_least(&mesh_a, 1).await;
                neighbors_at_least(&mesh_b, 1).await;
                let mut inbox = mesh_b.channel::<String>("chat").unwrap();
                let outbox = mesh_a.channel::<String>("chat").unwrap();
                outbox.send(&"still here".to_owned()).await.unwrap();
                let (_, text) = within("the message", inbox.recv()).await.unwrap();
                assert_eq!(text, "still here");

                // Only well-formed instances are listed: the two nodes and the impostor (whose
                // records are valid; the runtime's TLS check is what stops it).
                until_nearby(&observer, "the nodes and the impostor", |list| {
                    list.iter().any(|n| n.instance.starts_with("impostor"))
                        && list.iter().any(|n| n.peer_id == a.peer_id())
                        && list.iter().any(|n| n.peer_id == b.peer_id())
                })
                .await;
                let listed = observer.nearby();
                for node in listed.iter() {
                    assert!(!node.instance.starts_with("bad-"), "listed: {node:?}");
                    assert!(
                        node.addresses.iter().all(|a| a.port() != 0
                            && !a.ip().is_unspecified()
                            && !a.ip().is_multicast()),
                        "{node:?}"
                    );
                }
                assert_eq!(listed.len(), 3, "{listed:?}");
                assert!(
                    observer.ignored() > 0,
                    "the bad instances reached the checks"
                );
                println!("ignored {} malformed instances", observer.ignored());

                stop.store(true, Ordering::Relaxed);
                sender.join().unwrap();
                a.shutdown().await;
                b.shutdown().await;
            });
        },
    );
}

/// mDNS responses announcing malformed instances, an impostor with valid records, and
/// packets that are not DNS at all.
fn hostile_packets() -> Vec<Vec<u8>> {
    let id = Identity::generate().unwrap().peer_id().to_string();
    let id_txt = format!("id={id}");
    let lo = [Ipv4Addr::LOCALHOST];
    let good = |mesh: &str| {
        vec![
            b"v=1".to_vec(),
            format!("m={mesh}").into_bytes(),
            id_txt.clone().into_bytes(),
        ]
    };
    let huge: Vec<Vec<u8>> = (0..8)
        .map(|i| format!("k{i}={}", "x".repeat(200)).into_bytes())
        .chain(good("m"))
        .collect();
    let mut packets = vec![
        announce("impostor", 9, &good("m"), &lo),
        announce("bad-no-id", 9, &[b"m=m".to_vec()], &lo),
        announce(
            "bad-id",
            9,
            &[b"m=m".to_vec(), b"id=not-a-peer-id".to_vec()],
            &lo,
        ),
        announce(
            "bad-mesh",
            9,
            &[b"m=-x-".to_vec(), id_txt.clone().into_bytes()],
            &lo,
        ),
        announce(
            "bad-binary",
            9,
            &[b"m=\xff\xfe".to_vec(), id_txt.clone().into_bytes()],
            &lo,
        ),
        announce(
            "bad-version",
            9,
            &[
                b"v=9".to_vec(),
                b"m=m".to_vec(),
                id_txt.clone().into_bytes(),
            ],
            &lo,
        ),
        announce("bad-huge-txt", 9, &huge, &lo),
        announce("bad-port", 0, &good("m"), &lo),
        announce(
            "bad-addresses",
            9,
            &good("m"),
            &[
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::new(224, 0, 0, 1),
                Ipv4Addr::BROADCAST,
            ],
        ),
    ];
    // Not DNS: random bytes, a header promising records that are not there, and a name that
    // points at itself.
    packets.push((0..200u8).map(|i| i.wrapping_mul(37)).collect());
    packets.push(vec![0, 0, 0x84, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    let mut looped = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    looped.extend([0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 120, 0, 2, 0xc0, 12]);
    packets.push(looped);
    packets
}

/// An unsolicited mDNS response announcing `label` (PTR, SRV, TXT and A records).
fn announce(label: &str, port: u16, txt: &[Vec<u8>], addrs: &[Ipv4Addr]) -> Vec<u8> {
    let instance = format!("{label}.{SERVICE_TYPE}");
    let host = format!("{label}-host.local.");
    let mut out = vec![0, 0, 0x84, 0, 0, 0];
    out.extend(((3 + addrs.len()) as u16).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    record(&mut out, SERVICE_TYPE, 12, false, &encode_name(&instance));
    let mut srv = vec![0, 0, 0, 0];
    srv.extend(port.to_be_bytes());
    srv.extend(encode_name(&host));
    record(&mut out, &instance, 33, true, &srv);
    let mut strings = Vec::new();
    for s in txt {
        strings.push(s.len() as u8);
        strings.extend(s);
    }
    record(&mut out, &instance, 16, true, &strings);
    for addr in addrs {
        record(&mut out, &host, 1, true, &addr.octets());
    }
    out
}

fn record(out: &mut Vec<u8>, name: &str, rtype: u16, unique: bool, rdata: &[u8]) {
    out.extend(encode_name(name));
    out.extend(rtype.to_be_bytes());
    // Class IN, with the cache-flush bit for unique records.
    out.extend(if unique { [0x80, 1] } else { [0, 1] });
    out.extend(120u32.to_be_bytes());
    out.extend((rdata.len() as u16).to_be_bytes());
    out.extend(rdata);
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend(label.as_bytes());
    }
    out.push(0);
    out
}
