//! `eventide query`: `GET /events`, one page (`--limit`) or a whole cursor walk (`--all`,
//! following `next_cursor`), printed as a table, a JSON array, NDJSON or the export's CSV.

use std::io::{IsTerminal, Write};

use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{refusal, Client, Connection, Failure, Filters, Outcome, TimeRange};
use crate::api::export::{write_csv, CSV_COLUMNS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// Time, type, service, user and message, in columns.
    Table,
    /// One JSON array.
    Json,
    /// One event per line.
    Ndjson,
    /// The export's columns (`id,seq,timestamp,received_at,type,service,user_id,message,metadata`).
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortOrder {
    Asc,
    Desc,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filters: Filters,
    #[command(flatten)]
    pub range: TimeRange,
    /// At most this many events (1–1,000).
    #[arg(long, default_value_t = 100, conflicts_with = "all",
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub limit: u32,
    /// Every matching event, following the cursor page after page.
    #[arg(long)]
    pub all: bool,
    /// Newest first (desc, the default) or oldest first.
    #[arg(long, value_enum, default_value = "desc")]
    pub order: SortOrder,
    #[arg(long, value_enum, default_value = "table")]
    pub format: QueryFormat,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: QueryArgs) -> Outcome {
    let client = Client::new(&args.connection)?;
    let mut query: Vec<(&str, String)> = args.filters.pairs();
    query.extend(args.range.pairs());
    query.push((
        "order",
        match args.order {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
        .into(),
    ));
    query.push((
        "limit",
        if args.all { 1_000 } else { args.limit }.to_string(),
    ));
    let stdout = std::io::stdout();
    let mut out = Printer::new(args.format, stdout.is_terminal());
    let mut cursor: Option<String> = None;
    let mut partial = false;
    loop {
        let mut page_query = query.clone();
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor.clone()));
        }
        let response = client
            .send(client.get("/events").query(&page_query))
            .await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let text = response
            .text()
            .await
            .map_err(|err| client.unreachable(&err))?;
        let page: Page = serde_json::from_str(&text).map_err(|err| {
            Failure::Usage(format!(
                "the server's answer is not a page of events: {err}"
            ))
        })?;
        partial |= page.partial;
        for event in &page.events {
            out.event(event)?;
        }
        cursor = page.next_cursor;
        if !args.all || cursor.is_none() {
            break;
        }
    }
    out.finish()?;
    if partial {
        eprintln!(
            "note: the server's indexer was behind: events acknowledged just before may be missing"
        );
    }
    Ok(())
}

/// A page of `GET /events`, its events kept as the server wrote them (field order, and
/// metadata exactly as sent).
#[derive(Deserialize)]
struct Page {
    events: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
    #[serde(default)]
    partial: bool,
}

/// Writes events to stdout in one of the formats, as they come.
pub struct Printer {
    format: QueryFormat,
    colour: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    count: usize,
}

impl Printer {
    pub fn new(format: QueryFormat, colour: bool) -> Printer {
        Printer {
            format,
            colour,
            out: std::io::BufWriter::new(std::io::stdout()),
            count: 0,
        }
    }

    pub fn event(&mut self, raw: &RawValue) -> Outcome {
        let event: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let event = &event;
        let first = self.count == 0;
        self.count += 1;
        let written = match self.format {
            QueryFormat::Ndjson => writeln!(self.out, "{}", raw.get()),
            QueryFormat::Json => {
                let lead = if first { "[" } else { "," };
                write!(self.out, "{lead}\n  {}", raw.get())
            }
            QueryFormat::Table => {
                if first {
                    let header = format!(
                        "{:<24} {:<20} {:<16} {:<16} {}",
                        "TIME", "TYPE", "SERVICE", "USER", "MESSAGE"
                    );
                    let _ = writeln!(self.out, "{}", header.trim_end());
                }
                writeln!(self.out, "{}", table_line(event, self.colour))
            }
            QueryFormat::Csv => {
                if first {
                    let _ = self.out.write_all(&csv_line(CSV_COLUMNS));
                }
                self.out.write_all(&csv_line(csv_record(raw)))
            }
        };
        written.map_err(stdout_failure)
    }

    pub fn finish(mut self) -> Outcome {
        let written = match self.format {
            QueryFormat::Json if self.count == 0 => writeln!(self.out, "[]"),
            QueryFormat::Json => writeln!(self.out, "\n]"),
            QueryFormat::Csv if self.count == 0 => self.out.write_all(&csv_line(CSV_COLUMNS)),
            _ => Ok(()),
        };
        written
            .and_then(|()| self.out.flush())
            .map_err(stdout_failure)
    }
}

fn stdout_failure(err: std::io::Error) -> Failure {
    Failure::Usage(format!("cannot write to stdout: {err}"))
}

/// One CSV record, as the export writes them.
pub fn csv_line<S: AsRef<str>>(fields: impl IntoIterator<Item = S>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_csv(&mut out, [fields]);
    out
}

/// An event's CSV fields, as the export writes them (metadata as the JSON text sent).
pub fn csv_record(raw: &RawValue) -> Vec<String> {
    let fields: std::collections::HashMap<&str, &RawValue> =
        serde_json::from_str(raw.get()).unwrap_or_default();
    CSV_COLUMNS
        .iter()
        .map(|column| match fields.get(column) {
            None => String::new(),
            Some(value) => match serde_json::from_str::<String>(value.get()) {
                Ok(text) => text,
                Err(_) if value.get() == "null" => String::new(),
                Err(_) => value.get().to_owned(),
            },
        })
        .collect()
}

/// `time type service user message`, the message on one line; dimmed time and bold type on
/// a terminal.
pub fn table_line(event: &Value, colour: bool) -> String {
    // Control characters (a message may hold ESC) would garble or drive the terminal.
    let clean = |text: &str| -> String {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let field = |name: &str| clean(event[name].as_str().unwrap_or("-"));
    let (time, kind) = (field("timestamp"), field("type"));
    let message = clean(event["message"].as_str().unwrap_or(""));
    let line = if colour {
        format!(
            "\x1b[2m{time:<24}\x1b[0m \x1b[1m{kind:<20}\x1b[0m {:<16} {:<16} {message}",
            field("service"),
            field("user_id")
        )
    } else {
        format!(
            "{time:<24} {kind:<20} {:<16} {:<16} {message}",
            field("service"),
            field("user_id")
        )
    };
    line.trim_end().to_owned()
}
