//! Reading Server-Sent Events (`GET /stream` and the API's other streams): an incremental
//! decoder of the chunked body ([`ChunkedDecoder`], for readers on a raw socket) and a
//! splitter of the decoded bytes into frames ([`SseParser`]), both fed bytes as they arrive,
//! split anywhere.
//!
//! The load generator runs 1,010 readers on two cores shared with the server, so per-frame
//! work is kept to a few byte searches, without allocating; the tests read through the same
//! parser and check each frame strictly ([`Frame::data_lines`], [`Frame::other_field`]).

use std::borrow::Cow;

use anyhow::{bail, Result};

/// A chunk-size line is hex digits and an extension we skip; more digits than this would
/// overflow the size and are refused.
const MAX_SIZE_DIGITS: u32 = 15;
/// A frame larger than this means the stream is not SSE as we know it: stop buffering.
const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Where a [`ChunkedDecoder`] is within the `Transfer-Encoding: chunked` framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line: hex digits, then an optional extension, then CRLF.
    Size {
        size: u64,
        digits: u32,
        /// Past the digits (an extension or whitespace); bytes are skipped until CRLF.
        in_extension: bool,
        /// The CR of the closing CRLF was seen.
        cr: bool,
    },
    /// Copying chunk data, `remaining` bytes still to come.
    Data { remaining: u64 },
    /// Expecting the CRLF that follows chunk data (`cr`: the CR was seen).
    DataEnd { cr: bool },
    /// After the last (zero-size) chunk: trailer lines until an empty one.
    Trailer { line_len: usize, cr: bool },
    /// The body is complete.
    Done,
}

const SIZE_LINE_START: ChunkState = ChunkState::Size {
    size: 0,
    digits: 0,
    in_extension: false,
    cr: false,
};

/// Incremental decoder of a chunked HTTP/1.1 body: fed the bytes as they arrive, split
/// anywhere, it appends the chunk data to an output buffer.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: SIZE_LINE_START,
        }
    }
}

impl ChunkedDecoder {
    /// Decodes `input`, appending chunk data to `out`. Errors on malformed framing and on
    /// bytes after the end of the body.
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while let Some((&byte, rest)) = input.split_first() {
            if let ChunkState::Data { remaining } = self.state {
                let take = input
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..take]);
                input = &input[take..];
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    ChunkState::DataEnd { cr: false }
                } else {
                    ChunkState::Data { remaining }
                };
                continue;
            }
            input = rest;
            self.state = match self.state {
                ChunkState::Size {
                    size,
                    digits,
                    cr: true,
                    ..
                } => {
                    if byte != b'\n' {
                        bail!("chunk-size line: CR not followed by LF");
                    }
                    if digits == 0 {
                        bail!("chunk-size line without a size");
                    }
                    if size == 0 {
                        ChunkState::Trailer {
                            line_len: 0,
                            cr: false,
                        }
                    } else {
                        ChunkState::Data { remaining: size }
                    }
                }
                ChunkState::Size {
                    size,
                    digits,
                    in_extension,
                    cr: false,
                } => match byte {
                    b'\r' => ChunkState::Size {
                        size,
                        digits,
                        in_extension,
                        cr: true,
                    },
                    b'\n' => bail!("chunk-size line ended by a bare LF"),
                    _ if in_extension => ChunkState::Size {
                        size,
                        digits,
                        in_extension,
                        cr: false,
                    },
                    b';' | b' ' | b'\t' if digits > 0 => ChunkState::Size {
                        size,
                        digits,
                        in_extension: true,
                        cr: false,
                    },
                    _ => {
                        let Some(value) = char::from(byte).to_digit(16) else {
                            bail!("bad byte {byte:#04x} in a chunk size");
                        };
                        if digits == MAX_SIZE_DIGITS {
                            bail!("chunk size of more than {MAX_SIZE_DIGITS} hex digits");
                        }
                        ChunkState::Size {
                            size: size * 16 + u64::from(value),
                            digits: digits + 1,
                            in_extension: false,
                            cr: false,
                        }
                    }
                },
                ChunkState::DataEnd { cr: false } if byte == b'\r' => {
                    ChunkState::DataEnd { cr: true }
                }
                ChunkState::DataEnd { cr: true } if byte == b'\n' => SIZE_LINE_START,
                ChunkState::DataEnd { .. } => bail!("chunk data not followed by CRLF"),
                ChunkState::Trailer { line_len, cr: true } => {
                    if byte != b'\n' {
                        bail!("trailer line: CR not followed by LF");
                    }
                    if line_len == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailer {
                            line_len: 0,
                            cr: false,
                        }
                    }
                }
                ChunkState::Trailer {
                    line_len,
                    cr: false,
                } => ChunkState::Trailer {
                    line_len: line_len + usize::from(byte != b'\r'),
                    cr: byte == b'\r',
                },
                ChunkState::Done => bail!("data after the end of the chunked body"),
                ChunkState::Data { .. } => unreachable!("handled above"),
            };
        }
        Ok(())
    }

    /// The terminal chunk (and trailer) has been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// One Server-Sent Events frame (the lines before a blank line). Comment lines are
/// skipped; a frame of comments only has no fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub id: Option<&'a [u8]>,
    pub event: Option<&'a [u8]>,
    /// The `data` lines joined by `\n` (borrowed when there is one, the usual case).
    pub data: Option<Cow<'a, [u8]>>,
    /// How many `data` lines there were (the server writes one per frame).
    pub data_lines: usize,
    /// The first field other than `id`, `event` and `data`, if any (the server writes none).
    pub other_field: Option<&'a [u8]>,
}

impl Frame<'_> {
    /// Only comments (heartbeats, `: connected`): nothing to dispatch.
    pub fn is_comment(&self) -> bool {
        self.id.is_none() && self.event.is_none() && self.data.is_none()
    }

    /// The `id` as a number, if it is one.
    pub fn seq(&self) -> Option<u64> {
        std::str::from_utf8(self.id?).ok()?.parse().ok()
    }
}

/// Splits a decoded SSE byte stream into [`Frame`]s. Lines end with LF or CRLF (a lone CR,
/// which the SSE grammar also allows, is not used by the server and not supported).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for line ends: the complete, non-blank lines of
    /// the frame being read.
    scanned: usize,
}

impl SseParser {
    /// Where new decoded bytes go; call [`drain`](Self::drain) afterwards.
    pub fn input(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// The bytes of the frame not yet complete (nothing between frames).
    pub fn pending(&self) -> &[u8] {
        &self.buffer
    }

    /// Calls `on_frame` for every complete frame in the input and drops their bytes.
    pub fn drain(&mut self, mut on_frame: impl FnMut(Frame<'_>)) -> Result<()> {
        let mut frame_start = 0;
        let mut position = self.scanned;
        while let Some(newline) = find_byte(b'\n', &self.buffer[position..]) {
            let line_end = position + newline;
            let line = strip_cr(&self.buffer[position..line_end]);
            if line.is_empty() {
                if position > frame_start {
                    on_frame(parse_frame(&self.buffer[frame_start..position]));
                }
                frame_start = line_end + 1;
            }
            position = line_end + 1;
        }
        self.buffer.drain(..frame_start);
        self.scanned = position - frame_start;
        if self.buffer.len() > MAX_FRAME_LEN {
            bail!("an SSE frame longer than {MAX_FRAME_LEN} bytes");
        }
        Ok(())
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses the lines of one frame (each ending in LF or CRLF, none blank).
fn parse_frame(lines: &[u8]) -> Frame<'_> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: None,
        data_lines: 0,
        other_field: None,
    };
    let mut rest = lines;
    while !rest.is_empty() {
        let (line, after) = match find_byte(b'\n', rest) {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        let line = strip_cr(line);
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (name, value) = match find_byte(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"id" => frame.id = Some(value),
            b"event" => frame.event = Some(value),
            b"data" => {
                frame.data_lines += 1;
                frame.data = Some(match frame.data.take() {
                    None => Cow::Borrowed(value),
                    Some(earlier) => {
                        let mut joined = earlier.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                        Cow::Owned(joined)
                    }
                });
            }
            _ => {
                frame.other_field = frame.other_field.or(Some(name));
            }
        }
    }
    frame
}

/// The first occurrence of `byte` in `haystack`, by the C library's vectorised `memchr`:
/// the subscribers scan ~100 MB/s for line ends, and a byte-at-a-time loop was half of
/// their CPU time.
pub fn find_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    // SAFETY: memchr reads at most `haystack.len()` bytes from the start of `haystack`, and
    // returns either null or a pointer into it.
    let found = unsafe {
        libc::memchr(
            haystack.as_ptr().cast(),
            libc::c_int::from(byte),
            haystack.len(),
        )
    };
    (!found.is_null()).then(|| found as usize - haystack.as_ptr() as usize)
}

/// Encodes `body` as chunks of the given sizes (cycled), with an extension on one and
/// a trailer at the end, the way a lenient-but-valid server might: for tests of readers.
pub fn encode_chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut index = 0;
    while !rest.is_empty() {
        let size = sizes[index % sizes.len()].clamp(1, rest.len());
        if index == 1 {
            out.extend_from_slice(format!("{size:X};name=value\r\n").as_bytes());
        } else {
            out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        }
        out.extend_from_slice(&rest[..size]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[size..];
        index += 1;
    }
    out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to a decoder in pieces cut at `cuts` (offsets, any order).
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool)> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([wire.len()]) {
            decoder.decode(&wire[start..cut], &mut out)?;
            start = cut;
        }
        Ok((out, decoder.is_done()))
    }

    #[test]
    fn chunked_body_decodes_whatever_the_read_boundaries() {
        let body: Vec<u8> = (0..200u8).collect();
        let wire = encode_chunked(&body, &[7, 64, 1, 100]);
        // Every single split point, then every byte on its own.
        for cut in 0..=wire.len() {
            assert_eq!(
                decode_in_pieces(&wire, &[cut]).unwrap(),
                (body.clone(), true)
            );
        }
        let every_byte: Vec<usize> = (0..wire.len()).collect();
        assert_eq!(decode_in_pieces(&wire, &every_byte).unwrap(), (body, true));
    }

    #[test]
    fn malformed_chunked_framing_is_refused() {
        let mut out = Vec::new();
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX",
            b"3\nabc\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n\r\nmore",
        ] {
            let mut decoder = ChunkedDecoder::default();
            assert!(
                decoder.decode(bad, &mut out).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let mut decoder = ChunkedDecoder::default();
        decoder.decode(b"3\r\nabc\r\n", &mut out).unwrap();
        assert!(!decoder.is_done());
    }

    const EVENT: &str = r#"{"id":"0190-a","type":"type-007","timestamp":"2026-11-22T10:00:00.123Z","service":"svc-01","message":"GET /x 200","metadata":{"timestamp":"1999-01-01T00:00:00Z"},"seq":42}"#;

    /// A stream as the server writes it: a comment, events, a heartbeat, a lagged notice.
    fn sse_stream() -> String {
        format!(
            ": connected\n\nid: 41\nevent: event\ndata: {EVENT}\n\n: heartbeat\n\nid: 42\r\nevent: event\r\ndata: {EVENT}\r\n\r\nevent: lagged\ndata: {{\"last_seq\":42}}\n\n"
        )
    }

    fn frames_of(pieces: &[&[u8]]) -> Vec<(Option<u64>, Option<String>, Option<String>)> {
        let mut parser = SseParser::default();
        let mut frames = Vec::new();
        for piece in pieces {
            parser.input().extend_from_slice(piece);
            parser
                .drain(|frame| {
                    if !frame.is_comment() {
                        frames.push((
                            frame.seq(),
                            frame
                                .event
                                .map(|event| String::from_utf8_lossy(event).into_owned()),
                            frame
                                .data
                                .map(|data| String::from_utf8_lossy(&data).into_owned()),
                        ));
                    }
                })
                .unwrap();
        }
        frames
    }

    #[test]
    fn sse_frames_split_on_blank_lines_with_lf_or_crlf() {
        let text = sse_stream();
        let expected = vec![
            (Some(41), Some("event".into()), Some(EVENT.into())),
            (Some(42), Some("event".into()), Some(EVENT.into())),
            (
                None,
                Some("lagged".into()),
                Some(r#"{"last_seq":42}"#.into()),
            ),
        ];
        for cut in 0..=text.len() {
            let (first, second) = text.as_bytes().split_at(cut);
            assert_eq!(frames_of(&[first, second]), expected, "cut at {cut}");
        }
        // A frame is only complete at its blank line.
        assert!(frames_of(&[b"id: 1\nevent: event\ndata: {}\n"]).is_empty());
    }

    #[test]
    fn multi_line_data_is_joined_and_fields_without_colon_are_empty() {
        let frames = frames_of(&[b"data: a\ndata:b\nevent\n\n"]);
        assert_eq!(
            frames,
            vec![(None, Some(String::new()), Some("a\nb".to_owned()))]
        );
    }
}
