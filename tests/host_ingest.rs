//! Writing fetched events into the host: pipelined, parents first, nothing lost while the host is
//! down. The host is an in-process relay here (and a real strfry in `strfry_ingest.rs`).

mod support;

use std::time::Duration;

use grasp_sync::host::ingest::{self, IngestConfig, Outcome, Report};
use grasp_sync::policy::{Note, RelayUrl};
use nostr_relay_builder::prelude::*;
use tokio::sync::{mpsc, watch};

fn signed(keys: &Keys, kind: u16, content: &str, created_at: u64) -> Note {
    let ev = EventBuilder::new(Kind::from(kind), content)
        .tags(Kind::from(kind).is_addressable().then(|| Tag::identifier("repo")))
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(keys)
        .unwrap();
    serde_json::from_str(&ev.as_json()).unwrap()
}

async fn host_on(port: u16) -> LocalRelay {
    let builder = RelayBuilder::default()
        .addr("127.0.0.1".parse().unwrap())
        .port(port)
        .rate_limit(RateLimit { max_reqs: 500, notes_per_minute: 1_000_000 });
    let relay = LocalRelay::new(builder);
    relay.run().await.unwrap();
    relay
}

fn url(port: u16) -> RelayUrl {
    RelayUrl::parse(&format!("ws://127.0.0.1:{port}")).unwrap()
}

/// Collects `n` reports or fails at the deadline.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Report>, n: usize) -> Vec<Report> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => out.push(r),
            Ok(None) => break,
            Err(_) => panic!("only {} of {n} reports before the deadline", out.len()),
        }
    }
    out
}

#[tokio::test]
async fn pipelined_writes_are_all_stored_and_duplicates_recognised() {
    let port = support::strfry::free_port();
    let _host = host_on(port).await;
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = watch::channel(false);
    let (handle, task) = ingest::spawn(IngestConfig::new(url(port)), reports_tx, stop, Duration::from_secs(5));
    let keys = Keys::generate();
    let notes: Vec<Note> = (0..500).map(|i| signed(&keys, 1, &format!("note {i}"), 1_700_000_000 + i)).collect();
    for n in &notes {
        handle.submit(n.clone(), None).await.unwrap();
    }
    let got = collect(&mut reports, 500).await;
    assert!(
        got.iter().all(|r| r.outcome == Outcome::Stored),
        "{:?}",
        got.iter().find(|r| r.outcome != Outcome::Stored)
    );
    let stored = support::strfry::query(url(port).as_str(), serde_json::json!({"limit": 1000})).await;
    assert_eq!(stored.len(), 500);

    handle.submit(notes[0].clone(), None).await.unwrap();
    let again = collect(&mut reports, 1).await;
    assert_eq!(again[0].outcome, Outcome::Duplicate);

    let mut forged = signed(&keys, 1, "forged", 1_700_000_999);
    forged.sig = "00".repeat(64);
    handle.submit(forged, None).await.unwrap();
    assert!(matches!(collect(&mut reports, 1).await[0].outcome, Outcome::Rejected(_)));

    drop(handle);
    let left = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    assert!(left.is_empty(), "every event was written before the task finished");
}

/// 20 comments and 20 issues, interleaved children first, then their announcement.
fn children_first() -> Vec<Note> {
    let keys = Keys::generate();
    let mut notes = Vec::new();
    for i in 0..20 {
        notes.push(signed(&keys, 1111, &format!("comment {i}"), 1_700_000_100 - i));
        notes.push(signed(&keys, 1621, &format!("issue {i}"), 1_700_000_050 - i));
    }
    notes.push(signed(&keys, 30617, "announcement", 1_700_000_000));
    notes
}

/// The host answered the announcement first and every issue before any comment.
fn assert_parents_first(got: &[Report]) {
    let kinds: Vec<u64> = got.iter().map(|r| r.note.kind).collect();
    assert_eq!(kinds[0], 30617, "announcement first: {kinds:?}");
    let last_issue = kinds.iter().rposition(|k| *k == 1621).unwrap();
    let first_comment = kinds.iter().position(|k| *k == 1111).unwrap();
    assert!(last_issue < first_comment, "root events before comments: {kinds:?}");
}

#[tokio::test]
async fn events_wait_for_a_host_that_is_down_and_leave_parents_first() {
    let port = support::strfry::free_port();
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = watch::channel(false);
    let mut cfg = IngestConfig::new(url(port));
    cfg.base_backoff_secs = 1;
    cfg.max_backoff_secs = 1;
    let (handle, _task) = ingest::spawn(cfg, reports_tx, stop, Duration::from_secs(5));
    // Submitted children first; the host is not up yet.
    let notes = children_first();
    for n in &notes {
        handle.submit(n.clone(), None).await.unwrap();
    }
    let depth_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.stats.queued.load(std::sync::atomic::Ordering::Relaxed) < notes.len() {
        assert!(tokio::time::Instant::now() < depth_deadline, "events queue while the host is down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let _host = host_on(port).await;
    let got = collect(&mut reports, notes.len()).await;
    let refused: Vec<_> =
        got.iter().filter(|r| r.outcome != Outcome::Stored).map(|r| (r.note.kind, &r.outcome)).collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert_parents_first(&got);
}

#[tokio::test]
async fn events_submitted_together_to_a_connected_host_leave_parents_first() {
    let port = support::strfry::free_port();
    let _host = host_on(port).await;
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = watch::channel(false);
    let (handle, _task) = ingest::spawn(IngestConfig::new(url(port)), reports_tx, stop, Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.stats.connected.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "ingest connects to the host");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Children handed over first, in one burst (as a relay's batch arrives); the window is empty.
    let notes = children_first();
    for n in &notes {
        handle.submit(n.clone(), None).await.unwrap();
    }

    let got = collect(&mut reports, notes.len()).await;
    assert!(got.iter().all(|r| r.outcome == Outcome::Stored));
    assert_parents_first(&got);
}

#[tokio::test]
async fn shutdown_returns_what_could_not_be_written() {
    let port = support::strfry::free_port();
    let (reports_tx, _reports) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    let (handle, task) = ingest::spawn(IngestConfig::new(url(port)), reports_tx, stop, Duration::from_millis(300));
    let keys = Keys::generate();
    for i in 0..10 {
        handle.submit(signed(&keys, 1, &format!("n{i}"), 1_700_000_000 + i), None).await.unwrap();
    }
    stop_tx.send(true).unwrap();
    let left =
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops within the flush deadline").unwrap();
    assert_eq!(left.len(), 10, "nothing is silently dropped");
}

#[tokio::test]
async fn submitter_that_reads_reports_only_afterwards_never_deadlocks() {
    // The daemon's loop both submits (waiting while the queue is full) and reads reports; the
    // ingest must keep answering while nobody reads them.
    let port = support::strfry::free_port();
    let _host = host_on(port).await;
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = watch::channel(false);
    let mut cfg = IngestConfig::new(url(port));
    cfg.window = 8;
    cfg.queue = 20;
    let (handle, _task) = ingest::spawn(cfg, reports_tx, stop, Duration::from_secs(5));
    let keys = Keys::generate();
    let notes: Vec<Note> = (0..400).map(|i| signed(&keys, 1, &format!("n{i}"), 1_700_000_000 + i)).collect();
    let submit_all = async {
        for n in &notes {
            handle.submit(n.clone(), None).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), submit_all)
        .await
        .expect("every submit completes without reading reports");
    let got = collect(&mut reports, notes.len()).await;
    assert!(got.iter().all(|r| r.outcome == Outcome::Stored));
}
