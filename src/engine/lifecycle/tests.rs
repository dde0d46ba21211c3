use super::*;
use crate::engine::diff::compute_actions;
use crate::engine::targets::Targets;
use crate::policy::RepoCoord;
use proptest::prelude::*;

fn url() -> RelayUrl {
    RelayUrl::parse("wss://a.example").unwrap()
}

fn items(repos: &[u8], roots: &[u8]) -> ItemSet {
    ItemSet {
        repos: repos.iter().map(|n| RepoCoord { pubkey: [*n; 32], d: format!("d{n}") }).collect(),
        root_events: roots.iter().map(|n| [*n; 32]).collect(),
    }
}

fn state_after_outage(connected: u64, down: u64) -> RelayState {
    RelayState {
        status: RelayStatus::Disconnected,
        last_connected: Some(connected),
        disconnected_at: Some(down),
        announcements_synced: true,
        confirmed: items(&[1, 2], &[7]),
        fresh_start_due: Some(connected + 23 * 3600),
        ..Default::default()
    }
}

#[test]
fn first_connect_is_fresh() {
    assert_eq!(connect_strategy(&RelayState::default(), 1000, 900), ConnectStrategy::FreshStart);
}

#[test]
fn short_outage_is_quick_with_margin_and_long_outage_is_fresh() {
    let s = state_after_outage(1_000, 5_000);
    assert_eq!(connect_strategy(&s, 5_000 + 900, 900), ConnectStrategy::QuickReconnect { since: 4_880 });
    assert_eq!(connect_strategy(&s, 5_000 + 901, 900), ConnectStrategy::FreshStart);
}

#[test]
fn unrecorded_disconnect_after_a_crash_is_fresh() {
    let s = state_after_outage(5_000, 4_000);
    assert_eq!(connect_strategy(&s, 5_100, 900), ConnectStrategy::FreshStart);
}

#[test]
fn daily_deadline_or_unfinished_announcements_force_fresh() {
    let mut s = state_after_outage(1_000, 5_000);
    s.fresh_start_due = Some(5_010);
    assert_eq!(connect_strategy(&s, 5_010, 900), ConnectStrategy::FreshStart);
    let mut s = state_after_outage(1_000, 5_000);
    s.announcements_synced = false;
    assert_eq!(connect_strategy(&s, 5_010, 900), ConnectStrategy::FreshStart);
}

#[test]
fn quick_reconnect_catches_up_l1_and_confirmed_l2_l3_with_the_same_since() {
    let s = state_after_outage(1_000, 5_000);
    let plan = plan_connect(&s, 5_100, &LifecycleConfig::default(), 0);
    assert_eq!(plan.strategy, ConnectStrategy::QuickReconnect { since: 4_880 });
    let layers: Vec<Layer> = plan.batches.iter().map(|b| b.layer).collect();
    assert_eq!(layers, [Layer::Announcements, Layer::Repos, Layer::Roots]);
    for b in &plan.batches {
        assert!(b.live && b.historic);
        assert_eq!(b.since, Some(4_880));
    }
    assert_eq!(plan.batches[1].items, items(&[1, 2], &[]));
    assert_eq!(plan.batches[2].items, items(&[], &[7]));
    assert_eq!(plan.fresh_start_due, s.fresh_start_due, "a quick reconnect keeps the daily deadline");
}

#[test]
fn fresh_start_plans_full_l1_and_a_new_daily_deadline() {
    let mut s = state_after_outage(1_000, 5_000);
    s.negentropy = Some(false);
    let plan = plan_connect(&s, 10_000, &LifecycleConfig::default(), 3_600);
    assert!(plan.is_fresh());
    assert_eq!(plan.batches.len(), 1);
    assert_eq!(plan.batches[0].layer, Layer::Announcements);
    assert_eq!(plan.batches[0].since, None);
    assert_eq!(plan.batches[0].method, Method::Negentropy, "a fresh start re-probes negentropy");
    assert_eq!(plan.fresh_start_due, Some(10_000 + 24 * 3600));
    let off = LifecycleConfig { negentropy: false, ..LifecycleConfig::default() };
    assert_eq!(plan_connect(&s, 10_000, &off, 0).batches[0].method, Method::Req);
}

#[test]
fn negentropy_known_unsupported_uses_req_until_fresh_start() {
    let mut s = state_after_outage(1_000, 5_000);
    s.negentropy = Some(false);
    assert_eq!(historic_method(&s, true), Method::Req);
    let plan = plan_connect(&s, 5_100, &LifecycleConfig::default(), 0);
    assert!(plan.batches.iter().all(|b| b.method == Method::Req));
}

#[test]
fn unneeded_relays_close_only_when_idle_and_not_bootstrap() {
    let connected = RelayState { status: RelayStatus::Connected, ..Default::default() };
    let empty = ItemSet::new();
    assert!(should_disconnect(&connected, None, false));
    assert!(should_disconnect(&connected, Some(&empty), false));
    assert!(!should_disconnect(&connected, Some(&items(&[1], &[])), false));
    assert!(!should_disconnect(&connected, None, true), "pending batches keep it open");
    let syncing = RelayState { status: RelayStatus::Syncing, ..Default::default() };
    assert!(!should_disconnect(&syncing, None, false));
    let connecting = RelayState { status: RelayStatus::Connecting, ..Default::default() };
    assert!(!should_disconnect(&connecting, None, false));
    let boot = RelayState { is_bootstrap: true, ..connected.clone() };
    assert!(!should_disconnect(&boot, None, false));
    let confirmed_only = RelayState { confirmed: items(&[1], &[]), ..connected };
    assert!(should_disconnect(&confirmed_only, None, false), "confirmations are not targets");
}

#[test]
fn historic_completion_waits_for_the_settle_window_and_reports_failures() {
    let mut relays = RelaySyncIndex::new();
    let mut pending = PendingSyncIndex::new();
    relays.register(&url(), false);
    relays.mark_connected(&url(), 100, true);
    let spec = BatchSpec {
        layer: Layer::Announcements,
        items: ItemSet::new(),
        live: true,
        historic: true,
        since: None,
        method: Method::Req,
    };
    let a = pending.add(&url(), spec.clone(), 100);
    let b = pending.add(&url(), spec, 100);
    let state = relays.get(&url()).unwrap().clone();
    assert_eq!(historic_completion(&state, &pending, &url(), 200, 3), None);
    pending.complete(&url(), a, 110);
    pending.fail(&url(), b, 120);
    assert_eq!(historic_completion(&state, &pending, &url(), 122, 3), None);
    assert_eq!(historic_completion(&state, &pending, &url(), 123, 3), Some(RelayStatus::ConnectedHistoricSyncFailures));
    let clean = PendingSyncIndex::new();
    assert_eq!(historic_completion(&state, &clean, &url(), 103, 3), Some(RelayStatus::Connected));
}

#[test]
fn consolidation_catches_up_confirmed_items_and_fully_syncs_the_rest() {
    let mut s = state_after_outage(1_000, 5_000);
    s.status = RelayStatus::Connected;
    let target = items(&[1, 2, 3], &[7, 8]);
    let plan = plan_consolidation(&s, &target, 10_000, &LifecycleConfig::default(), 15, &ReqLimits::default());
    assert_eq!(plan.catch_up_since, 9_880);
    assert_eq!(plan.live.reqs.len(), 1);
    assert!(plan.batches.iter().all(|b| !b.live && b.historic));
    let by = |since: Option<u64>| {
        let mut i = ItemSet::new();
        for b in plan.batches.iter().filter(|b| b.since == since) {
            i.extend(&b.items);
        }
        i
    };
    assert_eq!(by(Some(9_880)), items(&[1, 2], &[7]));
    assert_eq!(by(None), items(&[3], &[8]));
    s.announcements_synced = false;
    let plan = plan_consolidation(&s, &target, 10_000, &LifecycleConfig::default(), 15, &ReqLimits::default());
    assert_eq!(plan.batches[0].since, None, "unfinished L1 history runs whole");
}

/// Connect, sync, lose the connection, come back: a pure walk through the bookkeeping.
#[test]
fn lifecycle_walkthrough_from_fresh_start_to_quick_reconnect() {
    let cfg = LifecycleConfig::default();
    let mut relays = RelaySyncIndex::new();
    let mut pending = PendingSyncIndex::new();
    let mut targets = Targets::default();
    targets.relays.insert(url(), items(&[1], &[5, 6]));
    relays.register(&url(), false);
    relays.mark_connecting(&url());

    let run = |relays: &mut RelaySyncIndex, pending: &mut PendingSyncIndex, specs: Vec<BatchSpec>, now: u64| {
        let ids: Vec<_> = specs.into_iter().map(|s| pending.add(&url(), s, now)).collect();
        for id in ids {
            let done = pending.complete(&url(), id, now).unwrap();
            apply_batch_done(relays, &url(), &done);
        }
    };

    let plan = plan_connect(relays.get(&url()).unwrap(), 1_000, &cfg, 0);
    assert!(plan.is_fresh());
    apply_connect(&mut relays, &mut pending, &url(), &plan, 1_000);
    run(&mut relays, &mut pending, plan.batches, 1_001);
    assert!(relays.get(&url()).unwrap().announcements_synced);
    let actions = compute_actions(&targets, &pending, &relays);
    assert_eq!(actions.len(), 1);
    let specs: Vec<BatchSpec> = actions
        .iter()
        .flat_map(|a| batches_for_action(a, historic_method(relays.get(&url()).unwrap(), true)))
        .collect();
    run(&mut relays, &mut pending, specs, 1_002);
    assert!(compute_actions(&targets, &pending, &relays).is_empty());
    let status = historic_completion(relays.get(&url()).unwrap(), &pending, &url(), 1_010, cfg.settle_secs);
    assert_eq!(status, Some(RelayStatus::Connected));
    relays.mark_historic_completed(&url(), 1_010, false);

    relays.mark_disconnected(&url(), 2_000);
    let plan = plan_connect(relays.get(&url()).unwrap(), 2_300, &cfg, 0);
    assert_eq!(plan.strategy, ConnectStrategy::QuickReconnect { since: 1_880 });
    let mut caught_up = ItemSet::new();
    for b in &plan.batches {
        caught_up.extend(&b.items);
    }
    assert_eq!(caught_up, items(&[1], &[5, 6]), "every confirmed L2/L3 item gets the catch-up");
}

proptest! {
    #[test]
    fn daily_deadline_is_23_to_25_hours_away(now in 0u64..4_000_000_000, jitter in any::<u64>()) {
        let d = daily_deadline(now, jitter);
        prop_assert!(d >= now + 23 * 3600 && d <= now + 25 * 3600);
    }

    #[test]
    fn quick_reconnect_since_never_after_the_outage(down in 200u64..1_000_000, gap in 0u64..2000) {
        let s = RelayState { fresh_start_due: None, ..state_after_outage(100, down) };
        match connect_strategy(&s, down + gap, 900) {
            ConnectStrategy::QuickReconnect { since } => {
                prop_assert!(gap <= 900);
                prop_assert!(since <= down.saturating_sub(120));
            }
            ConnectStrategy::FreshStart => prop_assert!(gap > 900),
        }
    }
}
