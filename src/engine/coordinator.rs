//! The engine's top: follows the repo index, turns it into per-relay targets (URL safety, our own
//! URL excluded, `max_relays`), and runs one task per relay, telling each its target over a
//! watch channel. Dropping the index sender shuts everything down.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::engine::relay_task::{run_relay, Ctx, RelayTarget};
use crate::engine::status::{SyncSettings, SyncStatus};
use crate::engine::store::{Fetched, LocalStore};
use crate::engine::RepoSyncIndex;
use crate::policy::RelayUrl;
use crate::remote::dial::address_allowed;
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
}

impl EngineConfig {
    pub fn from_config(cfg: &Config) -> Self {
        let s = &cfg.sync;
        let base = std::time::Duration::from_secs(s.base_backoff_secs);
        EngineConfig {
            service_url: cfg.service_url.clone(),
            bootstrap: s.bootstrap_relays.clone(),
            allow_private: s.allow_private_addresses,
            max_relays: s.max_relays,
            settings: SyncSettings {
                negentropy: s.negentropy,
                base_backoff: base,
                connect_timeout: base,
                max_backoff: std::time::Duration::from_secs(s.max_backoff_secs),
                quick_reconnect: std::time::Duration::from_secs(s.quick_reconnect_secs),
                max_subscriptions: s.max_subscriptions_per_relay,
                ..SyncSettings::default()
            },
        }
    }
}

/// Relay targets derived from the index, and the URLs refused with the reason.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub relays: BTreeMap<RelayUrl, RelayTarget>,
    pub refused: BTreeMap<RelayUrl, String>,
}

/// Inverts the repo index into relay → {repos, root events}. Bootstrap relays come first and
/// are always present; our own URL, disallowed addresses and relays beyond `max_relays` are refused.
pub fn relay_targets(cfg: &EngineConfig, index: &RepoSyncIndex) -> Targets {
    let mut t = Targets::default();
    let admit = |t: &mut Targets, url: &RelayUrl| -> bool {
        if t.relays.contains_key(url) {
            return true;
        }
        let reason = if url.same_endpoint(&cfg.service_url) {
            Some("this relay's own URL".to_string())
        } else if !address_allowed(url.address_class(), cfg.allow_private) {
            Some(format!("{:?} address (allow_private_addresses is off)", url.address_class()))
        } else if t.relays.len() >= cfg.max_relays {
            Some(format!("max_relays ({}) reached", cfg.max_relays))
        } else {
            None
        };
        match reason {
            Some(r) => {
                t.refused.insert(url.clone(), r);
                false
            }
            None => {
                t.relays.insert(url.clone(), RelayTarget::default());
                true
            }
        }
    };
    for url in &cfg.bootstrap {
        admit(&mut t, url);
    }
    for (coord, entry) in index.repos() {
        for url in &entry.relays {
            if admit(&mut t, url) {
                let target = t.relays.get_mut(url).expect("admitted");
                target.repos.insert(coord.clone());
                target.roots.extend(entry.root_events.iter().copied());
            }
        }
    }
    t
}

/// A running engine.
pub struct SyncEngine {
    pub status: SyncStatus,
    pub task: JoinHandle<()>,
}

struct Running {
    target: watch::Sender<RelayTarget>,
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
    let task = tokio::spawn(coordinate(cfg, index, dialer, store, sink, status.clone()));
    SyncEngine { status, task }
}

async fn coordinate(
    cfg: EngineConfig,
    mut index: watch::Receiver<RepoSyncIndex>,
    dialer: Arc<dyn Dialer>,
    store: Arc<dyn LocalStore>,
    sink: mpsc::Sender<Fetched>,
    status: SyncStatus,
) {
    let mut running: HashMap<RelayUrl, Running> = HashMap::new();
    loop {
        let targets = relay_targets(&cfg, &index.borrow_and_update());
        for (url, reason) in &targets.refused {
            status.refuse(url.as_str(), reason);
        }
        for (url, target) in &targets.relays {
            match running.get(url) {
                Some(r) if !r.task.is_finished() => {
                    r.target.send_if_modified(|cur| {
                        let changed = cur != target;
                        *cur = target.clone();
                        changed
                    });
                }
                _ => {
                    let (tx, rx) = watch::channel(target.clone());
                    let ctx = Ctx {
                        url: url.clone(),
                        bootstrap: cfg.bootstrap.contains(url),
                        settings: cfg.settings.clone(),
                        store: store.clone(),
                        sink: sink.clone(),
                        status: status.clone(),
                        dialer: dialer.clone(),
                    };
                    tracing::info!(relay = %url, "starting relay task");
                    running.insert(url.clone(), Running { target: tx, task: tokio::spawn(run_relay(ctx, rx)) });
                }
            }
        }
        running.retain(|url, r| {
            if targets.relays.contains_key(url) {
                return true;
            }
            // No longer a target: the task closes the connection once it is idle.
            r.target.send_if_modified(|cur| {
                let changed = !cur.is_empty();
                *cur = RelayTarget::default();
                changed
            });
            !r.task.is_finished()
        });
        if index.changed().await.is_err() {
            break;
        }
    }
    for (_, r) in running.drain() {
        drop(r.target);
        let _ = r.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RepoCoord;
    use std::collections::BTreeSet;

    fn url(s: &str) -> RelayUrl {
        RelayUrl::parse(s).unwrap()
    }

    fn cfg(allow_private: bool, max_relays: usize) -> EngineConfig {
        EngineConfig {
            service_url: url("wss://grasp.example.com"),
            bootstrap: vec![url("wss://boot.example.com")],
            allow_private,
            max_relays,
            settings: SyncSettings::default(),
        }
    }

    fn index(relays: &[&str]) -> RepoSyncIndex {
        let mut idx = RepoSyncIndex::new();
        let coord = RepoCoord { pubkey: [1; 32], d: "r".into() };
        idx.upsert_repo(coord.clone(), relays.iter().map(|r| url(r)).collect::<BTreeSet<_>>());
        idx.add_root(&coord, [9; 32]);
        idx
    }

    #[test]
    fn targets_invert_the_index_and_refuse_unsafe_urls() {
        let idx = index(&["wss://r1.example.com", "wss://grasp.example.com", "ws://10.0.0.1", "ws://127.0.0.1:7000"]);
        let t = relay_targets(&cfg(false, 1000), &idx);
        let names: Vec<&str> = t.relays.keys().map(RelayUrl::as_str).collect();
        assert_eq!(names, ["wss://boot.example.com", "wss://r1.example.com"]);
        assert!(t.relays[&url("wss://boot.example.com")].is_empty());
        assert_eq!(t.relays[&url("wss://r1.example.com")].roots.len(), 1);
        assert_eq!(t.refused.len(), 3);
        let t = relay_targets(&cfg(true, 1000), &idx);
        assert_eq!(t.relays.len(), 4);
        assert!(t.refused.contains_key(&url("wss://grasp.example.com")));
    }

    #[test]
    fn max_relays_caps_the_total() {
        let many: Vec<String> = (0..10).map(|i| format!("wss://r{i}.example.com")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let t = relay_targets(&cfg(false, 4), &index(&refs));
        assert_eq!(t.relays.len(), 4);
        assert_eq!(t.refused.len(), 7);
    }
}
