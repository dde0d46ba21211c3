//! The planner at realistic sizes, against in-process relays: thousands of root events on one
//! relay with a budget of 15 subscriptions. History completes, open subscriptions never pass the
//! budget, live coverage does not depend on naming every root, new roots cost at most one
//! consolidation, and each event is received once.

mod sync_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grasp_sync::accepted::RepoSyncIndex;
use grasp_sync::engine::{MemoryStore, RelayStatus, SyncSettings};
use grasp_sync::policy::{Note, RepoCoord};
use serde_json::json;
use sync_support::*;

/// `repos` repositories on one relay, `roots` issues spread over them (the oldest first), and
/// a comment on every tenth issue.
struct World {
    coords: Vec<RepoCoord>,
    anns: Vec<Note>,
    roots: Vec<Note>,
    comments: Vec<Note>,
}

fn world(relay: &str, repos: usize, roots: usize) -> World {
    let coords: Vec<RepoCoord> = (0..repos).map(|i| coord(&format!("repo{i}"))).collect();
    let anns = (0..repos).map(|i| announcement(&format!("repo{i}"), &[relay])).collect();
    let roots: Vec<Note> =
        (0..roots).map(|i| issue(&coords[i % repos], &format!("issue {i}"), T0 + 100 + i as u64)).collect();
    let comments = roots.iter().step_by(10).map(|r| comment(r, "a reply", r.created_at + 1)).collect();
    World { coords, anns, roots, comments }
}

impl World {
    fn index(&self, relay: &str) -> RepoSyncIndex {
        let mut idx = RepoSyncIndex::new();
        for c in &self.coords {
            idx.upsert_repo(c.clone(), [url(relay)].into());
        }
        for (i, r) in self.roots.iter().enumerate() {
            idx.add_root(&self.coords[i % self.coords.len()], r.check().unwrap());
        }
        idx
    }

    fn all(&self) -> Vec<Note> {
        [self.anns.clone(), self.roots.clone(), self.comments.clone()].concat()
    }
}

/// Samples a relay's open subscriptions every few milliseconds until stopped; the largest seen.
fn sample_open(h: &Harness, relay: &str) -> (Arc<AtomicUsize>, Arc<AtomicBool>) {
    let (max, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let (m, s, status, u) = (max.clone(), stop.clone(), h.engine.status.clone(), url(relay));
    tokio::spawn(async move {
        while !s.load(Ordering::SeqCst) {
            if let Some(r) = status.relay(&u) {
                m.fetch_max(r.subscriptions_open, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (max, stop)
}

async fn history_completes_within_the_budget(roots: usize, secs: u64) {
    let relay = TestRelay::start(None).await;
    let w = world(&relay.url, 50, roots);
    relay.insert_all(&w.all()).await;
    // The host holds the announcements and root events (as the daemon's index says); the
    // relay's comments are what history must bring.
    let store = Arc::new(MemoryStore::new());
    for n in w.anns.iter().chain(&w.roots) {
        store.insert(n.clone());
    }
    // A debug build reconciles tens of thousands of items slowly: NEG-OPEN gets the time a real
    // relay's answer would take, not the short silence the small tests use to detect no NIP-77.
    let settings =
        SyncSettings { max_subscriptions: 15, negentropy_timeout: Duration::from_secs(20), ..fast_settings() };
    let started = std::time::Instant::now();
    let h = Harness::start(engine_config("wss://grasp.example.com", settings), w.index(&relay.url), store);
    let (max_seen, stop) = sample_open(&h, &relay.url);
    eventually(secs, "history complete", || {
        let r = h.report(&relay.url);
        r.status == RelayStatus::Connected && h.holds(&w.comments)
    })
    .await;
    let took = started.elapsed();
    let r = h.report(&relay.url);
    println!(
        "{roots} roots: history in {took:?}, {} bytes out, {} bytes in, largest frame {}, max open {}",
        r.bytes_out, r.bytes_in, r.largest_frame, r.max_open_subscriptions
    );
    assert_eq!(r.root_events, roots);
    assert!(r.max_open_subscriptions <= 15, "planner saw {} open", r.max_open_subscriptions);
    assert!(r.largest_frame <= 60_000, "largest frame {}", r.largest_frame);
    assert_eq!(r.items_failed, 0);
    // A comment on the oldest root, which no live filter names by id, arrives live.
    let oldest = &w.roots[0];
    let late = comment(oldest, "late reply on the oldest issue", T0 + 10_000_000);
    relay.publish(&late).await;
    eventually(20, "live comment on the oldest root held", || h.holds(std::slice::from_ref(&late))).await;
    stop.store(true, Ordering::SeqCst);
    let sampled = max_seen.load(Ordering::SeqCst);
    assert!(sampled <= 15, "sampled {sampled} open subscriptions");
    assert!(h.duplicates().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_roots_on_one_relay_complete_history_within_15_subscriptions() {
    history_completes_within_the_budget(5_000, 120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_roots_on_one_relay_complete_history_within_15_subscriptions() {
    history_completes_within_the_budget(20_000, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_new_roots_on_a_full_relay_cost_at_most_one_consolidation() {
    let relay = TestRelay::start(None).await;
    let w = world(&relay.url, 50, 5_000);
    relay.insert_all(&w.all()).await;
    let store = Arc::new(MemoryStore::new());
    for n in w.all() {
        store.insert(n);
    }
    let settings =
        SyncSettings { max_subscriptions: 15, consolidation_interval: Duration::from_secs(2), ..fast_settings() };
    let h = Harness::start(engine_config("wss://grasp.example.com", settings), w.index(&relay.url), store);
    eventually(120, "history complete", || h.report(&relay.url).status == RelayStatus::Connected).await;
    let before = h.report(&relay.url).consolidations;
    // Five new issues, each with a reply already on the relay, join the index one by one.
    let new_roots: Vec<Note> =
        (0..5).map(|i| issue(&w.coords[i], &format!("new issue {i}"), T0 + 9_000_000 + i as u64)).collect();
    let replies: Vec<Note> = new_roots.iter().map(|r| comment(r, "reply to a new issue", r.created_at + 1)).collect();
    relay.insert_all(&[new_roots.clone(), replies.clone()].concat()).await;
    for (i, r) in new_roots.iter().enumerate() {
        h.store.insert(r.clone());
        h.index.send_modify(|idx| {
            idx.add_root(&w.coords[i], r.check().unwrap());
        });
    }
    eventually(30, "replies to the new roots held", || h.holds(&replies)).await;
    eventually(30, "the new roots are live by id", || h.report(&relay.url).consolidations > before).await;
    // Live kind-7 reactions (only an `e` tag: no tier but the hot set names it) on a new root,
    // one per 100 ms until one arrives: the counter moves when the rebuild is decided, and one
    // stored before the relay registers the rebuilt REQ is the sweep's, not live.
    let mut reactions = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reaction =
            note(7, T0 + 9_100_000 + reactions.len() as u64, vec![vec!["e".into(), new_roots[4].id.clone()]], "+");
        relay.publish(&reaction).await;
        reactions.push(reaction);
        let arrived = || reactions.iter().any(|r| h.holds(std::slice::from_ref(r)));
        let wait = std::time::Instant::now() + Duration::from_millis(100);
        while !arrived() && std::time::Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if arrived() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reaction on a new root held live in 20 s");
    }
    let r = h.report(&relay.url);
    assert_eq!(r.consolidations - before, 1, "five new roots, one rebuild");
    assert!(r.max_open_subscriptions <= 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_receives_each_event_once_when_comments_match_e_and_big_e() {
    let relay = TestRelay::start(None).await;
    let w = world(&relay.url, 10, 300);
    // Replies tag their root with both `E` (root scope) and `e` (parent): two filters match them.
    let replies: Vec<Note> = w
        .roots
        .iter()
        .map(|r| {
            let tags =
                vec![vec!["E".into(), r.id.clone()], vec!["e".into(), r.id.clone()], vec!["K".into(), "1621".into()]];
            note(1111, r.created_at + 2, tags, "reply tagging E and e")
        })
        .collect();
    let all = [w.all(), replies.clone()].concat();
    relay.insert_all(&all).await;
    let store = Arc::new(MemoryStore::new());
    let h = Harness::start(engine_config("wss://grasp.example.com", fast_settings()), w.index(&relay.url), store);
    eventually(60, "everything held and connected", || {
        h.holds(&all) && h.report(&relay.url).status == RelayStatus::Connected
    })
    .await;
    let r = h.report(&relay.url);
    let distinct: BTreeSet<&str> = all.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(r.events_received, distinct.len() as u64, "each event crossed the wire once");
    assert_eq!(r.events_delivered, distinct.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_historic_deadline_fires_on_time_under_a_steady_live_stream() {
    let c = coord("steady");
    let c2 = c.clone();
    // Live REQs get EOSE and then an event every 25 ms; historic REQs never end.
    let relay = Scripted::start(move |mut peer: Peer| {
        let c = c2.clone();
        async move {
            let mut live: Option<String> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            let mut n = 0u64;
            loop {
                tokio::select! {
                    req = peer.next_req() => {
                        let Some((sub, filters)) = req else { return };
                        if filters.iter().all(|f| f["limit"] == 0) {
                            peer.send(json!(["EOSE", sub])).await;
                            live = Some(sub);
                        }
                    }
                    _ = tick.tick() => {
                        if let Some(sub) = &live {
                            n += 1;
                            let ev = note(1630, T0 + n, vec![vec!["a".into(), c.to_string()]], &format!("tick {n}"));
                            peer.send(json!(["EVENT", sub, ev])).await;
                        }
                    }
                }
            }
        }
    })
    .await;
    let settings = SyncSettings {
        negentropy: false,
        historic_timeout: Duration::from_millis(800),
        historic_retry: Duration::from_secs(600),
        ..fast_settings()
    };
    let h = Harness::one_relay(&c, &relay.url, settings);
    eventually(10, "historic deadline fired while live events kept coming", || {
        let r = h.report(&relay.url);
        r.historic_timeouts >= 1 && r.events_delivered >= 20
    })
    .await;
    let r = h.report(&relay.url);
    assert_eq!(r.status, RelayStatus::ConnectedHistoricSyncFailures, "failed history is not plain connected");
    assert!(r.history_error.is_some());
}
