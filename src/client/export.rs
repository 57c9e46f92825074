//! `eventide export`: `GET /events/export` into a file (gzip on the wire), with progress on
//! stderr. The file is written as `FILE.part` and renamed once complete, so an interrupted
//! export never leaves a file that looks whole.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use futures_util::StreamExt;

use super::{
    error_chain, refusal, Client, Connection, Failure, Filters, Outcome, ProgressArgs, TimeRange,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filters: Filters,
    #[command(flatten)]
    pub range: TimeRange,
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: ExportFormat,
    /// The file to write (`-`: stdout).
    #[arg(long, short)]
    pub output: PathBuf,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: ExportArgs) -> Outcome {
    let client = Client::new(&args.connection)?;
    let mut query = args.filters.pairs();
    query.extend(args.range.pairs());
    query.push((
        "format",
        match args.format {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
        .into(),
    ));
    let to_stdout = args.output.as_os_str() == "-";
    let part = {
        let mut name = args.output.clone().into_os_string();
        name.push(".part");
        PathBuf::from(name)
    };
    let response = client
        .send(client.get("/events/export").query(&query))
        .await?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let file = std::fs::File::create(&part)
            .map_err(|err| Failure::Usage(format!("cannot create {}: {err}", part.display())))?;
        Box::new(std::io::BufWriter::with_capacity(256 * 1024, file))
    };
    let cannot_write = |err: std::io::Error| {
        Failure::Usage(format!("cannot write {}: {err}", args.output.display()))
    };
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal() && !to_stdout;
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bytes} ({bytes_per_sec}) {msg}")
                .expect("a valid template"),
        );
        bar
    });
    let mut last_line = Instant::now();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| {
            let _ = std::fs::remove_file(&part);
            Failure::Usage(format!("the export was cut short: {}", error_chain(&err)))
        })?;
        out.write_all(&chunk).map_err(cannot_write)?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
        if let Some(bar) = &bar {
            bar.set_position(bytes);
            bar.set_message(format!("{lines} lines"));
        } else if !to_stdout && last_line.elapsed() >= args.progress.every {
            last_line = Instant::now();
            eprintln!("export: {bytes} bytes, {lines} lines");
        }
    }
    out.flush().map_err(cannot_write)?;
    drop(out);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !to_stdout {
        std::fs::rename(&part, &args.output).map_err(cannot_write)?;
        let events = match args.format {
            ExportFormat::Ndjson => format!("{lines} events, "),
            // A CSV record may span lines (a message with a line break).
            ExportFormat::Csv => String::new(),
        };
        println!(
            "exported {events}{bytes} bytes to {} in {:.1} s",
            args.output.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
