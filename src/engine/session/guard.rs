//! Guards against a hostile or broken relay: misbehaviour budgets, the live event rate,
//! deadlines on historic subscriptions, retries of failed batches, and the session's timers.
//! The decisions themselves are pure ([`crate::remote::abuse`]); this is where they are applied.

use super::*;

/// Prefixes of the subscription ids we open (followed by a number from `next_id`).
const SUB_PREFIXES: [&str; 4] = ["live", "neg", "page", "ids"];

impl Session<'_> {
    /// Counts one offence; ends the session once its budget has run out.
    pub(super) fn offend(&mut self, offence: Offence) -> Step {
        self.offend_n(offence, 1)
    }

    fn offend_n(&mut self, offence: Offence, n: u32) -> Step {
        let n64 = u64::from(n);
        self.report(|r| match offence {
            Offence::InvalidFrame => r.frames_invalid += n64,
            Offence::InvalidEvent => r.events_invalid += n64,
            // Counted by the consumer that checked the signature.
            Offence::BadSignature => {}
            Offence::UnmatchedEvent => r.events_unmatched += n64,
            Offence::UnknownSubscription => r.events_unknown_subscription += n64,
            Offence::Notice => r.notices += n64,
        });
        match self.budget.record(offence, n, Instant::now()) {
            None => Ok(()),
            Some(breach) => {
                let why = breach.to_string();
                tracing::warn!(relay = %self.ctx.url, "{why}; disconnecting");
                Err(SessionEnd::Misbehaving(why))
            }
        }
    }

    /// A live event arrived: fine within the per-relay rate; beyond it the session ends (the
    /// next connection catches up from the disconnect, so nothing legitimate is lost).
    pub(super) fn live_event(&mut self) -> Step {
        if self.live_rate.take(Instant::now()) {
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

    /// Starts the clock of a historic subscription.
    pub(super) fn set_deadline(&mut self, sub: &str) {
        self.deadlines.insert(sub.to_string(), Instant::now() + self.ctx.settings.historic_timeout);
    }

    /// Items of a failed batch are synced again after `historic_retry`.
    pub(super) fn schedule_retry(&mut self, items: &[Item]) {
        self.mem.failed.extend(items.iter().cloned());
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.ctx.settings.historic_retry);
        }
    }

    pub(super) async fn on_tick(&mut self) -> Step {
        let now = Instant::now();
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
        self.report(|r| r.health = Some(health));
        let reported = self.report(|r| r.events_bad_signature);
        if reported > self.bad_signatures_seen {
            let n = u32::try_from(reported - self.bad_signatures_seen).unwrap_or(u32::MAX);
            self.bad_signatures_seen = reported;
            self.offend_n(Offence::BadSignature, n)?;
        }
        let silent = self.subs.values().any(|s| matches!(s, Sub::Neg { deadline: Some(d), .. } if now >= *d));
        if silent {
            self.negentropy_unsupported("no answer to NEG-OPEN").await?;
        }
        self.expire_historic(now).await?;
        self.retry_failed(now);
        if self.mem.state.fresh_start_due.is_some_and(|t| unix_now() >= t) {
            return Err(SessionEnd::Daily);
        }
        Ok(())
    }

    /// Gives up historic subscriptions past their deadline: their batches fail (and are retried
    /// later), so a relay that never sends EOSE or drips its answer cannot hold a sync forever.
    async fn expire_historic(&mut self, now: Instant) -> Step {
        let subs = &self.subs;
        self.deadlines.retain(|sub, _| subs.contains_key(sub));
        let expired: Vec<String> =
            self.deadlines.iter().filter(|(_, d)| now >= **d).map(|(sub, _)| sub.clone()).collect();
        for sub in expired {
            self.deadlines.remove(&sub);
            let Some(s) = self.subs.remove(&sub) else { continue };
            let limit = self.ctx.settings.historic_timeout;
            let why = format!("historic subscription {sub} did not finish within {limit:?}; batch given up");
            tracing::warn!(relay = %self.ctx.url, "{why}");
            self.report(|r| {
                r.historic_timeouts += 1;
                r.last_error = Some(why);
            });
            match s {
                Sub::Page { batch, .. } | Sub::Ids { batch, .. } => {
                    self.send(ClientMsg::Close(sub)).await?;
                    self.job_done(batch, false);
                }
                Sub::Neg { batch, .. } => {
                    self.send(ClientMsg::NegClose(sub)).await?;
                    self.job_done(batch, false);
                }
                live @ Sub::Live(..) => {
                    self.subs.insert(sub, live);
                }
            }
        }
        Ok(())
    }

    /// Starts a historic sync of the items whose last one failed, once `historic_retry` passed.
    fn retry_failed(&mut self, now: Instant) {
        if self.retry_at.is_none_or(|t| now < t) || self.in_cooldown() {
            return;
        }
        self.retry_at = None;
        let current = &self.current;
        self.mem.failed.retain(|i| current.contains(i));
        let items: Vec<Item> = self.mem.failed.iter().filter(|i| !self.pending.contains(*i)).cloned().collect();
        if !items.is_empty() {
            tracing::info!(relay = %self.ctx.url, items = items.len(), "retrying failed historic sync");
            self.start_items(items, None, false);
        }
    }
}
