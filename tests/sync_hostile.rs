//! Hostile remote relays. A relay URL comes from any public announcement, so a stranger can point
//! us at a relay that sends garbage, floods, stalls or drops us. Each test runs one hostile
//! behaviour (a scripted relay) next to a well-behaved relay listed by the same repository and
//! checks that the engine keeps syncing the good one, stays bounded, marks the hostile one, and
//! hands on exactly the expected events.

mod sync_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_sync::engine::{HealthStatus, MemoryStore, RelayReport, RelayStatus, SyncSettings};
use grasp_sync::policy::{Note, RepoCoord};
use grasp_sync::remote::abuse::AbuseLimits;
use grasp_sync::wire::backoff;
use serde_json::{json, Value};
use sync_support::*;

/// A well-behaved relay holding some history of `c`, and an engine syncing `c` from it and from
/// `hostile` (more URLs may follow); returns once the engine holds that history.
async fn setup(c: &RepoCoord, hostile: &[&str], settings: SyncSettings) -> (TestRelay, Vec<Note>, Harness) {
    let good = TestRelay::start(None).await;
    let history = repo_events(c, 30, 3);
    good.insert_all(&history).await;
    let mut relays = vec![good.url.as_str()];
    relays.extend_from_slice(hostile);
    let h = Harness::start(
        engine_config("wss://grasp.example.com", settings),
        index_with(c, &relays),
        Arc::new(MemoryStore::new()),
    );
    eventually(20, "history from the good relay held", || h.holds(&history)).await;
    (good, history, h)
}

fn ids(notes: &[Note]) -> BTreeSet<String> {
    notes.iter().map(|n| n.id.clone()).collect()
}

fn held(h: &Harness) -> BTreeSet<String> {
    h.store.notes().into_iter().map(|n| n.id).collect()
}

/// The good relay still syncs: a live event published on it now arrives.
async fn good_relay_still_syncs(h: &Harness, good: &TestRelay, c: &RepoCoord, text: &str) -> Note {
    eventually(20, "good relay connected", || h.report(&good.url).status == RelayStatus::Connected).await;
    let live = note(1, T0 + 9_000, vec![vec!["a".into(), c.to_string()]], text);
    good.publish(&live).await;
    eventually(10, "live event from the good relay held", || h.holds(std::slice::from_ref(&live))).await;
    live
}

/// The per-connection queues stayed within the subscription budget.
fn bounded(r: &RelayReport, s: &SyncSettings) {
    assert!(r.subscriptions_open <= s.max_subscriptions, "open subscriptions {}", r.subscriptions_open);
    assert!(r.max_open_subscriptions <= s.max_subscriptions, "max open {}", r.max_open_subscriptions);
    assert!(r.jobs_queued <= 16, "queued jobs {}", r.jobs_queued);
}

fn misbehaving(r: &RelayReport, what: &str) -> bool {
    r.misbehaving_disconnects >= 1 && r.last_error.as_deref().is_some_and(|e| e.contains(what))
}

fn is_live(filters: &[Value]) -> bool {
    filters.iter().all(|f| f["limit"] == 0)
}

fn wants_repo(filters: &[Value]) -> bool {
    filters.iter().any(|f| f.get("#a").is_some())
}

/// An event of `c` with a valid id (signatures are the consumer's business).
fn repo_note(c: &RepoCoord, at: u64, text: &str) -> Note {
    note(1, at, vec![vec!["a".into(), c.to_string()]], text)
}

/// Answers every REQ with EOSE until the client leaves.
async fn answer_eose(peer: &mut Peer) {
    while let Some((sub, _)) = peer.next_req().await {
        peer.send(json!(["EOSE", sub])).await;
    }
}

fn settings() -> SyncSettings {
    SyncSettings { negentropy: false, ..fast_settings() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_and_wrongly_shaped_frames_end_the_connection_with_backoff() {
    let bad = Scripted::start(|mut peer: Peer| async move {
        let Some((sub, _)) = peer.next_req().await else { return };
        let garbage = [
            "not json".to_string(),
            "{\"EVENT\":1}".into(),
            "[]".into(),
            "[1,2,3]".into(),
            "[\"EOSE\"]".into(),
            "[\"EVENT\",\"s\"]".into(),
            json!(["EVENT", sub, {"id": 5}]).to_string(),
            "[\"CLOSED\"]".into(),
            "[\"OK\",\"x\",\"maybe\"]".into(),
            "[\"NEG-MSG\",\"n\"]".into(),
        ];
        for round in 0..20 {
            for g in &garbage {
                if !peer.send_text(g.clone()).await {
                    return;
                }
            }
            if round % 5 == 0 && !peer.send_binary(vec![0xff, 0xfe, 0x00]).await {
                return;
            }
        }
        answer_eose(&mut peer).await;
    })
    .await;
    let c = coord("garbage");
    let s = settings();
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "garbage relay dropped twice", || h.report(&bad.url).misbehaving_disconnects >= 2).await;
    let live = good_relay_still_syncs(&h, &good, &c, "after garbage").await;
    let r = h.report(&bad.url);
    assert!(misbehaving(&r, "invalid frames"), "{:?}", r.last_error);
    assert!(matches!(r.health, HealthStatus::Degraded | HealthStatus::Failing), "{:?}", r.health);
    let limit = u64::from(s.abuse.invalid_frames) + 1;
    assert!(r.frames_invalid >= limit, "counted: {}", r.frames_invalid);
    assert!(r.frames_invalid <= r.connects * limit, "read at most one budget per connection: {r:?}");
    bounded(&r, &s);
    assert_eq!(held(&h), ids(&[history, vec![live]].concat()), "exactly the good relay's events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_bad_ids_are_dropped_and_end_the_connection() {
    let c = coord("badid");
    let cs = c.clone();
    let bad = Scripted::start(move |mut peer: Peer| {
        let c = cs.clone();
        async move {
            while let Some((sub, filters)) = peer.next_req().await {
                if wants_repo(&filters) {
                    for i in 0..40 {
                        let mut n = repo_note(&c, T0 + 100 + i, "forged");
                        n.content = format!("changed after signing {i}");
                        if !peer.send(json!(["EVENT", sub, n])).await {
                            return;
                        }
                    }
                }
                peer.send(json!(["EOSE", sub])).await;
            }
        }
    })
    .await;
    let s = settings();
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "bad-id relay dropped", || misbehaving(&h.report(&bad.url), "bad ids")).await;
    let live = good_relay_still_syncs(&h, &good, &c, "after bad ids").await;
    let r = h.report(&bad.url);
    assert!(r.events_invalid > u64::from(s.abuse.invalid_events));
    assert_eq!(r.events_delivered, 0, "no forged event handed on");
    assert!(matches!(r.health, HealthStatus::Degraded | HealthStatus::Failing), "{:?}", r.health);
    bounded(&r, &s);
    assert_eq!(held(&h), ids(&[history, vec![live]].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_events_and_unknown_subscriptions_are_dropped() {
    let c = coord("unasked");
    let cs = c.clone();
    let bad = Scripted::start(move |mut peer: Peer| {
        let c = cs.clone();
        async move {
            while let Some((sub, filters)) = peer.next_req().await {
                if wants_repo(&filters) {
                    // Matches no filter we sent (no tags at all).
                    for i in 0..30 {
                        peer.send(json!(["EVENT", sub, note(7, T0 + i, vec![], "+")])).await;
                    }
                    // Matches our filter, but on subscriptions we never opened.
                    for i in 0..30 {
                        let n = repo_note(&c, T0 + 200 + i, "smuggled");
                        peer.send(json!(["EVENT", format!("sneaky{i}"), n])).await;
                    }
                }
                peer.send(json!(["EOSE", sub])).await;
            }
        }
    })
    .await;
    let s = settings();
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "relay dropped", || misbehaving(&h.report(&bad.url), "never opened")).await;
    let live = good_relay_still_syncs(&h, &good, &c, "after smuggling").await;
    let r = h.report(&bad.url);
    assert!(r.events_unmatched >= 30, "unmatched: {}", r.events_unmatched);
    assert!(r.events_unknown_subscription > u64::from(s.abuse.unknown_subscriptions));
    assert_eq!(r.events_delivered, 0);
    bounded(&r, &s);
    assert_eq!(held(&h), ids(&[history, vec![live]].concat()), "nothing unrequested handed on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_frames_are_read_and_bigger_ones_drop_the_connection() {
    const MB: usize = 1_000_000;
    let c = coord("big");
    // Sends 1 MB frames (a NOTICE, garbage, an event matching nothing), then behaves.
    let megabyte = Scripted::start(|mut peer: Peer| async move {
        let Some((sub, _)) = peer.next_req().await else { return };
        peer.send(json!(["NOTICE", "n".repeat(MB)])).await;
        peer.send_text("x".repeat(MB)).await;
        peer.send(json!(["EVENT", sub, note(7, T0, vec![], &"y".repeat(MB))])).await;
        peer.send(json!(["EOSE", sub])).await;
        answer_eose(&mut peer).await;
    })
    .await;
    // Over our limit: a 2 MB message on the first connection, then a header announcing 64 MiB.
    let oversized = Scripted::start(|mut peer: Peer| async move {
        let Some((sub, _)) = peer.next_req().await else { return };
        if peer.number == 1 {
            peer.send(json!(["NOTICE", "z".repeat(2 * MB)])).await;
        } else {
            let mut frame = text_frame_header(64 << 20);
            frame.extend_from_slice(b"[\"EOSE\",\"");
            peer.write_raw(&frame).await;
        }
        peer.send(json!(["EOSE", sub])).await;
        peer.silent().await;
    })
    .await;
    let s = settings();
    let (good, history, h) = setup(&c, &[&megabyte.url, &oversized.url], s.clone()).await;
    eventually(20, "1 MB frames read without dropping the connection", || {
        let r = h.report(&megabyte.url);
        r.status == RelayStatus::Connected && r.notices == 1 && r.frames_invalid == 1 && r.events_unmatched == 1
    })
    .await;
    let r = h.report(&megabyte.url);
    assert_eq!(r.connects, 1);
    assert!(r.last_error.as_deref().is_some_and(|e| e.chars().count() < 300), "relay text is clipped");
    eventually(20, "oversized relay dropped twice", || h.report(&oversized.url).connects >= 3).await;
    let r = h.report(&oversized.url);
    let err = r.last_error.clone().unwrap_or_default();
    assert!(err.contains("over our limit of 1200000 bytes"), "{err}");
    assert!(matches!(r.health, HealthStatus::Degraded | HealthStatus::Failing), "{:?}", r.health);
    assert!(r.bytes_in < 3 * MB as u64, "oversized frames are not counted as read: {}", r.bytes_in);
    let live = good_relay_still_syncs(&h, &good, &c, "after big frames").await;
    bounded(&h.report(&megabyte.url), &s);
    assert_eq!(held(&h), ids(&[history, vec![live]].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_flood_ends_the_connection() {
    let bad = Scripted::start(|mut peer: Peer| async move {
        let Some(_) = peer.next_req().await else { return };
        for i in 0..5_000 {
            if !peer.send(json!(["NOTICE", format!("hello {i}")])).await {
                return;
            }
        }
        answer_eose(&mut peer).await;
    })
    .await;
    let c = coord("notices");
    let s = settings();
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "flooding relay dropped twice", || h.report(&bad.url).misbehaving_disconnects >= 2).await;
    let live = good_relay_still_syncs(&h, &good, &c, "after the flood").await;
    let r = h.report(&bad.url);
    assert!(misbehaving(&r, "NOTICEs"), "{:?}", r.last_error);
    let limit = u64::from(s.abuse.notices) + 1;
    assert!(r.notices <= r.connects * limit, "at most one budget read per connection: {r:?}");
    bounded(&r, &s);
    assert_eq!(held(&h), ids(&[history, vec![live]].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_historic_req_without_eose_times_out_fails_the_batch_and_is_retried() {
    let bad = Scripted::start(|mut peer: Peer| async move {
        while let Some((sub, filters)) = peer.next_req().await {
            // Live subscriptions are confirmed; historic ones never end.
            if is_live(&filters) {
                peer.send(json!(["EOSE", sub])).await;
            }
        }
    })
    .await;
    let c = coord("noeose");
    let s = SyncSettings {
        historic_timeout: Duration::from_millis(700),
        historic_retry: Duration::from_millis(500),
        ..settings()
    };
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "historic sync given up", || {
        let r = h.report(&bad.url);
        r.status == RelayStatus::ConnectedHistoricSyncFailures && r.historic_timeouts >= 1
    })
    .await;
    let first = h.report(&bad.url).historic_timeouts;
    eventually(20, "failed items retried (and timed out again)", || h.report(&bad.url).historic_timeouts > first).await;
    let historic_reqs = bad.log.of_type("REQ").into_iter().filter(|v| v[2]["limit"] != 0).count();
    assert!(historic_reqs >= 2 * 2, "each historic REQ was sent again on retry: {historic_reqs}");
    let live = good_relay_still_syncs(&h, &good, &c, "after the stall").await;
    let r = h.report(&bad.url);
    assert_eq!(r.connects, 1, "a stall is not a reason to reconnect");
    assert!(r.last_error.as_deref().is_some_and(|e| e.contains("did not finish")), "{:?}", r.last_error);
    assert!(r.items_failed >= 1);
    bounded(&r, &s);
    assert_eq!(held(&h), ids(&[history, vec![live]].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_neg_msg_falls_back_to_req_pagination() {
    let c = coord("neggarbage");
    // Not hex; protocol byte 0x62 instead of 0x61; right byte but a range of unknown mode 3.
    let answers = ["not hex at all!", "62", "6100010203040506070809"];
    let mut relays = Vec::new();
    let mut wanted = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        let answer = answer.to_string();
        let own = repo_note(&c, T0 + 500 + i as u64, &format!("only on hostile relay {i}"));
        wanted.push(own.clone());
        let relay = Scripted::start(move |mut peer: Peer| {
            let (answer, own) = (answer.clone(), own.clone());
            async move {
                while let Some(msg) = peer.recv().await {
                    let sub = msg[1].clone();
                    match msg[0].as_str() {
                        Some("NEG-OPEN") => {
                            peer.send(json!(["NEG-MSG", sub, answer])).await;
                        }
                        Some("REQ") => {
                            let filters: Vec<Value> = msg.as_array().unwrap()[2..].to_vec();
                            if wants_repo(&filters) && !is_live(&filters) {
                                peer.send(json!(["EVENT", sub, own])).await;
                            }
                            peer.send(json!(["EOSE", sub])).await;
                        }
                        _ => {}
                    }
                }
            }
        })
        .await;
        relays.push(relay);
    }
    let urls: Vec<&str> = relays.iter().map(|r| r.url.as_str()).collect();
    let s = fast_settings();
    assert!(s.negentropy);
    let (good, history, h) = setup(&c, &urls, s.clone()).await;
    eventually(20, "fallback events held", || h.holds(&wanted)).await;
    for r in &relays {
        eventually(20, "hostile relay connected after falling back", || {
            let rep = h.report(&r.url);
            rep.status == RelayStatus::Connected && rep.negentropy == Some(false)
        })
        .await;
        let rep = h.report(&r.url);
        assert!(rep.frames_invalid >= 1, "garbage counted");
        assert_eq!(rep.connects, 1, "one garbage NEG-MSG is no reason to hang up");
        assert!(!r.log.of_type("REQ").is_empty(), "fell back to REQ");
        bounded(&rep, &s);
    }
    let live = good_relay_still_syncs(&h, &good, &c, "after negentropy garbage").await;
    assert_eq!(held(&h), ids(&[history, wanted, vec![live]].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_live_stream_is_rate_limited_and_bounded() {
    let c = coord("stream");
    let cs = c.clone();
    let bad = Scripted::start(move |mut peer: Peer| {
        let c = cs.clone();
        async move {
            let mut live_sub = None;
            while live_sub.is_none() {
                let Some((sub, filters)) = peer.next_req().await else { return };
                peer.send(json!(["EOSE", sub])).await;
                if is_live(&filters) && wants_repo(&filters) {
                    live_sub = Some(sub);
                }
            }
            let sub = live_sub.unwrap();
            let mut i: u64 = 0;
            loop {
                i += 1;
                let n = repo_note(&c, T0 + 1_000_000 + i, &format!("flood {}-{i}", peer.number));
                if !peer.send(json!(["EVENT", sub, n])).await {
                    return;
                }
            }
        }
    })
    .await;
    let abuse = AbuseLimits { live_events_per_sec: 100, live_burst: 300, ..AbuseLimits::default() };
    let s = SyncSettings { abuse, ..settings() };
    let started = Instant::now();
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "stream cut twice", || h.report(&bad.url).misbehaving_disconnects >= 2).await;
    let live = good_relay_still_syncs(&h, &good, &c, "during the flood").await;
    let r = h.report(&bad.url);
    assert!(misbehaving(&r, "live events faster than 100/s"), "{:?}", r.last_error);
    assert!(matches!(r.health, HealthStatus::RateLimited | HealthStatus::Degraded), "{:?}", r.health);
    // The token bucket bounds what was handed on: a burst per connection plus the rate.
    let allowed = r.connects * u64::from(abuse.live_burst)
        + (started.elapsed().as_secs_f64() * f64::from(abuse.live_events_per_sec)) as u64;
    assert!(r.events_delivered <= allowed, "delivered {} allowed {allowed}", r.events_delivered);
    bounded(&r, &s);
    let flood: BTreeSet<String> =
        held(&h).difference(&ids(&[history.clone(), vec![live.clone()]].concat())).cloned().collect();
    assert!(h.holds(&history) && h.holds(std::slice::from_ref(&live)));
    assert!(h.store.notes().iter().all(|n| !flood.contains(&n.id) || n.content.starts_with("flood ")));
    assert_eq!(flood.len() as u64, r.events_delivered - h.duplicates().len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_replies_hit_the_deadline_and_nothing_hangs() {
    let c = coord("drip");
    let cs = c.clone();
    let bad = Scripted::start(move |mut peer: Peer| {
        let c = cs.clone();
        async move {
            while let Some((sub, filters)) = peer.next_req().await {
                if is_live(&filters) {
                    peer.send(json!(["EOSE", sub])).await;
                    continue;
                }
                if !wants_repo(&filters) {
                    // One event every 300 ms, never an EOSE.
                    for i in 0..1_000u64 {
                        let n = note(30617, T0 + i, vec![vec!["d".into(), format!("drip{i}")]], "");
                        if !peer.send(json!(["EVENT", sub, n])).await {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                } else {
                    // The answer trickled one byte every 100 ms.
                    let n = repo_note(&c, T0 + 777, "dripped");
                    let frame = text_frame(&json!(["EVENT", sub, n]).to_string());
                    peer.drip(&frame, Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await;
    let s = SyncSettings {
        historic_timeout: Duration::from_millis(800),
        historic_retry: Duration::from_secs(60),
        max_subscriptions: 4,
        ..settings()
    };
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "dripping subscriptions given up", || {
        let r = h.report(&bad.url);
        r.status == RelayStatus::ConnectedHistoricSyncFailures && r.historic_timeouts >= 1
    })
    .await;
    let live = good_relay_still_syncs(&h, &good, &c, "during the drip").await;
    // The relay task still answers to its target: dropping the relay from the index closes it.
    h.index.send_replace(index_with(&c, &[&good.url]));
    eventually(10, "dripping relay closed", || {
        let r = h.report(&bad.url);
        r.closed_unneeded && r.status == RelayStatus::Disconnected
    })
    .await;
    let r = h.report(&bad.url);
    bounded(&r, &s);
    let dripped: BTreeSet<String> =
        held(&h).difference(&ids(&[history.clone(), vec![live.clone()]].concat())).cloned().collect();
    // Announcements that did arrive in time were asked for; anything else would be a leak.
    assert!(h.store.notes().iter().filter(|n| dripped.contains(&n.id)).all(|n| n.kind == 30617));
    assert!(h.holds(&history));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_resets_every_connection_is_redialled_on_the_backoff_schedule() {
    let bad = Scripted::start(|peer: Peer| async move {
        peer.reset();
    })
    .await;
    let c = coord("reset");
    let s = settings();
    let (good, history, h) = setup(&c, &[&bad.url], s.clone()).await;
    eventually(20, "several connections reset", || bad.log.connections() >= 7).await;
    let accepted = bad.log.accepted_at();
    let span = *accepted.last().unwrap() - accepted[0];
    // The n-th dial cannot come before the first n−1 backoffs have been waited.
    let n = accepted.len() as u32;
    let schedule: Duration = (1..n).map(|k| backoff(k, s.base_backoff, s.max_backoff)).sum();
    assert!(span >= schedule.mul_f64(0.9), "{n} dials in {span:?}; the schedule needs {schedule:?}");
    let r = h.report(&bad.url);
    assert!(matches!(r.health, HealthStatus::Failing | HealthStatus::Degraded), "{:?}", r.health);
    assert!(r.last_error.is_some());
    let live = good_relay_still_syncs(&h, &good, &c, "after resets").await;
    assert_eq!(held(&h), ids(&[history, vec![live]].concat()));
}
