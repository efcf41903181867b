//! A node that dies without a goodbye is noticed through the link timeout (about 3 s), the
//! mesh repairs, and the others keep exchanging messages.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use peerchannel::{DisconnectReason, Event, MeshOptions};

#[tokio::test]
async fn a_crashed_node_is_noticed_and_routed_around() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let c = node(&[&a, &b]).await;
    let d = node(&[&a, &b]).await;
    let ma = a.join("crash", MeshOptions::default()).await.unwrap();
    let mb = b.join("crash", MeshOptions::default()).await.unwrap();
    let mc = c.join("crash", MeshOptions::default()).await.unwrap();
    let md = d.join("crash", MeshOptions::default()).await.unwrap();
    for m in [&ma, &mb, &mc, &md] {
        neighbors_at_least(m, 2).await;
    }
    let mut events = mb.events();
    let mut cb = mb.raw_channel("x").unwrap();
    let mut cc = mc.raw_channel("x").unwrap();
    let cd = md.raw_channel("x").unwrap();

    let crashed = Instant::now();
    a.crash();
    let down = event(
        &mut events,
        |e| matches!(e, Event::NeighborDown(p, _) if *p == a.peer_id()),
    )
    .await;
    let noticed = crashed.elapsed();
    assert_eq!(
        down,
        Event::NeighborDown(a.peer_id(), DisconnectReason::LinkLost)
    );
    assert!(
        noticed >= Duration::from_millis(1500) && noticed < Duration::from_secs(8),
        "noticed after {noticed:?}: a crash is noticed by the idle timeout (3 s)"
    );
    for (name, m) in [("b", &mb), ("c", &mc), ("d", &md)] {
        within(&format!("{name} to drop the dead node"), async {
            while m.neighbors().await.unwrap().contains(&a.peer_id()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
    cd.send(&b"after the crash"[..]).await.unwrap();
    assert_eq!(
        &within("b's copy", cb.recv()).await.unwrap().body[..],
        b"after the crash"
    );
    assert_eq!(
        &within("c's copy", cc.recv()).await.unwrap().body[..],
        b"after the crash"
    );
    for n in [b, c, d] {
        n.shutdown().await;
    }
}
