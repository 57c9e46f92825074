//! One connection, served by hyper: its socket wrapped to see progress, the phase it is in
//! (waiting for a request head, answering, idle between requests) deciding which timeout
//! applies, and the task that serves it until it ends, times out or the server stops.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use super::open::{OpenConnections, Timeout};
use super::{json_answer, PeerAddr, Timeouts};
use crate::error_code::ErrorCode;

/// How often a connection busy answering looks again at whether its client still reads.
const BUSY_RECHECK: Duration = Duration::from_secs(1);

/// Where a connection stands, updated by its socket wrapper and its requests, all on the
/// connection's own task (atomics only because hyper wants the parts `Send`).
struct Phases {
    opened: Instant,
    /// Requests handed to the router whose answer has not been fully given to hyper.
    in_flight: AtomicU32,
    /// When the first byte of the request head now being read arrived (ms since `opened`,
    /// plus one; 0: none).
    head_started: AtomicU64,
    /// When the last answer finished (same scale; 0: no answer yet).
    idle_since: AtomicU64,
    /// When a write of an answer started waiting for the client to read (same scale).
    write_blocked_since: AtomicU64,
    /// Whether any byte arrived on this connection.
    any_bytes: AtomicBool,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            any_bytes: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, stamp: u64, after: Duration) -> Instant {
        self.opened + Duration::from_millis(stamp - 1) + after
    }

    fn bytes_read(&self) {
        self.any_bytes.store(true, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(self.now(), Ordering::Relaxed);
        }
    }

    fn dispatched(self: &Arc<Self>) -> Answering {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        Answering(self.clone())
    }

    /// The timeout that applies now and when it expires; `None` while answering a client
    /// that keeps reading (look again after a while).
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, Timeout)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return match self.write_blocked_since.load(Ordering::Relaxed) {
                0 => None,
                since => Some((self.at(since, timeouts.keep_alive), Timeout::Write)),
            };
        }
        match (
            self.head_started.load(Ordering::Relaxed),
            self.idle_since.load(Ordering::Relaxed),
        ) {
            (0, 0) => Some((self.opened + timeouts.header, Timeout::Header)),
            (0, idle) => Some((self.at(idle, timeouts.keep_alive), Timeout::Idle)),
            (head, _) => Some((self.at(head, timeouts.header), Timeout::Header)),
        }
    }
}

/// Held while a request is being answered: dropped with the answer's body once hyper has
/// taken all of it (or when the request is abandoned).
struct Answering(Arc<Phases>);

impl Drop for Answering {
    fn drop(&mut self) {
        let phases = &self.0;
        if phases.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            phases.idle_since.store(phases.now(), Ordering::Relaxed);
            phases.write_blocked_since.store(0, Ordering::Relaxed);
        }
    }
}

/// An answer's body that ends the answering phase when it ends.
struct AnswerBody {
    inner: Body,
    answering: Option<Answering>,
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.answering = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, registered in [`OpenConnections`] for as long as it is open (so that
/// shutdown can cut it), under TLS or not.
struct RegisteredStream {
    inner: TcpStream,
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for RegisteredStream {
    fn drop(&mut self) {
        // Before `inner` (the descriptor) is closed: see `OpenConnections::cut_all`.
        self.open.remove(self.id);
    }
}

/// The connection as hyper sees it (plain or TLS): reads and writes mark its progress, and
/// hyper's own refusals of requests it could not parse (which never reach the router, and
/// have an empty body) are replaced by JSON ones, as every error is JSON.
struct WatchedStream<S> {
    inner: S,
    phases: Arc<Phases>,
    /// A JSON refusal being written in place of hyper's: the bytes and how many are sent.
    refusal: Option<(Vec<u8>, usize)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WatchedStream<S> {
    /// Whether `first` starts an answer hyper wrote by itself: an error status line whose
    /// head lacks the `x-request-id` every answer of the router carries (hyper writes a head
    /// in one piece, so the whole head is in `first`).
    fn is_hyper_refusal(&self, first: &[u8]) -> bool {
        if self.refusal.is_some()
            || !(first.starts_with(b"HTTP/1.1 4") || first.starts_with(b"HTTP/1.1 5"))
        {
            return false;
        }
        let head_end = first
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or(first.len());
        !first[..head_end]
            .windows(14)
            .any(|window| window.eq_ignore_ascii_case(b"\r\nx-request-id"))
    }

    /// Writes the JSON refusal for hyper's answer starting with `first`, then claims hyper's
    /// `len` bytes written (they are dropped; hyper closes the connection after them).
    fn poll_refuse(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if self.refusal.is_none() {
            let status = first
                .get(9..12)
                .and_then(|code| std::str::from_utf8(code).ok())
                .and_then(|code| code.parse().ok())
                .unwrap_or(400);
            self.refusal = Some((refusal(status), 0));
        }
        let (bytes, sent) = self.refusal.as_mut().expect("set above");
        while *sent < bytes.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *sent += n,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        Poll::Ready(Ok(len))
    }

    fn note_write<T>(&self, result: &Poll<io::Result<T>>) {
        let blocked = &self.phases.write_blocked_since;
        match result {
            Poll::Pending => {
                if blocked.load(Ordering::Relaxed) == 0 {
                    blocked.store(self.phases.now(), Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => blocked.store(0, Ordering::Relaxed),
        }
    }
}

/// The `AsyncWrite` methods both stream wrappers pass straight to their `inner` stream: what
/// the wrappers add concerns reads and writes, not flushing or shutting down.
macro_rules! pass_to_inner_stream {
    () => {
        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WatchedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phases.bytes_read();
        }
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WatchedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.refusal.is_some() || self.is_hyper_refusal(buf) {
            return self.poll_refuse(cx, buf, buf.len());
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |b| b);
        if self.refusal.is_some() || self.is_hyper_refusal(first) {
            let len = bufs.iter().map(|buf| buf.len()).sum();
            let first = first.to_vec();
            return self.poll_refuse(cx, &first, len);
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    pass_to_inner_stream!();
}

impl AsyncRead for RegisteredStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RegisteredStream {
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

    pass_to_inner_stream!();
}

/// The JSON answer for a request hyper refused with `status` before parsing it whole.
fn refusal(status: u16) -> Vec<u8> {
    match status {
        431 => json_answer(
            ErrorCode::HeadersTooLarge,
            &format!(
                "the request line and headers are larger than {} bytes, or there are more \
                 than {} headers",
                super::MAX_HEAD_BYTES,
                super::MAX_HEADERS
            ),
        ),
        414 => json_answer(ErrorCode::UriTooLong, "the request target is too long"),
        505 => json_answer(
            ErrorCode::HttpVersionNotSupported,
            "only HTTP/1.1 and HTTP/1.0 are served",
        ),
        _ => json_answer(
            ErrorCode::BadRequest,
            "the request is not valid HTTP/1.1 (its request line, a header or its framing)",
        ),
    }
}

/// What is sent to a client that started a request and did not finish its head in time.
fn header_timeout_answer(timeout: Duration) -> Vec<u8> {
    json_answer(
        ErrorCode::RequestTimeout,
        &format!(
            "the request line and headers did not arrive within {} s",
            timeout.as_secs_f64()
        ),
    )
}

/// Sends `bytes` on `fd` now if the socket takes them, never waiting: for a last word
/// before closing a connection hyper is not writing to.
fn send_now(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `fd` is owned by a stream that is alive for this call; `send` only reads
    // `bytes`. MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
    unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        );
    }
}

/// What every connection's task shares.
pub(super) struct Shared {
    pub router: axum::Router,
    pub builder: hyper::server::conn::http1::Builder,
    pub timeouts: Timeouts,
    pub open: Arc<OpenConnections>,
    /// Set for HTTPS: every connection starts with a TLS handshake.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `stream` until the client closes it, it times out, or (after `stop` turns true)
/// its requests in progress are answered. Under TLS, the handshake must be done within the
/// header timeout.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let fd = stream.as_raw_fd();
    let stream = RegisteredStream {
        id: shared.open.add(fd),
        inner: stream,
        open: shared.open.clone(),
    };
    let Some(tls) = &shared.tls else {
        return serve_http(stream, Some(fd), peer, shared, stop).await;
    };
    match tokio::time::timeout(shared.timeouts.header, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, None, peer, shared, stop).await,
        Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
        Err(_) => {
            shared.open.count_timeout(Timeout::Header);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Serves HTTP on `stream`; `fd` (plain connections only) takes a last word on a timeout.
async fn serve_http<S>(
    stream: S,
    fd: Option<RawFd>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phases = Arc::new(Phases::new());
    let io = WatchedStream {
        inner: stream,
        phases: phases.clone(),
        refusal: None,
    };
    let router = shared.router.clone();
    let service_phases = phases.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let answering = service_phases.dispatched();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(PeerAddr(peer));
        let answer = router.clone().call(request);
        async move {
            let answer = answer.await.unwrap_or_else(|never| match never {});
            Ok::<_, Infallible>(answer.map(|inner| AnswerBody {
                inner,
                answering: Some(answering),
            }))
        }
    });
    let connection = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    if *stop.borrow() {
        connection.as_mut().graceful_shutdown();
    }
    // The server waits for every connection task to drop its receiver, so this one is held
    // (as `stop`) until the task ends, and the future watching it gets a clone of its own.
    let mut watching = stop.clone();
    let mut stop_changed = Box::pin(async move { watching.changed().await.is_ok() });
    let mut stopping = false;
    let timeouts = &shared.timeouts;
    let first_wake = phases
        .deadline(timeouts)
        .map_or(Instant::now() + BUSY_RECHECK, |(at, _)| at);
    let wake = tokio::time::sleep_until(first_wake);
    tokio::pin!(wake);
    loop {
        // The connection makes progress; after each step its deadline may have come nearer
        // (an answer given: the idle timeout may be shorter than the header one), so the
        // timer is moved up then. A later deadline is met when the timer fires early.
        let woke = std::future::poll_fn(|cx| {
            if let Poll::Ready(served) = connection.as_mut().poll(cx) {
                if let Err(err) = served {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return Poll::Ready(false);
            }
            if !stopping && stop_changed.as_mut().poll(cx).is_ready() {
                stopping = true;
                connection.as_mut().graceful_shutdown();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some((at, _)) = phases.deadline(timeouts) {
                if at < wake.deadline() {
                    wake.as_mut().reset(at);
                }
            }
            wake.as_mut().poll(cx).map(|()| true)
        })
        .await;
        if !woke {
            return;
        }
        let Some((at, timeout)) = phases.deadline(timeouts) else {
            wake.as_mut().reset(Instant::now() + BUSY_RECHECK);
            continue;
        };
        if at > Instant::now() {
            wake.as_mut().reset(at);
            continue;
        }
        // A client that sent nothing at all is not owed an answer (nor one under TLS, which
        // only hyper could write).
        if let Some(fd) =
            fd.filter(|_| timeout == Timeout::Header && phases.any_bytes.load(Ordering::Relaxed))
        {
            send_now(fd, &header_timeout_answer(timeouts.header));
        }
        shared.open.count_timeout(timeout);
        tracing::debug!(%peer, cause = timeout.name(), "closing a connection that made no progress");
        return;
    }
}
