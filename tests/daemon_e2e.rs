//! The daemon end to end without strfry: in-process relays play the host (generic websocket
//! path, no LMDB) and two remotes. Exactly the relevant events reach the host, live events follow,
//! and a daemon restart within the quick-reconnect window catches up by a quick reconnect.

mod support;
mod sync_support;

use nostr_relay_builder::prelude::Keys;
use support::daemon::*;
use support::strfry::free_port;
use sync_support::TestRelay;

const S: &str = "wss://grasp.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_brings_exactly_the_relevant_events_and_resumes_quickly_after_restart() {
    let host = TestRelay::start(None).await;
    let r1 = TestRelay::start(None).await;
    let r2 = TestRelay::start(None).await;
    let (alice, bob, mallory) = (Keys::generate(), Keys::generate(), Keys::generate());
    let base = now() - 5000;

    let ann = signed(
        &alice,
        30617,
        vec![t("d", "alpha"), vec!["relays".into(), S.into(), r1.url.clone(), r2.url.clone()]],
        "",
        base,
    );
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    let issue = signed(&bob, 1621, vec![t("a", &coord), t("subject", "bug")], "it breaks", base + 10);
    let patch = signed(&bob, 1617, vec![t("a", &coord)], "diff", base + 11);
    let comment = signed(&alice, 1111, vec![t("E", &issue.id), t("K", "1621")], "thanks", base + 20);
    let junk_note = signed(&mallory, 1, vec![], "unrelated", base + 30);
    let junk_issue =
        signed(&mallory, 1621, vec![t("a", &format!("30617:{}:zzz", mallory.public_key().to_hex()))], "x", base + 31);
    let other_ann = signed(&mallory, 30617, vec![t("d", "zzz"), vec!["relays".into(), r2.url.clone()]], "", base + 32);

    // The announcement is on the host (published to this GRASP relay) and on r1; the rest is
    // spread across the remotes, the comment only reachable through its root id.
    host.publish(&ann).await;
    r1.insert_all(&[ann.clone(), issue.clone(), junk_note.clone()]).await;
    r2.insert_all(&[patch.clone(), comment.clone(), junk_issue.clone(), other_ann.clone()]).await;

    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config(S, &host.url, None, state.path(), metrics);

    let daemon = start_daemon(&config);
    until_host_holds(&host.url, &[&ann, &issue, &patch, &comment], 60).await;
    let live = signed(&bob, 1111, vec![t("E", &issue.id)], "live reply", now());
    r2.publish(&live).await;
    until_host_holds(&host.url, &[&live], 30).await;
    let have = host_ids(&host.url).await;
    for junk in [&junk_note, &junk_issue, &other_ann] {
        assert!(!have.contains(&junk.id), "irrelevant event {} reached the host", junk.kind);
    }
    let status = status_until(metrics, "both remotes connected", |s| {
        s.relays.len() == 2 && s.relays.iter().all(|r| r.status == "connected")
    })
    .await;
    assert_eq!((status.repos, status.root_events), (1, 2));
    assert!(
        status.relays.iter().all(|r| r.historic_total > 0 && r.historic_done == r.historic_total),
        "historic progress complete on connected relays: {status:?}"
    );
    assert!(status.relays.iter().all(|r| r.fresh_starts >= 1));
    stop_daemon(daemon).await;
    // What each relay confirmed is saved (16 hex digits per item), so the restart resumes every layer.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("state.json")).unwrap()).unwrap();
    for (url, relay) in saved["relays"].as_object().unwrap() {
        let confirmed = relay["confirmed"].as_str().unwrap_or_default();
        assert!(confirmed.len() >= 16 && confirmed.len() % 16 == 0, "{url} saved no confirmed items: {relay}");
    }

    // Published while the daemon is down; a restart within quick_reconnect_secs resumes.
    let offline = signed(&bob, 1111, vec![t("E", &issue.id)], "while you were away", now());
    r1.insert_all(std::slice::from_ref(&offline)).await;
    let daemon = start_daemon(&config);
    until_host_holds(&host.url, &[&offline], 30).await;
    let status = status_until(metrics, "quick reconnects", |s| {
        s.relays.len() == 2 && s.relays.iter().all(|r| r.quick_reconnects >= 1)
    })
    .await;
    assert!(status.relays.iter().all(|r| r.fresh_starts == 0), "restart was quick, not fresh: {status:?}");
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_dated_announcement_published_to_the_host_after_start_is_followed() {
    let host = TestRelay::start(None).await;
    let remote = TestRelay::start(None).await;
    let alice = Keys::generate();
    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let daemon = start_daemon(&config(S, &host.url, None, state.path(), metrics));
    status_until(metrics, "daemon up", |s| s.host_connected).await;

    // Created an hour ago, published now: a `since` on created_at would never see it.
    let ann = signed(
        &alice,
        30617,
        vec![t("d", "late"), vec!["relays".into(), S.into(), remote.url.clone()]],
        "",
        now() - 3600,
    );
    let coord = format!("30617:{}:late", alice.public_key().to_hex());
    let issue = signed(&alice, 1621, vec![t("a", &coord)], "old issue", now() - 3000);
    remote.insert_all(std::slice::from_ref(&issue)).await;
    host.publish(&ann).await;
    until_host_holds(&host.url, &[&issue], 30).await;
    stop_daemon(daemon).await;
}
