//! The engine's top: follows the repo index, turns it into per-relay targets (URL safety, our own
//! URL excluded, `max_relays`), and runs one task per relay, steering each through its inbox
//! (target changes, bad signatures, shutdown). Dropping the index sender shuts everything down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::engine::inbox::{inbox, RelayHandle};
use tokio::task::JoinHandle;

use crate::accepted::RepoSyncIndex;
use crate::engine::relay_task::{run_relay, Ctx};
use crate::engine::relays::PersistedRelay;
use crate::engine::status::{SyncSettings, SyncStatus, REFUSED_SAMPLE_PER_REASON};
use crate::engine::store::{Fetched, LocalStore};
use crate::engine::targets::{derive_relay_targets, summarize_refusals, TargetRules, Targets};
use crate::policy::RelayUrl;
use crate::remote::Dialer;

/// What the engine needs besides its inputs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This relay's own URL: never dialled.
    pub service_url: RelayUrl,
    /// Always connected, with full L1.
    pub bootstrap: Vec<RelayUrl>,
    pub allow_private: bool,
    pub max_relays: usize,
    pub settings: SyncSettings,
    /// Relay state read back from the state dir (a restart within the quick-reconnect window
    /// resumes instead of starting fresh; NIP-77 support is remembered).
    pub persisted: BTreeMap<RelayUrl, PersistedRelay>,
}

impl EngineConfig {
    fn rules(&self) -> TargetRules {
        TargetRules {
            bootstrap: self.bootstrap.clone(),
            allow_private_addresses: self.allow_private,
            max_relays: self.max_relays,
        }
    }
}

/// Commands to the engine waiting to be handled.
pub const ENGINE_QUEUE: usize = 1024;

/// What the engine is told besides its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineCommand {
    /// The consumer found an event from this relay with a bad signature.
    BadSignature(RelayUrl),
}

/// A running engine.
pub struct SyncEngine {
    pub status: SyncStatus,
    pub task: JoinHandle<()>,
    commands: mpsc::Sender<EngineCommand>,
}

impl SyncEngine {
    /// What the daemon keeps of the engine: its status board and its command inbox.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle { status: self.status.clone(), commands: self.commands.clone() }
    }
}

/// The engine's status board and command inbox, cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub status: SyncStatus,
    commands: mpsc::Sender<EngineCommand>,
}

impl EngineHandle {
    /// An event from `relay` failed signature verification: the relay's task holds it against
    /// the relay's misbehaviour budget. Dropped when [`ENGINE_QUEUE`] commands are waiting.
    pub fn bad_signature(&self, relay: &RelayUrl) {
        let _ = self.commands.try_send(EngineCommand::BadSignature(relay.clone()));
    }
}

struct Running {
    handle: RelayHandle,
    task: JoinHandle<()>,
}

/// Starts the engine. It follows `index` until its sender is dropped.
pub fn spawn_engine(
    cfg: EngineConfig,
    index: watch::Receiver<RepoSyncIndex>,
    dialer: Arc<dyn Dialer>,
    store: Arc<dyn LocalStore>,
    sink: mpsc::Sender<Fetched>,
) -> SyncEngine {
    crate::remote::dial::install_crypto_provider();
    let status = SyncStatus::new();
    let (commands, inbox) = mpsc::channel(ENGINE_QUEUE);
    let task = tokio::spawn(coordinate(cfg, index, inbox, dialer, store, sink, status.clone()));
    SyncEngine { status, task, commands }
}

async fn coordinate(
    cfg: EngineConfig,
    mut index: watch::Receiver<RepoSyncIndex>,
    mut commands: mpsc::Receiver<EngineCommand>,
    dialer: Arc<dyn Dialer>,
    store: Arc<dyn LocalStore>,
    sink: mpsc::Sender<Fetched>,
    status: SyncStatus,
) {
    let mut running: HashMap<RelayUrl, Running> = HashMap::new();
    let mut last_overflow = 0;
    let mut gone: Vec<RelayUrl> = Vec::new();
    loop {
        let targets = derive_relay_targets(&index.borrow_and_update(), &cfg.service_url, &cfg.rules());
        let summary = summarize_refusals(&targets, REFUSED_SAMPLE_PER_REASON);
        if targets.overflow != last_overflow {
            last_overflow = targets.overflow;
            tracing::warn!(
                targets = targets.relays.len(),
                over_limit = targets.overflow,
                max_relays = cfg.max_relays,
                "more relays listed than sync.max_relays; the busiest are kept"
            );
        }
        tracing::debug!(targets = summary.targets, refused = ?summary.by_reason, "relay targets chosen");
        status.set_refusals(summary);
        // Each relay's items move into the one shared copy its task reads; nothing else keeps
        // them while the engine waits for the next index.
        let Targets { relays, bootstrap, .. } = targets;
        let targeted: BTreeSet<RelayUrl> = relays.keys().cloned().collect();
        for (url, target) in relays {
            let url = &url;
            let target = Arc::new(target);
            status.update(url, |r| {
                r.repos = target.repos.len();
                r.root_events = target.root_events.len();
            });
            match running.get(url) {
                Some(r) if !r.task.is_finished() => {
                    r.handle.set_target(&target);
                }
                _ => {
                    let (handle, inbox) = inbox(target);
                    let ctx = Ctx {
                        url: url.clone(),
                        bootstrap: bootstrap.contains(url),
                        settings: cfg.settings.clone(),
                        store: store.clone(),
                        sink: sink.clone(),
                        status: status.clone(),
                        dialer: dialer.clone(),
                        persisted: cfg.persisted.get(url).cloned(),
                    };
                    tracing::info!(relay = %url, "starting relay task");
                    running.insert(url.clone(), Running { handle, task: tokio::spawn(run_relay(ctx, inbox)) });
                }
            }
        }
        // Relays closed on an earlier pass and still not targeted leave the status board.
        for url in std::mem::take(&mut gone) {
            if !running.contains_key(&url) && !targeted.contains(&url) {
                status.remove(&url);
            }
        }
        running.retain(|url, r| {
            if targeted.contains(url) {
                return true;
            }
            // No longer a target: the task closes the connection once it is idle.
            r.handle.set_target(&Arc::default());
            if r.task.is_finished() {
                gone.push(url.clone());
                return false;
            }
            true
        });
        // Commands are handled as they come; targets are recomputed when the index changes.
        let more = loop {
            tokio::select! {
                changed = index.changed() => break changed.is_ok(),
                Some(cmd) = commands.recv() => match cmd {
                    EngineCommand::BadSignature(url) => {
                        if let Some(r) = running.get(&url) {
                            r.handle.bad_signature();
                        }
                    }
                },
            }
        };
        if !more {
            break;
        }
    }
    for (_, r) in running.drain() {
        r.handle.shutdown();
        let _ = r.task.await;
    }
}
