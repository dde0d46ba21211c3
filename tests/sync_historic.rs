//! Historic sync against in-process relays: negentropy transfers only the difference; REQ
//! pagination is the fallback when NIP-77 is refused, errors or is ignored.

mod sync_support;

use std::sync::Arc;

use grasp_sync::engine::{MemoryStore, RelayStatus, SyncSettings};
use grasp_sync::remote::abuse::AbuseLimits;
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negentropy_fetches_only_what_the_local_store_lacks() {
    let relay = TestRelay::start(None).await;
    let c = coord("alpha");
    let ann = announcement("alpha", &[&relay.url]);
    let events = repo_events(&c, 1_000, 7);
    relay.insert_all(&events).await;
    relay.insert_all(std::slice::from_ref(&ann)).await;

    let store = Arc::new(MemoryStore::new());
    store.insert(ann);
    for e in events.iter().take(900) {
        store.insert(e.clone());
    }
    let h =
        Harness::start(engine_config("wss://grasp.example.com", fast_settings()), index_with(&c, &[&relay.url]), store);
    eventually(20, "every event held", || h.holds(&events)).await;
    eventually(10, "relay connected", || h.report(&relay.url).status == RelayStatus::Connected).await;
    let r = h.report(&relay.url);
    assert_eq!(r.negentropy, Some(true));
    assert_eq!(r.ids_requested, 100, "only the missing 10% is requested");
    assert_eq!(r.events_delivered, 100);
    assert_eq!(r.events_invalid + r.events_unmatched, 0);
    assert!(h.duplicates().is_empty());
}

async fn falls_back_to_req(mode: NegMode) {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    proxy.set_neg(mode.clone());
    let c = coord("beta");
    let events = repo_events(&c, 300, 3);
    relay.insert_all(&events).await;
    let h = Harness::one_relay(&c, &proxy.url, fast_settings());
    eventually(20, &format!("every event held with {mode:?}"), || h.holds(&events)).await;
    eventually(10, "relay connected", || h.report(&proxy.url).status == RelayStatus::Connected).await;
    let r = h.report(&proxy.url);
    assert_eq!(r.negentropy, Some(false), "{mode:?}");
    assert_eq!(r.ids_requested, 0);
    assert!(proxy.state.neg_opens.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(h.duplicates().is_empty(), "{mode:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_fallback_when_negentropy_is_refused_by_notice() {
    falls_back_to_req(NegMode::Notice("ERROR: negentropy disabled".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_fallback_when_negentropy_is_refused_by_closed() {
    falls_back_to_req(NegMode::Closed("error: unknown cmd".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_fallback_when_negentropy_errors() {
    falls_back_to_req(NegMode::NegErr("error: not supported".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_fallback_when_negentropy_is_silently_ignored() {
    falls_back_to_req(NegMode::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_gets_2000_events_in_pages_of_100_with_shared_timestamps() {
    let relay = TestRelay::start(Some(100)).await;
    let c = coord("gamma");
    let events = repo_events(&c, 2_000, 25);
    relay.insert_all(&events).await;
    let settings = grasp_sync::engine::SyncSettings { negentropy: false, page_limit: 100, ..fast_settings() };
    let h = Harness::one_relay(&c, &relay.url, settings);
    eventually(30, "all 2000 events held", || h.holds(&events)).await;
    eventually(10, "relay connected", || h.report(&relay.url).status == RelayStatus::Connected).await;
    assert!(h.duplicates().is_empty(), "the boundary second is deduplicated");
    assert_eq!(h.store.len(), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_the_host_rejected_are_not_fetched_again() {
    let relay = TestRelay::start(None).await;
    let c = coord("rejects");
    let events = repo_events(&c, 200, 2);
    relay.insert_all(&events).await;
    let store = Arc::new(MemoryStore::new());
    for e in events.iter().take(150) {
        store.reject(e.clone());
    }
    let h =
        Harness::start(engine_config("wss://grasp.example.com", fast_settings()), index_with(&c, &[&relay.url]), store);
    eventually(20, "the rest held", || h.holds(&events[150..])).await;
    eventually(10, "relay connected", || h.report(&relay.url).status == RelayStatus::Connected).await;
    assert_eq!(h.report(&relay.url).ids_requested, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_query_results_pages_that_filter_and_keeps_negentropy() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    proxy.set_neg(NegMode::NegErr("blocked: too many query results".into()));
    let c = coord("big");
    let events = repo_events(&c, 300, 3);
    relay.insert_all(&events).await;
    let h = Harness::one_relay(&c, &proxy.url, fast_settings());
    eventually(20, "every event held", || h.holds(&events)).await;
    eventually(10, "relay connected", || h.report(&proxy.url).status == RelayStatus::Connected).await;
    assert_ne!(h.report(&proxy.url).negentropy, Some(false), "the relay still counts as speaking NIP-77");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_a_bad_id_or_matching_no_filter_are_dropped_and_counted() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    proxy.state.corrupt_events.store(5, std::sync::atomic::Ordering::SeqCst);
    proxy.state.inject_foreign.store(true, std::sync::atomic::Ordering::SeqCst);
    let c = coord("tamper");
    let events = repo_events(&c, 100, 2);
    relay.insert_all(&events).await;
    let h = Harness::one_relay(&c, &proxy.url, fast_settings());
    // The tampered ones count as missing and are asked for once more.
    eventually(20, "every genuine event held", || h.holds(&events)).await;
    eventually(10, "relay connected", || h.report(&proxy.url).status == RelayStatus::Connected).await;
    let r = h.report(&proxy.url);
    assert_eq!(r.events_invalid, 5);
    assert_eq!(r.events_unmatched, 1);
    assert_eq!(r.ids_requested, 105);
    assert_eq!(h.store.len(), 100, "nothing else reached the host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_never_arrive_are_asked_for_once_more_then_the_batch_is_marked_failed() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    // Every event is tampered with on the way: none ever arrives intact.
    proxy.state.corrupt_events.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let c = coord("lost");
    let events = repo_events(&c, 20, 2);
    relay.insert_all(&events).await;
    // This relay is let off its misbehaviour budget: the retry is what is looked at here.
    let abuse = AbuseLimits { invalid_events: 1_000, ..AbuseLimits::default() };
    let h = Harness::one_relay(&c, &proxy.url, SyncSettings { abuse, ..fast_settings() });
    eventually(20, "historic sync given up", || {
        h.report(&proxy.url).status == RelayStatus::ConnectedHistoricSyncFailures
    })
    .await;
    let r = h.report(&proxy.url);
    assert_eq!(r.ids_requested, 40, "each id asked for twice");
    assert_eq!(r.events_invalid, 40);
    assert!(r.historic_failures >= 1);
    assert!(h.store.is_empty());
}
