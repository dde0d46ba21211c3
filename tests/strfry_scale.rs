//! The planner against a real strfry that allows 20 subscriptions per connection: 6,000 root
//! events (50 repositories × 120 issues, two comments each). Every relevant event arrives and
//! strfry never has to answer "too many concurrent REQs". Skips without a strfry binary.

mod support;
mod sync_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use grasp_sync::accepted::RepoSyncIndex;
use grasp_sync::engine::{MemoryStore, RelayStatus, SyncSettings};
use grasp_sync::policy::{Note, RepoCoord};
use nostr_relay_builder::prelude::Keys;
use support::daemon::{json, now, signed, t};
use support::strfry::{self, Strfry};
use sync_support::{engine_config, eventually, fast_settings, url, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_thousand_roots_on_strfry_with_20_subscriptions_arrive_without_overflow() {
    let Some(bin) = strfry::binary_or_skip("strfry_scale") else { return };
    let remote = Strfry::start(&bin, "  maxSubsPerConnection = 20");
    let alice = Keys::generate();
    let base = now() - 100_000;
    let mut idx = RepoSyncIndex::new();
    let mut relevant: Vec<Note> = Vec::new();
    for r in 0..50 {
        let d = format!("repo{r}");
        let ann = signed(&alice, 30617, vec![t("d", &d), vec!["relays".into(), remote.url()]], "", base);
        let coord = RepoCoord::parse(&format!("30617:{}:{d}", alice.public_key().to_hex())).unwrap();
        idx.upsert_repo(coord.clone(), [url(&remote.url())].into());
        relevant.push(ann);
        for i in 0..120u64 {
            let at = base + 10 + r * 1_000 + i * 3;
            let issue = signed(&alice, 1621, vec![t("a", &coord.to_string()), t("subject", "bug")], "issue", at);
            idx.add_root(&coord, issue.check().unwrap());
            for c in 0..2 {
                let tags = vec![t("E", &issue.id), t("e", &issue.id), t("K", "1621")];
                relevant.push(signed(&alice, 1111, tags, &format!("reply {c}"), at + 1 + c));
            }
            relevant.push(issue);
        }
    }
    let noise: Vec<Note> = (0..200).map(|i| signed(&alice, 1, vec![], "unrelated", base + i)).collect();
    remote.import(&relevant.iter().chain(&noise).map(json).collect::<Vec<_>>());

    let settings = SyncSettings { max_subscriptions: 15, ..fast_settings() };
    let h = Harness::start(engine_config("wss://grasp.example.com", settings), idx, Arc::new(MemoryStore::new()));
    let started = std::time::Instant::now();
    eventually(300, "every relevant event held and the relay connected", || {
        h.holds(&relevant) && h.report(&remote.url()).status == RelayStatus::Connected
    })
    .await;
    let r = h.report(&remote.url());
    println!(
        "6,000 roots from strfry: {:?}, {} events received, {} bytes in, {} bytes out",
        started.elapsed(),
        r.events_received,
        r.bytes_in,
        r.bytes_out
    );
    assert!(!remote.log().contains("too many concurrent REQs"), "strfry refused a subscription");
    assert_eq!(r.notices, 0, "strfry sent NOTICEs: {:?}", r.last_error);
    assert!(r.max_open_subscriptions <= 15);
    let distinct: BTreeSet<&str> = relevant.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(r.events_delivered, distinct.len() as u64, "each relevant event once, nothing else");
    // Live: a new reply on the oldest issue arrives through the comment tier.
    let oldest = relevant.iter().find(|n| n.kind == 1621).unwrap();
    let late = signed(&alice, 1111, vec![t("E", &oldest.id), t("K", "1621")], "late reply", now());
    strfry::publish(&remote.url(), &[json(&late)]).await;
    eventually(30, "live reply held", || h.holds(std::slice::from_ref(&late))).await;
}
