//! The planner without sockets: a model relay answers its frames. Invariants checked on every
//! step: open subscriptions ≤ budget, every frame ≤ 60,000 bytes; at the end every target item
//! is confirmed or reported failed, and nothing whose history failed is confirmed.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::jobs::LIVE_HANDOVER;
use super::planner::{Action, Planner, PlannerCtx, MAX_CLIENT_FRAME};
use super::SessionEnd;
use crate::engine::lifecycle::ConnectStrategy;
use crate::engine::relay_task::{target_items, Item, RelayMemory, RelayTarget};
use crate::engine::status::{SyncSettings, SyncStatus};
use crate::engine::store::MemoryStore;
use crate::policy::{Id, Note, RelayUrl, RepoCoord};
use crate::wire::{ClientMsg, Filter, RelayMsg, WireCounters};

const PK: &str = "9997a497d964fc1a62885b05a51166a65a90df00492c8d7cf61d6accf54803be";

fn note(kind: u64, at: u64, tags: Vec<Vec<String>>, content: &str) -> Note {
    let mut n = Note {
        id: String::new(),
        pubkey: PK.into(),
        created_at: at,
        kind,
        tags,
        content: content.into(),
        sig: "00".repeat(64),
    };
    n.id = hex::encode(n.compute_id());
    n
}

fn coord(i: usize) -> RepoCoord {
    RepoCoord::parse(&format!("30617:{PK}:repo{i}")).unwrap()
}

/// Root event `i` (an issue); its id is what the target names.
fn root(i: usize) -> Note {
    note(1621, 1_500 + i as u64, vec![t("a", &coord(0).to_string()), t("subject", &i.to_string())], "issue")
}

fn root_id(i: usize) -> Id {
    root(i).check().unwrap()
}

fn t(a: &str, b: &str) -> Vec<String> {
    vec![a.into(), b.into()]
}

/// A relay that answers historic REQs from its events (newest first, `limit` applied) and
/// refuses (CLOSED) any historic REQ naming a poisoned value.
struct ModelRelay {
    events: Vec<Note>,
    poisoned: HashSet<String>,
    open: HashSet<String>,
    max_open: usize,
}

impl ModelRelay {
    fn answer(&mut self, msg: &ClientMsg, out: &mut VecDeque<RelayMsg>) {
        match msg {
            ClientMsg::Req { sub, filters } => {
                self.open.insert(sub.clone());
                self.max_open = self.max_open.max(self.open.len());
                let live = filters.iter().all(|f| f.limit == Some(0));
                if !live {
                    let named = filters.iter().flat_map(|f| f.tags.values().flatten());
                    if named.into_iter().any(|v| self.poisoned.contains(v)) {
                        self.open.remove(sub);
                        out.push_back(RelayMsg::Closed { sub: sub.clone(), reason: "error: poisoned".into() });
                        return;
                    }
                    let f = &filters[0];
                    let mut hits: Vec<&Note> = self.events.iter().filter(|n| f.matches(n)).collect();
                    hits.sort_by_key(|n| std::cmp::Reverse(n.created_at));
                    let limit = f.limit.unwrap_or(u64::MAX) as usize;
                    for n in hits.into_iter().take(limit) {
                        out.push_back(RelayMsg::Event { sub: sub.clone(), note: Box::new(n.clone()) });
                    }
                }
                out.push_back(RelayMsg::Eose(sub.clone()));
            }
            ClientMsg::Close(sub) => {
                self.open.remove(sub);
            }
            _ => panic!("negentropy is off in these tests: {msg:?}"),
        }
    }
}

fn planner(budget: usize, settings: SyncSettings) -> (Planner, SyncStatus) {
    planner_with(budget, settings, Arc::new(MemoryStore::new()))
}

fn planner_with(budget: usize, settings: SyncSettings, store: Arc<MemoryStore>) -> (Planner, SyncStatus) {
    let status = SyncStatus::new();
    let ctx = PlannerCtx {
        url: RelayUrl::parse("wss://model.example").unwrap(),
        bootstrap: false,
        settings: SyncSettings { max_subscriptions: budget, ..settings },
        store,
        status: status.clone(),
        counters: Arc::new(WireCounters::default()),
    };
    (Planner::new(ctx, RelayMemory::new(budget), None, Instant::now()), status)
}

fn settings() -> SyncSettings {
    SyncSettings { negentropy: false, historic_retry: Duration::from_secs(3600), ..SyncSettings::default() }
}

/// Runs the planner against the relay until nothing moves; checks the per-step invariants.
fn run(p: &mut Planner, relay: &mut ModelRelay, budget: usize) -> Vec<Note> {
    run_at(p, relay, budget, Instant::now())
}

/// [`run`] with every message arriving at `now`.
fn run_at(p: &mut Planner, relay: &mut ModelRelay, budget: usize, now: Instant) -> Vec<Note> {
    let mut delivered = Vec::new();
    let mut inbox = VecDeque::new();
    for _ in 0..1_000_000 {
        for a in p.take_actions() {
            match a {
                Action::Send(msg) => {
                    assert!(msg.encode().len() <= MAX_CLIENT_FRAME, "frame of {} bytes", msg.encode().len());
                    relay.answer(&msg, &mut inbox);
                    assert!(relay.open.len() <= budget, "{} open, budget {budget}", relay.open.len());
                }
                Action::Deliver(n) => delivered.push(n),
            }
        }
        assert!(p.subs.len() <= budget);
        let Some(msg) = inbox.pop_front() else { break };
        if let Err(e) = p.on_msg(msg, now) {
            panic!("session ended: {e:?}");
        }
    }
    delivered
}

/// Related event `i`: an accepted comment (the relay only holds its deletion).
fn related_id(i: usize) -> Id {
    let mut id = [0x5e; 32];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id
}

fn world(repos: usize, roots: usize) -> (RelayTarget, Vec<Note>) {
    world_with_related(repos, roots, 0)
}

/// [`world`] plus `related` related events, each deleted on the relay (and one in ten reacted
/// to).
fn world_with_related(repos: usize, roots: usize, related: usize) -> (RelayTarget, Vec<Note>) {
    let mut target = RelayTarget::default();
    let mut events = Vec::new();
    for i in 0..related {
        let id = hex::encode(related_id(i));
        target.related.insert(related_id(i));
        events.push(note(5, 3_000 + i as u64, vec![t("e", &id), t("k", "1111")], ""));
        if i % 10 == 0 {
            events.push(note(7, 3_000 + i as u64, vec![t("e", &id), t("k", "1111")], "+"));
        }
    }
    let (base, more) = world_base(repos, roots);
    target.extend(&base);
    events.extend(more);
    (target, events)
}

fn world_base(repos: usize, roots: usize) -> (RelayTarget, Vec<Note>) {
    let mut target = RelayTarget::default();
    let mut events = Vec::new();
    for i in 0..repos {
        target.repos.insert(coord(i));
        events.push(note(1, 1_000 + i as u64, vec![t("a", &coord(i).to_string())], "repo event"));
    }
    for i in 0..roots {
        target.root_events.insert(root_id(i));
        events.push(note(1111, 2_000 + i as u64, vec![t("E", &hex::encode(root_id(i))), t("K", "1621")], "reply"));
    }
    (target, events)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn history_completes_within_budget_and_frames_and_failures_are_never_confirmed(
        repos in 0usize..30,
        roots in 0usize..1_200,
        related in 0usize..2_500,
        budget in 2usize..20,
        poison in proptest::collection::btree_set(0usize..1_200, 0..4),
    ) {
        let (target, events) = world_with_related(repos, roots, related);
        let poisoned: BTreeSet<usize> = poison.into_iter().filter(|i| *i < roots).collect();
        let mut relay = ModelRelay {
            events: events.clone(),
            poisoned: poisoned.iter().map(|i| hex::encode(root_id(*i))).collect(),
            open: HashSet::new(),
            max_open: 0,
        };
        let (mut p, status) = planner(budget, settings());
        let t0 = Instant::now();
        p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
        let mut delivered = run(&mut p, &mut relay, budget);
        // Related items are the sweep's: looked up in full once it comes (after any retry of
        // a failed round, which runs first).
        let later = t0 + settings().sweep_interval + Duration::from_secs(1);
        for _ in 0..2 {
            p.on_tick(later).unwrap();
            delivered.extend(run_at(&mut p, &mut relay, budget, later));
        }
        let all = target_items(&target);
        let (confirmed, failed) = (&p.mem.confirmed, &p.mem.failed);
        prop_assert!(confirmed.is_disjoint(failed));
        prop_assert_eq!(confirmed.union(failed).cloned().collect::<BTreeSet<_>>(), all.clone());
        for i in &poisoned {
            prop_assert!(failed.contains(&Item::Root(root_id(*i))), "a poisoned root is reported failed");
        }
        if poisoned.is_empty() {
            prop_assert_eq!(confirmed, &all);
            let got: HashSet<&str> = delivered.iter().map(|n| n.id.as_str()).collect();
            prop_assert_eq!(got.len(), events.len(), "every event delivered");
        }
        prop_assert_eq!(delivered.len(), delivered.iter().map(|n| &n.id).collect::<HashSet<_>>().len());
        let r = status.relay(&p.ctx.url).unwrap();
        prop_assert!(r.max_open_subscriptions <= budget);
        prop_assert!(relay.max_open <= budget);
    }
}

#[test]
fn live_coverage_is_bounded_whatever_the_target_size() {
    let roots = (0..30_000u32).map(|i| {
        let mut id = [7u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id
    });
    let target =
        RelayTarget { repos: (0..2_000).map(coord).collect(), root_events: roots.collect(), ..Default::default() };
    let (mut p, _) = planner(15, settings());
    p.start(ConnectStrategy::FreshStart, &target, Instant::now()).unwrap();
    let sent: Vec<ClientMsg> =
        p.take_actions().into_iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect();
    let live = sent
        .iter()
        .filter(|m| matches!(m, ClientMsg::Req { filters, .. } if filters.iter().all(|f| f.limit == Some(0))));
    assert_eq!(live.count(), super::live::live_slots(15));
    assert!(sent.len() <= 15, "{} subscriptions opened at once", sent.len());
    assert!(sent.iter().all(|m| m.encode().len() <= MAX_CLIENT_FRAME));
    assert!(p.hot_items.len() > 100 && p.hot_items.len() < 32_000);
}

#[test]
fn live_coverage_stays_bounded_with_many_related_events_and_keeps_a_share_for_them() {
    let roots = (0..30_000u32).map(|i| {
        let mut id = [7u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id
    });
    let related: BTreeSet<Id> = (0..100_000).map(related_id).collect();
    let target = RelayTarget { repos: (0..2_000).map(coord).collect(), root_events: roots.collect(), related };
    for budget in [2, 4, 15, 20, 200] {
        let (mut p, _) = planner(budget, settings());
        p.start(ConnectStrategy::FreshStart, &target, Instant::now()).unwrap();
        let sent: Vec<ClientMsg> =
            p.take_actions().into_iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect();
        let live: Vec<&Vec<crate::wire::Filter>> = sent
            .iter()
            .filter_map(|m| match m {
                ClientMsg::Req { filters, .. } if filters.iter().all(|f| f.limit == Some(0)) => Some(filters),
                _ => None,
            })
            .collect();
        assert_eq!(live.len(), super::live::live_slots(budget), "budget {budget}");
        assert!(sent.len() <= budget, "{} subscriptions opened at once, budget {budget}", sent.len());
        assert!(sent.iter().all(|m| m.encode().len() <= MAX_CLIENT_FRAME));
        let hot_related = p.hot_items.iter().filter(|i| matches!(i, Item::Related(_))).count();
        if budget >= 15 {
            assert!(hot_related >= 100, "budget {budget}: {hot_related} related events live");
        }
        assert!(hot_related < 100_000, "the cold rest is swept, not named live");
        // No related event is in the first round; every one waits for the sweep.
        assert!(p.batches.values().flat_map(|b| &b.items).all(|i| !matches!(i, Item::Related(_))));
        assert_eq!(p.related_due.len(), 100_000);
    }
}

fn live_sub(p: &mut Planner) -> String {
    p.live_subs[0].clone()
}

#[test]
fn unrelated_events_on_broad_filters_are_dropped_without_offence() {
    let (target, _) = world(3, 3);
    let (mut p, status) = planner(15, settings());
    let now = Instant::now();
    p.start(ConnectStrategy::FreshStart, &target, now).unwrap();
    let sub = live_sub(&mut p);
    p.on_msg(RelayMsg::Eose(sub.clone()), now).unwrap();
    p.take_actions();
    for i in 0..500 {
        // Another project's issue: a git kind, but not about our repositories.
        let other = note(1621, 5_000 + i, vec![t("a", &format!("30617:{PK}:someone-else"))], "elsewhere");
        p.on_msg(RelayMsg::Event { sub: sub.clone(), note: Box::new(other) }, now).unwrap();
    }
    let ours = note(1621, 9_000, vec![t("a", &coord(1).to_string())], "ours");
    p.on_msg(RelayMsg::Event { sub, note: Box::new(ours.clone()) }, now).unwrap();
    let delivered: Vec<Note> =
        p.take_actions().into_iter().filter_map(|a| if let Action::Deliver(n) = a { Some(n) } else { None }).collect();
    assert_eq!(delivered, vec![ours]);
    let r = status.relay(&p.ctx.url).unwrap();
    assert_eq!((r.events_unrelated, r.events_unmatched, r.notices), (500, 0, 0));
}

#[test]
fn an_overflow_shrinks_the_budget_which_grows_back_after_a_quiet_period() {
    let (target, _) = world(5, 400);
    let s = SyncSettings { budget_regrow: Duration::from_secs(10), ..settings() };
    let (mut p, _) = planner(15, s);
    let t0 = Instant::now();
    p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
    let open = p.subs.len();
    p.on_msg(RelayMsg::Notice("ERROR: too many concurrent REQs".into()), t0).unwrap();
    assert_eq!(p.mem.budget, open - 1);
    assert!(p.subs.len() <= p.mem.budget);
    p.take_actions();
    p.on_tick(t0 + Duration::from_secs(5)).unwrap();
    assert_eq!(p.mem.budget, open - 1, "not yet quiet long enough");
    p.on_tick(t0 + Duration::from_secs(11)).unwrap();
    assert_eq!(p.mem.budget, open);
    for i in 2..10 {
        p.on_tick(t0 + Duration::from_secs(1 + 10 * i)).unwrap();
    }
    assert_eq!(p.mem.budget, 15, "never above the configured budget");
}

#[test]
fn new_items_within_the_interval_do_not_rebuild_the_live_set_twice() {
    let (mut target, _) = world(50, 5_000);
    let s = SyncSettings { consolidation_interval: Duration::from_secs(60), ..settings() };
    // The host holds the roots (the daemon accepted them); the new ones are the newest.
    let store = Arc::new(MemoryStore::new());
    for i in 0..5_000 {
        store.insert(root(i));
    }
    let new: Vec<Id> = (0..5)
        .map(|i| {
            let n = note(1621, 9_000_000 + i, vec![t("a", &coord(0).to_string())], "new issue");
            store.insert(n.clone());
            n.check().unwrap()
        })
        .collect();
    let (mut p, status) = planner_with(15, s, store);
    let t0 = Instant::now();
    p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
    for (i, id) in new.iter().enumerate() {
        target.root_events.insert(*id);
        p.on_target(&target, t0 + Duration::from_secs(i as u64)).unwrap();
    }
    assert_eq!(status.relay(&p.ctx.url).unwrap().consolidations, 0, "the live slots are full: wait");
    for s in 0..200 {
        p.on_tick(t0 + Duration::from_secs(60 + s)).unwrap();
    }
    assert_eq!(status.relay(&p.ctx.url).unwrap().consolidations, 1);
    for id in &new {
        assert!(p.hot_items.contains(&Item::Root(*id)), "the newest roots are hot");
    }
}

#[test]
fn messages_do_not_rescan_the_target_for_live_slots_until_it_changes() {
    // 6,000 roots: more than the live slots name, so the set stays "dirty" until the next
    // rebuild. Every EVENT of the history must not cost a pass over the whole target.
    let (mut target, events) = world(50, 6_000);
    let s = SyncSettings { consolidation_interval: Duration::from_secs(60), ..settings() };
    let (mut p, _) = planner(15, s);
    let t0 = Instant::now();
    p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
    let t1 = t0 + Duration::from_secs(1);
    target.root_events.insert(root_id(6_000));
    p.on_target(&target, t1).unwrap();
    let scans = p.live_extend_scans;
    assert!(scans >= 1, "a new root is offered a free live slot");
    let sub = live_sub(&mut p);
    for n in events.iter().skip(50).take(2_000) {
        p.on_msg(RelayMsg::Event { sub: sub.clone(), note: Box::new(n.clone()) }, t1).unwrap();
    }
    assert_eq!(p.live_extend_scans, scans, "2,000 events, target unchanged: no rescan");
    target.root_events.insert(root_id(6_001));
    p.on_target(&target, t1).unwrap();
    assert_eq!(p.live_extend_scans, scans + 1, "a changed target is scanned once");
    let delivered = p.take_actions().into_iter().filter(|a| matches!(a, Action::Deliver(_))).count();
    assert_eq!(delivered, 2_000, "every event of our roots still delivered");
}

#[test]
fn a_daily_restart_ends_the_session_on_its_deadline() {
    let (target, _) = world(1, 1);
    let (mut p, _) = planner(15, settings());
    p.mem.state.fresh_start_due = Some(0);
    p.start(ConnectStrategy::FreshStart, &target, Instant::now()).unwrap();
    assert!(matches!(p.on_tick(Instant::now()), Err(SessionEnd::Daily)));
}

#[test]
fn a_restart_with_saved_confirmed_items_catches_every_layer_up_from_the_disconnect() {
    let (target, _) = world(3, 250);
    let mut confirmed = target_items(&target);
    confirmed.remove(&Item::Root(root_id(249)));
    let saved = super::items::encode_confirmed(&confirmed);
    assert_eq!(saved.len(), 16 * confirmed.len(), "16 hex digits per item");
    let (mut p, status) = planner(15, settings());
    p.mem.restored = super::items::decode_confirmed(&saved);
    p.start(ConnectStrategy::QuickReconnect { since: 5_000 }, &target, Instant::now()).unwrap();
    let mut relay = ModelRelay { events: Vec::new(), poisoned: HashSet::new(), open: HashSet::new(), max_open: 0 };
    let mut since = Vec::new();
    let mut inbox = VecDeque::new();
    for _ in 0..10_000 {
        for a in p.take_actions() {
            if let Action::Send(m) = a {
                if let ClientMsg::Req { filters, .. } = &m {
                    if filters.iter().all(|f| f.limit != Some(0)) {
                        since.push((filters[0].since, filters[0].tags.values().flatten().cloned().collect::<Vec<_>>()));
                    }
                }
                relay.answer(&m, &mut inbox);
            }
        }
        let Some(msg) = inbox.pop_front() else { break };
        p.on_msg(msg, Instant::now()).unwrap();
    }
    let missing = hex::encode(root_id(249));
    for (s, values) in &since {
        if values.contains(&missing) {
            assert_eq!(*s, None, "an item not confirmed before the restart gets its whole history");
        } else {
            assert_eq!(*s, Some(5_000), "confirmed items (every layer) catch up from the disconnect");
        }
    }
    assert!(since.iter().any(|(_, v)| v.is_empty()), "announcements too");
    assert_eq!(p.mem.confirmed, target_items(&target));
    assert_eq!(status.relay(&p.ctx.url).unwrap().quick_reconnects, 1);
}

#[test]
fn a_relay_that_keeps_closing_live_subscriptions_gets_them_back_only_after_a_pause() {
    let (target, _) = world(2, 2);
    let (mut p, _) = planner(15, settings());
    let t0 = Instant::now();
    p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
    p.take_actions();
    let mut reopened = 0;
    for i in 0..50 {
        let now = t0 + Duration::from_millis(10 * i);
        for id in p.live_subs.clone() {
            p.on_msg(RelayMsg::Closed { sub: id, reason: "auth-required: sign in".into() }, now).unwrap();
        }
        reopened += p
            .take_actions()
            .iter()
            .filter(|a| matches!(a, Action::Send(ClientMsg::Req { filters, .. }) if filters.iter().all(|f| f.limit == Some(0))))
            .count();
    }
    assert_eq!(reopened, 0, "no REQ/CLOSED loop within the pause");
    p.on_tick(t0 + Duration::from_secs(70)).unwrap();
    assert_eq!(p.live_subs.len(), p.live_plan.len(), "live coverage comes back after the pause");
}

#[test]
fn an_event_accepted_while_connected_is_looked_up_by_the_next_sweep_and_the_relay_stays_connected() {
    let (mut target, events) = world_with_related(2, 20, 5);
    let mut relay = ModelRelay { events, poisoned: HashSet::new(), open: HashSet::new(), max_open: 0 };
    let (mut p, status) = planner(15, settings());
    let t0 = Instant::now();
    p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
    run(&mut p, &mut relay, 15);
    let url = p.ctx.url.clone();
    let before = status.relay(&url).unwrap();
    assert_eq!(before.status, crate::status::RelayStatus::Connected);
    // A comment accepted now, whose deletion the relay already holds.
    let id = related_id(99);
    let deletion = note(5, 4_000, vec![t("e", &hex::encode(id)), t("k", "1111")], "");
    relay.events.push(deletion.clone());
    target.related.insert(id);
    p.on_target(&target, t0).unwrap();
    assert!(p.hot_items.contains(&Item::Related(id)), "named live at once");
    let r = status.relay(&url).unwrap();
    assert_eq!(r.status, crate::status::RelayStatus::Connected, "no new historic round");
    assert_eq!((r.historic_done, r.historic_total), (before.historic_done, before.historic_total));
    assert!(run(&mut p, &mut relay, 15).iter().all(|n| n.id != deletion.id), "not looked up before the sweep");
    p.on_tick(t0 + settings().sweep_interval + Duration::from_secs(1)).unwrap();
    let delivered = run(&mut p, &mut relay, 15);
    assert!(delivered.iter().any(|n| n.id == deletion.id), "its deletion found by the sweep");
    assert!(p.mem.confirmed.contains(&Item::Related(id)));
    assert_eq!(status.relay(&url).unwrap().status, crate::status::RelayStatus::Connected);
}

/// A connection to a relay with 2 repositories and 5 roots, its first live REQ registered:
/// the planner, its target, that REQ's id and the time.
fn live_on_few_roots(budget: usize, consolidation_interval: Duration) -> (Planner, RelayTarget, String, Instant) {
    let (target, _) = world(2, 5);
    let (mut p, _) = planner(budget, SyncSettings { consolidation_interval, ..settings() });
    let t0 = Instant::now();
    p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
    let first = live_sub(&mut p);
    p.on_msg(RelayMsg::Eose(first.clone()), t0).unwrap();
    (p, target, first, t0)
}

#[test]
fn a_repack_opens_new_reqs_and_closes_the_old_ones_a_while_after_the_new_ones_are_registered() {
    // Few roots: everything fits one live REQ; a new root first gets a REQ of its own.
    let (mut p, mut target, first, t0) = live_on_few_roots(15, Duration::from_secs(60));
    let new_root = note(1621, 9_000, vec![t("a", &coord(0).to_string())], "new").check().unwrap();
    target.root_events.insert(new_root);
    p.on_target(&target, t0).unwrap();
    assert_eq!(p.live_subs.len(), 2, "the new root is live in a REQ of its own");
    let own = p.live_subs[1].clone();
    p.on_msg(RelayMsg::Eose(own.clone()), t0).unwrap();
    p.take_actions();
    // After the interval, another change repacks: every root moves into one new REQ.
    let later = t0 + Duration::from_secs(61);
    target.root_events.insert(note(1621, 9_001, vec![t("a", &coord(1).to_string())], "newer").check().unwrap());
    p.on_target(&target, later).unwrap();
    let sent = p.take_actions();
    let reqs: Vec<&String> = sent
        .iter()
        .filter_map(|a| match a {
            Action::Send(ClientMsg::Req { sub, .. }) => Some(sub),
            _ => None,
        })
        .collect();
    assert_eq!(reqs.len(), 1, "{sent:?}");
    let new = reqs[0].clone();
    assert!(new != first && new != own, "a new id: the old REQs keep their filters meanwhile");
    let closes = |acts: &[Action]| {
        acts.iter()
            .filter_map(|a| match a {
                Action::Send(ClientMsg::Close(s)) => Some(s.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(closes(&sent).is_empty());
    p.on_msg(RelayMsg::Eose(new.clone()), later).unwrap();
    assert!(closes(&p.take_actions()).is_empty(), "the relay may still deliver to the old REQs");
    p.on_tick(later + LIVE_HANDOVER / 2).unwrap();
    assert!(closes(&p.take_actions()).is_empty());
    assert!(p.subs.contains_key(&first) && p.subs.contains_key(&own));
    p.on_tick(later + LIVE_HANDOVER).unwrap();
    let mut closed = closes(&p.take_actions());
    closed.sort();
    let mut old = vec![first, own];
    old.sort();
    assert_eq!(closed, old, "closed once the handover time has passed");
    assert_eq!(p.live_subs, vec![new]);
}

#[test]
fn with_no_free_slot_a_repack_replaces_a_req_under_its_own_id() {
    // Budget 2 (the least): one live and one historic slot, both taken.
    let (mut p, mut target, first, t0) = live_on_few_roots(2, Duration::from_secs(0));
    p.take_actions();
    target.root_events.insert(note(1621, 9_000, vec![t("a", &coord(0).to_string())], "new").check().unwrap());
    p.on_target(&target, t0 + Duration::from_secs(1)).unwrap();
    let sent = p.take_actions();
    assert!(
        sent.iter().any(|a| matches!(a, Action::Send(ClientMsg::Req { sub, filters }) if *sub == first && filters.iter().any(|f| f.limit == Some(0)))),
        "{sent:?}"
    );
    assert_eq!(p.subs.len(), 2, "the historic job keeps its slot");
}

/// A first sync of 5,000 roots over 50 repositories, the host receiving the roots as history
/// brings them (at first it holds none: all rank alike), run to its end at `t0`.
fn first_sync_of_5000_roots(t0: Instant) -> (Planner, SyncStatus, RelayTarget) {
    let (target, events) = world(50, 5_000);
    let mut relay = ModelRelay { events, poisoned: HashSet::new(), open: HashSet::new(), max_open: 0 };
    let store = Arc::new(MemoryStore::new());
    let (mut p, status) = planner_with(15, settings(), store.clone());
    p.start(ConnectStrategy::FreshStart, &target, t0).unwrap();
    for i in 0..5_000 {
        store.insert(root(i));
    }
    run_at(&mut p, &mut relay, 15, t0);
    assert_eq!(status.relay(&p.ctx.url).unwrap().status, crate::status::RelayStatus::Connected);
    (p, status, target)
}

#[test]
fn after_the_first_round_the_hot_set_is_the_newest_roots_the_host_now_holds() {
    let t0 = Instant::now();
    let (mut p, status, _) = first_sync_of_5000_roots(t0);
    p.on_tick(t0 + Duration::from_millis(50)).unwrap();
    let newest: Vec<Item> = (4_900..5_000).map(|i| Item::Root(root_id(i))).collect();
    assert!(newest.iter().all(|i| p.hot_items.contains(i)), "the 100 newest roots are live by id");
    assert!(!p.hot_items.contains(&Item::Root(root_id(0))), "the oldest root is left to the sweep");
    assert_eq!(status.relay(&p.ctx.url).unwrap().consolidations, 0, "not counted as a consolidation");
}

#[test]
fn a_target_change_before_the_re_ranking_is_applied_counts_as_one_consolidation() {
    let t0 = Instant::now();
    let (mut p, status, mut target) = first_sync_of_5000_roots(t0);
    // The round is complete and its re-ranking pending when a repository is dropped.
    assert!(p.live_rerank.is_some());
    let dropped = coord(49);
    target = RelayTarget { repos: target.repos.iter().filter(|r| **r != dropped).cloned().collect(), ..target };
    p.on_target(&target, t0).unwrap();
    p.on_tick(t0 + Duration::from_millis(50)).unwrap();
    assert!(!p.hot_items.contains(&Item::Repo(dropped)), "rebuilt at once without the dropped repository");
    assert!((4_900..5_000).all(|i| p.hot_items.contains(&Item::Root(root_id(i)))), "and ranked by the host");
    assert_eq!(status.relay(&p.ctx.url).unwrap().consolidations, 1, "a change: one consolidation");
}

#[test]
fn roots_the_re_ranking_brings_into_the_hot_set_are_caught_up_once_they_are_live() {
    let t0 = Instant::now();
    let (mut p, _, _) = first_sync_of_5000_roots(t0);
    let before = p.hot_items.clone();
    let t1 = t0 + Duration::from_millis(50);
    p.on_tick(t1).unwrap();
    let newly: BTreeSet<Item> = p.hot_items.difference(&before).cloned().collect();
    assert!(newly.contains(&Item::Root(root_id(4_999))), "the newest root joined the hot set");
    let sent = p.take_actions();
    let live: Vec<String> = sent
        .iter()
        .filter_map(|a| match a {
            Action::Send(ClientMsg::Req { sub, filters }) if filters.iter().all(|f| f.limit == Some(0)) => {
                Some(sub.clone())
            }
            _ => None,
        })
        .collect();
    assert!(!live.is_empty());
    let historic = |acts: &[Action]| {
        acts.iter()
            .filter_map(|a| match a {
                Action::Send(ClientMsg::Req { filters, .. }) if filters.iter().all(|f| f.limit != Some(0)) => {
                    Some(filters.clone())
                }
                _ => None,
            })
            .flatten()
            .collect::<Vec<Filter>>()
    };
    assert!(historic(&sent).is_empty(), "nothing is caught up before the new REQs are registered");
    for sub in &live {
        p.on_msg(RelayMsg::Eose(sub.clone()), t1).unwrap();
    }
    // Every catch-up REQ answered with EOSE until none is left.
    let mut caught = Vec::new();
    loop {
        let acts = p.take_actions();
        let reqs: Vec<String> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Send(ClientMsg::Req { sub, filters }) if filters.iter().all(|f| f.limit != Some(0)) => {
                    Some(sub.clone())
                }
                _ => None,
            })
            .collect();
        if reqs.is_empty() {
            break;
        }
        caught.extend(historic(&acts));
        for sub in reqs {
            p.on_msg(RelayMsg::Eose(sub), t1).unwrap();
        }
    }
    assert!(!caught.is_empty());
    let since = caught[0].since.expect("caught up since the last sweep");
    assert!(caught.iter().all(|f| f.since == Some(since)));
    let named: HashSet<String> = caught.iter().flat_map(|f| f.tags.values().flatten().cloned()).collect();
    assert!(named.contains(&hex::encode(root_id(4_999))), "the newest root is caught up");
    assert!(!named.contains(&hex::encode(root_id(0))), "a root that stays cold is not");
}
