//! A small Server-Sent Events parser for `eventide tail`: fed the body's bytes as they
//! arrive, split anywhere, it gives back each complete frame's `id`, `event` and `data`.
//! (The test kit has a stricter one for tests; the service cannot depend on it.)

/// One dispatched frame; comments only (heartbeats) give none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    frame: Frame,
}

impl Parser {
    /// Takes `bytes` and returns the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.buffer.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buffer[start..start + end];
            start += end + 1;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.is_empty() {
                let frame = std::mem::take(&mut self.frame);
                if frame != Frame::default() {
                    frames.push(frame);
                }
                continue;
            }
            if line.starts_with(b":") {
                continue;
            }
            let text = String::from_utf8_lossy(line);
            let (field, value) = match text.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (text.as_ref(), ""),
            };
            match field {
                "id" => self.frame.id = Some(value.to_owned()),
                "event" => self.frame.event = Some(value.to_owned()),
                "data" => match &mut self.frame.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.frame.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        self.buffer.drain(..start);
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_are_put_together() {
        let stream = b": connected\n\nid: 7\nevent: event\ndata: {\"a\":1}\n\n: heartbeat\n\nevent: lagged\r\ndata: {\"last_seq\":9}\r\n\r\n";
        for split in 0..stream.len() {
            let mut parser = Parser::default();
            let mut frames = parser.feed(&stream[..split]);
            frames.extend(parser.feed(&stream[split..]));
            assert_eq!(
                frames,
                [
                    Frame {
                        id: Some("7".into()),
                        event: Some("event".into()),
                        data: Some("{\"a\":1}".into())
                    },
                    Frame {
                        id: None,
                        event: Some("lagged".into()),
                        data: Some("{\"last_seq\":9}".into())
                    },
                ],
                "split at {split}"
            );
        }
    }
}
