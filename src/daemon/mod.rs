//! `grasp-sync run`: the sync daemon. It builds the repo index from the host (strfry's LMDB, or
//! queries over the websocket), runs the sync engine against the relays the repositories announce,
//! checks every fetched event (signature, GRASP policy) and writes the accepted ones through the
//! host's ingest path. It follows the host's own new events, keeps rejected events for a while in
//! case what they depend on arrives, serves metrics and status, and saves its state so a restart
//! resumes where it left off.

pub mod bootstrap;
mod event_loop;
pub mod rejected;
mod settings;
pub mod state;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::daemon::rejected::{RejectedIndex, RejectedLimits};
use crate::engine::spawn_engine;
use crate::host::ingest::{self, IngestConfig};
use crate::host::lmdb::{load_index, LmdbError, StrfryDb};
use crate::host::stream::{self, StreamConfig};
use crate::metrics::Metrics;
use crate::policy::{Policy, RelayUrl};
use crate::remote::Dialer;
use crate::wire::{backoff, unix_now};

use event_loop::EventLoop;
use store::HostStore;

/// How long shutdown may take in total (SIGTERM to exit).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);
/// How often the state file is written while running.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);

/// Errors that stop the daemon before it runs.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot open strfry's database (host.strfry_db = {path}): {source}")]
    Lmdb {
        path: PathBuf,
        #[source]
        source: LmdbError,
    },
    #[error("the index build from strfry's database (host.strfry_db = {path}) stopped: {source}")]
    IndexBuild {
        path: PathBuf,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("cannot listen on metrics.listen = {addr}: {source}")]
    Metrics {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` completes, then stops within [`SHUTDOWN_BUDGET`].
pub async fn run(cfg: Config, dialer: Arc<dyn Dialer>, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    state::check_writable(&cfg.state.dir)?;
    let saved = state::load(&cfg.state.dir)?.unwrap_or_default();
    let policy = Policy::new(cfg.service_url.clone(), cfg.policy.require_clone);
    let started_at = unix_now();

    tokio::pin!(shutdown);

    // Status is served from the start, so a daemon waiting for its host says so.
    let metrics = Metrics::new(cfg.service_url.as_str());
    let listener = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .map_err(|source| StartError::Metrics { addr: cfg.metrics.listen.to_string(), source })?;
    tracing::info!(listen = %cfg.metrics.listen, "serving /metrics and /status");
    let server = tokio::spawn(crate::metrics::serve(listener, metrics.clone()));

    let (db, built, last_lev) = match &cfg.host.strfry_db {
        Some(path) => {
            // Reading a large database takes seconds: off the async workers, so status is served
            // meanwhile.
            let (open_path, open_policy) = (path.clone(), policy.clone());
            let opened = tokio::task::spawn_blocking(move || {
                let db = StrfryDb::open(&open_path)?;
                let loaded = load_index(&db, &open_policy)?;
                Ok::<_, LmdbError>((db, loaded))
            })
            .await
            .map_err(|source| StartError::IndexBuild { path: path.clone(), source })
            .and_then(|r| r.map_err(|source| StartError::Lmdb { path: path.clone(), source }));
            let (db, (built, last_lev, took)) = match opened {
                Ok(x) => x,
                Err(e) => {
                    server.abort();
                    let _ = server.await;
                    return Err(e);
                }
            };
            let db = Arc::new(db);
            tracing::info!(
                repos = built.index.len(),
                roots = built.index.root_count(),
                accepted = built.accepted.event_count(),
                ?took,
                "index built from strfry's LMDB"
            );
            (Some(db), built, last_lev)
        }
        None => match build_when_host_answers(&cfg, &policy, &mut shutdown).await {
            Some(built) => (None, built, 0),
            None => {
                server.abort();
                let _ = server.await;
                tracing::info!("stopped before the host answered");
                return Ok(());
            }
        },
    };

    let mut rejected = RejectedIndex::new(RejectedLimits {
        hold_secs: cfg.rejected.hold_secs,
        max_held: cfg.rejected.max_held,
        max_held_bytes: cfg.rejected.max_held_bytes,
        ..RejectedLimits::default()
    });
    // State files of earlier versions carried the settled events themselves.
    let legacy = saved.settled_rejected.iter().cloned();
    rejected.restore_settled(legacy.chain(state::load_settled(&cfg.state.dir)));
    if !saved.settled_rejected.is_empty() {
        rejected.mark_settled_dirty();
    }
    let rejected = Arc::new(Mutex::new(rejected));
    let store = Arc::new(HostStore::new(db.clone(), rejected.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let mut ingest_cfg = IngestConfig::new(cfg.host.url.clone());
    ingest_cfg.base_backoff_secs = cfg.sync.base_backoff_secs.min(5);
    ingest_cfg.max_backoff_secs = cfg.sync.max_backoff_secs.min(30);
    ingest_cfg.queue = cfg.host.ingest_queue;
    let (ingest, ingest_task) = ingest::spawn(ingest_cfg, reports_tx, stop_rx.clone(), SHUTDOWN_BUDGET / 2);

    let (stream_tx, stream_rx) = mpsc::channel(64);
    let stream_cfg = StreamConfig {
        url: cfg.host.url.clone(),
        since: started_at.saturating_sub(stream::RECONNECT_MARGIN_SECS),
        batch_window: Duration::from_secs(1),
        base_backoff_secs: cfg.sync.base_backoff_secs.min(5),
        max_backoff_secs: cfg.sync.max_backoff_secs.min(30),
    };
    // With strfry's database, every event it stores is also read by insertion order, so nothing
    // written while the websocket was down, or back-dated, escapes the index and the view.
    let follow_task = db.map(|db| {
        tokio::spawn(crate::host::lmdb::follow::follow(
            db,
            last_lev,
            Duration::from_secs(1),
            stream_tx.clone(),
            stop_rx.clone(),
        ))
    });
    let stream_task = tokio::spawn(stream::run(stream_cfg, stream_tx, stop_rx));

    let (index_tx, index_rx) = watch::channel(built.index.clone());
    // Fetched events wait here for their check; no more of them than the ingest queue holds.
    let (sink_tx, sink_rx) = mpsc::channel(cfg.host.ingest_queue.clamp(16, 4096));
    let mut engine_cfg = settings::engine_config(&cfg);
    // The engine decides per relay: a relay left within `quick_reconnect_secs` resumes quickly.
    engine_cfg.persisted =
        saved.relays.iter().filter_map(|(url, r)| Some((RelayUrl::parse(url).ok()?, r.clone()))).collect();
    let engine = spawn_engine(engine_cfg, index_rx, dialer, store.clone(), sink_tx);
    let board = engine.status.clone();
    metrics.set_relay_source(move || board.reports());

    let mut event_loop = EventLoop::new(
        cfg.clone(),
        policy,
        built,
        index_tx,
        rejected,
        store,
        ingest,
        metrics,
        engine.handle(),
        saved.relays.clone(),
    );
    // Fetched before the last stop and not yet written: written first now.
    event_loop.resubmit(saved.unsent);
    event_loop.run(sink_rx, reports_rx, stream_rx, &mut shutdown).await;

    // Shutdown: stop the engine (no new fetches), flush the ingest window, save state.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET - Duration::from_millis(500);
    event_loop.stop_engine();
    engine.task.abort();
    let _ = stop_tx.send(true);
    let mut unsent = match tokio::time::timeout_at(deadline, ingest_task).await {
        Ok(Ok(left)) => left,
        _ => Vec::new(),
    };
    unsent.extend(event_loop.take_outbox());
    // Aborted tasks are awaited: only then are their sockets (the metrics listener above all) and
    // strfry's database handle released, so a daemon started right after this one returns can bind
    // the same address.
    stream_task.abort();
    let _ = stream_task.await;
    if let Some(t) = follow_task {
        t.abort();
        let _ = t.await;
    }
    server.abort();
    let _ = server.await;
    event_loop.save_state(unsent, true)?;
    tracing::info!("stopped");
    Ok(())
}

/// Without strfry's database the index is built by querying the host, which may not be up yet (or
/// may restart during the build): retried with backoff until it succeeds. `None` when `shutdown`
/// comes first.
async fn build_when_host_answers(
    cfg: &Config,
    policy: &Policy,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<crate::accepted::build::Built> {
    let mut failures = 0u32;
    loop {
        let t = std::time::Instant::now();
        let attempt = tokio::select! {
            r = bootstrap::build_over_ws(&cfg.host.url, policy) => r,
            _ = &mut *shutdown => return None,
        };
        match attempt {
            Ok((built, lookups)) => {
                tracing::info!(repos = built.index.len(), roots = built.index.root_count(), lookups, took = ?t.elapsed(), "index built by querying the host");
                return Some(built);
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(
                    failures,
                    Duration::from_secs(cfg.sync.base_backoff_secs.min(5)),
                    Duration::from_secs(cfg.sync.max_backoff_secs.min(30)),
                );
                tracing::warn!(url = %cfg.host.url, error = %format!("{e:#}"), retry_in = ?wait, "cannot build the repository index from the host; waiting for it");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut *shutdown => return None,
                }
            }
        }
    }
}
