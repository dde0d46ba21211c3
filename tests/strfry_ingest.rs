//! Ingest into a real strfry: a host killed and restarted mid-ingest loses nothing.

mod support;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grasp_sync::host::ingest::{self, IngestConfig, Outcome};
use grasp_sync::policy::{Note, RelayUrl};
use nostr_relay_builder::prelude::*;
use support::strfry::{self, Strfry};
use tokio::sync::{mpsc, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_restarted_mid_ingest_loses_nothing() {
    let Some(bin) = strfry::binary_or_skip("strfry_ingest") else { return };
    let mut host = Strfry::start(&bin, "");
    let url = RelayUrl::parse(&host.url()).unwrap();
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = watch::channel(false);
    let mut cfg = IngestConfig::new(url.clone());
    cfg.base_backoff_secs = 1;
    cfg.max_backoff_secs = 1;
    let (handle, _task) = ingest::spawn(cfg, reports_tx, stop, Duration::from_secs(5));

    let keys = Keys::generate();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let notes: Vec<Note> = (0..3000u64)
        .map(|i| {
            let ev = EventBuilder::text_note(format!("event {i}"))
                .custom_created_at(Timestamp::from(now - 10_000 + i))
                .sign_with_keys(&keys)
                .unwrap();
            serde_json::from_str(&ev.as_json()).unwrap()
        })
        .collect();
    let submitter = {
        let handle = handle.clone();
        let notes = notes.clone();
        tokio::spawn(async move {
            for n in notes {
                handle.submit(n, None).await.unwrap();
            }
        })
    };

    let mut answered: HashSet<String> = HashSet::new();
    let mut restarted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.len() < notes.len() {
        let report = tokio::time::timeout_at(deadline, reports.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {} answered before the deadline", answered.len(), notes.len()))
            .unwrap();
        assert!(matches!(report.outcome, Outcome::Stored | Outcome::Duplicate), "{:?}", report.outcome);
        answered.insert(report.note.id);
        if !restarted && answered.len() >= 500 {
            restarted = true;
            let before = host.db.clone();
            tokio::task::block_in_place(|| host.restart_after(Duration::from_millis(500)));
            assert_eq!(before, host.db);
        }
    }
    submitter.await.unwrap();
    let stored: HashSet<String> = strfry::query_all(&host.url(), serde_json::json!({}))
        .await
        .into_iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let missing = notes.iter().filter(|n| !stored.contains(&n.id)).count();
    assert_eq!(missing, 0, "every event submitted is in strfry after its restart");
    assert!(handle.stats.reconnects.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
