//! The log's files: append-only segments of checksummed frames (see [`crate::record`]).
//!
//! An event is acknowledged once its frame is in the log, because appending is sequential and
//! cheap; the indexer reads the log afterwards to build the query indexes. Segments are named
//! after the first `seq` they hold and deleted once every event in them is indexed.
//!
//! With `--durability fsync` the segment being written ends in zeroed space written ahead of
//! the frames (see [`LogWriter::append`]); an all-zero frame header marks where its frames end.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::event::StoredEvent;
use crate::record::{self, FRAME_HEADER};

/// A segment is closed and a new one started once it grows past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A frame larger than this cannot have been written by us: it marks a corrupt tail.
const MAX_PAYLOAD: usize = 1 << 20;

/// Zeroed space is written ahead of the frames (with fsync) in steps of this much. The flush
/// that carries a step also commits the file system's journal and took a few milliseconds;
/// larger steps made fewer of those flushes but each long enough to show in the p99.
const ZEROED_AHEAD: u64 = 1024 * 1024;

/// What the zeros are written from, a piece at a time: a zeroed allocation of the whole
/// step each time cost a memset and page faults on the writer thread (a third of the
/// server's page faults under sustained load). Small, as it is part of the binary.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

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
    /// Bytes of frames in the current segment.
    len: u64,
    /// Bytes of the current segment on disk: `len`, then zeros (with fsync only).
    allocated: u64,
    /// The segment is closed once it holds this much ([`SEGMENT_BYTES`]; less in tests).
    segment_bytes: u64,
    fsync: bool,
}

impl LogWriter {
    /// Opens the log in `dir` after a start or a crash: checks every frame past
    /// `indexed_seq`, cuts a torn tail, and starts a fresh segment for new appends.
    pub fn open(dir: &Path, indexed_seq: u64, fsync: bool) -> Result<(LogWriter, Recovered)> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let recovered = recover(dir, indexed_seq)?;
        let file = create_segment(dir, recovered.next_seq, fsync)?;
        let writer = LogWriter {
            dir: dir.to_owned(),
            file,
            len: 0,
            allocated: 0,
            segment_bytes: SEGMENT_BYTES,
            fsync,
        };
        Ok((writer, recovered))
    }

    /// Whether each append is flushed to the disk (`--durability fsync`).
    pub fn flushes(&self) -> bool {
        self.fsync
    }

    /// Appends complete frames; when this returns `Ok` they survive a crash of the process
    /// (and, with fsync, a power loss). On error the segment is cut back to where it was, so
    /// a failed append leaves nothing behind.
    ///
    /// With fsync, frames are written over zeros written (and flushed) ahead of them. A flush
    /// of a file that grows also commits the file system's journal (the new size, the new
    /// blocks); over space already on disk it writes the data alone, which took 112–146 µs
    /// here against 206–278 µs for a growing file.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        let end = self.len + frames.len() as u64;
        let result = self.zero_ahead(end).and_then(|()| {
            self.file.write_all_at(frames, self.len)?;
            if self.fsync {
                self.file.sync_data()?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.len = end;
                self.allocated = self.allocated.max(end);
                Ok(())
            }
            Err(err) => {
                // Best effort: if even this fails, recovery cuts the torn tail at the next start.
                if self.file.set_len(self.len).is_ok() {
                    self.allocated = self.len;
                }
                Err(err)
            }
        }
    }

    /// With fsync, makes sure the segment has zeroed space on disk up to `end` at least,
    /// writing [`ZEROED_AHEAD`] beyond it when it has not.
    fn zero_ahead(&mut self, end: u64) -> io::Result<()> {
        if !self.fsync || end <= self.allocated {
            return Ok(());
        }
        let target = end + ZEROED_AHEAD;
        while self.allocated < target {
            let len = (target - self.allocated).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..len], self.allocated)?;
            self.allocated += len as u64;
        }
        // The append's own flush then flushes these zeros and the new size with it, once.
        Ok(())
    }

    /// Starts a new segment at `next_seq` once the current one is full, cutting the zeroed
    /// space from the end of the one it closes.
    pub fn roll_if_full(&mut self, next_seq: u64) -> io::Result<()> {
        if self.len < self.segment_bytes {
            return Ok(());
        }
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.allocated = self.len;
        }
        self.file = create_segment(&self.dir, next_seq, self.fsync).map_err(io::Error::other)?;
        self.len = 0;
        self.allocated = 0;
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
    /// Where the frame for `next_seq` starts in `file`.
    position: u64,
    payload: Vec<u8>,
}

impl LogReader {
    pub fn new(dir: &Path, next_seq: u64) -> LogReader {
        LogReader {
            dir: dir.to_owned(),
            file: None,
            file_first_seq: None,
            next_seq,
            position: 0,
            payload: Vec::new(),
        }
    }

    /// Reads events from the next unread seq up to `committed_seq` (inclusive), at most
    /// `max` of them. An error after some events returns those; the next call meets it again.
    pub fn read(&mut self, committed_seq: u64, max: usize) -> Result<Vec<StoredEvent>> {
        // Sized once: grown a push at a time, a large batch was copied as it doubled.
        let waiting = (committed_seq + 1).saturating_sub(self.next_seq);
        let mut events = Vec::with_capacity(waiting.min(max as u64) as usize);
        while self.next_seq <= committed_seq && events.len() < max {
            match self.read_next() {
                Ok(event) => events.push(event),
                Err(err) => {
                    // The file may stand anywhere now: the next read opens it afresh.
                    self.file = None;
                    if events.is_empty() {
                        return Err(err);
                    }
                    break;
                }
            }
        }
        Ok(events)
    }

    /// Reads the event at `next_seq`, which is committed.
    fn read_next(&mut self) -> Result<StoredEvent> {
        loop {
            if self.file.is_none() {
                let (file, position) = open_segment_containing(&self.dir, self.next_seq)?;
                self.file = Some(file);
                self.file_first_seq = None;
                self.position = position;
            }
            let file = self.file.as_mut().expect("opened above");
            let seq = self.next_seq;
            let Some(len) = read_frame(file, self.position, seq, &mut self.payload)? else {
                anyhow::ensure!(
                    self.file_first_seq != Some(seq),
                    "the log ends before committed seq {seq}"
                );
                // The writer rolled to a segment that starts at `next_seq`.
                self.file = Some(open_segment_at(&self.dir, seq)?);
                self.file_first_seq = Some(seq);
                self.position = 0;
                continue;
            };
            let event = record::decode_payload(seq, &self.payload)
                .with_context(|| format!("log frame {seq} is malformed"))?;
            self.next_seq += 1;
            self.position += (FRAME_HEADER + len) as u64;
            return Ok(event);
        }
    }
}

/// Reads the frame for `seq` at byte `position` of `file` (where the reader stands) into
/// `payload` and returns its length, or `None` where the segment's frames end (its end, or
/// zeroed space).
///
/// The buffer may hold what the file held when it was filled: zeros, or part of a frame the
/// writer was still writing. A frame that does not read whole and sound is therefore read
/// once more straight from the file, where every committed frame is complete.
fn read_frame(
    file: &mut BufReader<File>,
    position: u64,
    seq: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<usize>> {
    let (mut frame, mut sound) = read_and_check(file, seq, payload)?;
    if !sound {
        // Seeking drops the buffer.
        file.seek(SeekFrom::Start(position))
            .context("reading the log")?;
        (frame, sound) = read_and_check(file, seq, payload)?;
    }
    let Some((len, frame_seq)) = frame else {
        return Ok(None);
    };
    anyhow::ensure!(
        frame_seq == seq && len <= MAX_PAYLOAD,
        "log frame out of order: expected seq {seq}, found {frame_seq}"
    );
    anyhow::ensure!(sound, "log frame {seq} fails its checksum");
    Ok(Some(len))
}

/// One reading for [`read_frame`], from wherever the buffer stands: the frame's
/// `(len, seq)` (`None` at the end or at zeros), and whether it is the sound frame for `seq`.
fn read_and_check(
    file: &mut BufReader<File>,
    seq: u64,
    payload: &mut Vec<u8>,
) -> Result<(Option<(usize, u64)>, bool)> {
    let mut header = [0u8; FRAME_HEADER];
    let mut read = || -> io::Result<Option<(usize, u32, u64)>> {
        file.read_exact(&mut header)?;
        if header == [0; FRAME_HEADER] {
            return Ok(None);
        }
        let (len, crc, frame_seq) = record::read_header(&header);
        if len <= MAX_PAYLOAD {
            payload.resize(len, 0);
            file.read_exact(payload)?;
        }
        Ok(Some((len, crc, frame_seq)))
    };
    let frame = match read() {
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => None,
        result => result.context("reading the log")?,
    };
    let sound = frame.is_some_and(|(len, crc, frame_seq)| {
        frame_seq == seq && len <= MAX_PAYLOAD && record::checksum_matches(crc, seq, payload)
    });
    Ok((frame.map(|(len, _, frame_seq)| (len, frame_seq)), sound))
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
        if offset < bytes.len() {
            // After the last sound frame: zeroed space written ahead of the frames, where
            // they end, or a frame torn by a crash (and whatever was written after it).
            let written = bytes
                .iter()
                .rposition(|&byte| byte != 0)
                .map_or(0, |i| i + 1);
            let torn_bytes = written.saturating_sub(offset);
            torn = torn_bytes > 0;
            truncated_bytes += torn_bytes as u64;
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

/// Creates the (empty) segment that starts at `first_seq`; with fsync, its name is on disk
/// when this returns.
fn create_segment(dir: &Path, first_seq: u64, fsync: bool) -> Result<File> {
    let path = segment_path(dir, first_seq);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating segment {}", path.display()))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(file)
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

/// Opens the segment holding `seq` and positions the reader on that frame, at the byte
/// offset it returns.
fn open_segment_containing(dir: &Path, seq: u64) -> Result<(BufReader<File>, u64)> {
    let first_seq = list_segments(dir)?
        .into_iter()
        .rev()
        .find(|&first| first <= seq)
        .with_context(|| format!("no log segment holds seq {seq}"))?;
    let mut reader = open_segment_at(dir, first_seq)?;
    let mut header = [0u8; FRAME_HEADER];
    let mut position = 0;
    for _ in first_seq..seq {
        reader.read_exact(&mut header)?;
        let (len, _, _) = record::read_header(&header);
        reader.seek_relative(len as i64)?;
        position += (FRAME_HEADER + len) as u64;
    }
    Ok((reader, position))
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
        assert_eq!(seqs(&first), [1, 2]);
        let rest = reader.read(4, 100).unwrap();
        assert_eq!(seqs(&rest), [3, 4], "stops at committed");
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
        assert_eq!(seqs(&events), [2, 3, 4]);
    }

    #[test]
    fn reading_follows_segment_rolls_and_indexed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogWriter::open(dir.path(), 0, false).unwrap();
        log.append(&frames(1..=2)).unwrap();
        log.segment_bytes = log.len; // full
        log.roll_if_full(3).unwrap();
        log.append(&frames(3..=4)).unwrap();

        let events = LogReader::new(dir.path(), 2).read(4, 100).unwrap();
        assert_eq!(seqs(&events), [2, 3, 4]);

        assert!(indexed_segments(dir.path(), 1).unwrap().is_empty());
        let indexed = indexed_segments(dir.path(), 2).unwrap();
        assert_eq!(indexed, [1]);
        delete_segments(dir.path(), &indexed).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), [3]);
        let events = LogReader::new(dir.path(), 3).read(4, 100).unwrap();
        assert_eq!(events.len(), 2);
    }

    fn seqs(events: &[StoredEvent]) -> Vec<u64> {
        events.iter().map(|event| event.seq).collect()
    }

    fn segment_len(dir: &Path, first_seq: u64) -> u64 {
        fs::metadata(segment_path(dir, first_seq)).unwrap().len()
    }

    #[test]
    fn with_fsync_frames_are_written_over_zeros_and_read_up_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogWriter::open(dir.path(), 0, true).unwrap();
        let first = frames(1..=2);
        log.append(&first).unwrap();
        let zeroed = segment_len(dir.path(), 1);
        assert!(
            zeroed >= first.len() as u64 + ZEROED_AHEAD,
            "zeros are written ahead: {zeroed} bytes"
        );

        // The reader's buffer takes in the zeros after frame 2...
        let mut reader = LogReader::new(dir.path(), 1);
        assert_eq!(seqs(&reader.read(2, 100).unwrap()), [1, 2]);
        // ...and half of frame 3, as if read while the writer was writing it.
        let rest = frames(3..=4);
        let half = rest.len() / 3;
        log.file.write_all_at(&rest[..half], log.len).unwrap();
        let mut early = LogReader::new(dir.path(), 1);
        assert_eq!(seqs(&early.read(2, 100).unwrap()), [1, 2]);
        log.append(&rest).unwrap();
        assert_eq!(segment_len(dir.path(), 1), zeroed, "written in place");
        assert_eq!(seqs(&reader.read(4, 100).unwrap()), [3, 4]);
        assert_eq!(seqs(&early.read(4, 100).unwrap()), [3, 4]);

        // A roll cuts the zeros off the segment it closes, and readers follow it.
        let data = (first.len() + rest.len()) as u64;
        log.segment_bytes = data;
        log.roll_if_full(5).unwrap();
        assert_eq!(segment_len(dir.path(), 1), data);
        log.append(&frames(5..=5)).unwrap();
        assert_eq!(seqs(&reader.read(5, 100).unwrap()), [5]);
        let events = LogReader::new(dir.path(), 2).read(5, 100).unwrap();
        assert_eq!(seqs(&events), [2, 3, 4, 5]);
    }

    #[test]
    fn recovery_takes_zeros_after_the_frames_as_their_end_not_as_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let written = frames(1..=3);
        {
            let (mut log, _) = LogWriter::open(dir.path(), 0, true).unwrap();
            log.append(&written).unwrap();
        }
        let (mut log, recovered) = LogWriter::open(dir.path(), 0, true).unwrap();
        assert_eq!(recovered.next_seq, 4);
        assert_eq!(recovered.truncated_bytes, 0);
        assert_eq!(recovered.client_ids.len(), 3);
        assert_eq!(
            segment_len(dir.path(), 1),
            written.len() as u64,
            "zeros cut"
        );
        log.append(&frames(4..=4)).unwrap();
        let events = LogReader::new(dir.path(), 1).read(4, 100).unwrap();
        assert_eq!(seqs(&events), [1, 2, 3, 4]);
    }

    #[test]
    fn recovery_counts_only_the_torn_bytes_before_the_zeros() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = LogWriter::open(dir.path(), 0, true).unwrap();
            log.append(&frames(1..=2)).unwrap();
            // A frame half on disk when the power went, in the zeroed space.
            let torn = frames(3..=3);
            log.file
                .write_all_at(&torn[..torn.len() - 5], log.len)
                .unwrap();
        }
        let (_, recovered) = LogWriter::open(dir.path(), 0, true).unwrap();
        assert_eq!(recovered.next_seq, 3);
        let torn = frames(3..=3);
        assert_eq!(recovered.truncated_bytes, (torn.len() - 5) as u64);
    }
}
