//! What a relay's free-text messages mean for us.
//!
//! Relays explain refusals in prose (NOTICE, CLOSED, `OK false`, NEG-ERR). [`classify`] turns a
//! text into a [`Signal`] the relay task acts on. Matching is case-insensitive.
//!
//! Precedence, most specific first:
//! 1. subscription overflow (`too many concurrent REQs`, …) — it also reads like a rate limit,
//!    but waiting does not help: the live set must be consolidated;
//! 2. `too many query results` on NEG-ERR or CLOSED — split the filter or page with REQ;
//! 3. `auth-required:` — the relay wants NIP-42 auth, which we do not do;
//! 4. rate limits ([`mentions_rate_limit`]: `rate-limited:`, "rate" + "limit", "too many",
//!    "slow down", "throttl");
//! 5. negentropy unsupported: any other NEG-ERR; a NOTICE or CLOSED that mentions
//!    negentropy, `NEG-`, "unknown cmd" or "bad msg";
//! 6. anything else.

use crate::wire::reason::mentions_rate_limit;

/// Which message carried the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Notice,
    Closed,
    /// `["OK", id, false, text]`.
    OkFalse,
    NegErr,
}

/// What the text tells us to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Too many subscriptions open: close them and rebuild the live set with fewer REQs
    /// (strfry silently drops the live part of the overflowing REQ after its EOSE).
    SubscriptionOverflow,
    /// The query matched too much for the relay: split it (e.g. by time) or page with REQ.
    TooManyResults,
    /// The relay wants NIP-42 authentication.
    AuthRequired,
    /// Slow down: wait for the rate-limit cooldown, then recompute actions.
    RateLimited,
    /// NIP-77 is not available on this relay: remember it and use REQ pagination.
    NegentropyUnsupported,
    /// Nothing we act on (logged, kept as the relay's last error).
    Other,
}

const OVERFLOW: &[&str] = &["too many concurrent req", "too many subscriptions", "too many open subscriptions"];
const NEG_UNSUPPORTED: &[&str] = &["negentropy", "neg-", "unknown cmd", "bad msg"];

/// Classifies a relay message text. NOTICE has no subscription id: callers should read a
/// negentropy verdict from a NOTICE only while one of their NEG-OPENs is unanswered.
pub fn classify(source: Source, text: &str) -> Signal {
    let t = text.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    if has(OVERFLOW) {
        return Signal::SubscriptionOverflow;
    }
    if matches!(source, Source::NegErr | Source::Closed) && t.contains("too many query results") {
        return Signal::TooManyResults;
    }
    if t.starts_with("auth-required:") {
        return Signal::AuthRequired;
    }
    if mentions_rate_limit(&t) {
        return Signal::RateLimited;
    }
    match source {
        Source::NegErr => Signal::NegentropyUnsupported,
        Source::Notice | Source::Closed if has(NEG_UNSUPPORTED) => Signal::NegentropyUnsupported,
        _ => Signal::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Signal::*;
    use Source::*;

    #[test]
    fn strfry_subscription_overflow_wins_over_rate_limit() {
        assert_eq!(classify(Notice, "ERROR: too many concurrent REQs"), SubscriptionOverflow);
        assert_eq!(classify(Closed, "error: Too Many Concurrent REQs"), SubscriptionOverflow);
        assert_eq!(classify(Notice, "rate-limited: too many subscriptions"), SubscriptionOverflow);
        assert!(mentions_rate_limit("ERROR: too many concurrent REQs"), "a more specific signal wins");
    }

    #[test]
    fn rate_limit_texts_from_every_source() {
        for source in [Notice, Closed, OkFalse, NegErr] {
            for text in crate::wire::reason::SLOW_DOWN_TEXTS {
                assert_eq!(classify(source, text), RateLimited, "{source:?} {text}");
            }
        }
    }

    #[test]
    fn neg_err_means_unsupported_except_too_many_results() {
        assert_eq!(classify(NegErr, "blocked: too many query results"), TooManyResults);
        assert_eq!(classify(NegErr, "invalid: unsupported protocol version"), NegentropyUnsupported);
        assert_eq!(classify(NegErr, "closed: timeout"), NegentropyUnsupported);
        assert_eq!(classify(NegErr, "rate-limited: slow"), RateLimited);
    }

    #[test]
    fn notice_or_closed_about_negentropy_means_unsupported() {
        assert_eq!(classify(Notice, "ERROR: negentropy disabled"), NegentropyUnsupported);
        assert_eq!(classify(Notice, "unknown cmd NEG-OPEN"), NegentropyUnsupported);
        assert_eq!(classify(Notice, "ERROR: bad msg: unknown cmd"), NegentropyUnsupported);
        assert_eq!(classify(Closed, "error: NEG-OPEN not supported"), NegentropyUnsupported);
        assert_eq!(classify(OkFalse, "bad msg"), Other, "OK false is about an event, not negentropy");
    }

    #[test]
    fn other_texts_are_not_acted_on() {
        assert_eq!(classify(OkFalse, "blocked: not a repository event"), Other);
        assert_eq!(classify(Closed, "error: shutting down"), Other);
        assert_eq!(classify(Closed, "auth-required: please auth"), AuthRequired);
        assert_eq!(classify(Notice, ""), Other);
    }
}
