//! Which `relays` tag values of a repository announcement count (announcements are untrusted).

use super::url::RelayUrl;

/// Relays kept from one announcement; announcements are untrusted, the rest is ignored.
pub const MAX_ANNOUNCED_RELAYS: usize = 20;

/// Counts of an announcement's `relays` tag values that were not kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoredRelays {
    /// Not a relay URL: unparseable, not `ws`/`wss`, no host, credentials, too long.
    pub invalid: u32,
    /// The same relay as a value kept before it, once normalised (case, default port, trailing
    /// slash or dot).
    pub duplicate: u32,
    /// Values after the first [`MAX_ANNOUNCED_RELAYS`] distinct relays (not even parsed).
    pub over_limit: u32,
}

impl IgnoredRelays {
    pub fn total(&self) -> u64 {
        u64::from(self.invalid) + u64::from(self.duplicate) + u64::from(self.over_limit)
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &IgnoredRelays) {
        self.invalid = self.invalid.saturating_add(other.invalid);
        self.duplicate = self.duplicate.saturating_add(other.duplicate);
        self.over_limit = self.over_limit.saturating_add(other.over_limit);
    }
}

/// The relays an announcement lists, as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnouncedRelays {
    /// Distinct normalised relay URLs in tag order.
    pub relays: Vec<RelayUrl>,
    pub ignored: IgnoredRelays,
}

/// Chooses which `relays` tag values of an announcement count: the first `limit` distinct
/// valid relay URLs in tag order, after normalisation. Every value is accounted for exactly
/// once: kept, invalid, duplicate of an earlier kept one, or over the limit. Once `limit`
/// relays are kept the remaining values are counted without being parsed, so a huge tag costs
/// little.
pub fn select_announced_relays(raw: &[String], limit: usize) -> AnnouncedRelays {
    let mut out = AnnouncedRelays::default();
    for (i, value) in raw.iter().enumerate() {
        if out.relays.len() >= limit {
            out.ignored.over_limit = u32::try_from(raw.len() - i).unwrap_or(u32::MAX);
            break;
        }
        match RelayUrl::parse(value) {
            Err(_) => out.ignored.invalid += 1,
            Ok(url) if out.relays.contains(&url) => out.ignored.duplicate += 1,
            Ok(url) => out.relays.push(url),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn announced_relays_keep_the_first_distinct_valid_urls_in_tag_order() {
        let raw = strings(&[
            "wss://b.example",
            "not a url",
            "WSS://B.example:443/",
            "https://c.example",
            "wss://a.example.",
            "wss://a.example",
            "ws://b.example",
            "wss://d.example",
            "wss://e.example",
        ]);
        let got = select_announced_relays(&raw, 3);
        let kept: Vec<&str> = got.relays.iter().map(RelayUrl::as_str).collect();
        assert_eq!(kept, ["wss://b.example", "wss://a.example", "ws://b.example"]);
        assert_eq!(got.ignored, IgnoredRelays { invalid: 2, duplicate: 2, over_limit: 2 });
    }

    #[test]
    fn values_past_the_limit_are_counted_without_parsing() {
        let mut raw: Vec<String> = (0..20).map(|i| format!("wss://r{i}.example")).collect();
        raw.extend(std::iter::repeat_n("garbage".to_string(), 1000));
        let got = select_announced_relays(&raw, 20);
        assert_eq!(got.relays.len(), 20);
        assert_eq!(got.ignored, IgnoredRelays { invalid: 0, duplicate: 0, over_limit: 1000 });
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u8..12).prop_map(|i| format!("wss://r{i}.example")),
            (0u8..12).prop_map(|i| format!("WSS://R{i}.Example:443/")),
            (0u8..12).prop_map(|i| format!("ws://r{i}.example:80")),
            (0u8..4).prop_map(|i| format!("https://r{i}.example")),
            Just("::nonsense::".to_string()),
            Just("ws://".to_string()),
            "[a-z:/.]{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn every_value_is_kept_or_counted_once_and_kept_ones_are_distinct(
            raw in proptest::collection::vec(value(), 0..60),
            limit in 0usize..25,
        ) {
            let got = select_announced_relays(&raw, limit);
            prop_assert!(got.relays.len() <= limit);
            prop_assert_eq!(got.relays.len() as u64 + got.ignored.total(), raw.len() as u64);
            let distinct: std::collections::BTreeSet<&RelayUrl> = got.relays.iter().collect();
            prop_assert_eq!(distinct.len(), got.relays.len());
            // The kept ones are the first distinct valid values, in tag order.
            let mut expect: Vec<RelayUrl> = Vec::new();
            for v in &raw {
                if let Ok(u) = RelayUrl::parse(v) {
                    if !expect.contains(&u) {
                        expect.push(u);
                    }
                }
            }
            expect.truncate(limit);
            prop_assert_eq!(&got.relays, &expect);
        }
    }
}
