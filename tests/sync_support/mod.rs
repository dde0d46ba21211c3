//! Test support for the sync engine: in-process relays, a fault proxy, a recording dialer,
//! event makers and a harness that plays the host (stores fetched events, grows the index).
#![allow(dead_code, unused_imports)]

pub mod dialer;
pub mod proxy;
pub mod relay;
pub mod scripted;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grasp_sync::accepted::RepoSyncIndex;
use grasp_sync::engine::{spawn_engine, EngineConfig, Fetched, MemoryStore, RelayReport, SyncEngine, SyncSettings};
use grasp_sync::policy::event::is_root_kind;
use grasp_sync::policy::{Note, RelayUrl, RepoCoord};
use tokio::sync::{mpsc, watch};

pub use dialer::TestDialer;
pub use proxy::{NegMode, Proxy};
pub use relay::TestRelay;
pub use scripted::{text_frame, text_frame_header, Peer, ScriptLog, Scripted};

/// A real secp256k1 x-only key (the test relay parses public keys); signatures are not checked.
pub const PUBKEY: &str = "9997a497d964fc1a62885b05a51166a65a90df00492c8d7cf61d6accf54803be";
/// Timestamps of test history (long before any catch-up window).
pub const T0: u64 = 1_700_000_000;

pub fn note(kind: u64, created_at: u64, tags: Vec<Vec<String>>, content: &str) -> Note {
    let mut n = Note {
        id: String::new(),
        pubkey: PUBKEY.into(),
        created_at,
        kind,
        tags,
        content: content.into(),
        sig: "00".repeat(64),
    };
    n.id = hex::encode(n.compute_id());
    n
}

fn tag(a: &str, b: &str) -> Vec<String> {
    vec![a.to_string(), b.to_string()]
}

pub fn coord(d: &str) -> RepoCoord {
    RepoCoord::parse(&format!("30617:{PUBKEY}:{d}")).unwrap()
}

pub fn announcement(d: &str, relays: &[&str]) -> Note {
    let mut r = vec!["relays".to_string()];
    r.extend(relays.iter().map(|s| s.to_string()));
    note(30617, T0, vec![tag("d", d), r], "")
}

/// `n` kind-1 events tagging a repository (`a`), `per_second` sharing each timestamp.
pub fn repo_events(c: &RepoCoord, n: usize, per_second: usize) -> Vec<Note> {
    (0..n)
        .map(|i| note(1, T0 + 10 + (i / per_second.max(1)) as u64, vec![tag("a", &c.to_string())], &format!("ev {i}")))
        .collect()
}

/// A root event (issue) of a repository.
pub fn issue(c: &RepoCoord, title: &str, at: u64) -> Note {
    note(1621, at, vec![tag("a", &c.to_string()), tag("subject", title)], title)
}

/// A NIP-22 comment on a root event (only an `E` tag: an L3 event).
pub fn comment(root: &Note, text: &str, at: u64) -> Note {
    note(1111, at, vec![tag("E", &root.id), tag("K", "1621")], text)
}

pub fn url(s: &str) -> RelayUrl {
    RelayUrl::parse(s).unwrap()
}

/// Fast timings for tests.
pub fn fast_settings() -> SyncSettings {
    SyncSettings {
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(3),
        negentropy_timeout: Duration::from_millis(600),
        rate_limit_cooldown: Duration::from_millis(800),
        catchup_margin: Duration::from_secs(2),
        consolidation_interval: Duration::from_millis(300),
        ..SyncSettings::default()
    }
}

pub fn engine_config(service: &str, settings: SyncSettings) -> EngineConfig {
    EngineConfig {
        service_url: url(service),
        bootstrap: vec![],
        allow_private: true,
        max_relays: 1000,
        settings,
        persisted: Default::default(),
    }
}

/// An index with one repository listing `relays`.
pub fn index_with(c: &RepoCoord, relays: &[&str]) -> RepoSyncIndex {
    let mut idx = RepoSyncIndex::new();
    idx.upsert_repo(c.clone(), relays.iter().map(|r| url(r)).collect::<BTreeSet<_>>());
    idx
}

/// A running engine plus a consumer playing the host.
pub struct Harness {
    pub engine: SyncEngine,
    pub index: watch::Sender<RepoSyncIndex>,
    pub store: Arc<MemoryStore>,
    pub dialer: Arc<TestDialer>,
    /// How many times each id reached the sink.
    pub seen: Arc<Mutex<HashMap<String, usize>>>,
}

impl Harness {
    /// An engine syncing one repository from one relay into an empty store.
    pub fn one_relay(c: &RepoCoord, relay: &str, settings: SyncSettings) -> Harness {
        Harness::start(
            engine_config("wss://grasp.example.com", settings),
            index_with(c, &[relay]),
            Arc::new(MemoryStore::new()),
        )
    }

    pub fn start(cfg: EngineConfig, index: RepoSyncIndex, store: Arc<MemoryStore>) -> Harness {
        Harness::start_with_dialer(cfg, index, store, Arc::new(TestDialer::default()))
    }

    pub fn start_with_dialer(
        cfg: EngineConfig,
        index: RepoSyncIndex,
        store: Arc<MemoryStore>,
        dialer: Arc<TestDialer>,
    ) -> Harness {
        let (index_tx, index_rx) = watch::channel(index);
        let (tx, mut rx) = mpsc::channel::<Fetched>(1024);
        let engine = spawn_engine(cfg, index_rx, dialer.clone(), store.clone(), tx);
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (s, st, idx) = (seen.clone(), store.clone(), index_tx.clone());
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                *s.lock().unwrap().entry(f.note.id.clone()).or_default() += 1;
                // Root events tagging an indexed repo join the index, as the daemon does.
                if is_root_kind(f.note.kind) {
                    let id = f.note.check().unwrap();
                    for t in &f.note.tags {
                        if t.len() >= 2 && t[0] == "a" {
                            if let Some(c) = RepoCoord::parse(&t[1]) {
                                idx.send_if_modified(|i| i.add_root(&c, id));
                            }
                        }
                    }
                }
                st.insert(f.note);
            }
        });
        Harness { engine, index: index_tx, store, dialer, seen }
    }

    pub fn report(&self, relay: &str) -> RelayReport {
        self.engine.status.relay(&url(relay)).unwrap_or_default()
    }

    pub fn holds(&self, notes: &[Note]) -> bool {
        notes.iter().all(|n| self.store.contains(&n.check().unwrap()))
    }

    /// Ids that reached the sink more than once.
    pub fn duplicates(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().filter(|(_, n)| **n > 1).map(|(id, _)| id.clone()).collect()
    }
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
