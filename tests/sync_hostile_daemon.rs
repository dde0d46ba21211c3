//! A hostile relay seen by the whole daemon: events with valid ids but bad signatures pass the
//! engine (it checks ids only). The host refuses those written to it (`invalid:`) and the daemon
//! traces each refusal back to the relay; those the daemon would hold itself it checks first. Either
//! way the relay is held to its misbehaviour budget. An in-process relay plays the host.

mod support;
mod sync_support;

use grasp_sync::policy::Note;
use nostr_relay_builder::prelude::Keys;
use serde_json::json;
use support::daemon::*;
use support::strfry::free_port;
use sync_support::{Peer, Scripted, TestRelay};

const S: &str = "wss://grasp.example.com";

/// A relay that answers every historic REQ with a filter on `tag` with `notes` (whatever else
/// the filter says), and any other REQ with EOSE alone.
async fn serving_on_history(tag: &'static str, notes: Vec<Note>) -> Scripted {
    Scripted::start(move |mut peer: Peer| {
        let notes = notes.clone();
        async move {
            while let Some((sub, filters)) = peer.next_req().await {
                let historic = filters.iter().all(|f| f["limit"] != 0);
                if historic && filters.iter().any(|f| f.get(tag).is_some()) {
                    for n in &notes {
                        peer.send(json!(["EVENT", sub, n])).await;
                    }
                }
                peer.send(json!(["EOSE", sub])).await;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_bad_signatures_are_never_stored_and_the_relay_is_degraded() {
    let host = TestRelay::start(None).await;
    let good = TestRelay::start(None).await;
    let (alice, mallory) = (Keys::generate(), Keys::generate());
    let base = now() - 5000;
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    // Valid ids, signatures taken from other events: only a signature check can tell.
    let forged: Vec<_> = (0..30)
        .map(|i| {
            let mut n = signed(&mallory, 1621, vec![t("a", &coord)], &format!("forged {i}"), base + 100 + i);
            n.sig = signed(&mallory, 1, vec![], "other", base).sig;
            n
        })
        .collect();
    let bad = serving_on_history("#a", forged.clone()).await;

    let ann = signed(
        &alice,
        30617,
        vec![t("d", "alpha"), vec!["relays".into(), S.into(), good.url.clone(), bad.url.clone()]],
        "",
        base,
    );
    let issue = signed(&alice, 1621, vec![t("a", &coord), t("subject", "real")], "real issue", base + 10);
    host.publish(&ann).await;
    good.insert_all(std::slice::from_ref(&issue)).await;

    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config(S, &host.url, None, state.path(), metrics).replace("[sync]\n", "[sync]\nnegentropy = false\n");
    let daemon = start_daemon(&config);
    until_host_holds(&host.url, &[&ann, &issue], 30).await;
    let status = status_until(metrics, "forging relay degraded after a misbehaviour disconnect", |s| {
        s.relays.iter().any(|r| {
            r.url == bad.url
                && r.misbehaving_disconnects >= 1
                && r.events_bad_signature > 20
                && r.last_error.as_deref().is_some_and(|e| e.contains("bad signatures"))
                && matches!(r.health.as_str(), "degraded" | "failing")
        })
    })
    .await;
    let r = status.relays.iter().find(|r| r.url == bad.url).unwrap();
    assert_eq!(r.events_stored, 0);
    assert!(r.events_rejected >= r.events_bad_signature);
    // The daemon stays up: the good relay's live events still arrive.
    let live = signed(&alice, 1111, vec![t("E", &issue.id)], "live reply", now());
    good.publish(&live).await;
    until_host_holds(&host.url, &[&live], 30).await;
    let have = host_ids(&host.url).await;
    let expected: std::collections::HashSet<String> = [&ann, &issue, &live].iter().map(|n| n.id.clone()).collect();
    assert_eq!(have, expected, "the host holds exactly the genuine events");
    assert!(forged.iter().all(|n| !have.contains(&n.id)));
    stop_daemon(daemon).await;
}

/// What the policy refuses is held by the daemon (not by the host) until what it waits for
/// arrives: a forged one is counted against its relay and never held; a genuine one is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_events_the_policy_refuses_are_counted_and_never_held() {
    let host = TestRelay::start(None).await;
    let (alice, mallory) = (Keys::generate(), Keys::generate());
    let base = now() - 5000;
    // State of alice's repository by someone who is not its maintainer: refused, held.
    let state = |i: u64| signed(&mallory, 30618, vec![t("d", "alpha")], "", base + 100 + i);
    let forged: Vec<_> = (0..3)
        .map(|i| {
            let mut n = state(i);
            n.sig = signed(&mallory, 1, vec![], "other", base).sig;
            n
        })
        .collect();
    let genuine = state(10);
    let mut to_send = forged.clone();
    to_send.push(genuine.clone());
    let bad = serving_on_history("#d", to_send).await;
    let ann = signed(&alice, 30617, vec![t("d", "alpha"), vec!["relays".into(), S.into(), bad.url.clone()]], "", base);
    host.publish(&ann).await;

    let state_dir = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config =
        config(S, &host.url, None, state_dir.path(), metrics).replace("[sync]\n", "[sync]\nnegentropy = false\n");
    let daemon = start_daemon(&config);
    let status = status_until(metrics, "three forged events counted, the genuine one held", |s| {
        s.events_pending_retry >= 1 && s.relays.iter().any(|r| r.url == bad.url && r.events_bad_signature >= 3)
    })
    .await;
    let r = status.relays.iter().find(|r| r.url == bad.url).unwrap();
    assert_eq!(r.events_bad_signature, 3);
    assert_eq!(status.events_pending_retry, 1, "only the genuine event is held");
    assert_eq!(host_ids(&host.url).await, [ann.id.clone()].into(), "nothing refused reaches the host");
    stop_daemon(daemon).await;
}
