//! Per-relay lifecycle decisions as pure functions: how to (re)start after a connect, when to
//! do the daily fresh start, when historic sync is complete, when to close an unneeded relay,
//! and how to rebuild a relay's subscriptions when they pass the budget.
//!
//! The relay task applies the plans: it sends the REQs/NEG-OPENs, records batches in the
//! `PendingSyncIndex` and moves finished batches' items to the `RelaySyncIndex`.

use crate::engine::diff::AddFilters;
use crate::engine::layers::{consolidate, Layer, LivePlan, ReqLimits};
use crate::engine::pending::{Batch, BatchSpec, Method, PendingSyncIndex};
use crate::engine::relays::{RelayState, RelayStatus, RelaySyncIndex};
use crate::engine::targets::ItemSet;
use crate::policy::RelayUrl;

/// Seconds subtracted from a disconnect time (or from now) for a historic catch-up `since`.
pub const CATCH_UP_MARGIN_SECS: u64 = 120;
/// The daily fresh start comes 23 h after the last one, plus up to 2 h of jitter.
pub const DAILY_MIN_SECS: u64 = 23 * 3600;
pub const DAILY_JITTER_SECS: u64 = 2 * 3600;
/// A relay with no batch in flight for this long has finished its historic sync (events of
/// the last batch may still be arriving on the stream).
pub const SETTLE_SECS: u64 = 3;

/// Timings and switches of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Outages up to this long end in a quick reconnect (`sync.quick_reconnect_secs`, 900).
    pub quick_reconnect_secs: u64,
    pub margin_secs: u64,
    pub settle_secs: u64,
    /// `sync.negentropy`: try NIP-77 for historic sync.
    pub negentropy: bool,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            quick_reconnect_secs: 900,
            margin_secs: CATCH_UP_MARGIN_SECS,
            settle_secs: SETTLE_SECS,
            negentropy: true,
        }
    }
}

impl From<&crate::config::SyncConfig> for LifecycleConfig {
    fn from(c: &crate::config::SyncConfig) -> Self {
        LifecycleConfig { quick_reconnect_secs: c.quick_reconnect_secs, negentropy: c.negentropy, ..Self::default() }
    }
}

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
/// `last_connected`), or when the daily fresh start is due; otherwise a
/// quick reconnect with `since = disconnected_at − margin`.
pub fn connect_strategy(state: &RelayState, now: u64, quick_reconnect_secs: u64) -> ConnectStrategy {
    connect_strategy_with_margin(state, now, quick_reconnect_secs, CATCH_UP_MARGIN_SECS)
}

/// [`connect_strategy`] with an explicit margin.
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

/// When the next daily fresh start is due: `now + 23 h + (jitter mod 2 h)`, i.e. 23–25 h.
/// Pass a random `jitter` (e.g. `rand::random::<u64>()`); tests pass fixed values.
pub fn daily_deadline(now: u64, jitter: u64) -> u64 {
    now.saturating_add(DAILY_MIN_SECS + jitter % (DAILY_JITTER_SECS + 1))
}

/// Whether a connected relay is due its daily fresh start (the caller then closes and
/// reconnects, or clears and replans in place with [`plan_connect`]).
pub fn daily_due(state: &RelayState, now: u64) -> bool {
    state.status.is_connected() && !state.status.is_busy() && state.fresh_start_due.is_some_and(|d| now >= d)
}

/// Historic method for a relay: negentropy when enabled and not known to be unsupported.
pub fn historic_method(state: &RelayState, negentropy_enabled: bool) -> Method {
    if negentropy_enabled && state.negentropy != Some(false) {
        Method::Negentropy
    } else {
        Method::Req
    }
}

/// What to do right after a connection is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPlan {
    pub strategy: ConnectStrategy,
    /// New daily deadline to store (set on a fresh start; kept otherwise).
    pub fresh_start_due: Option<u64>,
    /// Batches to start now, L1 first. Afterwards run `compute_actions` for new items.
    pub batches: Vec<BatchSpec>,
}

impl ConnectPlan {
    pub fn is_fresh(&self) -> bool {
        self.strategy == ConnectStrategy::FreshStart
    }
}

/// Plans a (re)connect. Fresh start: L1 live + full historic. Quick reconnect: L1 live +
/// historic from `since`, and **also** L2 and L3 live + historic from the same `since` for
/// every confirmed item, so events published while we were away are not lost.
pub fn plan_connect(state: &RelayState, now: u64, cfg: &LifecycleConfig, jitter: u64) -> ConnectPlan {
    let strategy = connect_strategy_with_margin(state, now, cfg.quick_reconnect_secs, cfg.margin_secs);
    let method = historic_method(state, cfg.negentropy);
    let fresh = strategy == ConnectStrategy::FreshStart;
    // A fresh start re-probes negentropy.
    let method = if fresh && cfg.negentropy { Method::Negentropy } else { method };
    let since = match strategy {
        ConnectStrategy::FreshStart => None,
        ConnectStrategy::QuickReconnect { since } => Some(since),
    };
    let mut batches = vec![BatchSpec {
        layer: Layer::Announcements,
        items: ItemSet::new(),
        live: true,
        historic: true,
        since,
        method,
    }];
    if !fresh {
        batches.extend(item_batches(&state.confirmed, true, since, method));
    }
    let fresh_start_due = if fresh || state.fresh_start_due.is_none() {
        Some(daily_deadline(now, jitter))
    } else {
        state.fresh_start_due
    };
    ConnectPlan { strategy, fresh_start_due, batches }
}

/// Applies a connect plan's bookkeeping: status Syncing, confirmed items forgotten on a fresh
/// start, pending work of the old connection dropped, daily deadline stored. Returns the
/// dropped batches. The caller then records `plan.batches` with `PendingSyncIndex::add`.
pub fn apply_connect(
    relays: &mut RelaySyncIndex,
    pending: &mut PendingSyncIndex,
    url: &RelayUrl,
    plan: &ConnectPlan,
    now: u64,
) -> Vec<Batch> {
    relays.mark_connected(url, now, plan.is_fresh());
    if let Some(s) = relays.get_mut(url) {
        s.fresh_start_due = plan.fresh_start_due;
    }
    pending.clear_relay(url)
}

/// One batch per layer (L2 repositories, L3 root events) for `items`; none for an empty layer.
pub fn item_batches(items: &ItemSet, live: bool, since: Option<u64>, method: Method) -> Vec<BatchSpec> {
    let mut out = Vec::new();
    if !items.repos.is_empty() {
        let repos = ItemSet { repos: items.repos.clone(), ..ItemSet::new() };
        out.push(BatchSpec { layer: Layer::Repos, items: repos, live, historic: true, since, method });
    }
    if !items.root_events.is_empty() {
        let roots = ItemSet { root_events: items.root_events.clone(), ..ItemSet::new() };
        out.push(BatchSpec { layer: Layer::Roots, items: roots, live, historic: true, since, method });
    }
    out
}

/// Batches for a diff action: live + full historic, one per layer.
pub fn batches_for_action(action: &AddFilters, method: Method) -> Vec<BatchSpec> {
    item_batches(&action.items, true, None, method)
}

/// Records a finished (or failed) batch: its items become confirmed; a successful L1 batch
/// marks announcements synced.
pub fn apply_batch_done(relays: &mut RelaySyncIndex, url: &RelayUrl, batch: &Batch) {
    relays.confirm(url, &batch.spec.items);
    if batch.spec.layer == Layer::Announcements && batch.spec.historic && !batch.failed {
        relays.mark_announcements_synced(url);
    }
}

/// Whether to close a connection: the relay is connected, not bootstrap, has no target items
/// (targets count, not confirmations), is not Connecting/Syncing and has no batch in flight.
pub fn should_disconnect(state: &RelayState, target: Option<&ItemSet>, has_pending: bool) -> bool {
    state.status.is_connected()
        && !state.status.is_busy()
        && !state.is_bootstrap
        && !has_pending
        && target.is_none_or(ItemSet::is_empty)
}

/// Historic completion: a Syncing relay with no batch in flight for `settle_secs` becomes
/// Connected, or ConnectedHistoricSyncFailures when a batch failed since the connect.
/// `None` = no change.
pub fn historic_completion(
    state: &RelayState,
    pending: &PendingSyncIndex,
    url: &RelayUrl,
    now: u64,
    settle_secs: u64,
) -> Option<RelayStatus> {
    if state.status != RelayStatus::Syncing || pending.has_pending(url) {
        return None;
    }
    let idle_since = pending.idle_since(url).or(state.last_connected)?;
    if now < idle_since.saturating_add(settle_secs) {
        return None;
    }
    Some(if pending.failed_count(url) > 0 {
        RelayStatus::ConnectedHistoricSyncFailures
    } else {
        RelayStatus::Connected
    })
}

/// A relay's rebuilt subscription set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsolidationPlan {
    /// Live REQs (L1 + covered items), replacing every open subscription.
    pub live: LivePlan,
    /// Historic batches (no live part): L1 (whole when it never finished) and confirmed items
    /// from `catch_up_since`;
    /// unconfirmed items (were pending or new) from the beginning; items over the budget get
    /// history only (no live subscription until the next fresh start).
    pub batches: Vec<BatchSpec>,
    pub catch_up_since: u64,
}

/// Plans a consolidation: close all subscriptions of the relay, clear its pending batches,
/// then send `live.reqs` and start `batches`. `target` is the relay's current target.
pub fn plan_consolidation(
    state: &RelayState,
    target: &ItemSet,
    now: u64,
    cfg: &LifecycleConfig,
    max_subscriptions: usize,
    limits: &ReqLimits,
) -> ConsolidationPlan {
    let c = consolidate(target, now, cfg.margin_secs, max_subscriptions, limits);
    let method = historic_method(state, cfg.negentropy);
    let since = Some(c.catch_up_since);
    // Layer 1 history still unfinished: run it whole.
    let l1_since = if state.announcements_synced { since } else { None };
    let mut batches = vec![BatchSpec {
        layer: Layer::Announcements,
        items: ItemSet::new(),
        live: false,
        historic: true,
        since: l1_since,
        method,
    }];
    let confirmed = target.intersect(&state.confirmed);
    batches.extend(item_batches(&confirmed, false, since, method));
    batches.extend(item_batches(&target.minus(&confirmed), false, None, method));
    ConsolidationPlan { live: c.live, batches, catch_up_since: c.catch_up_since }
}

#[cfg(test)]
mod tests;
