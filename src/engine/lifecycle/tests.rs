use super::*;

fn connect_strategy(state: &RelayState, now: u64, quick: u64) -> ConnectStrategy {
    connect_strategy_with_margin(state, now, quick, 120)
}

fn state_after_outage(connected: u64, down: u64) -> RelayState {
    RelayState {
        last_connected: Some(connected),
        disconnected_at: Some(down),
        announcements_synced: true,
        fresh_start_due: Some(connected + 23 * 3600),
        negentropy: None,
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
