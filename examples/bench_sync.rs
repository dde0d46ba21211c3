//! Historic sync throughput and bytes on the wire, negentropy vs REQ pagination.
//!
//! An in-process relay (nostr-relay-builder) holds N events tagging one repository; the local
//! store already holds 0 %, 90 % or 100 % of them. For each case the engine runs until the
//! relay's historic sync is complete and every event is held. Run with `scripts/bench-sync`
//! (`-- N` to change the event count, default 50,000).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_sync::accepted::RepoSyncIndex;
use grasp_sync::engine::{spawn_engine, EngineConfig, Fetched, MemoryStore, RelayStatus, SyncSettings};
use grasp_sync::policy::{Note, RelayUrl, RepoCoord};
use grasp_sync::remote::dial::{handshake, DialError, DialFuture, Dialer};
use nostr_relay_builder::prelude::{
    Event, JsonUtil, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase, RateLimit, RelayBuilder,
};
use tokio::sync::{mpsc, watch};

const PUBKEY: &str = "9997a497d964fc1a62885b05a51166a65a90df00492c8d7cf61d6accf54803be";

/// Dials loopback only.
struct Loopback;

impl Dialer for Loopback {
    fn dial<'a>(&'a self, url: &'a RelayUrl) -> DialFuture<'a> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", url.port()))
                .await
                .map_err(|e| DialError::Connect(url.to_string(), e.to_string()))?;
            handshake(url, tcp).await
        })
    }
}

fn events(coord: &RepoCoord, n: usize) -> Vec<Note> {
    (0..n)
        .map(|i| {
            let mut note = Note {
                id: String::new(),
                pubkey: PUBKEY.into(),
                created_at: 1_700_000_000 + (i / 3) as u64,
                kind: 1,
                tags: vec![vec!["a".into(), coord.to_string()]],
                content: format!("benchmark event {i} with a little text to look like a comment"),
                sig: "00".repeat(64),
            };
            note.id = hex::encode(note.compute_id());
            note
        })
        .collect()
}

struct Outcome {
    secs: f64,
    fetched: u64,
    bytes_in: u64,
    bytes_out: u64,
}

async fn run(relay_url: &str, coord: &RepoCoord, all: &[Note], present: f64, negentropy: bool) -> Outcome {
    let store = Arc::new(MemoryStore::new());
    let have = (all.len() as f64 * present).round() as usize;
    for n in all.iter().take(have) {
        store.insert(n.clone());
    }
    let url = RelayUrl::parse(relay_url).unwrap();
    let mut index = RepoSyncIndex::new();
    index.upsert_repo(coord.clone(), BTreeSet::from([url.clone()]));
    let (_index_tx, index_rx) = watch::channel(index);
    let cfg = EngineConfig {
        service_url: RelayUrl::parse("wss://grasp.example.com").unwrap(),
        bootstrap: vec![],
        allow_private: true,
        max_relays: 10,
        settings: SyncSettings { negentropy, ..SyncSettings::default() },
        persisted: Default::default(),
    };
    let (tx, mut rx) = mpsc::channel::<Fetched>(4096);
    let started = Instant::now();
    let engine = spawn_engine(cfg, index_rx, Arc::new(Loopback), store.clone(), tx);
    let consumer_store = store.clone();
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            consumer_store.insert(f.note);
        }
    });
    loop {
        let r = engine.status.relay(&url).unwrap_or_default();
        if r.status == RelayStatus::Connected && store.len() == all.len() {
            let secs = started.elapsed().as_secs_f64();
            engine.task.abort();
            return Outcome { secs, fetched: r.events_delivered, bytes_in: r.bytes_in, bytes_out: r.bytes_out };
        }
        assert!(started.elapsed() < Duration::from_secs(600), "benchmark case did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let db = Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions { events: true, max_events: Some(n + 10) }));
    let relay = LocalRelay::new(
        RelayBuilder::default()
            .database(db.clone())
            .rate_limit(RateLimit { max_reqs: 1_000, notes_per_minute: u32::MAX }),
    );
    relay.run().await.expect("relay runs");
    let relay_url = relay.url().await.to_string();
    let coord = RepoCoord::parse(&format!("30617:{PUBKEY}:bench")).unwrap();
    let all = events(&coord, n);
    for note in &all {
        let ev = Event::from_json(serde_json::to_string(note).unwrap()).unwrap();
        db.save_event(&ev).await.unwrap();
    }
    println!("historic sync of {n} events from an in-process relay (loopback)");
    println!("| method | already present | fetched | seconds | events/s fetched | set size/s | bytes in | bytes out |");
    println!("|---|---|---|---|---|---|---|---|");
    for negentropy in [true, false] {
        for present in [0.0, 0.9, 1.0] {
            let o = run(&relay_url, &coord, &all, present, negentropy).await;
            println!(
                "| {} | {:.0}% | {} | {:.2} | {:.0} | {:.0} | {} | {} |",
                if negentropy { "negentropy" } else { "REQ" },
                present * 100.0,
                o.fetched,
                o.secs,
                o.fetched as f64 / o.secs,
                n as f64 / o.secs,
                o.bytes_in,
                o.bytes_out,
            );
        }
    }
}
