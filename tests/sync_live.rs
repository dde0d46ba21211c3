//! Live sync, L3 discovery, closing unneeded relays, and which URLs are (never) dialled.

mod sync_support;

use std::sync::Arc;

use grasp_sync::engine::{MemoryStore, RelayStatus};
use sync_support::*;

fn connected(h: &Harness, relay: &str) -> bool {
    h.report(relay).status == RelayStatus::Connected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_arrive_after_historic_sync() {
    let relay = TestRelay::start(None).await;
    let c = coord("live");
    let history = repo_events(&c, 50, 5);
    relay.insert_all(&history).await;
    let h = Harness::one_relay(&c, &relay.url, fast_settings());
    eventually(20, "history held and relay connected", || h.holds(&history) && connected(&h, &relay.url)).await;
    let fresh = note(1, T0 + 5_000, vec![vec!["a".into(), c.to_string()]], "live one");
    let ann = announcement("someone-else", &["wss://elsewhere.example.com"]);
    relay.publish(&fresh).await;
    relay.publish(&ann).await;
    eventually(10, "live events held", || h.holds(&[fresh.clone(), ann.clone()])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_on_a_newly_found_root_event_are_fetched() {
    let relay = TestRelay::start(None).await;
    let c = coord("roots");
    let root = issue(&c, "it breaks", T0 + 1);
    let old_comment = comment(&root, "me too", T0 + 2);
    relay.insert_all(&[root.clone(), old_comment.clone()]).await;
    let h = Harness::one_relay(&c, &relay.url, fast_settings());
    // The root arrives through L2 (it tags the repo); the harness adds it to the index; L3
    // then finds the comment, which only tags the root.
    eventually(20, "root and its comment held", || h.holds(&[root.clone(), old_comment.clone()])).await;
    eventually(10, "relay connected", || connected(&h, &relay.url)).await;
    assert_eq!(h.report(&relay.url).root_events, 1);
    let new_comment = comment(&root, "fixed?", T0 + 3);
    relay.publish(&new_comment).await;
    eventually(10, "live comment held", || h.holds(std::slice::from_ref(&new_comment))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_no_repository_lists_any_more_is_closed() {
    let (a, b) = (TestRelay::start(None).await, TestRelay::start(None).await);
    let c = coord("moving");
    let h = Harness::start(
        engine_config("wss://grasp.example.com", fast_settings()),
        index_with(&c, &[&a.url, &b.url]),
        Arc::new(MemoryStore::new()),
    );
    eventually(20, "both connected", || connected(&h, &a.url) && connected(&h, &b.url)).await;
    h.index.send_replace(index_with(&c, &[&a.url]));
    eventually(10, "b closed", || {
        let r = h.report(&b.url);
        r.closed_unneeded && r.status == RelayStatus::Disconnected
    })
    .await;
    assert!(connected(&h, &a.url));
    assert!(!h.report(&a.url).closed_unneeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_url_is_never_dialled() {
    let (own, other) = (TestRelay::start(None).await, TestRelay::start(None).await);
    let c = coord("self");
    let events = repo_events(&c, 10, 1);
    own.insert_all(&events).await;
    other.insert_all(&events).await;
    let h = Harness::start(
        engine_config(&own.url, fast_settings()),
        index_with(&c, &[&own.url, &other.url]),
        Arc::new(MemoryStore::new()),
    );
    eventually(20, "synced from the other relay", || h.holds(&events) && connected(&h, &other.url)).await;
    assert!(!h.dialer.attempted(&own.url), "dialled ourselves: {:?}", h.dialer.attempts());
    assert!(h.engine.status.refused().iter().any(|r| r.url == own.url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_by_default() {
    let relay = TestRelay::start(None).await;
    let c = coord("private");
    let mut cfg = engine_config("wss://grasp.example.com", fast_settings());
    cfg.allow_private = false;
    let listed =
        [relay.url.as_str(), "ws://10.1.2.3", "ws://192.168.0.7:7777", "ws://[fe80::1]", "wss://relay.example.com"];
    let h = Harness::start(cfg, index_with(&c, &listed), Arc::new(MemoryStore::new()));
    eventually(10, "the public relay is tried", || h.dialer.attempted("wss://relay.example.com")).await;
    let refused: Vec<String> = h.engine.status.refused().into_iter().map(|r| r.url).collect();
    for private in &listed[..4] {
        assert!(refused.iter().any(|r| r == &url(private).to_string()), "{private} not refused: {refused:?}");
        assert!(!h.dialer.attempted(&url(private).to_string()), "{private} was dialled");
    }
    assert_eq!(h.dialer.attempts().iter().filter(|a| a.as_str() != "wss://relay.example.com").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_relay_stays_connected_with_full_announcements() {
    let relay = TestRelay::start(None).await;
    let anns = vec![announcement("one", &["wss://a.example.com"]), announcement("two", &["wss://b.example.com"])];
    relay.insert_all(&anns).await;
    let mut cfg = engine_config("wss://grasp.example.com", fast_settings());
    cfg.bootstrap = vec![url(&relay.url)];
    let h = Harness::start(cfg, grasp_sync::accepted::RepoSyncIndex::new(), Arc::new(MemoryStore::new()));
    eventually(20, "announcements held", || h.holds(&anns) && connected(&h, &relay.url)).await;
    let live = announcement("three", &["wss://c.example.com"]);
    relay.publish(&live).await;
    eventually(10, "live announcement held", || h.holds(std::slice::from_ref(&live))).await;
    let r = h.report(&relay.url);
    assert!(r.bootstrap && !r.closed_unneeded && r.status == RelayStatus::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_fresh_start_resyncs_on_a_new_connection() {
    let relay = TestRelay::start(None).await;
    let c = coord("daily");
    let events = repo_events(&c, 30, 3);
    relay.insert_all(&events).await;
    // A "day" of one second (the deadline is kept in whole seconds).
    let settings = grasp_sync::engine::SyncSettings {
        daily: (std::time::Duration::from_secs(1), std::time::Duration::from_secs(1)),
        ..fast_settings()
    };
    let h = Harness::one_relay(&c, &relay.url, settings);
    eventually(20, "two fresh starts", || h.report(&relay.url).fresh_starts >= 2).await;
    eventually(10, "held and connected", || h.holds(&events) && connected(&h, &relay.url)).await;
    assert!(h.duplicates().is_empty(), "negentropy re-sync fetches nothing already held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_drops_a_relay_is_no_longer_followed_there() {
    let relay = TestRelay::start(None).await;
    let (kept, dropped) = (coord("kept"), coord("dropped"));
    let mut idx = index_with(&kept, &[&relay.url]);
    idx.upsert_repo(dropped.clone(), [url(&relay.url)].into());
    let h =
        Harness::start(engine_config("wss://grasp.example.com", fast_settings()), idx, Arc::new(MemoryStore::new()));
    eventually(20, "connected with both repos", || connected(&h, &relay.url) && h.report(&relay.url).repos == 2).await;
    let rebuilt_before = h.report(&relay.url).consolidations;
    h.index.send_modify(|i| {
        i.remove_repo(&dropped);
    });
    eventually(10, "live set rebuilt without the dropped repo", || {
        let r = h.report(&relay.url);
        r.repos == 1 && r.consolidations > rebuilt_before && r.subscriptions >= 1 && r.status == RelayStatus::Connected
    })
    .await;
    // Published in this order on one connection: if the dropped repo were still followed, its
    // event would arrive before the kept repo's.
    let stale = note(1, T0 + 900, vec![vec!["a".into(), dropped.to_string()]], "not ours any more");
    let fresh = note(1, T0 + 901, vec![vec!["a".into(), kept.to_string()]], "still ours");
    relay.publish(&stale).await;
    relay.publish(&fresh).await;
    eventually(10, "kept repo's event held", || h.holds(std::slice::from_ref(&fresh))).await;
    assert!(!h.holds(std::slice::from_ref(&stale)), "the dropped repository is still followed");
}
