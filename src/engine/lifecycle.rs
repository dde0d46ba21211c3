//! How a relay's connection starts: a fresh start or a quick reconnect (a pure decision over
//! the relay's remembered state). Everything after that is the session planner's.

use crate::engine::relays::RelayState;

/// How to start syncing after a connection is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStrategy {
    /// Forget what was confirmed; sync everything from the beginning.
    FreshStart,
    /// Keep confirmed items; re-subscribe them with a historic catch-up from `since`.
    QuickReconnect { since: u64 },
}

/// Chooses the strategy. Fresh on the first connect, when layer 1 never finished, after an
/// outage longer than `quick_reconnect_secs` or of unknown start (`disconnected_at` older than
/// `last_connected`), or when the daily fresh start is due; otherwise a quick reconnect with
/// `since = disconnected_at − margin`.
pub fn connect_strategy_with_margin(
    state: &RelayState,
    now: u64,
    quick_reconnect_secs: u64,
    margin_secs: u64,
) -> ConnectStrategy {
    let (Some(up_at), Some(down_at)) = (state.last_connected, state.disconnected_at) else {
        return ConnectStrategy::FreshStart;
    };
    if down_at < up_at {
        // The last connection's end was never recorded (crash): the outage start is unknown.
        return ConnectStrategy::FreshStart;
    }
    let due = state.fresh_start_due.is_some_and(|d| now >= d);
    if due || !state.announcements_synced || now.saturating_sub(down_at) > quick_reconnect_secs {
        return ConnectStrategy::FreshStart;
    }
    ConnectStrategy::QuickReconnect { since: down_at.saturating_sub(margin_secs) }
}

#[cfg(test)]
mod tests;
