//! A minimal HTTP/1.1 keep-alive client over `tokio::net::TcpStream`, just enough to load
//! the server and to see whether it is up: one request at a time per connection, responses
//! framed by `Content-Length`. (The streaming responses of `/stream` are decoded by
//! [`crate::sse`]; their heads are parsed by [`RawHead`] too.)
//!
//! A general client (hyper, reqwest) would cost the load generator CPU that the server
//! needs on a two-core machine, and would hide connection reuse behind a pool.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Enough for any response head and a small body without growing.
const INITIAL_READ_BUFFER: usize = 16 * 1024;
/// A head longer than this is not one our server sends: stop reading instead of buffering.
const MAX_HEAD_LEN: usize = 64 * 1024;

/// The parts of a response head the load generator acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Bytes of status line and headers, including the blank line that ends them.
    pub head_len: usize,
    pub content_length: usize,
    /// `Retry-After` in its delay-seconds form (the HTTP-date form is not used by servers
    /// answering 429 here and is ignored).
    pub retry_after: Option<Duration>,
    /// The server said `Connection: close`, so the next request needs a new connection.
    pub closes_connection: bool,
}

/// A complete response head: the status and the header lines, unparsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHead<'a> {
    pub status: u16,
    /// Bytes of status line and headers, including the blank line that ends them.
    pub head_len: usize,
    /// The header lines (without the status line), separated by CRLF.
    header_block: &'a str,
}

impl<'a> RawHead<'a> {
    /// Splits a response head off the start of `buffer`: `Ok(None)` while it is incomplete.
    pub fn parse(buffer: &'a [u8]) -> Result<Option<Self>> {
        let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
            if buffer.len() > MAX_HEAD_LEN {
                bail!("response head longer than {MAX_HEAD_LEN} bytes");
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&buffer[..end]).context("response head is not UTF-8")?;
        let (status_line, header_block) = head.split_once("\r\n").unwrap_or((head, ""));
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            bail!("not an HTTP/1.x response: {status_line:?}");
        }
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("bad status line: {status_line:?}"))?;
        Ok(Some(RawHead {
            status,
            head_len: end + 4,
            header_block,
        }))
    }

    /// The headers as (name, trimmed value) pairs, in order.
    pub fn headers(&self) -> impl Iterator<Item = Result<(&'a str, &'a str)>> + 'a {
        self.header_block
            .split("\r\n")
            .filter(|line| !line.is_empty())
            .map(|line| match line.split_once(':') {
                Some((name, value)) => Ok((name, value.trim())),
                None => Err(anyhow!("malformed header line: {line:?}")),
            })
    }
}

/// Parses a response head from the start of `buffer`: `Ok(None)` while it is incomplete.
pub fn parse_response_head(buffer: &[u8]) -> Result<Option<ResponseHead>> {
    let Some(raw) = RawHead::parse(buffer)? else {
        return Ok(None);
    };
    let status = raw.status;
    let mut content_length = None;
    let mut retry_after = None;
    let mut closes_connection = false;
    for header in raw.headers() {
        let (name, value) = header?;
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<usize>()
                .with_context(|| format!("bad Content-Length: {value:?}"))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().contains("chunked") {
                bail!("chunked responses are not supported by the bench client (status {status})");
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
        } else if name.eq_ignore_ascii_case("connection") {
            closes_connection = value.eq_ignore_ascii_case("close");
        }
    }

    // Only these statuses are bodiless by definition; any other response without a
    // length would have to be read until close, which a keep-alive client cannot do.
    let content_length = match content_length {
        Some(length) => length,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => bail!("response (status {status}) has no Content-Length"),
    };
    Ok(Some(ResponseHead {
        status,
        head_len: raw.head_len,
        content_length,
        retry_after,
        closes_connection,
    }))
}

/// A response whose body borrows the connection's read buffer until the next request.
#[derive(Debug)]
pub struct Response<'a> {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: &'a [u8],
}

impl Response<'_> {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body as text, for error reports.
    pub fn body_excerpt(&self) -> String {
        let end = self.body.len().min(200);
        String::from_utf8_lossy(&self.body[..end]).into_owned()
    }
}

/// One keep-alive connection with its own reusable read buffer.
#[derive(Debug)]
pub struct HttpConnection {
    addr: SocketAddr,
    stream: TcpStream,
    read_buffer: Vec<u8>,
    /// Bytes `0..filled` of `read_buffer` hold data read from the socket.
    filled: usize,
    /// Bytes `0..consumed` belong to the previous response, dropped before the next read.
    consumed: usize,
    reconnect_before_next: bool,
}

impl HttpConnection {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = open_stream(addr).await?;
        Ok(HttpConnection {
            addr,
            stream,
            read_buffer: vec![0; INITIAL_READ_BUFFER],
            filled: 0,
            consumed: 0,
            reconnect_before_next: false,
        })
    }

    /// Sends one complete request (head and body) and reads the whole response.
    pub async fn send(&mut self, request: &[u8]) -> Result<Response<'_>> {
        if self.reconnect_before_next {
            self.stream = open_stream(self.addr).await?;
            self.filled = 0;
            self.consumed = 0;
            self.reconnect_before_next = false;
        }
        // Keep anything read past the previous response (there is none without
        // pipelining, but dropping it silently would desynchronise the stream).
        self.read_buffer.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.consumed = 0;

        self.stream
            .write_all(request)
            .await
            .context("writing request")?;

        let head = loop {
            if let Some(head) = parse_response_head(&self.read_buffer[..self.filled])? {
                break head;
            }
            self.read_more().await?;
        };
        let response_end = head.head_len + head.content_length;
        if self.read_buffer.len() < response_end {
            self.read_buffer.resize(response_end, 0);
        }
        while self.filled < response_end {
            self.read_more().await?;
        }
        self.consumed = response_end;
        self.reconnect_before_next = head.closes_connection;
        Ok(Response {
            status: head.status,
            retry_after: head.retry_after,
            body: &self.read_buffer[head.head_len..response_end],
        })
    }

    async fn read_more(&mut self) -> Result<()> {
        if self.filled == self.read_buffer.len() {
            let grown = self.read_buffer.len() * 2;
            self.read_buffer.resize(grown, 0);
        }
        let read = self
            .stream
            .read(&mut self.read_buffer[self.filled..])
            .await
            .context("reading response")?;
        if read == 0 {
            // The server may close an idle keep-alive connection; the caller reconnects.
            self.reconnect_before_next = true;
            bail!("connection closed by the server before a complete response");
        }
        self.filled += read;
        Ok(())
    }
}

async fn open_stream(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    // Requests are written in one go and answered at once: Nagle would only add delay.
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    Ok(stream)
}

/// A complete bodiless `GET` request for `path_and_query`, with `headers` (complete lines,
/// each ending in CRLF, or nothing) after `Host`.
pub fn get_request(path_and_query: &str, headers: &str) -> Vec<u8> {
    format!("GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n").into_bytes()
}

/// Percent-encodes `value` for use in a query string (everything but RFC 3986 unreserved).
pub fn url_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parses_status_length_and_retry_after() {
        let raw = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nRetry-After: 2\r\ncontent-length: 13\r\n\r\n{\"error\":\"x\"}";
        let head = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 429);
        assert_eq!(head.content_length, 13);
        assert_eq!(head.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(&raw[head.head_len..], b"{\"error\":\"x\"}");
        assert!(!head.closes_connection);
    }

    #[test]
    fn incomplete_head_needs_more_bytes() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 202 Accepted\r\nContent-Le").unwrap(),
            None
        );
        assert_eq!(parse_response_head(b"").unwrap(), None);
    }

    #[test]
    fn rejects_chunked_and_unframed_responses() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let message = parse_response_head(chunked).unwrap_err().to_string();
        assert!(message.contains("chunked"), "{message}");
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let no_content = parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(no_content.content_length, 0);
    }

    #[test]
    fn url_encoding_keeps_unreserved_characters_only() {
        assert_eq!(url_encode("abc-_.~09"), "abc-_.~09");
        assert_eq!(url_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(url_encode("x y&z"), "x%20y%26z");
    }

    /// Two requests on one connection, the first response split across writes and the
    /// second larger than the initial buffer: the client must reassemble and reuse.
    #[tokio::test]
    async fn reuses_a_connection_across_split_and_large_responses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let large_body = "x".repeat(INITIAL_READ_BUFFER * 3);
        let large_response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{large_body}",
            large_body.len()
        );
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 202 Accepted\r\nConte")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            socket.write_all(b"nt-Length: 2\r\n\r\nok").await.unwrap();
            let _ = socket.read(&mut request).await.unwrap();
            socket.write_all(large_response.as_bytes()).await.unwrap();
        });

        let mut connection = HttpConnection::connect(addr).await.unwrap();
        let first = connection.send(&get_request("/a", "")).await.unwrap();
        assert_eq!((first.status, first.body), (202, &b"ok"[..]));
        let second = connection.send(&get_request("/b", "")).await.unwrap();
        assert_eq!(second.status, 200);
        assert_eq!(second.body.len(), INITIAL_READ_BUFFER * 3);
        server.await.unwrap();
    }
}
