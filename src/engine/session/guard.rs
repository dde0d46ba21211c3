//! Guards and timers of the planner: misbehaviour budgets, the live event rate, deadlines on
//! historic subscriptions, retries of failed batches, the cold sweep, the budget growing back,
//! the daily restart. The decisions themselves are pure ([`crate::remote::abuse`]); this is
//! where they are applied. Every timer is an absolute deadline checked on each tick, so steady
//! traffic cannot postpone it.

use std::time::Instant;

use super::planner::{Planner, Step, Sub, SubKind};
use super::SessionEnd;
use crate::engine::relay_task::Item;
use crate::engine::status::HealthStatus;
use crate::remote::abuse::Offence;
use crate::wire::{unix_now, ClientMsg};

/// Prefixes of the subscription ids we open (followed by a number from `next_id`).
const SUB_PREFIXES: [&str; 4] = ["live", "neg", "page", "ids"];

impl Planner {
    /// Counts one offence; ends the session once its budget has run out.
    pub(super) fn offend(&mut self, offence: Offence) -> Step {
        self.report(|r| match offence {
            Offence::InvalidFrame => r.frames_invalid += 1,
            Offence::InvalidEvent => r.events_invalid += 1,
            // Counted by the consumer that checked the signature.
            Offence::BadSignature => {}
            Offence::UnmatchedEvent => r.events_unmatched += 1,
            Offence::UnknownSubscription => r.events_unknown_subscription += 1,
            Offence::Notice => r.notices += 1,
        });
        match self.abuse.record(offence, 1, self.now) {
            None => Ok(()),
            Some(breach) => {
                let why = breach.to_string();
                tracing::warn!(relay = %self.ctx.url, "{why}; disconnecting");
                Err(SessionEnd::Misbehaving(why))
            }
        }
    }

    /// A frame that is no readable relay message.
    pub(crate) fn on_malformed(&mut self, why: &str, now: Instant) -> Step {
        self.now = now;
        tracing::debug!(relay = %self.ctx.url, "malformed frame: {why}");
        self.offend(Offence::InvalidFrame)?;
        self.settle()
    }

    /// A live event arrived: fine within the per-relay rate; beyond it the session ends (the
    /// next connection catches up from the disconnect, so nothing legitimate is lost).
    pub(super) fn live_event(&mut self) -> Step {
        if self.live_rate.take(self.now) {
            return Ok(());
        }
        let l = self.ctx.settings.abuse;
        let why =
            format!("misbehaving relay: live events faster than {}/s (burst {})", l.live_events_per_sec, l.live_burst);
        tracing::warn!(relay = %self.ctx.url, "{why}; disconnecting");
        Err(SessionEnd::TooFast(why))
    }

    /// Whether `sub` is an id this session opened at some point (it may be closed by now).
    pub(super) fn ever_opened(&self, sub: &str) -> bool {
        SUB_PREFIXES.iter().any(|p| {
            sub.strip_prefix(p).and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 1 && n <= self.next_id)
        })
    }

    /// Items of a failed batch are synced again after `historic_retry`.
    pub(super) fn schedule_retry(&mut self, items: &[Item]) {
        self.mem.failed.extend(items.iter().cloned());
        if self.retry_at.is_none() {
            self.retry_at = Some(self.now + self.ctx.settings.historic_retry);
        }
    }

    /// Records why history is incomplete (shown in the status).
    pub(super) fn history_problem(&mut self, why: String) {
        self.report(|r| r.history_error = Some(why));
    }

    /// The consumer found an event from this relay whose signature does not verify: held against
    /// the relay's misbehaviour budget.
    pub(crate) fn on_bad_signature(&mut self, now: Instant) -> Step {
        self.now = now;
        self.offend(Offence::BadSignature)?;
        self.settle()
    }

    /// Timers: cooldown end, health, NEG-OPEN silence, historic deadlines,
    /// retries, the cold sweep, the budget growing back, the state to persist, the daily restart.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Step {
        self.now = now;
        if self.cooldown_until.is_some_and(|t| now >= t) {
            self.cooldown_until = None;
        }
        let health = if self.in_cooldown() {
            HealthStatus::RateLimited
        } else if self.degraded_until.is_some_and(|t| now < t) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        self.report(|r| r.health = health);
        let silent =
            self.subs.values().any(|s| matches!(s.kind, SubKind::Neg { silent_until: Some(d), .. } if now >= d));
        if silent {
            self.negentropy_unsupported("no answer to NEG-OPEN");
        }
        self.expire_historic();
        self.retry_failed();
        self.sweep();
        self.regrow_budget();
        self.awaiting_roots.retain(|_, until| now < *until);
        if self.persist_dirty && now >= self.persist_at + std::time::Duration::from_secs(1) {
            self.publish_persisted();
        }
        if self.mem.state.fresh_start_due.is_some_and(|t| unix_now() >= t) {
            return Err(SessionEnd::Daily);
        }
        self.settle()
    }

    /// Gives up historic subscriptions past their deadline: their batches fail (and are retried
    /// later), so a relay that never sends EOSE or drips its answer cannot hold a sync forever.
    fn expire_historic(&mut self) {
        let now = self.now;
        let expired: Vec<String> =
            self.subs.iter().filter(|(_, s)| s.deadline.is_some_and(|d| now >= d)).map(|(k, _)| k.clone()).collect();
        for sub in expired {
            let Some(s) = self.subs.remove(&sub) else { continue };
            let limit = self.ctx.settings.historic_timeout;
            let why = format!("historic subscription {sub} did not finish within {limit:?}; batch given up");
            tracing::warn!(relay = %self.ctx.url, "{why}");
            self.report(|r| {
                r.historic_timeouts += 1;
                r.last_error = Some(why.clone());
            });
            self.history_problem(why);
            match s.kind {
                SubKind::Page { batch, .. } | SubKind::Ids { batch, .. } => {
                    self.emit(ClientMsg::Close(sub));
                    self.job_done(batch, false);
                }
                SubKind::Neg { batch, .. } => {
                    self.emit(ClientMsg::NegClose(sub));
                    self.job_done(batch, false);
                }
                live @ SubKind::Live { .. } => {
                    self.subs.insert(sub, Sub { kind: live, acked: s.acked, deadline: None });
                }
            }
        }
    }

    /// Starts a historic sync of the items whose last one failed, once `historic_retry` passed.
    fn retry_failed(&mut self) {
        if self.retry_at.is_none_or(|t| self.now < t) || self.in_cooldown() {
            return;
        }
        self.retry_at = None;
        let current = &self.current;
        self.mem.failed.retain(|i| crate::engine::relay_task::has_item(current, i));
        let items: Vec<Item> = self.mem.failed.iter().filter(|i| !self.pending.contains(*i)).cloned().collect();
        if !items.is_empty() {
            tracing::info!(relay = %self.ctx.url, items = items.len(), "retrying failed historic sync");
            self.report(|r| r.historic_retries += 1);
            self.start_items(items, None, false);
        }
    }

    /// Every `sweep_interval`, a negentropy catch-up of the confirmed items live does not name
    /// (the cold rest of tier 3), from the previous sweep on, and the whole history of the
    /// related items never looked up.
    fn sweep(&mut self) {
        if self.now < self.sweep_at || self.syncing {
            return;
        }
        self.sweep_at = self.now + self.ctx.settings.sweep_interval;
        let since = self.last_sweep_unix.saturating_sub(self.ctx.settings.catchup_margin.as_secs());
        self.last_sweep_unix = unix_now();
        let cold: Vec<Item> = self
            .mem
            .confirmed
            .iter()
            .filter(|i| !self.hot_items.contains(*i) && **i != Item::Announcements)
            .cloned()
            .collect();
        let due: Vec<Item> = std::mem::take(&mut self.related_due).into_iter().collect();
        if !cold.is_empty() || !due.is_empty() {
            tracing::debug!(relay = %self.ctx.url, items = cold.len(), due = due.len(), since, "sweeping");
            self.report(|r| r.sweeps += 1);
            self.start_items(cold, Some(since), true);
            self.start_items(due, None, true);
        }
    }

    /// The budget grows back by one after each quiet `budget_regrow` since the last overflow.
    fn regrow_budget(&mut self) {
        let max = self.ctx.settings.max_subscriptions.max(2);
        if self.mem.budget >= max {
            self.grow_at = None;
            return;
        }
        let at = *self.grow_at.get_or_insert(self.now + self.ctx.settings.budget_regrow);
        if self.now >= at {
            self.mem.budget += 1;
            self.grow_at = Some(self.now + self.ctx.settings.budget_regrow);
            self.live_dirty = true;
            tracing::info!(relay = %self.ctx.url, budget = self.mem.budget, "subscription budget grown back");
        }
    }
}
