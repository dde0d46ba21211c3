//! What the daemon records as accepted stays true: a late co-maintainer is fetched again once its
//! owner names it, however long ago it was first refused; an event the host refuses for a passing
//! reason is retried until the host stores it, and counts only then; deletions and reactions of
//! accepted comments reach the host.

mod support;
mod sync_support;

use nostr_relay_builder::prelude::Keys;
use support::daemon::*;
use support::strfry::free_port;
use sync_support::{Proxy, TestRelay};

const S: &str = "wss://grasp.example.com";

fn announcement(keys: &Keys, d: &str, relays: &[&str], maintainers: &[&Keys], at: u64) -> grasp_sync::policy::Note {
    let mut tags = vec![t("d", d), std::iter::once("relays").chain(relays.iter().copied()).map(String::from).collect()];
    if !maintainers.is_empty() {
        let mut m = vec!["maintainers".to_string()];
        m.extend(maintainers.iter().map(|k| k.public_key().to_hex()));
        tags.push(m);
    }
    signed(keys, 30617, tags, "", at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_co_maintainer_reaches_the_host_on_the_next_sync_after_the_owner_names_them() {
    let host = TestRelay::start(None).await;
    let remote = TestRelay::start(None).await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let t0 = now() - 100;
    let owner_v1 = announcement(&alice, "alpha", &[S, &remote.url], &[], t0);
    // Bob announces his copy before Alice names him: refused, held, then settled.
    let bob_ann = announcement(&bob, "alpha", &[&remote.url], &[], t0 + 10);
    host.publish(&owner_v1).await;
    remote.insert_all(&[owner_v1.clone(), bob_ann.clone()]).await;

    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Held one second only: Bob's first refusal is long past the hold time when Alice names him.
    let config = format!("{}[rejected]\nhold_secs = 1\n", config(S, &host.url, None, state.path(), metrics));
    let daemon = start_daemon(&config);
    status_until(metrics, "Bob's announcement refused and settled", |s| s.events_settled >= 1).await;
    assert!(!host_ids(&host.url).await.contains(&bob_ann.id));

    // Alice names Bob (published to this relay): Bob's settled refusal is re-opened.
    let owner_v2 = announcement(&alice, "alpha", &[S, &remote.url], &[&bob], t0 + 20);
    host.publish(&owner_v2).await;
    status_until(metrics, "the settled refusal re-opened", |s| s.events_reopened >= 1 && s.events_settled == 0).await;
    stop_daemon(daemon).await;

    // The next sync (a restart here) fetches Bob's announcement again, and now it is accepted.
    let daemon = start_daemon(&config);
    until_host_holds(&host.url, &[&bob_ann], 60).await;
    status_until(metrics, "both repositories indexed", |s| s.repos == 2).await;
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_host_refuses_with_an_internal_error_is_retried_until_stored() {
    let host = TestRelay::start(None).await;
    let front = Proxy::start(&host.url).await;
    let remote = TestRelay::start(None).await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let t0 = now() - 100;
    let ann = announcement(&alice, "alpha", &[S, &remote.url], &[], t0);
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    let issue = signed(&bob, 1621, vec![t("a", &coord)], "it breaks", t0 + 10);
    let reply = signed(&alice, 1111, vec![t("E", &issue.id), t("K", "1621")], "looking", t0 + 20);
    host.publish(&ann).await;
    remote.insert_all(&[ann.clone(), issue.clone(), reply.clone()]).await;
    // The first three writes reaching the host are refused, as strfry does while its plugin
    // restarts: more than the ingest's immediate retries, so the daemon's backoff takes over.
    front.state.refuse_writes.store(3, std::sync::atomic::Ordering::SeqCst);

    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let daemon = start_daemon(&config(S, &front.url, None, state.path(), metrics));
    until_host_holds(&host.url, &[&issue, &reply], 60).await;
    assert_eq!(front.state.writes_refused.load(std::sync::atomic::Ordering::SeqCst), 3);
    let status = status_until(metrics, "the refusals counted and retried", |s| {
        s.host_refusals == 3 && s.host_retries_pending == 0
    })
    .await;
    assert_eq!((status.repos, status.root_events, status.host_retries_pending), (1, 1, 0));
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_counts_only_once_the_host_stored_its_announcement_and_what_depends_on_it_follows() {
    let host = TestRelay::start(None).await;
    let front = Proxy::start(&host.url).await;
    let remote = TestRelay::start(None).await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let t0 = now() - 100;
    // The host knows one repository of Alice's, which makes the remote a relay to sync from.
    host.publish(&announcement(&alice, "beta", &[S, &remote.url], &[], t0)).await;
    // Everything about another one comes from the remote in one sync: its announcement, an
    // issue about it, a reply.
    let ann = announcement(&alice, "alpha", &[S, &remote.url], &[], t0);
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    let issue = signed(&bob, 1621, vec![t("a", &coord)], "it breaks", t0 + 10);
    let reply = signed(&alice, 1111, vec![t("E", &issue.id), t("K", "1621")], "looking", t0 + 20);
    remote.insert_all(&[ann.clone(), issue.clone(), reply.clone()]).await;
    // The host answers the first nine writes with `error: internal error`: the announcement is
    // refused on three rounds of the daemon's retries (three tries each) before it is stored.
    front.state.refuse_writes.store(9, std::sync::atomic::Ordering::SeqCst);

    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let daemon = start_daemon(&config(S, &front.url, None, state.path(), metrics));
    // As long as the host has not stored the announcement, the repository does not count: no
    // status may show it before the ninth refusal.
    let status = status_within(metrics, "every event stored", 90, |s| {
        assert!(s.host_refusals >= 9 || s.repos <= 1, "repository counted before the host stored it: {s:#?}");
        s.repos == 2 && s.root_events == 1
    })
    .await;
    assert_eq!(status.host_refusals, 9);
    until_host_holds(&host.url, &[&ann, &issue, &reply], 30).await;
    assert_eq!(front.state.writes_refused.load(std::sync::atomic::Ordering::SeqCst), 9);
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grasp_server_lists_naming_this_relay_are_synced_with_announcements_and_others_are_not() {
    let host = TestRelay::start(None).await;
    let remote = TestRelay::start(None).await;
    let (alice, bob, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
    let t0 = now() - 100;
    let ann = announcement(&alice, "alpha", &[S, &remote.url], &[], t0);
    // History: a list naming this service, and one naming only another GRASP server.
    let ours = signed(&bob, 10317, vec![t("g", S), t("g", "wss://other-grasp.example.com")], "", t0 + 1);
    let theirs = signed(&carol, 10317, vec![t("g", "wss://other-grasp.example.com")], "", t0 + 2);
    host.publish(&ann).await;
    remote.insert_all(&[ann.clone(), ours.clone(), theirs.clone()]).await;

    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let daemon = start_daemon(&config(S, &host.url, None, state.path(), metrics));
    until_host_holds(&host.url, &[&ours], 30).await;
    // Live: carol's replacement names this service too, and arrives on the broad live filter.
    status_until(metrics, "the remote connected", |s| s.relays.iter().all(|r| r.status == "connected")).await;
    let carol_now = signed(&carol, 10317, vec![t("g", S)], "", now());
    remote.publish(&carol_now).await;
    until_host_holds(&host.url, &[&carol_now], 30).await;
    let have = host_ids(&host.url).await;
    assert!(!have.contains(&theirs.id), "a list that does not name this relay reached the host");
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_reactions_of_accepted_comments_reach_the_host_from_history_and_live() {
    let host = TestRelay::start(None).await;
    let remote = TestRelay::start(None).await;
    let (alice, bob, carol, dave) = (Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate());
    let t0 = now() - 100;
    let ann = announcement(&alice, "alpha", &[S, &remote.url], &[], t0);
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    let issue = signed(&bob, 1621, vec![t("a", &coord)], "it breaks", t0 + 10);
    let comment = |text: &str, at: u64| {
        signed(&carol, 1111, vec![t("E", &issue.id), t("K", "1621"), t("e", &issue.id), t("k", "1621")], text, at)
    };
    let (first, second) = (comment("first", t0 + 20), comment("second", t0 + 21));
    // The host holds the repository, the issue and both comments (accepted here).
    for n in [&ann, &issue, &first, &second] {
        host.publish(n).await;
    }
    // Elsewhere, before the daemon starts: Carol deletes her first comment, Dave reacts to the
    // second. Neither names the issue or the repository: only the comment's id.
    let deletion = |target: &grasp_sync::policy::Note, at: u64| {
        signed(&carol, 5, vec![t("e", &target.id), t("k", "1111")], "", at)
    };
    let reaction = |target: &grasp_sync::policy::Note, at: u64| {
        signed(&dave, 7, vec![t("e", &target.id), t("p", &carol.public_key().to_hex()), t("k", "1111")], "+", at)
    };
    let (old_deletion, old_reaction) = (deletion(&first, t0 + 30), reaction(&second, t0 + 31));
    remote.insert_all(&[ann.clone(), issue.clone(), old_deletion.clone(), old_reaction.clone()]).await;

    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Deletions and reactions of accepted comments are the sweep's: every 2 s here.
    let cfg =
        config(S, &host.url, None, state.path(), metrics).replace("[sync]\n", "[sync]\nsweep_interval_secs = 2\n");
    let daemon = start_daemon(&cfg);
    // The first sweep brings what happened before.
    until_host_holds(&host.url, &[&old_deletion, &old_reaction], 30).await;
    status_until(metrics, "the remote synced", |s| s.relays.iter().all(|r| r.status == "connected")).await;
    // Live: Dave reacts again to the second comment, then Carol deletes it.
    let new_reaction = reaction(&second, now() + 1);
    remote.publish(&new_reaction).await;
    until_host_holds(&host.url, &[&new_reaction], 30).await;
    let new_deletion = deletion(&second, now() + 2);
    remote.publish(&new_deletion).await;
    until_host_holds(&host.url, &[&new_deletion], 30).await;
    // A comment written to this relay while the daemon runs, deleted elsewhere: the daemon learns
    // of the comment from the host and asks for what names it.
    let third = comment("third", now());
    let third_deletion = deletion(&third, now() + 3);
    remote.insert_all(std::slice::from_ref(&third_deletion)).await;
    host.publish(&third).await;
    until_host_holds(&host.url, &[&third_deletion], 30).await;
    stop_daemon(daemon).await;
}
