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

/// The receive buffer asked of the kernel for every link socket (Linux grants at most
/// `net.core.rmem_max`, doubled). Its default, about 208 KiB, holds some 150 full datagrams: a
/// few milliseconds of a busy link. When the endpoint's task is late to read (a busy machine),
/// the kernel drops what does not fit, and QUIC takes each loss for congestion and slows that
/// link down.
const RECV_BUFFER: usize = 2 << 20;

/// Binds a UDP socket for links: with a larger receive buffer where the system allows it.
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    // Best effort: with the default buffer, bursts only cost more loss.
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!("cannot enlarge the socket's receive buffer: {e}");
    }
    Ok(socket)
}

/// A UDP socket that can be silenced for good.
pub(crate) struct KillableSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    dead: AtomicBool,
}

impl KillableSocket {
    /// Binds a UDP socket at `addr` for quinn on tokio.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Arc<Self>> {
        let inner = quinn::TokioRuntime.wrap_udp_socket(bind_udp(addr)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux grants what is asked up to `net.core.rmem_max`, and reports twice that (its
    /// bookkeeping overhead); elsewhere the system decides.
    #[cfg(target_os = "linux")]
    #[test]
    fn link_sockets_get_the_larger_receive_buffer_the_system_allows() {
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        assert_eq!(granted, 2 * RECV_BUFFER.min(max));
    }
}
