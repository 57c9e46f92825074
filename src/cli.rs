//! The `eventide` command line: its subcommands, over the options the library defines
//! ([`ServeConfig`], [`KeysArgs`], [`AlertsArgs`], [`LogConfig`], and the client's
//! [`ClientCommand`]s).

use clap::{Parser, Subcommand};
use eventide::alerts::command::AlertsArgs;
use eventide::auth::command::KeysArgs;
use eventide::client::ClientCommand;
use eventide::config::{LogConfig, ServeConfig};

#[derive(Parser, Debug)]
#[command(
    name = "eventide",
    version,
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
    #[command(flatten)]
    Client(ClientCommand),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The library's tests parse `serve` with a stand-in for this type; this checks the real one.
    #[test]
    fn the_command_line_is_consistent_and_parses_each_subcommand() {
        Cli::command().debug_assert();
        let serve = Cli::try_parse_from(["eventide", "serve", "--log-format", "json"]).unwrap();
        assert!(matches!(serve.command, Command::Serve(_)));
        let keys = Cli::try_parse_from(["eventide", "keys", "list"]).unwrap();
        assert!(matches!(keys.command, Command::Keys(_)));
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
