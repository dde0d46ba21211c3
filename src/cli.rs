//! Command line: `grasp-sync <command> [--config FILE] [--set KEY=VALUE]...`.

use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::accepted::build::Built;
use crate::config::{Config, ConfigError};
use crate::host::lmdb::{load_index, StrfryDb};
use crate::host::plugin::{self, Plugin};
use crate::policy::Policy;

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
    CheckConfig {
        /// Check it for one command only: `plugin` also requires `host.strfry_db` (an error
        /// without it); `run` does not. Without this flag both are checked and a missing
        /// `host.strfry_db` is a warning.
        #[arg(long = "for", value_name = "COMMAND", value_parser = ["plugin", "run"])]
        for_command: Option<String>,
    },
    /// Runs the sync daemon beside strfry until SIGTERM or SIGINT.
    Run,
    /// Asks the running daemon for its state (`metrics.listen`) and prints it.
    Status {
        /// Print the raw JSON of `GET /status`.
        #[arg(long)]
        json: bool,
    },
    /// Prints the repo index built from strfry's database (`host.strfry_db`).
    Index {
        /// Print JSON: `{"repos":[{"coordinate","relays","root_events"}],"accepted_events":N}`.
        #[arg(long)]
        json: bool,
    },
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
        Command::Plugin => match plugin_requirements(&config) {
            Ok(()) => run_plugin(&config),
            Err(e) => return config_error(&e),
        },
        Command::CheckConfig { for_command } => {
            match (plugin_requirements(&config), for_command.as_deref()) {
                (Err(e), Some("plugin")) => return config_error(&e),
                (Err(e), None) => eprintln!("grasp-sync: warning: {e} (`grasp-sync run` works without it)"),
                _ => {}
            }
            print!("{}", toml::to_string(&config).unwrap_or_default());
            Ok(())
        }
        Command::Index { json } => run_index(&config, json),
        Command::Run => run_daemon(config),
        Command::Status { json } => run_status(&config, json),
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

fn policy_of(config: &Config) -> Policy {
    Policy::new(config.service_url.clone(), config.policy.require_clone)
}

/// Builds the accepted view and repo index from strfry's database.
fn load_from_strfry(config: &Config, dir: &Path) -> anyhow::Result<(Built, u64, Duration)> {
    let db = StrfryDb::open(dir)?;
    Ok(load_index(&db, &policy_of(config))?)
}

fn run_index(config: &Config, json: bool) -> anyhow::Result<()> {
    let Some(dir) = &config.host.strfry_db else {
        anyhow::bail!("host.strfry_db is not set: the index is read from strfry's database");
    };
    let (built, last_lev_id, took) = load_from_strfry(config, dir)?;
    tracing::info!(
        repos = built.index.len(),
        accepted_events = built.stats.accepted_events,
        last_lev_id,
        ms = took.as_millis() as u64,
        "index: built from strfry's database"
    );
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &index_json(&built))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", index_table(&built))?;
    }
    Ok(())
}

/// `{"repos":[{"coordinate","relays","root_events"}],"accepted_events":N}`.
pub fn index_json(built: &Built) -> serde_json::Value {
    let repos: Vec<serde_json::Value> = built
        .index
        .repos()
        .map(|(coord, entry)| {
            serde_json::json!({
                "coordinate": coord.to_string(),
                "relays": entry.relays.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "root_events": entry.root_events.iter().map(hex::encode).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "repos": repos, "accepted_events": built.stats.accepted_events })
}

/// A readable listing: one block per repository, then totals.
pub fn index_table(built: &Built) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for (coord, entry) in built.index.repos() {
        let _ = writeln!(s, "{coord}  ({} relays, {} root events)", entry.relays.len(), entry.root_events.len());
        for r in &entry.relays {
            let _ = writeln!(s, "    relay {r}");
        }
        for id in &entry.root_events {
            let _ = writeln!(s, "    root  {}", hex::encode(id));
        }
    }
    let _ = writeln!(
        s,
        "{} repositories, {} root events, {} accepted events",
        built.index.len(),
        built.index.root_count(),
        built.stats.accepted_events
    );
    s
}

/// What `grasp-sync plugin` needs beyond a valid configuration: strfry's database, so that a
/// plugin strfry restarts (it does on any error) starts with everything already accepted
/// instead of an empty view that would refuse every event about existing repositories.
pub fn plugin_requirements(config: &Config) -> Result<(), ConfigError> {
    match &config.host.strfry_db {
        Some(_) => Ok(()),
        None => Err(ConfigError::Invalid {
            key: "host.strfry_db".into(),
            msg: "is required for `grasp-sync plugin`: set it to strfry's database directory (the `db` \
                  setting of strfry.conf), so the plugin starts knowing what strfry already accepted"
                .into(),
        }),
    }
}

fn run_plugin(config: &Config) -> anyhow::Result<()> {
    let policy = policy_of(config);
    let view = match &config.host.strfry_db {
        None => anyhow::bail!("host.strfry_db is required for `grasp-sync plugin`"),
        // A view that silently missed what strfry holds would reject legitimate events with
        // misleading reasons; failing loudly lets the operator fix the path or permissions.
        Some(dir) => {
            let (built, last_lev_id, took) = load_from_strfry(config, dir)
                .map_err(|e| e.context(format!("plugin: cannot seed the accepted view from {}", dir.display())))?;
            tracing::info!(
                events = built.accepted.event_count(),
                repos = built.index.len(),
                last_lev_id,
                ms = took.as_millis() as u64,
                "plugin: accepted view loaded from strfry's database"
            );
            built.accepted
        }
    };
    let mut plugin = Plugin::new(policy, view);
    tracing::info!(service = %config.service_url, "plugin: started");
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    let stats = plugin::run(&mut plugin, BufReader::with_capacity(256 * 1024, stdin), stdout)?;
    tracing::info!(?stats, "plugin: input closed, exiting");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Completes on SIGTERM or SIGINT.
async fn termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}

/// Most malloc arenas the daemon's allocator keeps (glibc only).
///
/// glibc gives each thread that allocates under contention an arena of its own, up to eight per
/// core, and never returns their free pages to the kernel by itself. The daemon's runtime hands
/// work between its workers and the threads `block_in_place` starts (dozens at a time during a
/// large sync), so allocations spread over every arena and the process kept each arena's
/// high-water mark: at 10,000 repositories and 100,000 roots, 16 arenas held 588 MB resident for
/// a heap of under 300 MB. Two arenas measured 324 MB (one arena: no less memory, slower).
pub const MALLOC_ARENAS: i32 = 2;

/// Allocations from this size on are mapped on their own and unmapped when freed (glibc only).
///
/// glibc raises this threshold to the size of each large block it frees (up to 32 MiB), so the
/// blocks of a grown hash table or queue, once freed, leave later large allocations in the
/// arenas, where freed memory stays resident. A fixed threshold keeps them returnable.
pub const MALLOC_MMAP_THRESHOLD: i32 = 256 * 1024;

/// Bounds glibc's arenas and fixes its mmap threshold before the runtime starts its threads.
/// `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` in the environment, if set, are the operator's
/// choice and are left alone.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (var, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, MALLOC_ARENAS),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD),
    ] {
        if std::env::var_os(var).is_none() {
            // SAFETY: mallopt only changes a tuning parameter of glibc's allocator; called
            // before the runtime starts its threads.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

fn run_daemon(config: Config) -> anyhow::Result<()> {
    tune_malloc();
    let rt = runtime()?;
    rt.block_on(async {
        tracing::info!(service = %config.service_url, host = %config.host.url, "daemon: starting");
        let dialer = std::sync::Arc::new(crate::remote::dial::NetDialer::new(config.sync.allow_private_addresses));
        crate::daemon::run(config, dialer, termination()).await
    })?;
    // Relay tasks still blocked in I/O must not hold the exit up.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

fn run_status(config: &Config, json: bool) -> anyhow::Result<()> {
    let status = runtime()?.block_on(crate::metrics::fetch_status(config.metrics.listen))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", crate::metrics::render_table(&status));
    }
    Ok(())
}
