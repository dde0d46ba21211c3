//! Budgets against hostile or broken relays: how much nonsense one connection may send before we
//! hang up, and how fast live events may flow.
//!
//! Any stranger can publish an announcement that points us at their relay, so a relay may send
//! garbage frames, events with bad ids or signatures, events we never asked for, NOTICE floods or
//! an endless stream of live events. Each connection keeps a [`Budget`] (offences counted per
//! fixed window; one kind over its limit ends the connection, which then counts as a failed
//! connect and backs off) and a [`TokenBucket`] for live events. Both are plain data driven by
//! the caller's clock, so they are tested without sockets.

use std::time::{Duration, Instant};

/// Something a relay did that a well-behaved relay does not do (or does rarely).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offence {
    /// A frame that is not a NIP-01/NIP-77 message (bad JSON, not an array, missing fields,
    /// binary that is not UTF-8, garbage negentropy payload).
    InvalidFrame,
    /// An event whose id does not match its content.
    InvalidEvent,
    /// An event whose signature does not verify (reported back by the consumer).
    BadSignature,
    /// An event on one of our subscriptions that matches none of its filters.
    UnmatchedEvent,
    /// An event on a subscription id we never opened.
    UnknownSubscription,
    /// A NOTICE.
    Notice,
}

impl Offence {
    const ALL: [Offence; 6] = [
        Offence::InvalidFrame,
        Offence::InvalidEvent,
        Offence::BadSignature,
        Offence::UnmatchedEvent,
        Offence::UnknownSubscription,
        Offence::Notice,
    ];

    fn index(self) -> usize {
        Offence::ALL.iter().position(|o| *o == self).expect("listed")
    }

    pub fn describe(self) -> &'static str {
        match self {
            Offence::InvalidFrame => "invalid frames",
            Offence::InvalidEvent => "events with bad ids",
            Offence::BadSignature => "events with bad signatures",
            Offence::UnmatchedEvent => "events matching no filter we sent",
            Offence::UnknownSubscription => "events on subscriptions we never opened",
            Offence::Notice => "NOTICEs",
        }
    }
}

/// Limits per connection. A limit is the most offences of one kind tolerated within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbuseLimits {
    pub window: Duration,
    pub invalid_frames: u32,
    pub invalid_events: u32,
    pub bad_signatures: u32,
    /// Generous: a relay that ignores a tag condition (e.g. uppercase `#E`) sends unmatched
    /// events without meaning harm; only a flood ends the connection.
    pub unmatched_events: u32,
    pub unknown_subscriptions: u32,
    pub notices: u32,
    /// Live events per second, sustained.
    pub live_events_per_sec: u32,
    /// Live events accepted in a burst above the sustained rate.
    pub live_burst: u32,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        AbuseLimits {
            window: Duration::from_secs(60),
            invalid_frames: 20,
            invalid_events: 20,
            bad_signatures: 20,
            unmatched_events: 2_000,
            unknown_subscriptions: 20,
            notices: 60,
            live_events_per_sec: 100,
            live_burst: 2_000,
        }
    }
}

impl AbuseLimits {
    pub fn limit(&self, o: Offence) -> u32 {
        match o {
            Offence::InvalidFrame => self.invalid_frames,
            Offence::InvalidEvent => self.invalid_events,
            Offence::BadSignature => self.bad_signatures,
            Offence::UnmatchedEvent => self.unmatched_events,
            Offence::UnknownSubscription => self.unknown_subscriptions,
            Offence::Notice => self.notices,
        }
    }
}

/// A budget ran out: the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub offence: Offence,
    pub count: u32,
    pub window: Duration,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "misbehaving relay: {} {} within {:?}", self.count, self.offence.describe(), self.window)
    }
}

/// Offence counts of one connection in the current fixed window.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: AbuseLimits,
    window_start: Instant,
    counts: [u32; 6],
}

impl Budget {
    pub fn new(limits: AbuseLimits, now: Instant) -> Self {
        Budget { limits, window_start: now, counts: [0; 6] }
    }

    /// Counts `n` offences at `now`; returns a breach once a kind passes its limit within the
    /// window. Windows are fixed: counts start over once `window` has passed since the first.
    pub fn record(&mut self, offence: Offence, n: u32, now: Instant) -> Option<Breach> {
        if now.saturating_duration_since(self.window_start) >= self.limits.window {
            self.window_start = now;
            self.counts = [0; 6];
        }
        let c = &mut self.counts[offence.index()];
        *c = c.saturating_add(n);
        (*c > self.limits.limit(offence)).then_some(Breach { offence, count: *c, window: self.limits.window })
    }

    /// Offences of one kind in the current window.
    pub fn count(&self, offence: Offence) -> u32 {
        self.counts[offence.index()]
    }
}

/// A token bucket: `burst` tokens, refilled at `per_sec`. Each live event takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { per_sec: f64::from(per_sec), burst, tokens: burst, last: now }
    }

    /// Takes one token at `now`; `false` when the bucket is empty (the rate is exceeded).
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Shortens a relay-supplied text for logs and `/status` (a NOTICE may be a megabyte long).
pub fn clip(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max_chars).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> AbuseLimits {
        AbuseLimits { window: Duration::from_secs(10), invalid_frames: 3, notices: 5, ..AbuseLimits::default() }
    }

    #[test]
    fn one_kind_over_its_limit_within_the_window_is_a_breach() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(), t0);
        for i in 0..3 {
            assert_eq!(b.record(Offence::InvalidFrame, 1, t0 + Duration::from_secs(i)), None);
        }
        let breach = b.record(Offence::InvalidFrame, 1, t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(breach.count, 4);
        assert_eq!(breach.offence, Offence::InvalidFrame);
        assert!(breach.to_string().starts_with("misbehaving relay: 4 invalid frames"), "{breach}");
    }

    #[test]
    fn kinds_are_counted_apart_and_windows_start_over() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(), t0);
        assert_eq!(b.record(Offence::InvalidFrame, 3, t0), None);
        assert_eq!(b.record(Offence::Notice, 5, t0), None, "another kind has its own count");
        assert_eq!(b.record(Offence::InvalidFrame, 3, t0 + Duration::from_secs(10)), None, "new window");
        assert_eq!(b.count(Offence::Notice), 0);
        assert!(b.record(Offence::InvalidFrame, 1, t0 + Duration::from_secs(11)).is_some());
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut tb = TokenBucket::new(10, 5, t0);
        assert_eq!((0..8).filter(|_| tb.take(t0)).count(), 5, "burst only");
        assert!(!tb.take(t0 + Duration::from_millis(50)), "half a token");
        assert!(tb.take(t0 + Duration::from_millis(100)), "one token after 100 ms at 10/s");
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| tb.take(later)).count(), 5, "refill is capped by the burst");
    }

    #[test]
    fn clip_keeps_short_texts_and_cuts_long_ones() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip(&"x".repeat(1_000_000), 100).chars().count(), 101);
    }

    proptest! {
        #[test]
        fn no_breach_at_or_under_the_limit_and_always_one_above(
            limit in 1u32..50, extra in 0u32..5, spread_ms in 0u64..9_000,
        ) {
            let l = AbuseLimits { window: Duration::from_secs(10), notices: limit, ..AbuseLimits::default() };
            let t0 = Instant::now();
            let mut b = Budget::new(l, t0);
            let total = limit + extra;
            let mut first_breach = None;
            for i in 0..total {
                let at = t0 + Duration::from_millis(spread_ms * u64::from(i) / u64::from(total));
                if b.record(Offence::Notice, 1, at).is_some() && first_breach.is_none() {
                    first_breach = Some(i + 1);
                }
            }
            // All offences fall within one window: the breach comes exactly at limit + 1.
            prop_assert_eq!(first_breach, (extra > 0).then_some(limit + 1));
        }

        #[test]
        fn token_bucket_never_grants_more_than_burst_plus_rate_times_time(
            rate in 1u32..500, burst in 1u32..500, gaps in proptest::collection::vec(0u64..50, 1..400),
        ) {
            let t0 = Instant::now();
            let mut tb = TokenBucket::new(rate, burst, t0);
            let (mut now, mut granted) = (t0, 0u64);
            for g in gaps {
                now += Duration::from_millis(g);
                granted += u64::from(tb.take(now));
            }
            let allowed = f64::from(burst) + now.duration_since(t0).as_secs_f64() * f64::from(rate);
            prop_assert!(granted as f64 <= allowed + 1e-6, "granted {} allowed {}", granted, allowed);
        }
    }
}
