//! The health states a remote relay is shown in. (The relay task decides when to dial:
//! `engine::relay_task::after_failure` / `after_session`, waiting
//! [`crate::wire::backoff::backoff`].)

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
