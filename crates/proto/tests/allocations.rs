//! How often the message path allocates: counted, not timed.
//!
//! Every allocation on the path of a message costs at every node it crosses, and a profile of
//! the benchmark found six or seven per delivery, most of them avoidable (a mesh id and a
//! payload copied out of every frame, output vectors made anew for every input). These tests
//! pin down what was removed: decoding a frame of a known mesh allocates nothing, and a node
//! that receives, delivers and stores a flow of messages allocates only now and then (when a
//! block of ids or a map fills), not per message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerchannel_proto::wire::{self, DEFAULT_MAX_FRAME};
use peerchannel_proto::{
    BroadcastOptions, Config, InEvent, MeshId, Message, OutEvent, PeerInfo, State,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The system allocator, counting the allocations made on each thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; the counter is a
// thread-local `Cell` that needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations `f` makes on this thread, and what it returns.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let value = f();
    (ALLOCATIONS.with(Cell::get) - before, value)
}

fn mesh() -> MeshId {
    MeshId::new("soccerpals").expect("a valid mesh id")
}

/// `count` gossip frames from one origin, back to back, as a link's stream carries them.
fn gossip_frames(count: u64, payload: usize) -> Vec<u8> {
    use peerchannel_proto::{BroadcastMessage, Gossip, GossipKind, MeshMessage, MessageId};
    let mut stream = Vec::new();
    for seq in 0..count {
        let message = Message {
            mesh: mesh(),
            body: MeshMessage::Broadcast(BroadcastMessage::Gossip(Gossip {
                id: MessageId {
                    origin: [7u8; 32],
                    seq,
                },
                hops: 2,
                hop_limit: None,
                kind: GossipKind::App,
                payload: Bytes::from(vec![seq as u8; payload]),
            })),
        };
        wire::encode_frame(&message, DEFAULT_MAX_FRAME, &mut stream).expect("a frame encodes");
    }
    stream
}

#[test]
fn decoding_frames_of_a_known_mesh_allocates_nothing() {
    let stream = gossip_frames(64, 1024);
    let mut buf = BytesMut::from(&stream[..]);
    // The first frame: the mesh id is new to this thread, and the buffer becomes shared.
    let first = wire::decode_frame_shared::<Message<[u8; 32]>>(&mut buf, DEFAULT_MAX_FRAME)
        .expect("a valid frame")
        .expect("a whole frame");
    let mut decoded = Vec::with_capacity(64);
    decoded.push(first);
    let (allocated, ()) = allocations(|| {
        while let Some(message) =
            wire::decode_frame_shared::<Message<[u8; 32]>>(&mut buf, DEFAULT_MAX_FRAME)
                .expect("valid frames")
        {
            decoded.push(message);
        }
    });
    assert_eq!(decoded.len(), 64);
    assert_eq!(allocated, 0, "decoding 63 frames allocated");
    assert!(buf.is_empty());

    // The copying decoder, for contrast, allocates for every payload: the counter counts.
    let (copying, _) = allocations(|| {
        let mut rest = &stream[..];
        while let Some((_, used)) =
            wire::decode_frame::<Message<[u8; 32]>>(rest, DEFAULT_MAX_FRAME).expect("valid")
        {
            rest = &rest[used..];
        }
    });
    assert!(
        copying >= 64,
        "the copying decoder allocated {copying} times"
    );
}

#[test]
fn a_flow_of_messages_is_received_without_allocating_per_message() {
    let now = Instant::now();
    let rng = |seed| ChaCha8Rng::seed_from_u64(seed);
    let mut sender = State::new(1u32, None, rng(1));
    let mut receiver = State::new(2u32, None, rng(2));
    sender
        .join(mesh(), Config::default(), vec![], now)
        .expect("joins");
    receiver
        .join(mesh(), Config::default(), vec![PeerInfo::new(1)], now)
        .expect("joins");
    // The two become neighbors.
    let mut t = now;
    for _ in 0..20 {
        t += Duration::from_millis(10);
        exchange(&mut sender, &mut receiver, t);
        sender.handle_timeout(t);
        receiver.handle_timeout(t);
    }
    assert_eq!(receiver.neighbors(&mesh()), Some(&[1u32][..]));

    // The sender's messages, as the receiver gets them (static payloads: cloning them, as
    // delivering does, allocates nothing, as with the links' shared payloads).
    let mut flow = Vec::new();
    for _ in 0..1_000 {
        sender
            .broadcast(
                &mesh(),
                Bytes::from_static(&[5; 1024]),
                BroadcastOptions::default(),
                t,
            )
            .expect("sent");
        while let Some(event) = sender.poll_event() {
            if let OutEvent::SendMessage { to: 2, message } = event {
                flow.push(message);
            }
        }
    }
    assert_eq!(flow.len(), 1_000);
    let mut delivered = 0;
    let mut receive = |receiver: &mut State<u32, ChaCha8Rng>, message| {
        receiver.handle(InEvent::Message { from: 1, message }, t);
        while let Some(event) = receiver.poll_event() {
            delivered += usize::from(matches!(event, OutEvent::Deliver { .. }));
        }
    };
    let mut flow = flow.into_iter();
    // Warm-up: the store and the maps grow to their working size.
    for message in flow.by_ref().take(360) {
        receive(&mut receiver, message);
    }
    let (allocated, ()) = allocations(|| {
        for message in flow {
            receive(&mut receiver, message);
        }
    });
    assert_eq!(delivered, 1_000);
    // 640 messages: ten blocks of 64 ids. A new block in a map now and then (7 when this was
    // written), never one per message (647 with output vectors made anew per input).
    assert!(
        allocated <= 32,
        "640 messages received with {allocated} allocations"
    );
}

/// Hands each node's messages for the other to it, until neither has anything to say.
fn exchange(a: &mut State<u32, ChaCha8Rng>, b: &mut State<u32, ChaCha8Rng>, now: Instant) {
    loop {
        let from_a: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
        let from_b: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        if from_a.is_empty() && from_b.is_empty() {
            return;
        }
        for (from, events, to) in [(1, from_a, &mut *b), (2, from_b, &mut *a)] {
            for event in events {
                if let OutEvent::SendMessage { message, .. } = event {
                    to.handle(InEvent::Message { from, message }, now);
                }
            }
        }
    }
}
