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
