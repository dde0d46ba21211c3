//! Command line: `grasp-sync <command> [--config FILE] [--set KEY=VALUE]...`.

use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::host::plugin::{self, Plugin};
use crate::policy::{AcceptedSet, Policy};

/// Exit code for a bad configuration.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for any other fatal error.
pub const EXIT_FATAL: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "grasp-sync", version, about = "Makes a strfry relay a GRASP-02 relay")]
pub struct Cli {
    /// Configuration file (TOML). Defaults to $GRASP_SYNC_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one configuration key, e.g. `--set sync.negentropy=false` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// strfry writePolicy plugin: reads requests on stdin, answers on stdout.
    Plugin,
    /// Loads and validates the configuration, prints it in full, and exits.
    CheckConfig,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // stdout belongs to the plugin protocol: logs always go to stderr.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).with_ansi(false).try_init();
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging("info");
    let config = match Config::load(cli.config.as_deref(), &cli.overrides) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let result = match cli.command {
        Command::Plugin => run_plugin(&config),
        Command::CheckConfig => {
            print!("{}", toml::to_string(&config).unwrap_or_default());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("grasp-sync: {e:#}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("grasp-sync: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn run_plugin(config: &Config) -> anyhow::Result<()> {
    let policy = Policy::new(config.service_url.clone(), config.policy.require_clone);
    let view = AcceptedSet::new();
    let mut plugin = Plugin::new(policy, view);
    tracing::info!(service = %config.service_url, "plugin: started");
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    let stats = plugin::run(&mut plugin, BufReader::with_capacity(256 * 1024, stdin), stdout)?;
    tracing::info!(?stats, "plugin: input closed, exiting");
    Ok(())
}
