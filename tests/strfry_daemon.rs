//! The daemon with real strfry everywhere: a host strfry running `grasp-sync plugin`, read through
//! its LMDB, and two remote strfry, one with negentropy disabled.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use grasp_sync::policy::Note;
use nostr_relay_builder::prelude::Keys;
use support::daemon::*;
use support::strfry::{self, free_port, host_with_plugin, Strfry};

const S: &str = "wss://grasp.example.com";

fn ids(notes: &[&Note]) -> HashSet<String> {
    notes.iter().map(|n| n.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_syncs_between_real_strfry_relays_through_restarts() {
    let Some(bin) = strfry::binary_or_skip("strfry_daemon") else { return };
    let work = tempfile::tempdir().unwrap();
    let mut host = host_with_plugin(&bin, work.path(), S);
    let mut r1 = Strfry::start(&bin, "");
    let r2 = Strfry::start(&bin, "  negentropy {\n    enabled = false\n  }");
    let (alice, bob, mallory) = (Keys::generate(), Keys::generate(), Keys::generate());
    let base = now() - 50_000;

    let ann =
        signed(&alice, 30617, vec![t("d", "alpha"), vec!["relays".into(), S.into(), r1.url(), r2.url()]], "", base);
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    let state = signed(&alice, 30618, vec![t("d", "alpha"), t("HEAD", "ref: refs/heads/main")], "", base + 1);
    let issue = signed(&bob, 1621, vec![t("a", &coord), t("subject", "bug")], "it breaks", base + 10);
    let patch = signed(&bob, 1617, vec![t("a", &coord)], "diff", base + 11);
    let comment = signed(&alice, 1111, vec![t("E", &issue.id), t("K", "1621")], "thanks", base + 20);
    let junk = signed(&mallory, 1, vec![], "unrelated", base + 30);
    let junk_state = signed(&mallory, 30618, vec![t("d", "alpha")], "", base + 31);
    let junk_ann = signed(&mallory, 30617, vec![t("d", "zzz"), vec!["relays".into(), r2.url()]], "", base + 32);

    let published = strfry::publish(&host.url(), &[json(&ann)]).await;
    assert!(published[0].1, "the host's plugin accepts an announcement listing it: {published:?}");
    strfry::publish(&r1.url(), &[json(&ann), json(&issue), json(&state), json(&junk)]).await;
    strfry::publish(&r2.url(), &[json(&patch), json(&comment), json(&junk_state), json(&junk_ann)]).await;

    let state_dir = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = config(S, &host.url(), Some(&host.db), state_dir.path(), metrics);
    let daemon = start_daemon(&cfg);
    let relevant = [&ann, &state, &issue, &patch, &comment];
    until_host_holds(&host.url(), &relevant, 60).await;
    status_until(metrics, "both remotes connected", |s| {
        s.relays.len() == 2 && s.relays.iter().all(|r| r.status == "connected")
    })
    .await;
    assert_eq!(host_ids(&host.url()).await, ids(&relevant), "exactly the relevant events, nothing else");
    let s = fetch(metrics).await;
    let neg = |url: String| s.relays.iter().find(|r| r.url == url).and_then(|r| r.negentropy);
    assert_eq!((neg(r1.url()), neg(r2.url())), (Some(true), Some(false)), "negentropy detected per remote");

    // Live.
    let live = signed(&bob, 1111, vec![t("E", &issue.id)], "live", now());
    strfry::publish(&r2.url(), &[json(&live)]).await;
    until_host_holds(&host.url(), &[&live], 30).await;

    // A remote goes away; events reach it while it is down (imported); it comes back.
    tokio::task::block_in_place(|| r1.kill());
    let while_down = signed(&bob, 1111, vec![t("E", &issue.id)], "written while r1 was down", now() - 60);
    r1.import(&[json(&while_down)]);
    tokio::task::block_in_place(|| r1.start_again());
    until_host_holds(&host.url(), &[&while_down], 60).await;

    // The daemon stops; events are published; it restarts within the quick-reconnect window.
    stop_daemon(daemon).await;
    let offline = signed(&alice, 1111, vec![t("E", &issue.id)], "while the daemon was away", now());
    strfry::publish(&r2.url(), &[json(&offline)]).await;
    let daemon = start_daemon(&cfg);
    until_host_holds(&host.url(), &[&offline], 60).await;
    let s = status_until(metrics, "quick reconnects", |s| {
        s.relays.len() == 2 && s.relays.iter().all(|r| r.quick_reconnects >= 1)
    })
    .await;
    assert!(s.relays.iter().all(|r| r.fresh_starts == 0), "the restart was quick, not fresh: {s:#?}");

    // The host restarts in the middle of a large sync: nothing is lost.
    let many: Vec<Note> = (0..1500)
        .map(|i| signed(&bob, 1111, vec![t("E", &issue.id)], &format!("reply {i}"), now() - 3000 + i))
        .collect();
    let many_json: Vec<_> = many.iter().map(json).collect();
    r1.import(&many_json);
    strfry::publish(&r1.url(), &[json(&signed(&alice, 1621, vec![t("a", &coord)], "new root", now()))]).await;
    let restart_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while host_ids(&host.url()).await.len() < relevant.len() + 10 && tokio::time::Instant::now() < restart_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| host.restart_after(Duration::from_millis(300)));
    let many_refs: Vec<&Note> = many.iter().collect();
    until_host_holds(&host.url(), &many_refs, 120).await;
    let have = host_ids(&host.url()).await;
    for j in [&junk, &junk_state, &junk_ann] {
        assert!(!have.contains(&j.id), "irrelevant kind {} reached the host", j.kind);
    }
    stop_daemon(daemon).await;
}

async fn fetch(addr: std::net::SocketAddr) -> grasp_sync::metrics::Status {
    grasp_sync::metrics::fetch_status(addr).await.unwrap()
}
