//! The log's files: append-only segments of checksummed frames (see [`crate::record`]).
//!
//! An event is acknowledged once its frame is in the log, because appending is sequential and
//! cheap; the indexer reads the log afterwards to build the query indexes. Segments are named
//! after the first `seq` they hold and deleted once every event in them is indexed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::event::StoredEvent;
use crate::record::{self, FRAME_HEADER};

/// A segment is closed and a new one started once it grows past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A frame larger than this cannot have been written by us: it marks a corrupt tail.
const MAX_PAYLOAD: usize = 1 << 20;

/// What recovery found in the log beyond the indexed position.
pub struct Recovered {
    /// The seq the next appended event gets.
    pub next_seq: u64,
    /// Client ids (with receipt times) of events logged but not yet indexed.
    pub client_ids: Vec<(String, i64)>,
    /// Bytes cut from a torn or corrupt tail, if any.
    pub truncated_bytes: u64,
}

pub struct LogWriter {
    dir: PathBuf,
    file: File,
    len: u64,
    fsync: bool,
}

impl LogWriter {
    /// Opens the log in `dir` after a start or a crash: checks every frame past
    /// `indexed_seq`, cuts a torn tail, and starts a fresh segment for new appends.
    pub fn open(dir: &Path, indexed_seq: u64, fsync: bool) -> Result<(LogWriter, Recovered)> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let recovered = recover(dir, indexed_seq)?;
        let path = segment_path(dir, recovered.next_seq);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("creating segment {}", path.display()))?;
        if fsync {
            sync_dir(dir)?;
        }
        let writer = LogWriter {
            dir: dir.to_owned(),
            file,
            len: 0,
            fsync,
        };
        Ok((writer, recovered))
    }

    /// Appends complete frames; when this returns `Ok` they survive a crash of the process
    /// (and, with fsync, a power loss). On error the segment is cut back to where it was, so
    /// a failed append leaves nothing behind.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        let result = self.file.write_all(frames).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Best effort: if even this fails, recovery cuts the torn tail at the next start.
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(SeekFrom::Start(self.len));
                Err(err)
            }
        }
    }

    /// Starts a new segment at `next_seq` once the current one is full.
    pub fn roll_if_full(&mut self, next_seq: u64) -> io::Result<()> {
        if self.len < SEGMENT_BYTES {
            return Ok(());
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(segment_path(&self.dir, next_seq))?;
        if self.fsync {
            sync_dir(&self.dir).map_err(io::Error::other)?;
        }
        self.file = file;
        self.len = 0;
        Ok(())
    }
}

/// Reads frames in order, never past the last committed seq it is told about.
pub struct LogReader {
    dir: PathBuf,
    file: Option<BufReader<File>>,
    /// Set when `file` was opened as the segment starting at that seq, so reaching its end
    /// before the committed seq means the log is damaged (rather than rolled).
    file_first_seq: Option<u64>,
    next_seq: u64,
    payload: Vec<u8>,
}

impl LogReader {
    pub fn new(dir: &Path, next_seq: u64) -> LogReader {
        LogReader {
            dir: dir.to_owned(),
            file: None,
            file_first_seq: None,
            next_seq,
            payload: Vec::new(),
        }
    }

    /// Reads events from the next unread seq up to `committed_seq` (inclusive), at most
    /// `max` of them.
    pub fn read(&mut self, committed_seq: u64, max: usize) -> Result<Vec<StoredEvent>> {
        let mut events = Vec::new();
        while self.next_seq <= committed_seq && events.len() < max {
            if self.file.is_none() {
                self.file = Some(open_segment_containing(&self.dir, self.next_seq)?);
                self.file_first_seq = None;
            }
            let file = self.file.as_mut().expect("opened above");
            let mut header = [0u8; FRAME_HEADER];
            match file.read_exact(&mut header) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    anyhow::ensure!(
                        self.file_first_seq != Some(self.next_seq),
                        "the log ends before committed seq {}",
                        self.next_seq
                    );
                    // The writer rolled to a segment that starts at `next_seq`.
                    self.file = Some(open_segment_at(&self.dir, self.next_seq)?);
                    self.file_first_seq = Some(self.next_seq);
                    continue;
                }
                Err(err) => return Err(err).context("reading the log"),
            }
            let (len, crc, seq) = record::read_header(&header);
            anyhow::ensure!(
                seq == self.next_seq && len <= MAX_PAYLOAD,
                "log frame out of order: expected seq {}, found {seq}",
                self.next_seq
            );
            self.payload.resize(len, 0);
            file.read_exact(&mut self.payload)
                .context("reading the log")?;
            anyhow::ensure!(
                record::checksum_matches(crc, seq, &self.payload),
                "log frame {seq} fails its checksum"
            );
            let event = record::decode_payload(seq, &self.payload)
                .with_context(|| format!("log frame {seq} is malformed"))?;
            events.push(event);
            self.next_seq += 1;
        }
        Ok(events)
    }
}

/// The segments (by first seq) whose every event is at or below `indexed_seq`.
pub fn indexed_segments(dir: &Path, indexed_seq: u64) -> Result<Vec<u64>> {
    let segments = list_segments(dir)?;
    Ok(segments
        .windows(2)
        .filter(|pair| pair[1] <= indexed_seq + 1)
        .map(|pair| pair[0])
        .collect())
}

/// Deletes the segments that begin at `first_seqs`.
pub fn delete_segments(dir: &Path, first_seqs: &[u64]) -> Result<()> {
    for first_seq in first_seqs {
        fs::remove_file(segment_path(dir, *first_seq))?;
    }
    Ok(())
}

fn recover(dir: &Path, indexed_seq: u64) -> Result<Recovered> {
    let segments = list_segments(dir)?;
    let mut next_seq = indexed_seq + 1;
    let mut client_ids = Vec::new();
    let mut truncated_bytes = 0;
    let mut torn = false;
    for (i, &first_seq) in segments.iter().enumerate() {
        let path = segment_path(dir, first_seq);
        let is_past_the_index = segments
            .get(i + 1)
            .is_none_or(|&next| next > indexed_seq + 1);
        if torn {
            // Nothing after a torn frame was ever acknowledged as a contiguous log.
            truncated_bytes += fs::metadata(&path)?.len();
            fs::remove_file(&path)?;
            continue;
        }
        if !is_past_the_index {
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut offset = 0;
        let mut seq_expected = first_seq;
        while offset < bytes.len() {
            let Some(frame) = check_frame(&bytes[offset..], seq_expected) else {
                torn = true;
                break;
            };
            let payload = &bytes[offset + FRAME_HEADER..offset + FRAME_HEADER + frame];
            if seq_expected > indexed_seq {
                if let Some((id, received_at)) = record::client_id_of(payload) {
                    client_ids.push((id.to_owned(), received_at));
                }
            }
            offset += FRAME_HEADER + frame;
            seq_expected += 1;
        }
        if torn {
            truncated_bytes += (bytes.len() - offset) as u64;
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(offset as u64)?;
            file.sync_all()?;
        }
        next_seq = next_seq.max(seq_expected);
    }
    Ok(Recovered {
        next_seq,
        client_ids,
        truncated_bytes,
    })
}

/// The payload length of a sound frame for `seq` at the start of `bytes`.
fn check_frame(bytes: &[u8], seq: u64) -> Option<usize> {
    let header: &[u8; FRAME_HEADER] = bytes.get(..FRAME_HEADER)?.try_into().ok()?;
    let (len, crc, frame_seq) = record::read_header(header);
    if frame_seq != seq || len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER + len)?;
    record::checksum_matches(crc, seq, payload).then_some(len)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

/// First seqs of the segments in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            segments.push(seq);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

fn open_segment_at(dir: &Path, first_seq: u64) -> Result<BufReader<File>> {
    let path = segment_path(dir, first_seq);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(BufReader::with_capacity(256 * 1024, file))
}

/// Opens the segment holding `seq` and positions the reader on that frame.
fn open_segment_containing(dir: &Path, seq: u64) -> Result<BufReader<File>> {
    let first_seq = list_segments(dir)?
        .into_iter()
        .rev()
        .find(|&first| first <= seq)
        .with_context(|| format!("no log segment holds seq {seq}"))?;
    let mut reader = open_segment_at(dir, first_seq)?;
    let mut header = [0u8; FRAME_HEADER];
    for _ in first_seq..seq {
        reader.read_exact(&mut header)?;
        let (len, _, _) = record::read_header(&header);
        reader.seek_relative(len as i64)?;
    }
    Ok(reader)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;

    fn frames(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let events = seqs.map(|seq| {
            let event = NewEvent {
                id: Some(format!("id-{seq}")),
                kind: "t".into(),
                timestamp_ms: seq as i64,
                timestamp_sent: true,
                service: None,
                user_id: None,
                message: None,
                metadata: None,
            };
            (seq, event)
        });
        record::frames_of(events, "id-", 5)
    }

    #[test]
    fn appended_frames_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = LogWriter::open(dir.path(), 0, false).unwrap();
        assert_eq!(recovered.next_seq, 1);
        log.append(&frames(1..=3)).unwrap();
        log.append(&frames(4..=5)).unwrap();

        let mut reader = LogReader::new(dir.path(), 1);
        let first = reader.read(5, 2).unwrap();
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        let rest = reader.read(4, 100).unwrap();
        assert_eq!(
            rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4],
            "stops at committed"
        );
        assert_eq!(reader.read(5, 100).unwrap()[0].id, "id-5");
    }

    #[test]
    fn recovery_cuts_a_torn_tail_and_keeps_what_was_whole() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = LogWriter::open(dir.path(), 0, false).unwrap();
            let mut bytes = frames(1..=3);
            let torn = frames(4..=4);
            bytes.extend_from_slice(&torn[..torn.len() - 3]);
            log.append(&bytes).unwrap();
        }
        let (mut log, recovered) = LogWriter::open(dir.path(), 1, false).unwrap();
        assert_eq!(recovered.next_seq, 4);
        assert!(recovered.truncated_bytes > 0);
        let ids: Vec<_> = recovered
            .client_ids
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["id-2", "id-3"],
            "only events past the index are reported"
        );

        log.append(&frames(4..=4)).unwrap();
        let events = LogReader::new(dir.path(), 2).read(4, 100).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn reading_follows_segment_rolls_and_indexed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogWriter::open(dir.path(), 0, false).unwrap();
        log.append(&frames(1..=2)).unwrap();
        log.len = SEGMENT_BYTES; // pretend it is full
        log.roll_if_full(3).unwrap();
        log.append(&frames(3..=4)).unwrap();

        let events = LogReader::new(dir.path(), 2).read(4, 100).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);

        assert!(indexed_segments(dir.path(), 1).unwrap().is_empty());
        let indexed = indexed_segments(dir.path(), 2).unwrap();
        assert_eq!(indexed, [1]);
        delete_segments(dir.path(), &indexed).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), [3]);
        let events = LogReader::new(dir.path(), 3).read(4, 100).unwrap();
        assert_eq!(events.len(), 2);
    }
}
