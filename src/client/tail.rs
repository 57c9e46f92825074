//! `eventide tail`: follows `GET /stream`, one line per event (or its JSON), flushed as it
//! arrives. After a drop (a restart of the server, the network) it reconnects with
//! `Last-Event-ID` set to the last `seq` printed, which the server answers with what was
//! missed and nothing twice; told `lagged`, it resumes the same way.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::Value;

use super::query::table_line;
use super::sse::Parser;
use super::{error_chain, refusal, retry_after, Client, Connection, Failure, Filters, Outcome};

/// The pause before reconnecting after a drop.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Start after this `seq`: the stored events after it first, then the live ones.
    #[arg(long)]
    pub since: Option<u64>,
    /// Print each event's JSON (one per line) instead of a readable line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: TailArgs) -> Outcome {
    let client = Client::new(&args.connection)?;
    let query = args.filters.pairs();
    let colour = std::io::stdout().is_terminal();
    let mut last_seq = args.since;
    let mut connected_once = false;
    loop {
        let mut request = client.get("/stream").query(&query);
        if let Some(seq) = last_seq {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) if connected_once => {
                eprintln!("tail: {}; reconnecting", error_chain(&err));
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(err) => return Err(client.unreachable(&err)),
        };
        match response.status().as_u16() {
            200 => {}
            429 | 503 => {
                tokio::time::sleep(retry_after(&response)).await;
                continue;
            }
            _ => return Err(refusal(response).await),
        }
        connected_once = true;
        let mut parser = Parser::default();
        let mut body = response.bytes_stream();
        let mut stdout = std::io::stdout();
        let ended = loop {
            let chunk = match body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(err)) => break error_chain(&err),
                None => break "the server closed the stream".to_owned(),
            };
            let mut lagged = false;
            for frame in parser.feed(&chunk) {
                match frame.event.as_deref() {
                    Some("event") => {
                        let Some(data) = frame.data else { continue };
                        let line = if args.json {
                            data
                        } else {
                            match serde_json::from_str::<Value>(&data) {
                                Ok(event) => table_line(&event, colour),
                                Err(_) => data,
                            }
                        };
                        if let Err(err) = writeln!(stdout, "{line}") {
                            return output_closed(err);
                        }
                        if let Some(seq) = frame.id.and_then(|id| id.parse().ok()) {
                            last_seq = Some(seq);
                        }
                    }
                    Some("lagged") => {
                        let told = frame
                            .data
                            .and_then(|data| serde_json::from_str::<Value>(&data).ok())
                            .and_then(|data| data["last_seq"].as_u64());
                        if told.is_some() {
                            last_seq = told;
                        }
                        lagged = true;
                    }
                    _ => {}
                }
            }
            if let Err(err) = stdout.flush() {
                return output_closed(err);
            }
            if lagged {
                break "fell behind the live stream (lagged)".to_owned();
            }
        };
        eprintln!("tail: {ended}; resuming");
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

fn stdout_failure(err: std::io::Error) -> Failure {
    Failure::Usage(format!("cannot write to stdout: {err}"))
}

/// A closed pipe (`eventide tail | head`) ends the command quietly; other write errors fail.
fn output_closed(err: std::io::Error) -> Outcome {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(stdout_failure(err))
    }
}
