//! The HTTP server's connections: accepted up to `--max-connections` (beyond, a `503` the
//! client can read), each served by hyper ([`connection`]) and closed when its client holds
//! it without progress (a slow request head, an idle keep-alive, a body slower than
//! `--min-body-rate`, an answer it does not read), so that slow or idle sockets cannot lock
//! producers out; at shutdown, drained and, past a grace period, cut ([`open`]).

mod connection;
mod open;

pub use open::{raise_open_files_limit, ConnectionsReport, OpenConnections, Timeout};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error_code::ErrorCode;

/// The most bytes of request line and headers a request may have: beyond, `431`.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most headers a request may have (hyper's default): beyond, `431`.
pub const MAX_HEADERS: usize = 100;

/// How connections are taken.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; beyond, `503`.
    pub max_connections: usize,
    pub timeouts: Timeouts,
    /// How long shutdown waits for connections to finish before cutting them.
    pub grace: Duration,
}

/// Loads a certificate chain and its private key (PEM files) for HTTPS.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "invalid --tls-cert: cannot read a PEM certificate chain from {}",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "invalid --tls-cert: {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "invalid --tls-key: cannot read a PEM private key from {}",
            key.display()
        )
    })?;
    // `ring` rather than aws-lc-rs (rustls's default), which needs cmake to build: the cost
    // is no post-quantum key exchange offered, which rustls marks by deprecating this.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("invalid --tls-cert/--tls-key: the key does not fit the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// How long a client may take at each step before its connection is closed.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From a request head's first byte (or from connecting, for the first request) to its
    /// last; past it, `408` and the connection is closed.
    pub header: Duration,
    /// From an answer to the next request's first byte; past it the connection is closed.
    /// Also how long an answer may wait for the client to read any of it.
    pub keep_alive: Duration,
}

/// The client's address, which the connection leaves in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// The address of the client that sent the request with these extensions.
    pub fn ip_of(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
        extensions.get::<PeerAddr>().map(|peer| peer.0.ip())
    }
}

/// What a connection beyond `--max-connections` reads before it is closed: an answer costs
/// less than a connection left to time out, and tells the client when to come back.
static TOO_MANY_CONNECTIONS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    json_answer(
        ErrorCode::TooManyConnections,
        "too many open connections; retry later",
    )
});

/// Refused connections whose request is being read and dropped at once, at most: beyond,
/// a refused connection is closed at once (its client may then see a reset).
const MAX_LINGERING: usize = 1024;
/// How long a refused connection is kept for its client to read the `503`.
const LINGER: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in progress finish and returns once every connection is closed; `on_shutdown`
/// runs when shutdown begins (to end the live streams, whose answers never would), and
/// connections still open `limits.grace` after it are cut.
pub async fn serve(
    router: axum::Router,
    listener: TcpListener,
    limits: Limits,
    open: Arc<OpenConnections>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl FnOnce(),
) {
    let Limits {
        max_connections,
        timeouts,
        grace,
    } = limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // The connection's own watch applies the timeouts (hyper's header timeout would also
        // run while a keep-alive connection is idle).
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let shared = Arc::new(connection::Shared {
        router,
        builder,
        timeouts,
        open: open.clone(),
        tls,
    });
    let (stop, stopped) = watch::channel(false);
    let lingering = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if open.count() >= max_connections {
            refuse(stream, &open, &lingering);
            continue;
        }
        tokio::spawn(connection::serve(
            stream,
            peer,
            shared.clone(),
            stopped.clone(),
        ));
    }
    drop(listener);
    on_shutdown();
    let _ = stop.send(true);
    drop(stopped);
    // Each connection task holds a receiver: the channel closes when the last one ends.
    let all_closed = stop.closed();
    tokio::pin!(all_closed);
    if tokio::time::timeout(grace, &mut all_closed).await.is_err() {
        // Such as a stream whose client stopped reading: its end can never be written.
        let cut = open.cut_all();
        tracing::warn!(
            connections = cut,
            "connections still open {grace:?} after shutdown began; cutting them"
        );
        all_closed.await;
    }
}

/// Accepting fails when the process is out of file descriptors (or a connection was reset
/// before it was taken): waiting a moment lets connections close instead of spinning.
async fn accept_failed(err: io::Error) {
    let per_connection = matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    );
    if !per_connection {
        tracing::error!(error = %err, "accepting a connection failed; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Answers a connection beyond the limit with `503` and closes it so that the client reads
/// the answer: the request it already sent is read and dropped first, since closing a socket
/// with unread data makes the kernel send a reset, which discards the answer at the client.
fn refuse(mut stream: TcpStream, open: &OpenConnections, lingering: &Arc<AtomicUsize>) {
    open.count_refused();
    // Best effort and never waiting: a fresh socket's send buffer takes it whole.
    let _ = stream.try_write(&TOO_MANY_CONNECTIONS);
    if lingering.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        lingering.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let lingering = lingering.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER, async {
            stream.shutdown().await?;
            let mut sink = [0u8; 16 * 1024];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        lingering.fetch_sub(1, Ordering::Relaxed);
    });
}

/// A complete answer the connection layer writes by itself, closing the connection: JSON,
/// like every error of the API, with the headers the router's answers carry, and
/// `Retry-After` on a `503`.
fn json_answer(code: ErrorCode, message: &str) -> Vec<u8> {
    let status = code.status();
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let retry_after = if status == StatusCode::SERVICE_UNAVAILABLE {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n{retry_after}\
         x-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes()
}
