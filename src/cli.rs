//! The `eventide` command line: its subcommands, over the options the library defines
//! ([`ServeConfig`], [`KeysArgs`], [`LogConfig`]).

use clap::{Parser, Subcommand};
use eventide::auth::command::KeysArgs;
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
}
