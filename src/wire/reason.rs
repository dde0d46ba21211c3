//! What the free text of a relay's refusal says about waiting: NIP-01 reasons (`OK false`,
//! CLOSED, NOTICE, NEG-ERR) carry a machine-readable prefix such as `rate-limited:`, and relays
//! word their slow-downs in prose as well. Matching is case-insensitive.

/// Texts that ask us to slow down.
const RATE: &[&str] = &["rate-limited:", "too many", "slow down", "throttl"];

/// Whether the text asks us to slow down: `rate-limited:`, "too many", "slow down", "throttl…",
/// or "rate" together with "limit".
pub fn mentions_rate_limit(text: &str) -> bool {
    let t = text.to_lowercase();
    RATE.iter().any(|n| t.contains(n)) || (t.contains("rate") && t.contains("limit"))
}

/// Slow-down texts as relays word them, for tests.
#[cfg(test)]
pub(crate) const SLOW_DOWN_TEXTS: &[&str] = &[
    "rate-limited: you are noting too much",
    "RATE LIMIT exceeded",
    "error: too many requests",
    "please slow down",
    "Throttled",
    "ratelimited, try later",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_down_texts_are_recognised_in_any_case() {
        for text in SLOW_DOWN_TEXTS.iter().chain(&["ERROR: too many concurrent REQs"]) {
            assert!(mentions_rate_limit(text), "{text}");
        }
        for text in ["blocked: not a repository event", "error: internal error", "invalid: bad signature", ""] {
            assert!(!mentions_rate_limit(text), "{text}");
        }
    }
}
