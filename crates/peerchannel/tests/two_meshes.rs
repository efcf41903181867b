//! One node in two meshes at once: the meshes are independent, over shared links.

use crate::common;

use common::*;
use peerchannel::{MeshOptions, RecvError};

#[tokio::test]
async fn a_node_in_two_meshes_keeps_them_apart() {
    let a = node(&[]).await;
    let b = node(&[&a]).await;
    let a1 = a.join("first", MeshOptions::default()).await.unwrap();
    let a2 = a.join("second", MeshOptions::default()).await.unwrap();
    let b1 = b.join("first", MeshOptions::default()).await.unwrap();
    let b2 = b.join("second", MeshOptions::default()).await.unwrap();
    let mut a1c = a1.raw_channel("news").unwrap();
    let mut a2c = a2.raw_channel("news").unwrap();
    let b1c = b1.raw_channel("news").unwrap();
    let b2c = b2.raw_channel("news").unwrap();
    neighbors_at_least(&a1, 1).await;
    neighbors_at_least(&a2, 1).await;

    b1c.send(&b"in the first"[..]).await.unwrap();
    b2c.send(&b"in the second"[..]).await.unwrap();
    let got1 = within("the first mesh's message", a1c.recv())
        .await
        .unwrap();
    let got2 = within("the second mesh's message", a2c.recv())
        .await
        .unwrap();
    assert_eq!(&got1.body[..], b"in the first");
    assert_eq!(&got2.body[..], b"in the second");

    // Leaving one mesh leaves the other working, over the same link.
    a1.leave().await.unwrap();
    assert_eq!(a1c.recv().await, Err(RecvError::Closed));
    b2c.send(&b"still here"[..]).await.unwrap();
    let got = within("the second mesh after leaving the first", a2c.recv())
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"still here");
    assert!(
        a.join("first", MeshOptions::default()).await.is_ok(),
        "a left mesh can be joined again"
    );
    assert!(matches!(
        a.join("second", MeshOptions::default()).await,
        Err(peerchannel::JoinError::AlreadyJoined(_))
    ));
    a.shutdown().await;
    b.shutdown().await;
}
