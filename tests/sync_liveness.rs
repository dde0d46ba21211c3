//! Liveness against in-process peers: a relay that stops reading, and a connection that goes
//! half-open, are noticed within their deadlines and redialled; nothing published meanwhile is
//! lost.

mod sync_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grasp_sync::engine::{MemoryStore, RelayStatus, SyncSettings};
use grasp_sync::wire::conn::Liveness;
use sync_support::*;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_never_reads_is_dropped_and_redialled_instead_of_wedging_its_task() {
    // Completes the websocket handshake, then never reads or writes again.
    let deaf = Scripted::start_with_recv_buffer(4096, |peer| async move {
        let _held = peer;
        std::future::pending::<()>().await
    })
    .await;
    let c = coord("deaf");
    let mut idx = index_with(&c, &[&deaf.url]);
    // Enough roots that the subscriptions alone overflow both socket buffers.
    for n in 0..3_000u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        idx.add_root(&c, id);
    }
    // The keepalive stays at its default (45 s, beyond this test's horizon): only the write
    // and close deadlines can end these connections.
    let write = Duration::from_millis(500);
    let liveness = Liveness { send_timeout: write, close_timeout: write, ..Liveness::default() };
    let settings = SyncSettings { send_timeout: write, liveness, ..fast_settings() };
    let h = Harness::start_with_dialer(
        engine_config("wss://grasp.example.com", settings),
        idx,
        Arc::new(MemoryStore::new()),
        Arc::new(TestDialer::with_send_buffer(4096)),
    );
    eventually(20, "the deaf relay redialled twice", || deaf.log.connections() >= 3).await;
    let r = h.report(&deaf.url);
    assert!(r.connects >= 2, "{r:?}");
    assert!(r.status != RelayStatus::Connected, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_noticed_by_keepalive_and_what_was_published_meanwhile_arrives() {
    let relay = TestRelay::start(None).await;
    let proxy = Proxy::start(&relay.url).await;
    let c = coord("halfopen");
    let root = issue(&c, "first issue", T0 + 5);
    let mut history = repo_events(&c, 20, 2);
    history.push(root.clone());
    relay.insert_all(&history).await;

    let liveness =
        Liveness { keepalive: Duration::from_secs(1), pong_timeout: Duration::from_secs(1), ..Liveness::default() };
    // No catch-up margin: the quick reconnect's `since` must itself reach back to the last frame
    // received before the path went silent, not to when the loss was noticed.
    let settings = SyncSettings { liveness, catchup_margin: Duration::ZERO, ..fast_settings() };
    let h = Harness::one_relay(&c, &proxy.url, settings);
    eventually(20, "history held", || h.holds(&history)).await;
    eventually(10, "relay connected", || h.report(&proxy.url).status == RelayStatus::Connected).await;
    assert_eq!(proxy.state.connections.load(Ordering::SeqCst), 1);

    // The path goes silent both ways without a FIN or RST; then the relay gets new events.
    proxy.freeze_all();
    let now = unix_now();
    let meanwhile = vec![
        note(1, now, vec![vec!["a".into(), c.to_string()]], "a repo event while half-open"),
        comment(&root, "a comment while half-open", now),
    ];
    for n in &meanwhile {
        relay.publish(n).await;
    }
    // Keepalive 1 s + pong deadline 1 s, plus the backoff and some slack.
    eventually(8, "the dead connection noticed and the relay redialled", || {
        proxy.state.connections.load(Ordering::SeqCst) >= 2
    })
    .await;
    eventually(15, "what was published meanwhile held", || h.holds(&meanwhile)).await;
    let r = h.report(&proxy.url);
    assert!(r.quick_reconnects >= 1, "a quick reconnect, not a fresh start: {r:?}");
    assert!(h.duplicates().is_empty());
}
