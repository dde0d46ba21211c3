//! Announcement abuse: anyone can publish announcements that list this service with long lists of
//! relays. With 10,000 announcements of 100 relay values each (public relays spelled in several
//! equivalent ways, private and loopback addresses, other schemes, garbage) the index keeps at most
//! 20 relays per announcement, the engine dials at most `sync.max_relays` distinct public relays
//! and never a private one, and the overflow is reported by reason. No relay URL of the flood is
//! ever dialled for real: the recording dialer opens no socket and does no DNS lookup.

mod support;
mod sync_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use grasp_sync::accepted::build::{build, MemorySource};
use grasp_sync::accepted::RepoSyncIndex;
use grasp_sync::engine::MemoryStore;
use grasp_sync::policy::{AcceptedSet, Facts, IgnoredRelays, Policy, RelayUrl, RepoCoord};
use grasp_sync::testkit::flood::{flood, Class, FloodAnnouncement, FloodSpec};
use sync_support::{engine_config, eventually, fast_settings, Harness, PUBKEY};

const S: &str = "wss://grasp.example.com";
const PER_ANNOUNCEMENT: usize = 20;

/// What the index and the engine should make of the flood, worked out from what each generated
/// value is meant to be (not through the URL parser).
struct Expected {
    /// `d` → relays kept (our own URL removed).
    relays: BTreeMap<String, BTreeSet<String>>,
    ignored: IgnoredRelays,
    /// Public relay → distinct authors of the repositories listing it.
    public: BTreeMap<String, BTreeSet<String>>,
    /// Refusal label → distinct non-public URLs kept by some announcement.
    not_public: BTreeMap<&'static str, BTreeSet<String>>,
}

impl Expected {
    fn of(anns: &[FloodAnnouncement]) -> Expected {
        let mut e = Expected {
            relays: BTreeMap::new(),
            ignored: IgnoredRelays::default(),
            public: BTreeMap::new(),
            not_public: BTreeMap::new(),
        };
        for ann in anns {
            let mut kept: Vec<(&str, &Class)> = Vec::new();
            for (j, v) in ann.values.iter().enumerate() {
                if kept.len() == PER_ANNOUNCEMENT {
                    e.ignored.over_limit += (ann.values.len() - j) as u32;
                    break;
                }
                match &v.canonical {
                    None => e.ignored.invalid += 1,
                    Some(c) if kept.iter().any(|(k, _)| k == c) => e.ignored.duplicate += 1,
                    Some(c) => kept.push((c, &v.class)),
                }
            }
            let mut relays = BTreeSet::new();
            for (url, class) in kept {
                match class {
                    Class::Service => continue,
                    Class::Public => {
                        e.public.entry(url.to_string()).or_default().insert(ann.note.pubkey.clone());
                    }
                    Class::NotPublic(label) => {
                        e.not_public.entry(label).or_default().insert(url.to_string());
                    }
                    Class::Invalid => unreachable!(),
                }
                relays.insert(url.to_string());
            }
            e.relays.insert(ann.d.clone(), relays);
        }
        e
    }

    /// The relays chosen under `max`: most distinct authors first, then URL order (no root
    /// events). The flood is one key's: every relay counts one author, however many of its
    /// announcements list it.
    fn targets(&self, max: usize) -> BTreeSet<String> {
        let mut ranked: Vec<(&String, usize)> = self.public.iter().map(|(u, a)| (u, a.len())).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ranked.into_iter().take(max).map(|(u, _)| u.clone()).collect()
    }
}

struct World {
    anns: Vec<FloodAnnouncement>,
    /// The index grown event by event, as the daemon does for live announcements.
    index: RepoSyncIndex,
    view: AcceptedSet,
    expected: Expected,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let anns = flood(&FloodSpec::large(S, sync_support::PUBKEY));
        let service = RelayUrl::parse(S).unwrap();
        let policy = Policy::new(service.clone(), false);
        let mut view = AcceptedSet::new();
        let mut index = RepoSyncIndex::new();
        for ann in &anns {
            let facts = Facts::from_note(&ann.note).unwrap();
            let (verdict, change) = policy.decide_and_apply(&mut view, &facts);
            assert!(verdict.is_accept(), "{} lists the service", ann.d);
            index.apply_change(&service, &view, &change);
        }
        let expected = Expected::of(&anns);
        World { anns, index, view, expected }
    })
}

fn coord(d: &str) -> RepoCoord {
    RepoCoord::parse(&format!("30617:{PUBKEY}:{d}")).unwrap()
}

#[test]
fn index_keeps_the_first_twenty_distinct_relays_of_each_announcement_and_counts_the_rest() {
    let w = world();
    assert_eq!(w.anns.len(), 10_000);
    assert!(w.anns.iter().all(|a| a.values.len() == 100));
    assert_eq!(w.index.len(), 10_000);
    for (d, want) in &w.expected.relays {
        let got: BTreeSet<String> = w.index.get(&coord(d)).unwrap().relays.iter().map(|u| u.to_string()).collect();
        assert_eq!(&got, want, "relays of {d}");
    }
    // Bounded: one entry per kept relay, never more than 20 per announcement, whatever was listed.
    assert!(w.index.relay_entry_count() <= PER_ANNOUNCEMENT * w.index.len());
    assert!(w.view.all_announcements().all(|(_, a)| a.relays.len() <= PER_ANNOUNCEMENT));
    let ignored = w.index.ignored_relays();
    assert_eq!(ignored, w.expected.ignored);
    // Every value is accounted for: kept (our own URL included) or ignored for one reason.
    let kept: usize = w.view.all_announcements().map(|(_, a)| a.relays.len()).sum();
    assert_eq!(kept as u64 + ignored.total(), 10_000 * 100);
    assert!(ignored.invalid > 0 && ignored.duplicate > 0 && ignored.over_limit > 0, "{ignored:?}");
}

#[test]
fn index_built_from_stored_announcements_equals_the_one_grown_live() {
    let w = world();
    let mut source = MemorySource::default();
    for ann in &w.anns {
        source.push(Facts::from_note(&ann.note).unwrap(), &ann.note.tags);
    }
    let built = build(&Policy::new(RelayUrl::parse(S).unwrap(), false), &mut source).unwrap();
    assert_eq!(built.index, w.index);
}

/// Runs the engine on the flood's index with `max_relays = max` and checks every dial.
async fn engine_dials_only_chosen_public_relays(max: usize) {
    let w = world();
    let want = w.expected.targets(max);
    assert_eq!(want.len(), max, "the flood lists more public relays than the limit");
    let mut cfg = engine_config(S, fast_settings());
    cfg.allow_private = false;
    cfg.max_relays = max;
    // Each failed dial backs off for a minute: within the test every relay is dialled once.
    cfg.settings.base_backoff = Duration::from_secs(60);
    cfg.settings.max_backoff = Duration::from_secs(60);
    let h = Harness::start(cfg, w.index.clone(), Arc::new(MemoryStore::new()));
    eventually(120, "every chosen relay dialled", || h.dialer.attempts().len() >= want.len()).await;
    let attempts = h.dialer.attempts();
    let distinct: BTreeSet<String> = attempts.iter().cloned().collect();
    assert_eq!(distinct.len(), attempts.len(), "a relay was dialled twice");
    assert!(distinct.len() <= max);
    assert_eq!(distinct, want, "the busiest public relays, nothing else");
    let service = RelayUrl::parse(S).unwrap();
    for a in &attempts {
        let u = RelayUrl::parse(a).unwrap();
        assert_eq!(&u.to_string(), a, "dialled in normal form");
        assert!(u.address_class().is_public(), "dialled a non-public address: {a}");
        assert!(!u.same_endpoint(&service), "dialled ourselves");
    }
    // One task per chosen relay, none for the rest.
    assert_eq!(h.engine.status.relays().len(), max);

    let summary = h.engine.status.refusals();
    assert_eq!(summary.targets, max);
    assert_eq!(summary.over_limit(), w.expected.public.len() - max);
    for (label, urls) in &w.expected.not_public {
        assert_eq!(summary.by_reason[label], urls.len(), "{label}");
    }
    assert_eq!(summary.by_reason["own_service"], 0, "our own URL never reaches the index");
    // The status keeps a few examples per reason, not every refused URL.
    let sample = h.engine.status.refused();
    assert!(sample.len() <= 10 * summary.by_reason.len(), "{}", sample.len());
    assert!(sample.iter().any(|r| r.reason == "over_limit"));
    assert!(sample.iter().any(|r| r.reason == "loopback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_with_the_default_limit_dials_at_most_1000_relays() {
    engine_dials_only_chosen_public_relays(1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_with_a_small_limit_dials_at_most_that_many() {
    engine_dials_only_chosen_public_relays(50).await;
}

/// Through the daemon: the flood sits in the host's database (a generated strfry LMDB), the
/// daemon serves `/status` and `/metrics` on loopback, and relays are dialled only through the
/// recording double.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reports_the_flood_overflow_by_reason_on_status_and_metrics() {
    use grasp_sync::testkit::generate::Generator;
    use support::daemon::{start_daemon_with, status_within, stop_daemon};
    use sync_support::{TestDialer, TestRelay};

    const MAX: usize = 300;
    let w = world();
    let db = tempfile::tempdir().unwrap();
    let mut g = Generator::create(db.path(), 1 << 30).unwrap();
    g.write(w.anns.iter().map(|a| &a.note)).unwrap();
    g.finish().unwrap();
    // The host's websocket (stream and ingest) is an in-process relay on loopback.
    let host = TestRelay::start(None).await;
    let state = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], support::strfry::free_port()));
    let config = format!(
        "service_url = \"{S}\"\n[host]\nurl = \"{}\"\nstrfry_db = \"{}\"\n[sync]\nallow_private_addresses = false\n\
         max_relays = {MAX}\nbase_backoff_secs = 60\nmax_backoff_secs = 60\n[state]\ndir = \"{}\"\n\
         [metrics]\nlisten = \"{metrics}\"\n",
        host.url,
        db.path().display(),
        state.path().display()
    );
    let dialer = Arc::new(TestDialer::default());
    let daemon = start_daemon_with(&config, dialer.clone());

    // The index build reads 10,000 announcements of 100 relay values each: minutes in a debug build
    // on a busy machine.
    let status = status_within(metrics, "relay targets chosen and tracked", 240, |s| {
        s.repos == 10_000 && s.relay_targets == MAX && s.relays.len() == MAX
    })
    .await;
    let e = &w.expected;
    assert_eq!(status.max_relays, MAX);
    assert_eq!(status.refused_relays_by_reason["over_limit"], e.public.len() - MAX);
    for (label, urls) in &e.not_public {
        assert_eq!(status.refused_relays_by_reason[*label], urls.len(), "{label}");
    }
    assert_eq!(status.refused_relays, status.refused_relays_by_reason.values().sum::<usize>());
    let ignored = &status.announcement_relays_ignored;
    assert_eq!(ignored["invalid"], u64::from(e.ignored.invalid));
    assert_eq!(ignored["duplicate"], u64::from(e.ignored.duplicate));
    assert_eq!(ignored["over_limit"], u64::from(e.ignored.over_limit));
    assert!(status.refused_relays_sample.len() <= 10 * status.refused_relays_by_reason.len());
    assert!(status.refused_relays_sample.iter().any(|r| r.reason == "over_limit"));

    let text = get(metrics, "/metrics").await;
    for line in [
        format!("grasp_sync_relays_refused{{reason=\"over_limit\"}} {}", e.public.len() - MAX),
        format!("grasp_sync_relays_refused{{reason=\"loopback\"}} {}", e.not_public["loopback"].len()),
        format!("grasp_sync_announcement_relays_ignored{{reason=\"invalid\"}} {}", e.ignored.invalid),
        format!("grasp_sync_relay_targets {MAX}"),
        format!("grasp_sync_max_relays {MAX}"),
    ] {
        assert!(text.lines().any(|l| l == line), "metrics lack `{line}`");
    }

    let want = e.targets(MAX);
    eventually(60, "every chosen relay dialled", || dialer.attempts().len() >= want.len()).await;
    let attempts = dialer.attempts();
    let distinct: BTreeSet<String> = attempts.iter().cloned().collect();
    assert_eq!(distinct.len(), attempts.len(), "a relay was dialled twice");
    assert_eq!(distinct, want);
    stop_daemon(daemon).await;
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let (code, body) = grasp_sync::metrics::get(addr, path).await.unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(code, hyper::StatusCode::OK, "{body}");
    body
}
