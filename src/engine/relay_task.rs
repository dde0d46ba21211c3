//! The task that owns one remote relay: connect with a timeout, run a session (fresh start or
//! quick reconnect), and on failure back off (capped), go Dead after a day, retry daily.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::engine::inbox::{Inbox, RelayCommand};
use crate::engine::lifecycle::{connect_strategy_with_margin, ConnectStrategy};
use crate::engine::relays::{PersistedRelay, RelayState};
use crate::engine::session::{self, SessionEnd};
use crate::engine::status::{HealthStatus, RelayStatus, SyncSettings, SyncStatus};
use crate::engine::store::{Fetched, LocalStore};
use crate::engine::targets::ItemSet;
use crate::policy::{Id, RelayUrl, RepoCoord};
use crate::remote::Dialer;
use crate::wire::{backoff, unix_now, Connection, WireCounters};

/// A unit of sync work on one relay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    /// L1: every repository announcement.
    Announcements,
    /// L2: events tagging a repository.
    Repo(RepoCoord),
    /// L3: events tagging a root event.
    Root(Id),
    /// L4: deletions and reactions naming another accepted event (a comment, status, PR
    /// update, reply, reaction).
    Related(Id),
}

/// What one relay should give us: the repos whose announcements list it, their root events
/// and their related events.
pub type RelayTarget = ItemSet;

/// Every item of a target, announcements (L1) included.
#[cfg(test)]
pub(crate) fn target_items(t: &RelayTarget) -> BTreeSet<Item> {
    items_of(t).collect()
}

/// The items of a target one by one, in [`Item`] order (announcements first), without a copy of
/// the target.
pub fn items_of(t: &RelayTarget) -> impl Iterator<Item = Item> + '_ {
    std::iter::once(Item::Announcements)
        .chain(t.repos.iter().cloned().map(Item::Repo))
        .chain(t.root_events.iter().copied().map(Item::Root))
        .chain(t.related.iter().copied().map(Item::Related))
}

/// Whether `item` is one of the target's items (announcements always are).
pub fn has_item(t: &RelayTarget, item: &Item) -> bool {
    match item {
        Item::Announcements => true,
        Item::Repo(c) => t.repos.contains(c),
        Item::Root(id) => t.root_events.contains(id),
        Item::Related(id) => t.related.contains(id),
    }
}

/// What a relay's task remembers across connections.
#[derive(Debug, Clone)]
pub struct RelayMemory {
    /// Items whose historic sync completed on this relay.
    pub confirmed: BTreeSet<Item>,
    /// Connection times, daily deadline, NIP-77 support, announcements synced.
    pub state: RelayState,
    /// Subscription budget (shrinks when the relay reports overflow).
    pub budget: usize,
    /// Items whose last historic sync gave up (retried after `historic_retry`).
    pub failed: BTreeSet<Item>,
    /// Digests of the items confirmed before a restart (applied on a quick reconnect).
    pub restored: Option<HashSet<u64>>,
}

impl RelayMemory {
    pub fn new(budget: usize) -> Self {
        RelayMemory {
            confirmed: BTreeSet::new(),
            state: RelayState::default(),
            budget: budget.max(2),
            failed: BTreeSet::new(),
            restored: None,
        }
    }
}

/// Everything a relay task needs, shared with nobody mutable.
pub struct Ctx {
    pub url: RelayUrl,
    pub bootstrap: bool,
    pub settings: SyncSettings,
    pub store: Arc<dyn LocalStore>,
    pub sink: mpsc::Sender<Fetched>,
    pub status: SyncStatus,
    pub dialer: Arc<dyn Dialer>,
    /// State restored from the state dir, if any.
    pub persisted: Option<PersistedRelay>,
}

/// Wait and health after a failed connect: backoff while failing, one try per `dead_retry` once
/// the relay has failed for `dead_after`.
pub fn after_failure(settings: &SyncSettings, failures: u32, failing_for: Duration) -> (Duration, HealthStatus) {
    if failing_for >= settings.dead_after {
        (settings.dead_retry, HealthStatus::Dead)
    } else {
        (backoff(failures, settings.base_backoff, settings.max_backoff), HealthStatus::Failing)
    }
}

/// How a session that was not ended by us went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The connection dropped (closed, reset, websocket error).
    Lost,
    /// We hung up: a misbehaviour budget ran out.
    Misbehaving,
    /// We hung up: live events came faster than the per-relay rate.
    TooFast,
}

/// What follows a session: the consecutive failure count, the wait before the next dial, and
/// the health to show meanwhile (`None`: leave it). A connection lost after `stable_session`
/// starts over from the base delay; one lost sooner, or closed for misbehaviour, is one more
/// failure, so the backoff keeps growing for a relay that accepts and drops us.
pub fn after_session(
    settings: &SyncSettings,
    failures: u32,
    lasted: Duration,
    failing_for: Duration,
    ended: Ended,
) -> (u32, Duration, Option<HealthStatus>) {
    if ended == Ended::Lost && lasted >= settings.stable_session {
        return (0, settings.base_backoff, None);
    }
    let failures = failures.saturating_add(1);
    let (delay, health) = after_failure(settings, failures, failing_for);
    match (ended, health) {
        (_, HealthStatus::Dead) | (Ended::Lost, _) => (failures, delay, Some(health)),
        (Ended::Misbehaving, _) => (failures, delay, Some(HealthStatus::Degraded)),
        (Ended::TooFast, _) => (failures, delay.max(settings.rate_limit_cooldown), Some(HealthStatus::RateLimited)),
    }
}

fn daily_delay(settings: &SyncSettings) -> Duration {
    let (lo, hi) = settings.daily;
    if hi <= lo {
        return lo;
    }
    lo + Duration::from_millis(rand::random_range(0..(hi - lo).as_millis() as u64))
}

/// Waits `delay` unless told to shut down: returns `false` then. Target changes are kept for
/// the next session; bad signatures need no action without a connection.
async fn wait(delay: Duration, inbox: &mut Inbox) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            cmd = inbox.recv() => if cmd == RelayCommand::Shutdown { return false },
        }
    }
}

/// Runs one relay until it is no longer needed or the engine shuts down.
pub async fn run_relay(ctx: Ctx, mut inbox: Inbox) {
    let s = &ctx.settings;
    let mut mem = RelayMemory::new(s.max_subscriptions);
    if let Some(saved) = &ctx.persisted {
        mem.state = RelayState::restore(saved);
        mem.restored = saved.confirmed.as_deref().and_then(session::items::decode_confirmed);
        // Until the planner publishes its own, what was saved stays what is saved.
        ctx.status.update_persisted(&ctx.url, |p| *p = RelayState::restore(saved).persisted());
        if let Some(c) = &saved.confirmed {
            ctx.status.set_confirmed(&ctx.url, c.as_str().into());
        }
    }
    let counters = Arc::new(WireCounters::default());
    let mut failures: u32 = 0;
    let mut failing_since: Option<Instant> = None;
    let mut force_fresh = false;
    ctx.status.update(&ctx.url, |r| r.bootstrap = ctx.bootstrap);
    loop {
        if inbox.target().is_empty() && !ctx.bootstrap {
            ctx.status.update(&ctx.url, |r| {
                r.status = RelayStatus::Disconnected;
                r.closed_unneeded = true;
            });
            return;
        }
        ctx.status.update(&ctx.url, |r| {
            r.status = RelayStatus::Connecting;
            r.connection_attempts += 1;
        });
        let dialled = match tokio::time::timeout(s.connect_timeout, ctx.dialer.dial(&ctx.url)).await {
            Ok(Ok(ws)) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("connecting to {} timed out", ctx.url)),
        };
        let ws = match dialled {
            Ok(ws) => ws,
            Err(e) => {
                failures += 1;
                let since = *failing_since.get_or_insert_with(Instant::now);
                let (delay, health) = after_failure(s, failures, since.elapsed());
                tracing::info!(relay = %ctx.url, failures, ?delay, "connect failed: {e}");
                ctx.status.update(&ctx.url, |r| {
                    r.status = RelayStatus::Disconnected;
                    r.health = health;
                    r.last_error = Some(e);
                });
                if !wait(delay, &mut inbox).await {
                    return;
                }
                continue;
            }
        };
        let degraded_until = (failures > 0).then(|| Instant::now() + s.degraded_for);
        let session_start = Instant::now();
        let now = unix_now();
        let strategy = if force_fresh {
            ConnectStrategy::FreshStart
        } else {
            connect_strategy_with_margin(&mem.state, now, s.quick_reconnect.as_secs(), s.catchup_margin.as_secs())
        };
        force_fresh = false;
        mem.state.last_connected = Some(now);
        if strategy == ConnectStrategy::FreshStart {
            mem.state.fresh_start_due = Some(now + daily_delay(s).as_secs());
        }
        ctx.status.update(&ctx.url, |r| {
            r.connects += 1;
            r.closed_unneeded = false;
            r.health = if degraded_until.is_some() { HealthStatus::Degraded } else { HealthStatus::Healthy };
        });
        ws.get_ref().attach(counters.clone());
        let conn = Connection::with_liveness(ws, s.payload_limit, counters.clone(), s.liveness);
        let (end, m, last_data) = session::run(&ctx, mem, conn, degraded_until, &mut inbox, strategy).await;
        mem = m;
        // The relay was last heard from then: the quick-reconnect `since` counts from the last
        // data received, not from when the loss was noticed.
        let heard = counters.last_data_unix().or(last_data);
        mem.state.disconnected_at = Some(heard.map_or_else(unix_now, |t| t.max(now)));
        ctx.status.update_persisted(&ctx.url, |p| {
            p.last_connected = mem.state.last_connected;
            p.disconnected_at = mem.state.disconnected_at;
        });
        ctx.status.update(&ctx.url, |r| {
            r.bytes_in = counters.bytes_in();
            r.bytes_out = counters.bytes_out();
        });
        let (ended, why) = match &end {
            SessionEnd::Lost(e) => (Some(Ended::Lost), e.to_string()),
            SessionEnd::Misbehaving(e) => (Some(Ended::Misbehaving), e.clone()),
            SessionEnd::TooFast(e) => (Some(Ended::TooFast), e.clone()),
            _ => (None, String::new()),
        };
        if ended != Some(Ended::Lost) && ended.is_some() {
            ctx.status.update(&ctx.url, |r| r.misbehaving_disconnects += 1);
        }
        if ended.is_none() {
            failures = 0;
            failing_since = None;
        }
        match (ended, end) {
            (Some(ended), _) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                let (f, delay, health) = after_session(s, failures, session_start.elapsed(), since.elapsed(), ended);
                failures = f;
                if failures == 0 {
                    failing_since = None;
                }
                tracing::info!(relay = %ctx.url, failures, ?delay, "connection ended: {why}");
                ctx.status.update(&ctx.url, |r| {
                    r.status = RelayStatus::Disconnected;
                    r.last_error = Some(why);
                    if let Some(h) = health {
                        r.health = h;
                    }
                });
                if !wait(delay, &mut inbox).await {
                    return;
                }
            }
            (None, SessionEnd::Daily) => force_fresh = true,
            (None, SessionEnd::Unneeded) => {
                tracing::info!(relay = %ctx.url, "no repository needs this relay; closed");
                ctx.status.update(&ctx.url, |r| {
                    r.status = RelayStatus::Disconnected;
                    r.closed_unneeded = true;
                });
                return;
            }
            (None, _) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_failing_for_a_day_is_dead_and_tried_daily() {
        let s = SyncSettings::default();
        let hour = Duration::from_secs(3600);
        assert_eq!(after_failure(&s, 3, hour), (Duration::from_secs(20), HealthStatus::Failing));
        assert_eq!(after_failure(&s, 30, 23 * hour), (Duration::from_secs(3600), HealthStatus::Failing));
        assert_eq!(after_failure(&s, 31, 24 * hour), (24 * hour, HealthStatus::Dead));
    }

    #[test]
    fn a_connection_lost_early_is_one_more_failure_and_a_stable_one_starts_over() {
        let s = SyncSettings::default();
        let (short, long) = (Duration::from_secs(1), Duration::from_secs(600));
        let zero = Duration::ZERO;
        assert_eq!(after_session(&s, 0, long, zero, Ended::Lost), (0, s.base_backoff, None));
        assert_eq!(after_session(&s, 3, long, zero, Ended::Lost), (0, s.base_backoff, None));
        let mut failures = 0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let (f, delay, health) = after_session(&s, failures, short, zero, Ended::Lost);
            assert_eq!(health, Some(HealthStatus::Failing));
            failures = f;
            delays.push(delay.as_secs());
        }
        assert_eq!(delays, [5, 10, 20, 40, 80], "the backoff grows for a relay that accepts and drops");
    }

    #[test]
    fn misbehaviour_counts_as_a_failure_however_long_the_session() {
        let s = SyncSettings::default();
        let long = Duration::from_secs(6000);
        let (f, delay, health) = after_session(&s, 0, long, Duration::ZERO, Ended::Misbehaving);
        assert_eq!((f, delay, health), (1, s.base_backoff, Some(HealthStatus::Degraded)));
        let (f, delay, health) = after_session(&s, 1, long, Duration::ZERO, Ended::TooFast);
        assert_eq!((f, delay, health), (2, s.rate_limit_cooldown, Some(HealthStatus::RateLimited)));
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(after_session(&s, 9, long, day, Ended::Misbehaving).2, Some(HealthStatus::Dead));
    }

    #[test]
    fn daily_restart_falls_between_23_and_25_hours() {
        let s = SyncSettings::default();
        for _ in 0..100 {
            let d = daily_delay(&s);
            assert!(d >= Duration::from_secs(23 * 3600) && d < Duration::from_secs(25 * 3600));
        }
    }

    #[test]
    fn target_items_always_include_announcements() {
        let t = RelayTarget::default();
        assert!(t.is_empty());
        assert_eq!(target_items(&t).into_iter().collect::<Vec<_>>(), vec![Item::Announcements]);
    }
}
