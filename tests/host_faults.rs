//! The daemon when its host relay fails, without strfry: the host is an in-process relay deciding
//! writes with the plugin's policy, behind a front that can be stopped and started again on the
//! same port with the same events. Whatever was fetched while the host was away reaches it once it
//! is back, nothing irrelevant does, and the daemon holds a bounded number of events meanwhile.
//! The last test does the same with a real strfry host running `grasp-sync plugin`.

mod support;
mod sync_support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use grasp_sync::metrics::{fetch_status, Status};
use grasp_sync::policy::Note;
use nostr_relay_builder::prelude::Keys;
use support::daemon::*;
use support::host::Host;
use support::strfry::{self, free_port, host_with_plugin, publish};
use sync_support::TestRelay;

const S: &str = "wss://grasp.example.com";
/// `host.ingest_queue` in these tests.
const QUEUE: usize = 500;
/// Most events the daemon may report as waiting for the host: the queue, plus one window of
/// events in flight put back after a cut, the hand-over channel and the daemon's outbox.
const BACKLOG_BOUND: usize = QUEUE + 256 + 256 + 64;
/// How long the host stays down: longer than the first few ingest retry intervals (1, 2 s).
const OUTAGE: Duration = Duration::from_secs(5);

/// A repository announced on the host and a remote, with a history of comments on one issue on
/// the remote, and irrelevant events next to it.
struct World {
    host: Host,
    remote: TestRelay,
    bob: Keys,
    issue: Note,
    /// Every event the host must end up with, and nothing else.
    relevant: Vec<Note>,
    junk: Vec<Note>,
    state: tempfile::TempDir,
    metrics: SocketAddr,
}

/// The events of a test: an announcement listing the service and the remote, an issue with
/// `history` comments (all relevant), and irrelevant events beside them.
struct Story {
    bob: Keys,
    issue: Note,
    relevant: Vec<Note>,
    junk: Vec<Note>,
}

/// Publishes the announcement to the host and puts every event of a new [`Story`] on the remote.
async fn story(host_url: &str, remote: &TestRelay, history: usize) -> Story {
    let (alice, bob, mallory) = (Keys::generate(), Keys::generate(), Keys::generate());
    let base = now() - 100_000;
    let ann =
        signed(&alice, 30617, vec![t("d", "alpha"), vec!["relays".into(), S.into(), remote.url.clone()]], "", base);
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    let issue = signed(&bob, 1621, vec![t("a", &coord), t("subject", "bug")], "it breaks", base + 1);
    let mut relevant = vec![ann.clone(), issue.clone()];
    relevant.extend((0..history).map(|i| {
        signed(&bob, 1111, vec![t("E", &issue.id), t("K", "1621")], &format!("comment {i}"), base + 10 + i as u64)
    }));
    let other = format!("30617:{}:zzz", mallory.public_key().to_hex());
    let junk = vec![
        signed(&mallory, 1, vec![], "unrelated", base + 2),
        signed(&mallory, 1621, vec![t("a", &other)], "elsewhere", base + 3),
        signed(&mallory, 30617, vec![t("d", "zzz"), vec!["relays".into(), remote.url.clone()]], "", base + 4),
    ];
    let published = publish(host_url, &[json(&ann)]).await;
    assert!(published[0].1, "the host accepts an announcement listing it: {published:?}");
    remote.insert_all(&relevant).await;
    remote.insert_all(&junk).await;
    Story { bob, issue, relevant, junk }
}

impl World {
    async fn new(history: usize) -> World {
        let host = Host::start(S).await;
        let remote = TestRelay::start(None).await;
        let Story { bob, issue, relevant, junk } = story(&host.url, &remote, history).await;
        World { host, remote, bob, issue, relevant, junk, state: tempfile::tempdir().unwrap(), metrics: metrics_addr() }
    }

    fn start_daemon(&self) -> Running {
        let cfg = config(S, &self.host.url, None, self.state.path(), self.metrics)
            .replace("[host]\n", &format!("[host]\ningest_queue = {QUEUE}\n"));
        start_daemon(&cfg)
    }

    /// Waits until the host holds exactly the relevant events (and nothing irrelevant).
    async fn until_host_has_exactly(&self, relevant: &[Note], secs: u64) {
        let want: HashSet<String> = relevant.iter().map(|n| n.id.clone()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let have = self.host.ids().await;
            for j in &self.junk {
                assert!(!have.contains(&j.id), "irrelevant kind {} reached the host", j.kind);
            }
            if have == want {
                return;
            }
            let missing = want.difference(&have).count();
            let extra: Vec<_> = have.difference(&want).collect();
            assert!(extra.is_empty(), "host holds events it should not: {extra:?}");
            assert!(tokio::time::Instant::now() < deadline, "host still misses {missing} of {} events", want.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn remote_received(&self, s: &Status) -> u64 {
        received_from(s, &self.remote.url)
    }
}

fn received_from(s: &Status, relay: &str) -> u64 {
    s.relays.iter().find(|r| r.url == relay).map_or(0, |r| r.events_received)
}

fn metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// What `/status` showed while the host was down.
#[derive(Debug, Default)]
struct Outage {
    samples: usize,
    max_backlog: usize,
    max_pending_retry: usize,
    ever_connected: bool,
    last_received: u64,
    /// Events of the remote the host confirmed storing, as last seen.
    last_stored: u64,
}

impl Outage {
    /// Everything read from the remote is either in the host or held by the daemon, and what the
    /// daemon holds is bounded: its backlog plus the fetched events waiting for their check.
    fn assert_backpressure(&self) {
        let held = self.last_received.saturating_sub(self.last_stored) as usize;
        assert!(held <= BACKLOG_BOUND + QUEUE + 64, "the daemon read {held} events it could not write: {self:?}");
    }
}

/// Keeps the host down for `OUTAGE`, sampling `/status` all along.
async fn watch_outage(metrics: SocketAddr, remote: &str) -> Outage {
    let mut o = Outage::default();
    let until = tokio::time::Instant::now() + OUTAGE;
    status_until(metrics, "host reported down", |s| !s.host_connected).await;
    while tokio::time::Instant::now() < until {
        if let Ok(s) = fetch_status(metrics).await {
            o.samples += 1;
            o.max_backlog = o.max_backlog.max(s.ingest_queue);
            o.max_pending_retry = o.max_pending_retry.max(s.events_pending_retry);
            o.ever_connected |= s.host_connected;
            o.last_received = received_from(&s, remote);
            o.last_stored = s.relays.iter().find(|r| r.url == remote).map_or(0, |r| r.events_stored);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_stopped_mid_ingest_and_back_later_ends_with_every_event_and_bounded_memory() {
    const HISTORY: usize = 5000;
    let mut w = World::new(HISTORY).await;
    let daemon = w.start_daemon();

    // Stop the host once the daemon has written a few hundred events: most are fetched or still
    // on the remote, not yet written.
    status_until(w.metrics, "a few hundred events stored", |s| s.relays.iter().any(|r| r.events_stored >= 300)).await;
    w.host.stop().await;
    let at_stop = w.host.ids().await.len();
    assert!(at_stop < w.relevant.len(), "the host stopped before the ingest finished");

    let o = watch_outage(w.metrics, &w.remote.url).await;
    assert!(o.samples >= 10, "status answered while the host was down: {o:?}");
    assert!(!o.ever_connected, "status said the host was connected while it was down: {o:?}");
    assert!(o.max_backlog > 0, "events fetched during the outage wait for the host: {o:?}");
    assert!(o.max_backlog <= BACKLOG_BOUND, "the daemon buffers at most {BACKLOG_BOUND} events: {o:?}");
    assert!(o.max_pending_retry <= BACKLOG_BOUND, "{o:?}");
    // Backpressure: the daemon stopped reading the remote instead of pulling the whole history
    // into memory.
    assert!((o.last_received as usize) < HISTORY, "the daemon kept reading the remote while it could not write: {o:?}");
    o.assert_backpressure();

    w.host.start_again().await;
    w.until_host_has_exactly(&w.relevant, 180).await;
    status_until(w.metrics, "host connected and nothing left to write", |s| s.host_connected && s.ingest_queue == 0)
        .await;
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_started_while_the_host_is_down_waits_for_it_then_syncs() {
    let mut w = World::new(50).await;
    w.host.stop().await;
    let daemon = w.start_daemon();
    let o = watch_outage(w.metrics, &w.remote.url).await;
    assert!(o.samples >= 10, "status is served while the daemon waits for its host: {o:?}");
    assert!(!o.ever_connected, "{o:?}");
    assert_eq!(o.max_backlog, 0, "{o:?}");

    w.host.start_again().await;
    w.until_host_has_exactly(&w.relevant, 60).await;
    status_until(w.metrics, "host connected", |s| s.host_connected && s.repos == 1).await;
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_that_arrive_while_the_host_is_down_land_when_it_returns() {
    let mut w = World::new(20).await;
    let daemon = w.start_daemon();
    w.until_host_has_exactly(&w.relevant, 60).await;
    let before = status_until(w.metrics, "live subscription open", |s| {
        s.host_connected && s.relays.iter().any(|r| r.status == "connected" && r.subscriptions > 0)
    })
    .await;
    let received_before = w.remote_received(&before);

    w.host.stop().await;
    let live: Vec<Note> = (0..30)
        .map(|i| signed(&w.bob, 1111, vec![t("E", &w.issue.id), t("K", "1621")], &format!("live {i}"), now()))
        .collect();
    for n in &live {
        w.remote.publish(n).await;
    }
    // Fetched while the host is down.
    status_until(w.metrics, "live events received", |s| {
        w.remote_received(s) >= received_before + live.len() as u64 && s.ingest_queue >= live.len()
    })
    .await;
    let o = watch_outage(w.metrics, &w.remote.url).await;
    assert!(!o.ever_connected, "{o:?}");
    let have = w.host.ids().await;
    assert!(live.iter().all(|n| !have.contains(&n.id)), "nothing was written while the host was down");

    w.host.start_again().await;
    let mut all = w.relevant.clone();
    all.extend(live);
    w.until_host_has_exactly(&all, 60).await;
    status_until(w.metrics, "host connected again", |s| s.host_connected && s.ingest_queue == 0).await;
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strfry_host_killed_mid_ingest_and_restarted_on_its_database_ends_with_every_event() {
    let Some(bin) = strfry::binary_or_skip("host_faults") else { return };
    const HISTORY: usize = 5000;
    let work = tempfile::tempdir().unwrap();
    let mut host = host_with_plugin(&bin, work.path(), S);
    let remote = TestRelay::start(None).await;
    let Story { relevant, junk, .. } = story(&host.url(), &remote, HISTORY).await;

    let state = tempfile::tempdir().unwrap();
    let metrics = metrics_addr();
    let cfg = config(S, &host.url(), Some(&host.db), state.path(), metrics)
        .replace("[host]\n", &format!("[host]\ningest_queue = {QUEUE}\n"));
    let daemon = start_daemon(&cfg);
    status_until(metrics, "some events stored", |s| s.relays.iter().any(|r| r.events_stored >= 100)).await;
    tokio::task::block_in_place(|| host.kill());

    let o = watch_outage(metrics, &remote.url).await;
    assert!(!o.ever_connected, "{o:?}");
    assert!(o.max_backlog > 0 && o.max_backlog <= BACKLOG_BOUND, "{o:?}");
    assert!((o.last_stored as usize) < HISTORY, "killed before the ingest finished: {o:?}");
    o.assert_backpressure();

    let db_before = host.db.clone();
    tokio::task::block_in_place(|| host.start_again());
    assert_eq!(db_before, host.db, "restarted on the same database");
    let want: HashSet<String> = relevant.iter().map(|n| n.id.clone()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let have = host_ids(&host.url()).await;
        assert!(junk.iter().all(|j| !have.contains(&j.id)), "an irrelevant event reached strfry");
        if have == want {
            break;
        }
        let extra: Vec<_> = have.difference(&want).collect();
        assert!(extra.is_empty(), "strfry holds events it should not: {extra:?}");
        let missing = want.difference(&have).count();
        assert!(tokio::time::Instant::now() < deadline, "strfry still misses {missing} of {}", want.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    status_until(metrics, "host connected again", |s| s.host_connected && s.ingest_queue == 0).await;
    stop_daemon(daemon).await;
}
