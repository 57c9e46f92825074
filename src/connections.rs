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
    /// Connections refused for being beyond the limit.
    refused: AtomicU64,
}

impl OpenConnections {
    pub fn count(&self) -> usize {
        self.sockets.lock().expect("not poisoned").len()
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

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
    /// Beyond this many open connections, new ones get a `503` and are closed at once.
    max_open: usize,
}

impl TrackedListener {
    pub fn new(inner: TcpListener, open: Arc<OpenConnections>, max_open: usize) -> Self {
        TrackedListener {
            inner,
            open,
            max_open,
        }
    }
}

/// What a connection beyond `--max-connections` reads before it is closed: an answer costs
/// less than a connection left to time out, and tells the client when to come back.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 83\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"too many open connections; retry later\"}";

impl Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        let (stream, addr) = loop {
            // The plain listener's accept, which logs and retries errors (e.g. too many files).
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            if self.open.count() < self.max_open {
                break (stream, addr);
            }
            self.open.refused.fetch_add(1, Ordering::Relaxed);
            // Best effort and never waiting: a fresh socket's send buffer takes it whole.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
        };
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

/// Raises the soft limit on open files towards `wanted` (at most the hard limit) and returns
/// the soft limit now in force. Connections are files: a default soft limit of 1,024 would
/// make accepting fail long before `--max-connections`.
// `rlim_t` is u64 on Linux but not everywhere: the casts are for portability.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_files_limit(wanted: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = (wanted as libc::rlim_t).min(limit.rlim_max);
    if limit.rlim_cur >= target {
        return Ok(limit.rlim_cur as u64);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(target as u64)
}
