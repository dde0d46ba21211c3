//! REQ pagination against relays that cap `limit` silently.

mod sync_support;

use grasp_sync::engine::{RelayStatus, SyncSettings};
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_capping_limit_at_100_gives_all_1000_events_to_the_default_page_limit() {
    let relay = TestRelay::start(Some(100)).await;
    let c = coord("capped");
    let events = repo_events(&c, 1_000, 3);
    relay.insert_all(&events).await;
    // No NIP-77: history comes by REQ pages that ask for 500 and get 100.
    let settings = SyncSettings { negentropy: false, ..fast_settings() };
    assert_eq!(settings.page_limit, 500);
    let h = Harness::one_relay(&c, &relay.url, settings);
    eventually(30, "all 1000 events held", || h.holds(&events)).await;
    eventually(10, "relay connected", || h.report(&relay.url).status == RelayStatus::Connected).await;
    assert_eq!(h.store.len(), 1_000);
    assert!(h.duplicates().is_empty(), "the boundary second is deduplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_events_in_one_second_on_an_uncapped_relay_complete_history_without_truncation() {
    let relay = TestRelay::start(None).await;
    let c = coord("crowded");
    // A bulk import: 60 events of the repository share one second (a first page of 60 looks
    // like a relay capping at 60), beside plenty of other history on the relay.
    let crowded = repo_events(&c, 60, 60);
    let other = repo_events(&coord("elsewhere"), 600, 3);
    relay.insert_all(&[crowded.clone(), other].concat()).await;
    let settings = SyncSettings { negentropy: false, ..fast_settings() };
    let h = Harness::one_relay(&c, &relay.url, settings);
    eventually(30, "the crowded second held", || h.holds(&crowded)).await;
    eventually(10, "history complete, not truncated", || {
        let r = h.report(&relay.url);
        r.status == RelayStatus::Connected && r.truncated == 0 && r.history_error.is_none()
    })
    .await;
    assert_eq!(h.store.len(), 60, "the probe's events are not delivered");
}
