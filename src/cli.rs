//! The `eventide` command line: its subcommands, over the options the library defines
//! ([`ServeConfig`], [`KeysArgs`], [`AlertsArgs`], [`LogConfig`], and the client's
//! [`ClientCommand`]s), and the binary's own `health` check ([`health`]).

pub mod health;

use clap::{CommandFactory, Parser, Subcommand};
use eventide::alerts::command::AlertsArgs;
use eventide::auth::command::KeysArgs;
use eventide::client::ClientCommand;
use eventide::config::{LogConfig, ServeConfig};

/// What `--version` prints after the name: the package's version and the git commit the
/// binary was built from (`unknown` outside a checkout without `EVENTIDE_GIT_COMMIT`; see
/// build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EVENTIDE_BUILD_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "eventide",
    version = VERSION,
    about = "Real-time event ingestion and analytics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub logging: LogConfig,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeConfig>),
    /// Create, list or revoke API keys, offline (on --data-dir, or a cluster's --store).
    Keys(KeysArgs),
    /// Check an alerts file.
    Alerts(AlertsArgs),
    /// Exit 0 if a server answers its health check with 200, 1 otherwise (for HEALTHCHECK).
    Health(health::HealthArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

/// The exit status for a command line that does not parse: 2, as usage errors get, except
/// for `eventide health`, whose every failure is [`health::UNHEALTHY`] (Docker reserves 2).
pub fn usage_error_status() -> u8 {
    // Parsed again, leniently, only to learn which subcommand was meant.
    let meant = Cli::command().ignore_errors(true).try_get_matches();
    match meant {
        Ok(matches) if matches.subcommand_name() == Some("health") => health::UNHEALTHY,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's tests parse `serve` with a stand-in for this type; this checks the real one.
    #[test]
    fn the_command_line_is_consistent_and_parses_each_subcommand() {
        Cli::command().debug_assert();
        let serve = Cli::try_parse_from(["eventide", "serve", "--log-format", "json"]).unwrap();
        assert!(matches!(serve.command, Command::Serve(_)));
        let keys = Cli::try_parse_from(["eventide", "keys", "list"]).unwrap();
        assert!(matches!(keys.command, Command::Keys(_)));
        let health = Cli::try_parse_from(["eventide", "health", "--ready"]).unwrap();
        assert!(matches!(health.command, Command::Health(args) if args.ready));
        for command in ["send", "import", "query", "export", "tail"] {
            let args: &[&str] = match command {
                "import" => &["eventide", "import", "events.ndjson"],
                "export" => &["eventide", "export", "--output", "out.csv"],
                _ => &["eventide", command],
            };
            let parsed = Cli::try_parse_from(args).unwrap();
            assert!(matches!(parsed.command, Command::Client(_)), "{command}");
        }
    }
}
