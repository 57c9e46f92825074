//! The `eventide` binary: reads configuration, sets up logging and hands over to the library.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use eventide::config::{LogConfig, LogFormat};

/// glibc's allocator showed up at ~9% of the ingest profile; mimalloc halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    limit_malloc_arenas();
    return_freed_memory_sooner();
    no_transparent_huge_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{}", one_line(&err.render().to_string()));
            return ExitCode::from(cli::usage_error_status());
        }
    };
    init_tracing(&cli.logging);
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    if let Command::Health(args) = cli.command {
        return ExitCode::from(runtime.block_on(cli::health::run(args)));
    }
    if let Command::Client(command) = cli.command {
        return match runtime.block_on(eventide::client::run(command)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("error: {}", one_line(&failure.to_string()));
                ExitCode::from(failure.exit_code())
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(config) => serve(*config).await,
            Command::Keys(args) => eventide::auth::command::run(args).await,
            Command::Alerts(args) => eventide::alerts::command::run(args),
            Command::Health(_) | Command::Client(_) => unreachable!("run above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: eventide::config::ServeConfig) -> anyhow::Result<()> {
    // Before anything listens: a SIGTERM that arrived between "listening" and the handler's
    // installation would kill the process without a graceful shutdown.
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|err| {
            anyhow::anyhow!("invalid --addr: cannot listen on {}: {err}", config.addr)
        })?;
    eventide::server::serve(config, listener, shutdown).await
}

/// Installs the Ctrl-C and SIGTERM handlers now; the future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
    })
}

fn init_tracing(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // The request's span (its id) goes on every line; the list of enclosing spans would
        // only repeat it.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// clap's errors span several lines (usage, hints); configuration errors get one.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// mimalloc's `purge_delay` (`mi_option_e` in its `mimalloc.h`; libmimalloc-sys names no
/// constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc keeps memory freed for a second (its default `purge_delay`) before handing it
/// back to the system, in case it is wanted again. Ingestion frees request bodies and index
/// batches all the time, so under sustained load that second of garbage was 40-60 MB of the
/// peak RSS: 248-278 MB, against 216-228 MB after 100 ms and 176-263 MB at once (which
/// also cost throughput with client ids and beside a busy core: madvise and page faults).
fn return_freed_memory_sooner() {
    // SAFETY: sets an option before any thread but this one exists; mimalloc reads it when
    // it next purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
}

/// mimalloc asks for transparent huge pages on its memory (`madvise`), so a 2 MiB page was
/// resident as soon as any of it was touched: 75-85 MB of the RSS under sustained load was
/// such pages. Without them the sustained peak went from 252-280 MB to 174-201 MB, at the
/// same rate. Disabled for the whole process (SQLite's memory too), whatever the system's
/// setting.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call about this process; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// SQLite allocates through the C allocator, from whichever thread runs a query or an index
/// batch; glibc gives each such thread its own arena and keeps their free space, which
/// measured ~30 MB of extra peak RSS under sustained load. Two arenas are plenty here.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists or allocates.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
