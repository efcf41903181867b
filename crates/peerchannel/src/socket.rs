//! The node's UDP socket, with a switch that makes the node fall silent as if it had crashed.
//!
//! A crash must look like one from the outside: no QUIC close, no acknowledgement, nothing.
//! Closing connections or the endpoint would tell the peers goodbye, so instead the socket
//! itself stops sending and drops everything it receives; the peers then notice only through
//! their idle timeout, as they would for a killed process. Used by [`crate::Node::crash`] (the
//! demo and the failure tests); it costs one atomic load per datagram otherwise.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

/// A UDP socket that can be silenced for good.
pub(crate) struct KillableSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    dead: AtomicBool,
}

impl KillableSocket {
    /// Binds a UDP socket at `addr` for quinn on tokio.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Arc<Self>> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(Self {
            inner,
            dead: AtomicBool::new(false),
        }))
    }

    /// From now on, nothing is sent and everything received is dropped.
    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Release);
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

impl fmt::Debug for KillableSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KillableSocket")
            .field("dead", &self.is_dead())
            .finish()
    }
}

impl AsyncUdpSocket for KillableSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.is_dead() {
            // Pretend it went out: a crashed host's packets are simply never seen.
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let polled = self.inner.poll_recv(cx, bufs, meta);
            if !self.is_dead() {
                return polled;
            }
            match polled {
                // Drain and drop; keep polling so the waker stays registered.
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
