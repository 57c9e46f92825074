//! `eventide alerts check FILE`: validates an alerts file as the server would at start;
//! exit 0 when valid, otherwise 1 with every error, each with its line, on stderr.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: AlertsCommand,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Checks an alerts file (TOML): exit 0 when valid, otherwise 1 with the errors and
    /// their line numbers on stderr.
    Check {
        /// The file, as given to `serve --alerts-config`.
        file: PathBuf,
    },
}

/// Runs the command; the errors, one per line, as the error.
pub fn run(args: AlertsArgs) -> anyhow::Result<()> {
    match args.command {
        AlertsCommand::Check { file } => match super::config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: valid ({} rules, {} channels, every {})",
                    file.display(),
                    config.rules.len(),
                    config.channels.len(),
                    crate::config::format_duration(config.interval)
                );
                Ok(())
            }
            Err(errors) => {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|error| format!("{}: {error}", file.display()))
                    .collect();
                anyhow::bail!("{} is not valid:\n{}", file.display(), lines.join("\n"))
            }
        },
    }
}
