//! Following the host: new announcements, root events and deletions arrive in batches; other
//! kinds do not; a host that comes up late (or comes back) is followed once it is there.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use grasp_sync::host::stream::{self, StreamConfig, StreamEvent};
use grasp_sync::policy::RelayUrl;
use nostr_relay_builder::prelude::*;
use support::strfry::{self, Strfry};
use tokio::sync::{mpsc, watch};

fn event(keys: &Keys, kind: u16, tags: Vec<Tag>) -> serde_json::Value {
    let ev = EventBuilder::new(Kind::from(kind), "x").tags(tags).sign_with_keys(keys).unwrap();
    serde_json::from_str(&ev.as_json()).unwrap()
}

/// Receives batches until every id in `want` has arrived; returns every id seen.
async fn until_seen(rx: &mut mpsc::Receiver<StreamEvent>, want: &HashSet<String>) -> HashSet<String> {
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(StreamEvent::Batch(b))) => seen.extend(b.into_iter().map(|n| n.id)),
            Ok(Some(StreamEvent::Connected(_))) => {}
            Ok(None) => panic!("stream ended"),
            Err(_) => panic!("only {} of {} events arrived", want.intersection(&seen).count(), want.len()),
        }
    }
    seen
}

fn config(url: &str) -> StreamConfig {
    StreamConfig {
        url: RelayUrl::parse(url).unwrap(),
        since: 0,
        batch_window: Duration::from_millis(100),
        base_backoff_secs: 1,
        max_backoff_secs: 1,
    }
}

#[tokio::test]
async fn announcements_roots_and_deletions_arrive_other_kinds_do_not() {
    let port = strfry::free_port();
    let (tx, mut rx) = mpsc::channel(16);
    let (_stop_tx, stop) = watch::channel(false);
    // Started before the host is up: it must retry until it can subscribe.
    let task = tokio::spawn(stream::run(config(&format!("ws://127.0.0.1:{port}")), tx, stop));
    let relay = LocalRelay::new(RelayBuilder::default().addr("127.0.0.1".parse().unwrap()).port(port));
    relay.run().await.unwrap();
    let url = relay.url().await.to_string();

    let keys = Keys::generate();
    let wanted = vec![
        event(&keys, 30617, vec![Tag::identifier("repo")]),
        event(&keys, 1621, vec![]),
        event(&keys, 1617, vec![]),
        event(&keys, 5, vec![]),
    ];
    let unwanted = event(&keys, 1, vec![]);
    strfry::publish(&url, &[wanted.clone(), vec![unwanted.clone()]].concat()).await;
    let want: HashSet<String> = wanted.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let seen = until_seen(&mut rx, &want).await;
    assert!(!seen.contains(unwanted["id"].as_str().unwrap()), "kind 1 is not followed");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strfry_restart_is_followed_through() {
    let Some(bin) = strfry::binary_or_skip("host_stream") else { return };
    let mut host = Strfry::start(&bin, "");
    let (tx, mut rx) = mpsc::channel(16);
    let (_stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(stream::run(config(&host.url()), tx, stop));
    let keys = Keys::generate();
    let before = event(&keys, 1621, vec![]);
    strfry::publish(&host.url(), std::slice::from_ref(&before)).await;
    until_seen(&mut rx, &HashSet::from([before["id"].as_str().unwrap().to_string()])).await;

    tokio::task::block_in_place(|| host.restart_after(Duration::from_millis(200)));
    let after = event(&keys, 1617, vec![]);
    strfry::publish(&host.url(), std::slice::from_ref(&after)).await;
    until_seen(&mut rx, &HashSet::from([after["id"].as_str().unwrap().to_string()])).await;
    task.abort();
}
