//! Accepted HTTP connections, tracked so that shutdown can cut the ones still open after a
//! grace period.
//!
//! Graceful shutdown waits for every connection to finish its response. Live streams end when
//! shutdown begins, but a client that stopped reading (its socket buffers full) never lets
//! the end of its stream be written, and would hold the process forever.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The sockets of the connections currently open.
#[derive(Default)]
pub struct OpenConnections {
    next_id: AtomicU64,
    sockets: Mutex<HashMap<u64, RawFd>>,
}

impl OpenConnections {
    /// Shuts down (both ways) every open connection's socket: pending reads and writes fail,
    /// so their tasks end. Returns how many there were.
    pub fn cut_all(&self) -> usize {
        let sockets = self.sockets.lock().expect("not poisoned");
        for &fd in sockets.values() {
            // SAFETY: a descriptor stays in the map only while its `TrackedStream` (which
            // owns it) is alive: the stream removes it, under this lock, before closing it.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
        sockets.len()
    }
}

/// A [`TcpListener`] whose accepted connections are registered in [`OpenConnections`].
pub struct TrackedListener {
    inner: TcpListener,
    open: Arc<OpenConnections>,
}

impl TrackedListener {
    pub fn new(inner: TcpListener, open: Arc<OpenConnections>) -> Self {
        TrackedListener { inner, open }
    }
}

impl Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        // The plain listener's accept, which logs and retries errors (e.g. too many files).
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        let id = self.open.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .sockets
            .lock()
            .expect("not poisoned")
            .insert(id, stream.as_raw_fd());
        let stream = TrackedStream {
            inner: stream,
            id,
            open: self.open.clone(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection, unregistered when dropped.
pub struct TrackedStream {
    inner: TcpStream,
    id: u64,
    open: Arc<OpenConnections>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        // Before `inner` (the descriptor) is closed: see `cut_all`.
        self.open
            .sockets
            .lock()
            .expect("not poisoned")
            .remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The client's address, as handlers extract it (`ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TrackedListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TrackedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}
