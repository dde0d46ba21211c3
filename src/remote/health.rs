//! Per-relay health: reconnect backoff, dead relays, recovery and rate-limit cooldowns.
//!
//! Plain data with methods that take `now` (unix seconds); the relay task asks it when it may
//! dial next and tells it what happened.

use std::time::Duration;

use crate::config::SyncConfig;

/// Health timings. Defaults: base 5 s, cap 3600 s, dead after 24 h of failures (then one try a
/// day), Degraded for 300 s after recovery, 65 s cooldown after a rate-limit message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    pub base_backoff_secs: u64,
    pub max_backoff_secs: u64,
    pub dead_after_secs: u64,
    pub dead_retry_secs: u64,
    pub degraded_secs: u64,
    pub rate_limit_cooldown_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            base_backoff_secs: 5,
            max_backoff_secs: 3600,
            dead_after_secs: 24 * 3600,
            dead_retry_secs: 24 * 3600,
            degraded_secs: 300,
            rate_limit_cooldown_secs: 65,
        }
    }
}

impl From<&SyncConfig> for HealthConfig {
    fn from(c: &SyncConfig) -> Self {
        HealthConfig {
            base_backoff_secs: c.base_backoff_secs,
            max_backoff_secs: c.max_backoff_secs,
            ..HealthConfig::default()
        }
    }
}

impl HealthConfig {
    /// How long a dial may take before it counts as a failure (= the backoff base).
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.base_backoff_secs.max(1))
    }
}

/// `base · 2^(failures−1)`, capped at `max`; 0 failures → 0.
pub fn backoff_secs(failures: u32, base: u64, max: u64) -> u64 {
    if failures == 0 {
        return 0;
    }
    let shift = (failures - 1).min(63);
    base.saturating_mul(1u64 << shift).min(max)
}

/// How a relay is doing, for `/status` and for choosing what to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Working, or never tried.
    Healthy,
    /// Recovered less than `degraded_secs` ago.
    Degraded,
    /// Failing, retrying with backoff.
    Failing,
    /// Failing for `dead_after_secs` or more: one try per `dead_retry_secs`.
    Dead,
    /// Told us to slow down; waiting out the cooldown.
    RateLimited,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Failing => "failing",
            HealthStatus::Dead => "dead",
            HealthStatus::RateLimited => "rate_limited",
        }
    }
}

/// Health record of one relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Consecutive failures (dial errors, timeouts, lost connections before any success).
    pub failures: u32,
    /// Start of the current run of failures.
    pub failing_since: Option<u64>,
    /// Earliest time for the next dial.
    pub next_attempt_at: u64,
    /// Last time a dial succeeded after failures.
    pub recovered_at: Option<u64>,
    /// Rate-limit cooldown end.
    pub rate_limited_until: Option<u64>,
    /// Last error text, for `/status`.
    pub last_error: Option<String>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// A dial failed, timed out, or the connection dropped. Returns the next attempt time.
    pub fn on_failure(&mut self, now: u64, cfg: &HealthConfig, error: impl Into<String>) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let since = *self.failing_since.get_or_insert(now);
        self.last_error = Some(error.into());
        let wait = if now.saturating_sub(since) >= cfg.dead_after_secs {
            cfg.dead_retry_secs
        } else {
            backoff_secs(self.failures, cfg.base_backoff_secs, cfg.max_backoff_secs)
        };
        self.next_attempt_at = now.saturating_add(wait);
        self.next_attempt_at
    }

    /// A dial succeeded. A relay that had failed counts as Degraded for a while.
    pub fn on_connected(&mut self, now: u64) {
        if self.failures > 0 {
            self.recovered_at = Some(now);
        }
        self.failures = 0;
        self.failing_since = None;
        self.next_attempt_at = now;
    }

    /// The relay said we are too fast. Returns the end of the cooldown.
    pub fn on_rate_limited(&mut self, now: u64, cfg: &HealthConfig, message: impl Into<String>) -> u64 {
        let until = now.saturating_add(cfg.rate_limit_cooldown_secs);
        self.rate_limited_until = Some(self.rate_limited_until.map_or(until, |u| u.max(until)));
        self.last_error = Some(message.into());
        until
    }

    /// Whether a dial may start now.
    pub fn may_dial(&self, now: u64) -> bool {
        now >= self.next_attempt_at && !self.is_rate_limited(now)
    }

    /// Whether requests must wait (cooldown running).
    pub fn is_rate_limited(&self, now: u64) -> bool {
        self.rate_limited_until.is_some_and(|u| now < u)
    }

    /// Seconds until the next dial is allowed (0 = now).
    pub fn wait_secs(&self, now: u64) -> u64 {
        let cooldown = self.rate_limited_until.unwrap_or(0);
        self.next_attempt_at.max(cooldown).saturating_sub(now)
    }

    pub fn is_dead(&self, now: u64, cfg: &HealthConfig) -> bool {
        self.failures > 0 && self.failing_since.is_some_and(|s| now.saturating_sub(s) >= cfg.dead_after_secs)
    }

    pub fn status(&self, now: u64, cfg: &HealthConfig) -> HealthStatus {
        if self.is_dead(now, cfg) {
            HealthStatus::Dead
        } else if self.failures > 0 {
            HealthStatus::Failing
        } else if self.is_rate_limited(now) {
            HealthStatus::RateLimited
        } else if self.recovered_at.is_some_and(|r| now.saturating_sub(r) < cfg.degraded_secs) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_from_base_and_is_capped() {
        let got: Vec<u64> = (0..=12).map(|f| backoff_secs(f, 5, 3600)).collect();
        assert_eq!(got, [0, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(backoff_secs(u32::MAX, 5, 3600), 3600);
        assert_eq!(HealthConfig::default().connect_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn failures_schedule_the_next_dial_and_success_resets() {
        let cfg = HealthConfig::default();
        let mut h = Health::new();
        assert!(h.may_dial(0));
        assert_eq!(h.on_failure(100, &cfg, "refused"), 105);
        assert!(!h.may_dial(104));
        assert_eq!(h.on_failure(105, &cfg, "refused"), 115);
        assert_eq!(h.status(110, &cfg), HealthStatus::Failing);
        assert!(h.may_dial(115));
        h.on_connected(120);
        assert_eq!(h.failures, 0);
        assert_eq!(h.status(121, &cfg), HealthStatus::Degraded);
        assert_eq!(h.status(420, &cfg), HealthStatus::Healthy);
        assert_eq!(h.on_failure(500, &cfg, "x"), 505, "backoff starts over after a success");
    }

    #[test]
    fn a_day_of_failures_makes_a_relay_dead_with_daily_retries() {
        let cfg = HealthConfig::default();
        let mut h = Health::new();
        let mut now = 0;
        while now < 24 * 3600 {
            now = h.on_failure(now, &cfg, "down");
        }
        assert!(h.is_dead(now, &cfg));
        assert_eq!(h.status(now, &cfg), HealthStatus::Dead);
        assert_eq!(h.on_failure(now, &cfg, "down"), now + 24 * 3600);
        h.on_connected(now + 24 * 3600);
        assert_eq!(h.status(now + 24 * 3600 + 1, &cfg), HealthStatus::Degraded);
    }

    #[test]
    fn rate_limit_cooldown_blocks_for_65_seconds() {
        let cfg = HealthConfig::default();
        let mut h = Health::new();
        assert_eq!(h.on_rate_limited(1000, &cfg, "rate-limited: slow down"), 1065);
        assert!(h.is_rate_limited(1064));
        assert!(!h.may_dial(1064));
        assert_eq!(h.status(1000, &cfg), HealthStatus::RateLimited);
        assert_eq!(h.wait_secs(1000), 65);
        assert!(!h.is_rate_limited(1065));
    }

    proptest! {
        #[test]
        fn backoff_is_monotone_and_bounded(base in 1u64..100, max in 100u64..100_000, f in 1u32..200) {
            let a = backoff_secs(f, base, max);
            let b = backoff_secs(f + 1, base, max);
            prop_assert!(a <= b && b <= max && a >= base.min(max));
        }
    }
}
