//! `eventide import`: files of events (NDJSON, a JSON array, or CSV with a header row; gzip
//! read transparently; `-` for stdin) posted in batches over a few connections at once.
//!
//! Idempotent and resumable: an event without an `id` gets `imp-<hash>-<line>`, the first 64
//! bits of the SHA-256 of the file's bytes and the event's line (for a JSON array, its
//! position from 1), so importing the same file again, whole or after an interruption, adds
//! nothing twice: the server drops ids it already has (as duplicates, or, past its memory of
//! recent ids, through the store's unique index). `429` and `503` are retried after
//! `Retry-After`, lost connections a few times with a growing pause; events the server
//! refuses (and lines that are not JSON) go to `--rejects` with the line and the errors, and
//! the import goes on.
//!
//! Files are read on a blocking thread that hands finished batches to the senders through a
//! bounded channel, so memory holds a few batches whatever the file's size (stdin, which
//! cannot be read twice for its hash, is held in memory).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{
    error_chain, refusal, retry_after, Client, Connection, Failure, Outcome, ProgressArgs,
};

/// The server takes at most 10 MiB a request: a batch is sent before it grows past this.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Attempts at a batch when the connection fails (the server is restarting, the network is
/// down), pausing 1, 2, 4... up to 30 s between them.
const CONNECTION_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One event (a JSON object) per line.
    Ndjson,
    /// A JSON array of events, or one event.
    Json,
    /// A header row naming event fields; other columns go into metadata.
    Csv,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Files to import (`-`: stdin); `.gz` files (or any starting with gzip's magic bytes)
    /// are decompressed.
    #[arg(required = true)]
    pub files: Vec<String>,
    /// The files' format; by default from the extension (`.ndjson`, `.jsonl`, `.json`,
    /// `.csv`, maybe followed by `.gz`), NDJSON otherwise.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Events per request (at most 10,000; requests also stay under 8 MiB).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Where to write the events refused (NDJSON: file, line, errors, event).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub connection: Connection,
}

/// Events ready to post: NDJSON, one event per line of `body`, from `lines` of `file`.
struct Batch {
    file: Arc<str>,
    body: Vec<u8>,
    lines: Vec<u64>,
}

impl Batch {
    fn new(file: &Arc<str>) -> Batch {
        Batch {
            file: file.clone(),
            body: Vec::with_capacity(64 * 1024),
            lines: Vec::new(),
        }
    }

    /// The event on line `index` of the body.
    fn event(&self, index: usize) -> &[u8] {
        self.body
            .split(|&byte| byte == b'\n')
            .nth(index)
            .unwrap_or(b"")
    }

    /// The two halves, for a batch the server found too large.
    fn split(self) -> (Batch, Batch) {
        let half = self.lines.len() / 2;
        let mut first = Batch::new(&self.file);
        let mut second = Batch::new(&self.file);
        for (index, line) in self.body.split(|&byte| byte == b'\n').enumerate() {
            if index >= self.lines.len() {
                break;
            }
            let target = if index < half {
                &mut first
            } else {
                &mut second
            };
            target.body.extend_from_slice(line);
            target.body.push(b'\n');
            target.lines.push(self.lines[index]);
        }
        (first, second)
    }
}

/// Counts and the rejects file, shared by the reader and the senders.
#[derive(Default)]
struct Tally {
    imported: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    bytes_read: AtomicU64,
    /// Whether the server has answered once: until it has, a connection that fails is a
    /// wrong `--url` or a server not running, not worth retrying.
    reached: std::sync::atomic::AtomicBool,
    rejects: Mutex<Option<std::io::BufWriter<File>>>,
}

impl Tally {
    fn processed(&self) -> u64 {
        self.imported.load(Ordering::Relaxed)
            + self.duplicates.load(Ordering::Relaxed)
            + self.rejected.load(Ordering::Relaxed)
    }

    /// Counts a refused event and writes it to the rejects file.
    fn reject(&self, file: &str, line: u64, errors: Value, event: &[u8]) -> Result<(), Failure> {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let mut rejects = self.rejects.lock().expect("rejects lock");
        let Some(out) = rejects.as_mut() else {
            return Ok(());
        };
        let event = serde_json::from_slice::<Value>(event)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(event).into_owned()));
        let record =
            serde_json::json!({"file": file, "line": line, "errors": errors, "event": event});
        serde_json::to_writer(&mut *out, &record)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|err| Failure::Usage(format!("cannot write the rejects file: {err}")))
    }
}

pub async fn run(args: ImportArgs) -> Outcome {
    let client = Client::new(&args.connection)?;
    let tally = Arc::new(Tally::default());
    if let Some(path) = &args.rejects {
        let file = File::create(path).map_err(|err| {
            Failure::Usage(format!("cannot create --rejects {}: {err}", path.display()))
        })?;
        *tally.rejects.lock().expect("rejects lock") = Some(std::io::BufWriter::new(file));
    }
    if args.files.iter().filter(|file| *file == "-").count() > 1 {
        return Err(Failure::Usage("stdin ('-') can be given once".into()));
    }
    let mut total_bytes = 0;
    for file in args.files.iter().filter(|file| *file != "-") {
        total_bytes += std::fs::metadata(file)
            .map_err(|err| Failure::Usage(format!("cannot read {file}: {err}")))?
            .len();
    }

    let started = Instant::now();
    let concurrency = args.concurrency as usize;
    let (sender, receiver) = mpsc::channel::<Batch>(concurrency * 2);
    let reader = {
        let tally = tally.clone();
        let files = args.files.clone();
        let format = args.format;
        let batch_size = args.batch_size as usize;
        tokio::task::spawn_blocking(move || {
            for file in &files {
                read_file(file, format, batch_size, &sender, &tally)?;
            }
            Ok::<(), Failure>(())
        })
    };
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let receiver = receiver.clone();
        let tally = tally.clone();
        senders.spawn(async move {
            loop {
                let batch = receiver.lock().await.recv().await;
                let Some(batch) = batch else {
                    return Ok(());
                };
                post_batch(&client, batch, &tally).await?;
            }
        });
    }
    let progress = tokio::spawn(show_progress(
        tally.clone(),
        total_bytes,
        started,
        args.progress.every,
    ));

    let mut failure = None;
    while let Some(joined) = senders.join_next().await {
        if let Err(err) = joined.expect("a sender panicked") {
            failure.get_or_insert(err);
            // Stops the reader: its next batch finds the channel closed.
            receiver.lock().await.close();
        }
    }
    let read = reader.await.expect("the reader panicked");
    progress.abort();
    let _ = progress.await;
    if let Some(out) = tally.rejects.lock().expect("rejects lock").as_mut() {
        out.flush()
            .map_err(|err| Failure::Usage(format!("cannot write the rejects file: {err}")))?;
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    read?;

    let seconds = started.elapsed().as_secs_f64();
    let processed = tally.processed();
    let rejected = tally.rejected.load(Ordering::Relaxed);
    println!(
        "imported {}, duplicates {}, rejected {rejected} in {seconds:.1} s ({:.0} events/s)",
        tally.imported.load(Ordering::Relaxed),
        tally.duplicates.load(Ordering::Relaxed),
        processed as f64 / seconds.max(1e-9),
    );
    if rejected > 0 {
        let whereto = match &args.rejects {
            Some(path) => format!("written to {}", path.display()),
            None => "give --rejects FILE to keep them with their errors".to_owned(),
        };
        return Err(Failure::Refused(format!(
            "{rejected} event{} rejected ({whereto})",
            if rejected == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

/// Posts `batch`, retrying what can be retried, splitting it if the server finds it too
/// large, and counts the answer.
async fn post_batch(client: &Client, batch: Batch, tally: &Tally) -> Outcome {
    let mut pending = vec![batch];
    while let Some(batch) = pending.pop() {
        let mut connection_failures = 0;
        loop {
            let request = client
                .post("/events")
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(batch.body.clone());
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    connection_failures += 1;
                    if connection_failures >= CONNECTION_ATTEMPTS
                        || !tally.reached.load(Ordering::Relaxed)
                    {
                        return Err(client.unreachable(&err));
                    }
                    let pause = Duration::from_secs((1 << (connection_failures - 1)).min(30));
                    eprintln!(
                        "import: {}; retrying in {} s",
                        error_chain(&err),
                        pause.as_secs()
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            tally.reached.store(true, Ordering::Relaxed);
            match response.status().as_u16() {
                429 | 503 => {
                    tokio::time::sleep(retry_after(&response)).await;
                    continue;
                }
                413 if batch.lines.len() > 1 => {
                    let (first, second) = batch.split();
                    pending.push(second);
                    pending.push(first);
                    break;
                }
                202 | 400 => {
                    let text = response
                        .text()
                        .await
                        .map_err(|err| client.unreachable(&err))?;
                    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    count_answer(&answer, &batch, tally)?;
                    break;
                }
                _ => return Err(refusal(response).await),
            }
        }
    }
    Ok(())
}

/// Counts an answer to `batch`: accepted, duplicates (and conflicts: the id was taken), and
/// each refused event with its errors.
fn count_answer(answer: &Value, batch: &Batch, tally: &Tally) -> Outcome {
    let Some(ids) = answer["ids"].as_array() else {
        // A refusal of the whole request (never expected: each line was checked).
        let errors = serde_json::json!([{"field": "", "message": answer["message"]}]);
        for (index, &line) in batch.lines.iter().enumerate() {
            tally.reject(&batch.file, line, errors.clone(), batch.event(index))?;
        }
        return Ok(());
    };
    tally
        .imported
        .fetch_add(answer["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
    tally.duplicates.fetch_add(
        answer["duplicates"].as_u64().unwrap_or(0) + answer["conflicts"].as_u64().unwrap_or(0),
        Ordering::Relaxed,
    );
    let mut errors: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    for error in answer["errors"].as_array().into_iter().flatten() {
        if let Some(index) = error["index"].as_u64() {
            errors
                .entry(index as usize)
                .or_default()
                .push(serde_json::json!({
                    "field": error["field"], "message": error["message"],
                }));
        }
    }
    for (index, id) in ids.iter().enumerate() {
        if id.is_null() {
            let line = batch.lines.get(index).copied().unwrap_or(0);
            let errors = Value::Array(errors.remove(&index).unwrap_or_default());
            tally.reject(&batch.file, line, errors, batch.event(index))?;
        }
    }
    Ok(())
}

/// A progress bar on a terminal; otherwise a line `every` few seconds (both on stderr).
async fn show_progress(tally: Arc<Tally>, total_bytes: u64, started: Instant, every: Duration) {
    let rate = |done: u64| done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total_bytes.max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} ETA {eta}",
            )
            .expect("a valid template"),
        );
        loop {
            let done = tally.processed();
            bar.set_position(tally.bytes_read.load(Ordering::Relaxed));
            bar.set_message(format!("{done} events ({:.0}/s)", rate(done)));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        loop {
            tokio::time::sleep(every.max(Duration::from_millis(10))).await;
            let done = tally.processed();
            eprintln!(
                "import: {done} events ({:.0}/s), {} of {total_bytes} bytes read",
                rate(done),
                tally.bytes_read.load(Ordering::Relaxed)
            );
        }
    }
}

/// Counts the bytes read from a file, before decompression, for the progress.
struct Counting<'a, R> {
    inner: R,
    tally: &'a Tally,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The format `--format` gives, or the extension (before `.gz`) says.
fn format_of(name: &str, format: Option<Format>) -> Format {
    if let Some(format) = format {
        return format;
    }
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let extension = Path::new(name)
        .extension()
        .and_then(|ext| ext.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "json" => Format::Json,
        "csv" => Format::Csv,
        _ => Format::Ndjson,
    }
}

/// `imp-` and the first 64 bits of the content's SHA-256, in hex.
fn id_prefix(hash: &[u8]) -> String {
    let mut prefix = String::from("imp-");
    for byte in &hash[..8] {
        prefix.push_str(&format!("{byte:02x}"));
    }
    prefix
}

/// Reads one file into batches sent on `sender`.
fn read_file(
    name: &str,
    format: Option<Format>,
    batch_size: usize,
    sender: &mpsc::Sender<Batch>,
    tally: &Tally,
) -> Outcome {
    let cannot = |err: std::io::Error| cannot_read(name, err);
    // Stdin cannot be read twice: it is held in memory.
    let stdin = if name == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(cannot)?;
        Some(bytes)
    } else {
        None
    };
    // The hash first, of the content (decompressed: `a.ndjson` and `a.ndjson.gz` give the
    // same ids), in a pass of its own.
    let mut hasher = Sha256::new();
    std::io::copy(
        &mut open(name, stdin.as_deref(), None).map_err(cannot)?,
        &mut hasher,
    )
    .map_err(cannot)?;
    let reader = open(name, stdin.as_deref(), Some(tally)).map_err(cannot)?;
    let file: Arc<str> = Arc::from(name);
    let mut reading = Reading {
        name,
        prefix: id_prefix(&hasher.finalize()),
        batches: Batcher {
            file: file.clone(),
            batch: Batch::new(&file),
            batch_size,
            sender,
        },
        tally,
    };
    match format_of(name, format) {
        Format::Ndjson => read_ndjson(reader, &mut reading)?,
        Format::Json => read_json(reader, &mut reading)?,
        Format::Csv => read_csv(reader, &mut reading)?,
    }
    reading.batches.flush()
}

/// The failure of reading the file `name`.
fn cannot_read(name: &str, err: impl std::fmt::Display) -> Failure {
    Failure::Usage(format!("cannot read {name}: {err}"))
}

/// A file being read: where its events go, and what an event refused before sending is
/// counted in.
struct Reading<'a> {
    name: &'a str,
    /// Of the ids given to events without one (see `id_prefix`).
    prefix: String,
    batches: Batcher<'a>,
    tally: &'a Tally,
}

impl Reading<'_> {
    /// The id given to the event at `position` (its line, or its place in a JSON array) when
    /// it has none: the same on every import of the same content.
    fn id_at(&self, position: u64) -> String {
        format!("{}-{position}", self.prefix)
    }

    /// Counts the event at `line` as refused before sending (not JSON, not an object).
    fn reject(&self, line: u64, message: &str, text: &[u8]) -> Outcome {
        let errors = serde_json::json!([{"field": "", "message": message}]);
        self.tally.reject(self.name, line, errors, text)
    }
}

/// The content of a file (or of stdin, held in `stdin`), decompressed if it starts with
/// gzip's magic bytes; its bytes counted in `counted` for the progress.
fn open<'a>(
    name: &str,
    stdin: Option<&'a [u8]>,
    counted: Option<&'a Tally>,
) -> std::io::Result<Box<dyn BufRead + 'a>> {
    let source: Box<dyn Read + 'a> = match stdin {
        Some(bytes) => Box::new(bytes),
        None => Box::new(File::open(name)?),
    };
    let source: Box<dyn Read + 'a> = match counted {
        Some(tally) => Box::new(Counting {
            inner: source,
            tally,
        }),
        None => source,
    };
    let mut raw = BufReader::with_capacity(256 * 1024, source);
    if raw.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(raw),
        )))
    } else {
        Ok(Box::new(raw))
    }
}

/// Gathers events into batches and hands full ones to the senders.
struct Batcher<'a> {
    file: Arc<str>,
    batch: Batch,
    batch_size: usize,
    sender: &'a mpsc::Sender<Batch>,
}

impl Batcher<'_> {
    fn push(&mut self, line: u64, event: &[u8]) -> Outcome {
        if !self.batch.lines.is_empty() && self.batch.body.len() + event.len() > MAX_BATCH_BYTES {
            self.flush()?;
        }
        self.batch.body.extend_from_slice(event);
        self.batch.body.push(b'\n');
        self.batch.lines.push(line);
        if self.batch.lines.len() >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Outcome {
        if self.batch.lines.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Batch::new(&self.file));
        // Closed only when a sender failed, which is the failure reported.
        let _ = self.sender.blocking_send(batch);
        if self.sender.is_closed() {
            return Err(Failure::Usage("import stopped".into()));
        }
        Ok(())
    }
}

/// Only the `id` of an event, to see whether it has one without building the whole value.
#[derive(Deserialize)]
struct IdProbe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

fn read_ndjson(mut reader: Box<dyn BufRead + '_>, reading: &mut Reading) -> Outcome {
    let mut line = Vec::with_capacity(4096);
    let mut with_id = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|err| cannot_read(reading.name, err))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<IdProbe>(text) {
            Ok(IdProbe { id: Some(_) }) => reading.batches.push(number, text)?,
            Ok(IdProbe { id: None }) if text.starts_with(b"{") => {
                with_id.clear();
                let id = reading.id_at(number);
                with_id.extend_from_slice(format!("{{\"id\":\"{id}\"").as_bytes());
                let rest = &text[1..];
                if !rest.trim_ascii_start().starts_with(b"}") {
                    with_id.push(b',');
                }
                with_id.extend_from_slice(rest);
                reading.batches.push(number, &with_id)?;
            }
            Ok(_) => reading.reject(number, "an event must be a JSON object", text)?,
            Err(err) => reading.reject(number, &format!("malformed JSON: {err}"), text)?,
        }
    }
}

fn read_json(mut reader: Box<dyn BufRead + '_>, reading: &mut Reading) -> Outcome {
    let name = reading.name;
    let mut text = Vec::new();
    reader
        .read_to_end(&mut text)
        .map_err(|err| cannot_read(name, err))?;
    let events = match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Array(events)) => events,
        Ok(event) => vec![event],
        Err(err) => {
            return Err(Failure::Refused(format!("{name} is not JSON: {err}")));
        }
    };
    drop(text);
    for (index, mut event) in events.into_iter().enumerate() {
        let number = index as u64 + 1;
        match &mut event {
            Value::Object(fields) => {
                if !fields.contains_key("id") {
                    fields.insert("id".into(), Value::String(reading.id_at(number)));
                }
                reading
                    .batches
                    .push(number, &serde_json::to_vec(&event).expect("JSON"))?;
            }
            other => reading.reject(
                number,
                "an event must be a JSON object",
                other.to_string().as_bytes(),
            )?,
        }
    }
    Ok(())
}

/// Columns taken as the event's own fields (with the server's aliases); `seq` and
/// `received_at` (an export's) are the server's to give and are left out; any other column
/// goes into metadata.
const CSV_FIELDS: &[&str] = &[
    "id",
    "type",
    "eventType",
    "event_type",
    "event",
    "timestamp",
    "service",
    "source",
    "user_id",
    "userId",
    "message",
];

fn read_csv(reader: Box<dyn BufRead + '_>, reading: &mut Reading) -> Outcome {
    let name = reading.name;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|err| Failure::Refused(format!("{name}: no CSV header row: {err}")))?
        .clone();
    let mut record = csv::StringRecord::new();
    loop {
        let more = match csv.read_record(&mut record) {
            Ok(more) => more,
            Err(err) => {
                let line = err.position().map_or(0, |position| position.line());
                if matches!(err.kind(), csv::ErrorKind::Io(_)) {
                    return Err(cannot_read(name, err));
                }
                reading.reject(line, &format!("malformed CSV: {err}"), b"")?;
                continue;
            }
        };
        if !more {
            return Ok(());
        }
        let line = record.position().map_or(0, |position| position.line());
        match csv_event(&headers, &record) {
            Ok(mut event) => {
                if !event.contains_key("id") {
                    event.insert("id".into(), Value::String(reading.id_at(line)));
                }
                reading
                    .batches
                    .push(line, &serde_json::to_vec(&event).expect("JSON"))?;
            }
            Err(message) => {
                let fields: Vec<&str> = record.iter().collect();
                reading.reject(line, &message, fields.join(",").as_bytes())?
            }
        }
    }
}

/// The event of one CSV record: empty cells are left out, `metadata` is JSON text, a
/// numeric `timestamp` is epoch seconds or milliseconds.
fn csv_event(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
) -> Result<Map<String, Value>, String> {
    let mut event = Map::new();
    let mut metadata = Map::new();
    for (column, value) in headers.iter().zip(record.iter()) {
        if value.is_empty() {
            continue;
        }
        match column {
            "seq" | "received_at" => {}
            "metadata" | "properties" => match serde_json::from_str::<Value>(value) {
                Ok(Value::Object(fields)) => {
                    for (key, value) in fields {
                        metadata.entry(key).or_insert(value);
                    }
                }
                _ => return Err(format!("'{column}' is not a JSON object")),
            },
            "timestamp" => {
                let value = match value.parse::<serde_json::Number>() {
                    Ok(number) => Value::Number(number),
                    Err(_) => Value::String(value.into()),
                };
                event.insert(column.into(), value);
            }
            known if CSV_FIELDS.contains(&known) => {
                event.insert(column.into(), Value::String(value.into()));
            }
            other => {
                metadata.insert(other.into(), Value::String(value.into()));
            }
        }
    }
    if !metadata.is_empty() {
        event.insert("metadata".into(), Value::Object(metadata));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(format_of("a.ndjson.gz", None), Format::Ndjson);
        assert_eq!(format_of("a.jsonl", None), Format::Ndjson);
        assert_eq!(format_of("a.json", None), Format::Json);
        assert_eq!(format_of("a.CSV.gz", None), Format::Csv);
        assert_eq!(format_of("-", None), Format::Ndjson);
        assert_eq!(format_of("a.json", Some(Format::Csv)), Format::Csv);
    }

    #[test]
    fn csv_columns_become_fields_or_metadata() {
        let headers = csv::StringRecord::from(vec![
            "id",
            "seq",
            "timestamp",
            "type",
            "service",
            "metadata",
            "plan",
        ]);
        let record = csv::StringRecord::from(vec![
            "",
            "7",
            "1705363200",
            "signup",
            "",
            r#"{"n":1}"#,
            "pro",
        ]);
        let event = csv_event(&headers, &record).unwrap();
        assert_eq!(
            Value::Object(event),
            serde_json::json!({"timestamp": 1705363200, "type": "signup",
                "metadata": {"n": 1, "plan": "pro"}})
        );
    }

    #[test]
    fn batches_split_in_halves_keeping_their_lines() {
        let file: Arc<str> = Arc::from("f");
        let mut batch = Batch::new(&file);
        for line in 1..=3 {
            batch
                .body
                .extend_from_slice(format!("{{\"n\":{line}}}\n").as_bytes());
            batch.lines.push(line);
        }
        assert_eq!(batch.event(1), b"{\"n\":2}");
        let (first, second) = batch.split();
        assert_eq!(first.lines, [1]);
        assert_eq!(second.lines, [2, 3]);
        assert_eq!(second.body, b"{\"n\":2}\n{\"n\":3}\n");
    }
}
