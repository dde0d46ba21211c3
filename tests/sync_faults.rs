//! Sync through faults: dropped connections, relays down at start, rate limits, subscription
//! overflow.

mod sync_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use grasp_sync::engine::HealthStatus;
use grasp_sync::engine::{MemoryStore, RelayStatus, SyncSettings};
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_historic_resumes_without_fetching_twice() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    *proxy.state.cut_after_events.lock().unwrap() = Some(250);
    let c = coord("drop");
    let events = repo_events(&c, 1_000, 4);
    relay.insert_all(&events).await;
    let settings = SyncSettings { id_chunk: 100, ..fast_settings() };
    let h = Harness::one_relay(&c, &proxy.url, settings);
    eventually(30, "every event held", || h.holds(&events)).await;
    eventually(10, "relay connected", || h.report(&proxy.url).status == RelayStatus::Connected).await;
    let r = h.report(&proxy.url);
    assert!(r.connects >= 2, "the connection was cut and re-established");
    assert!(r.quick_reconnects >= 1);
    // History is far older than the catch-up window: nothing may arrive twice.
    assert!(h.duplicates().is_empty(), "fetched twice: {}", h.duplicates().len());
    // 1000 asked for on the first connection, then only what had not arrived before the cut.
    assert!(r.ids_requested < 2_000, "asked for {} ids", r.ids_requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_down_at_start_is_retried_with_backoff_and_synced_once_up() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    proxy.state.down.store(true, Ordering::SeqCst);
    let c = coord("down");
    let events = repo_events(&c, 100, 2);
    relay.insert_all(&events).await;
    let h = Harness::one_relay(&c, &proxy.url, fast_settings());
    eventually(10, "several attempts", || h.report(&proxy.url).connection_attempts >= 4).await;
    let r = h.report(&proxy.url);
    assert_eq!(r.health, HealthStatus::Failing);
    assert_eq!(r.connects, 0);
    proxy.state.down.store(false, Ordering::SeqCst);
    eventually(20, "synced once up", || h.holds(&events)).await;
    eventually(10, "connected", || h.report(&proxy.url).status == RelayStatus::Connected).await;
    assert_eq!(h.report(&proxy.url).health, HealthStatus::Degraded, "recovered relays count as degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_cools_down_then_resumes() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    let c = coord("slow");
    let events = repo_events(&c, 200, 2);
    relay.insert_all(&events).await;
    let settings = SyncSettings { negentropy: false, ..fast_settings() };
    // As many REQs as the daemon may have open at once (its whole first burst) are refused with
    // CLOSED "rate-limited:" (and a NOTICE), however long it takes to send them.
    proxy.state.rate_limit_reqs.store(settings.max_subscriptions, Ordering::SeqCst);
    let cooldown = settings.rate_limit_cooldown;
    let started = Instant::now();
    let h = Harness::one_relay(&c, &proxy.url, settings);
    eventually(10, "rate limit seen", || h.report(&proxy.url).rate_limited >= 1).await;
    eventually(20, "every event held after the cooldown", || h.holds(&events)).await;
    assert!(started.elapsed() >= cooldown, "work resumed only after the cooldown");
    assert!(proxy.state.reqs.load(Ordering::SeqCst) > proxy.state.rate_limited.load(Ordering::SeqCst));
    eventually(10, "connected and healthy", || {
        let r = h.report(&proxy.url);
        r.status == RelayStatus::Connected && r.health == HealthStatus::Healthy
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_concurrent_reqs_leads_to_consolidation_and_live_events_still_arrive() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    *proxy.state.max_subs.lock().unwrap() = Some(2);
    let c = coord("busy");
    let root = issue(&c, "root", T0 + 1);
    relay.insert_all(std::slice::from_ref(&root)).await;
    let mut idx = index_with(&c, &[&proxy.url]);
    idx.add_root(&c, root.check().unwrap());
    // REQ pagination: every historic page is a REQ the relay counts against its limit.
    let settings = SyncSettings { negentropy: false, ..fast_settings() };
    let h = Harness::start(engine_config("wss://grasp.example.com", settings), idx, Arc::new(MemoryStore::new()));
    eventually(20, "overflow reported and consolidated", || {
        proxy.state.overflows.load(Ordering::SeqCst) >= 1 && h.report(&proxy.url).consolidations >= 1
    })
    .await;
    eventually(10, "connected with the consolidated live set in place", || {
        let r = h.report(&proxy.url);
        r.status == RelayStatus::Connected && r.subscriptions >= 1
    })
    .await;
    let r = h.report(&proxy.url);
    assert!(r.subscription_budget <= 2, "budget shrank to what the relay allows: {}", r.subscription_budget);
    // Each layer's live part must be in place after consolidation.
    let live_l3 = comment(&root, "live reply", T0 + 10);
    let live_l2 = note(1, T0 + 11, vec![vec!["a".into(), c.to_string()]], "live repo event");
    let live_l1 = announcement("another", &["wss://x.example.com"]);
    for n in [&live_l3, &live_l2, &live_l1] {
        relay.publish(n).await;
    }
    eventually(10, "live events of every layer held", || h.holds(&[live_l3.clone(), live_l2.clone(), live_l1.clone()]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_reconnect_catches_up_on_every_layer_published_while_away() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    let c = coord("away");
    let root = issue(&c, "root", T0 + 1);
    let history = [repo_events(&c, 20, 2), vec![root.clone()]].concat();
    relay.insert_all(&history).await;
    let h = Harness::one_relay(&c, &proxy.url, fast_settings());
    eventually(20, "history held, root indexed, connected", || {
        let r = h.report(&proxy.url);
        h.holds(&history) && r.root_events == 1 && r.status == RelayStatus::Connected
    })
    .await;
    proxy.state.down.store(true, Ordering::SeqCst);
    proxy.cut_all();
    eventually(10, "disconnected", || h.report(&proxy.url).status != RelayStatus::Connected).await;
    // Published while we are away: nothing live can deliver these.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let away = vec![
        announcement("new-repo", &["wss://x.example.com"]),
        note(1, now, vec![vec!["a".into(), c.to_string()]], "repo event while away"),
        comment(&root, "reply while away", now),
    ];
    let away: Vec<_> = away
        .into_iter()
        .map(|mut n| {
            n.created_at = now;
            n.id = hex::encode(n.compute_id());
            n
        })
        .collect();
    relay.insert_all(&away).await;
    proxy.state.down.store(false, Ordering::SeqCst);
    eventually(20, "events of every layer published while away are held", || h.holds(&away)).await;
    let r = h.report(&proxy.url);
    assert_eq!(r.fresh_starts, 1);
    assert!(r.quick_reconnects >= 1);
    assert!(h.duplicates().is_empty(), "history is not fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_within_the_window_resumes_with_remembered_state() {
    let relay = TestRelay::start(None).await;
    let c = coord("restart");
    let events = repo_events(&c, 40, 2);
    relay.insert_all(&events).await;
    let store = Arc::new(MemoryStore::new());
    let first = Harness::start(
        engine_config("wss://grasp.example.com", fast_settings()),
        index_with(&c, &[&relay.url]),
        store.clone(),
    );
    eventually(20, "first run synced", || {
        first.holds(&events) && first.report(&relay.url).status == RelayStatus::Connected
    })
    .await;
    let mut saved = first.engine.status.persisted()[&url(&relay.url)].clone();
    assert_eq!(saved.negentropy, Some(true));
    assert!(saved.announcements_synced && saved.last_connected.is_some());
    first.engine.task.abort();
    saved.disconnected_at = saved.last_connected; // the daemon records this on shutdown
    let mut cfg = engine_config("wss://grasp.example.com", fast_settings());
    cfg.persisted.insert(url(&relay.url), saved);
    let second = Harness::start(cfg, index_with(&c, &[&relay.url]), store);
    eventually(20, "second run connected", || second.report(&relay.url).status == RelayStatus::Connected).await;
    let r = second.report(&relay.url);
    assert_eq!((r.quick_reconnects, r.fresh_starts), (1, 0));
    assert_eq!(r.events_delivered, 0, "nothing new, nothing fetched");
}
