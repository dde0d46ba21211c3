//! Which relays to sync from, and what to ask each of them for.
//!
//! [`derive_relay_targets`] inverts the [`RepoSyncIndex`] (repo → relays) into relay → items,
//! applying the relay rules: never our own service, no local or private addresses unless
//! allowed, at most `max_relays` relays (bootstrap relays always kept).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::accepted::index::RepoSyncIndex;
use crate::policy::{AddressClass, Id, RelayUrl, RepoCoord};

/// A set of sync items: repositories (layer 2), root events (layer 3) and related events
/// (layer 4: other accepted events, for their deletions and reactions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemSet {
    pub repos: BTreeSet<RepoCoord>,
    pub root_events: BTreeSet<Id>,
    pub related: BTreeSet<Id>,
}

impl ItemSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.repos.is_empty() && self.root_events.is_empty() && self.related.is_empty()
    }

    /// Number of repositories, root events and related events.
    pub fn len(&self) -> usize {
        self.repos.len() + self.root_events.len() + self.related.len()
    }

    /// Adds every item of `other`.
    pub fn extend(&mut self, other: &ItemSet) {
        self.repos.extend(other.repos.iter().cloned());
        self.root_events.extend(other.root_events.iter().copied());
        self.related.extend(other.related.iter().copied());
    }

    /// Removes every item of `other`.
    pub fn remove_all(&mut self, other: &ItemSet) {
        self.repos.retain(|r| !other.repos.contains(r));
        self.root_events.retain(|r| !other.root_events.contains(r));
        self.related.retain(|r| !other.related.contains(r));
    }

    /// Items of `self` that are not in `other`.
    pub fn minus(&self, other: &ItemSet) -> ItemSet {
        ItemSet {
            repos: self.repos.difference(&other.repos).cloned().collect(),
            root_events: self.root_events.difference(&other.root_events).copied().collect(),
            related: self.related.difference(&other.related).copied().collect(),
        }
    }

    /// Items in both sets.
    pub fn intersect(&self, other: &ItemSet) -> ItemSet {
        ItemSet {
            repos: self.repos.intersection(&other.repos).cloned().collect(),
            root_events: self.root_events.intersection(&other.root_events).copied().collect(),
            related: self.related.intersection(&other.related).copied().collect(),
        }
    }

    /// Whether every item of `other` is in `self`.
    pub fn contains_all(&self, other: &ItemSet) -> bool {
        other.repos.is_subset(&self.repos)
            && other.root_events.is_subset(&self.root_events)
            && other.related.is_subset(&self.related)
    }
}

/// The rules applied when choosing relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRules {
    /// Relays always targeted (full layer 1), even when no repository lists them.
    pub bootstrap: Vec<RelayUrl>,
    /// Accept loopback, private, link-local, multicast and reserved address literals and local
    /// names (`localhost`, `*.local`, …). Off in production; tests on loopback turn it on.
    pub allow_private_addresses: bool,
    /// Most relays targeted in total, bootstrap relays included.
    pub max_relays: usize,
}

impl Default for TargetRules {
    fn default() -> Self {
        TargetRules { bootstrap: Vec::new(), allow_private_addresses: false, max_relays: 1000 }
    }
}

/// Why a relay is not a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// The relay is this service itself.
    OwnService,
    /// The host is not a public address (see [`RelayUrl::address_class`]).
    NotPublic(AddressClass),
    /// More than `max_relays` relays were wanted; this one lost the deterministic choice.
    OverLimit,
}

impl RefusedReason {
    /// Every value [`label`](Self::label) takes.
    pub const LABELS: [&'static str; 7] =
        ["own_service", "loopback", "private", "link_local", "multicast", "reserved", "over_limit"];

    /// A short stable name for metrics labels and `/status`.
    pub fn label(&self) -> &'static str {
        match self {
            RefusedReason::OwnService => "own_service",
            RefusedReason::NotPublic(AddressClass::Loopback) => "loopback",
            RefusedReason::NotPublic(AddressClass::Private) => "private",
            RefusedReason::NotPublic(AddressClass::LinkLocal) => "link_local",
            RefusedReason::NotPublic(AddressClass::Multicast) => "multicast",
            // Public is never refused as not public; counted with reserved if it were.
            RefusedReason::NotPublic(AddressClass::Reserved | AddressClass::Public) => "reserved",
            RefusedReason::OverLimit => "over_limit",
        }
    }
}

impl fmt::Display for RefusedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusedReason::OwnService => f.write_str("this is our own service URL"),
            RefusedReason::NotPublic(class) => {
                write!(f, "{class:?} address refused (sync.allow_private_addresses = false)")
            }
            RefusedReason::OverLimit => f.write_str("over sync.max_relays"),
        }
    }
}

/// Relay → what we want from it, plus the relays refused and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Every targeted relay with the items it should serve us (empty for a bootstrap relay no
    /// repository lists). Every targeted relay also gets layer 1 (announcements).
    pub relays: BTreeMap<RelayUrl, ItemSet>,
    /// The targeted relays that are bootstrap relays.
    pub bootstrap: BTreeSet<RelayUrl>,
    /// Relays wanted but refused, with the reason (one entry per relay).
    pub refused: BTreeMap<RelayUrl, RefusedReason>,
    /// How many relays were dropped for [`RefusedReason::OverLimit`].
    pub overflow: usize,
}

impl Targets {
    /// Items targeted on `relay` (`None` when the relay is not a target).
    pub fn get(&self, relay: &RelayUrl) -> Option<&ItemSet> {
        self.relays.get(relay)
    }

    pub fn is_target(&self, relay: &RelayUrl) -> bool {
        self.relays.contains_key(relay)
    }

    pub fn is_bootstrap(&self, relay: &RelayUrl) -> bool {
        self.bootstrap.contains(relay)
    }
}

fn refusal(url: &RelayUrl, service: &RelayUrl, rules: &TargetRules) -> Option<RefusedReason> {
    if url.same_endpoint(service) {
        return Some(RefusedReason::OwnService);
    }
    let class = url.address_class();
    if !class.is_public() && !rules.allow_private_addresses {
        return Some(RefusedReason::NotPublic(class));
    }
    None
}

/// Inverts the repo index into relay targets.
///
/// A relay serves a repository when the repository's announcement lists it; it then serves the
/// repository's root events and related events too. When more than `rules.max_relays` relays qualify, bootstrap
/// relays are kept first, then the others by rank: distinct authors of the repositories with
/// accepted activity (root events) that list the relay, then distinct authors of all the
/// repositories listing it, then root events, then URL order. Authors, not announcements: anyone
/// can publish many announcements listing this service, so what one key announces counts once,
/// and relays of repositories nobody writes to rank below those of active ones. The rest are
/// refused as [`RefusedReason::OverLimit`] and counted in `overflow`.
///
/// The ranking pass only counts, and item sets are built for the chosen relays alone, so a
/// flood of listed relays costs one small set each, not a copy of their repositories.
pub fn derive_relay_targets(repo_index: &RepoSyncIndex, service: &RelayUrl, rules: &TargetRules) -> Targets {
    // Pass 1: who wants each relay (borrowed, nothing cloned).
    let mut wanted: HashMap<&RelayUrl, Want> = HashMap::new();
    for (coord, entry) in repo_index.repos() {
        for relay in &entry.relays {
            let w = wanted.entry(relay).or_default();
            w.authors.insert(&coord.pubkey);
            if !entry.root_events.is_empty() {
                w.active_authors.insert(&coord.pubkey);
            }
            w.roots += entry.root_events.len();
        }
    }
    let weight = wanted.into_iter().map(|(url, w)| (url, (w.active_authors.len(), w.authors.len(), w.roots)));
    let mut out = Targets::default();
    let mut bootstrap = BTreeSet::new();
    for url in &rules.bootstrap {
        match refusal(url, service, rules) {
            Some(reason) => {
                out.refused.insert(url.clone(), reason);
            }
            None => {
                bootstrap.insert(url.clone());
            }
        }
    }
    let mut candidates: Vec<(&RelayUrl, (usize, usize, usize))> = Vec::new();
    for (url, w) in weight {
        if bootstrap.contains(url) {
            continue;
        }
        match refusal(url, service, rules) {
            Some(reason) => {
                out.refused.insert(url.clone(), reason);
            }
            None => candidates.push((url, w)),
        }
    }
    // Bootstrap relays first, always; they may alone exceed the limit.
    for url in bootstrap {
        out.relays.insert(url.clone(), ItemSet::new());
        out.bootstrap.insert(url);
    }
    candidates.sort_unstable_by(|(ua, a), (ub, b)| b.cmp(a).then(ua.cmp(ub)));
    let room = rules.max_relays.saturating_sub(out.relays.len());
    for (i, (url, _)) in candidates.into_iter().enumerate() {
        if i < room {
            out.relays.insert(url.clone(), ItemSet::new());
        } else {
            out.overflow += 1;
            out.refused.insert(url.clone(), RefusedReason::OverLimit);
        }
    }
    // Pass 2: the items of the chosen relays.
    for (coord, entry) in repo_index.repos() {
        for relay in &entry.relays {
            if let Some(items) = out.relays.get_mut(relay) {
                items.repos.insert(coord.clone());
                items.root_events.extend(entry.root_events.iter().copied());
                items.related.extend(entry.related.iter().copied());
            }
        }
    }
    out
}

/// Who wants one relay, for the ranking past `max_relays`.
#[derive(Default)]
struct Want<'a> {
    authors: HashSet<&'a Id>,
    active_authors: HashSet<&'a Id>,
    roots: usize,
}

/// What a target choice refused, in a size fit for `/status`: counts per reason and a few
/// example URLs per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalSummary {
    /// Relays targeted, bootstrap relays included (at most `max_relays` unless bootstrap relays
    /// alone exceed it).
    pub targets: usize,
    /// Distinct refused URLs per [`RefusedReason::label`]; every label is present.
    pub by_reason: BTreeMap<&'static str, usize>,
    /// Up to `per_reason` refused URLs of each reason, in URL order.
    pub sample: Vec<(RelayUrl, RefusedReason)>,
}

impl RefusalSummary {
    /// Refused URLs in total.
    pub fn total(&self) -> usize {
        self.by_reason.values().sum()
    }

    pub fn over_limit(&self) -> usize {
        self.by_reason.get(RefusedReason::OverLimit.label()).copied().unwrap_or(0)
    }
}

/// Summarises `targets.refused`, keeping at most `per_reason` example URLs per reason.
pub fn summarize_refusals(targets: &Targets, per_reason: usize) -> RefusalSummary {
    let mut by_reason: BTreeMap<&'static str, usize> = RefusedReason::LABELS.iter().map(|l| (*l, 0)).collect();
    let mut sample = Vec::new();
    for (url, reason) in &targets.refused {
        let n = by_reason.entry(reason.label()).or_default();
        if *n < per_reason {
            sample.push((url.clone(), *reason));
        }
        *n += 1;
    }
    RefusalSummary { targets: targets.relays.len(), by_reason, sample }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(s: &str) -> RelayUrl {
        RelayUrl::parse(s).unwrap()
    }

    fn coord(n: u8) -> RepoCoord {
        RepoCoord { pubkey: [n; 32], d: format!("repo{n}") }
    }

    fn index(entries: &[(u8, &[&str], &[u8])]) -> RepoSyncIndex {
        let mut idx = RepoSyncIndex::new();
        for (n, relays, roots) in entries {
            idx.upsert_repo(coord(*n), relays.iter().map(|r| url(r)).collect());
            for r in *roots {
                idx.add_root(&coord(*n), [*r; 32]);
            }
        }
        idx
    }

    fn rules(max: usize, private: bool, bootstrap: &[&str]) -> TargetRules {
        TargetRules {
            bootstrap: bootstrap.iter().map(|b| url(b)).collect(),
            allow_private_addresses: private,
            max_relays: max,
        }
    }

    #[test]
    fn relays_get_their_repos_and_those_repos_roots() {
        let idx = index(&[(1, &["wss://a.example", "wss://b.example"], &[10, 11]), (2, &["wss://b.example"], &[20])]);
        let t = derive_relay_targets(&idx, &url("wss://grasp.example"), &TargetRules::default());
        let a = t.get(&url("wss://a.example")).unwrap();
        assert_eq!(a.repos, [coord(1)].into());
        assert_eq!(a.root_events, [[10; 32], [11; 32]].into());
        let b = t.get(&url("wss://b.example")).unwrap();
        assert_eq!(b.repos.len(), 2);
        assert_eq!(b.root_events.len(), 3);
        assert!(t.refused.is_empty());
    }

    #[test]
    fn own_service_is_never_a_target_even_as_ws_or_bootstrap() {
        let idx = index(&[(1, &["ws://grasp.example", "wss://a.example"], &[])]);
        let t = derive_relay_targets(&idx, &url("wss://grasp.example"), &rules(10, false, &["wss://grasp.example/"]));
        assert_eq!(t.relays.keys().cloned().collect::<Vec<_>>(), vec![url("wss://a.example")]);
        assert_eq!(t.refused.get(&url("ws://grasp.example")), Some(&RefusedReason::OwnService));
        assert_eq!(t.refused.get(&url("wss://grasp.example")), Some(&RefusedReason::OwnService));
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let relays = ["ws://127.0.0.1:7777", "ws://10.1.2.3", "ws://[fe80::1]", "ws://localhost:1", "wss://a.example"];
        let idx = index(&[(1, &relays, &[])]);
        let service = url("wss://grasp.example");
        let t = derive_relay_targets(&idx, &service, &rules(10, false, &[]));
        assert_eq!(t.relays.len(), 1);
        assert_eq!(t.refused.len(), 4);
        assert_eq!(t.refused[&url("ws://127.0.0.1:7777")], RefusedReason::NotPublic(AddressClass::Loopback));
        assert_eq!(t.refused[&url("ws://10.1.2.3")], RefusedReason::NotPublic(AddressClass::Private));
        let t = derive_relay_targets(&idx, &service, &rules(10, true, &[]));
        assert_eq!(t.relays.len(), 5);
        assert!(t.refused.is_empty());
    }

    #[test]
    fn refusal_labels_are_distinct_and_listed() {
        use AddressClass::*;
        let all = [
            RefusedReason::OwnService,
            RefusedReason::NotPublic(Loopback),
            RefusedReason::NotPublic(Private),
            RefusedReason::NotPublic(LinkLocal),
            RefusedReason::NotPublic(Multicast),
            RefusedReason::NotPublic(Reserved),
            RefusedReason::OverLimit,
        ];
        let labels: Vec<&str> = all.iter().map(RefusedReason::label).collect();
        assert_eq!(labels, RefusedReason::LABELS);
    }

    #[test]
    fn relay_cap_keeps_bootstrap_then_busiest_then_url_order() {
        let idx = index(&[
            (1, &["wss://c.example", "wss://b.example", "wss://a.example"], &[]),
            (2, &["wss://c.example"], &[]),
            (3, &["wss://z.example"], &[1, 2]),
        ]);
        let t = derive_relay_targets(&idx, &url("wss://grasp.example"), &rules(3, false, &["wss://boot.example"]));
        let kept: Vec<String> = t.relays.keys().map(|u| u.to_string()).collect();
        // c serves two repositories; z one with root events; a and b lose (one repo, no roots).
        assert_eq!(kept, ["wss://boot.example", "wss://c.example", "wss://z.example"]);
        assert_eq!(t.overflow, 2);
        assert_eq!(t.refused[&url("wss://a.example")], RefusedReason::OverLimit);
        assert!(t.is_bootstrap(&url("wss://boot.example")));
        assert!(t.relays[&url("wss://boot.example")].is_empty());
    }

    #[test]
    fn relays_past_the_cap_rank_by_distinct_authors_with_activity_first() {
        let key = |pk: u8, d: &str| RepoCoord { pubkey: [pk; 32], d: d.into() };
        let mut idx = RepoSyncIndex::new();
        // One key announces fifty repositories on the spam relay: it counts once.
        for i in 0..50 {
            idx.upsert_repo(key(9, &format!("spam{i}")), [url("wss://spam.example")].into());
        }
        // Two authors list the quiet relay; one author with an issue lists the busy relay.
        idx.upsert_repo(key(1, "q"), [url("wss://quiet.example")].into());
        idx.upsert_repo(key(2, "q"), [url("wss://quiet.example")].into());
        idx.upsert_repo(key(3, "b"), [url("wss://busy.example")].into());
        idx.add_root(&key(3, "b"), [7; 32]);
        let service = url("wss://grasp.example");
        let kept = |max| -> Vec<String> {
            derive_relay_targets(&idx, &service, &rules(max, false, &[])).relays.keys().map(|u| u.to_string()).collect()
        };
        assert_eq!(kept(1), ["wss://busy.example"]);
        assert_eq!(kept(2), ["wss://busy.example", "wss://quiet.example"]);
        assert_eq!(kept(3).len(), 3);
    }

    #[test]
    fn a_repository_leaving_the_index_takes_its_relays_and_roots_out_of_the_targets() {
        let service = url("wss://grasp.example");
        let mut idx =
            index(&[(1, &["wss://a.example", "wss://shared.example"], &[5]), (2, &["wss://shared.example"], &[6])]);
        let before = derive_relay_targets(&idx, &service, &rules(10, false, &[]));
        assert!(before.is_target(&url("wss://a.example")));
        idx.remove_repo(&coord(1));
        let after = derive_relay_targets(&idx, &service, &rules(10, false, &[]));
        assert!(!after.is_target(&url("wss://a.example")), "nothing else needs it: released");
        let shared = after.get(&url("wss://shared.example")).unwrap();
        assert_eq!((shared.repos.len(), shared.root_events.len()), (1, 1));
        assert!(!shared.repos.contains(&coord(1)) && !shared.root_events.contains(&[5; 32]));
    }

    #[test]
    fn bootstrap_relay_listed_by_a_repo_keeps_its_items() {
        let idx = index(&[(1, &["wss://boot.example"], &[5])]);
        let t = derive_relay_targets(&idx, &url("wss://grasp.example"), &rules(1, false, &["wss://boot.example"]));
        assert_eq!(t.relays[&url("wss://boot.example")].root_events.len(), 1);
        assert_eq!(t.overflow, 0);
    }

    proptest! {
        #[test]
        fn cap_is_respected_and_every_wanted_relay_is_kept_or_refused(
            map in proptest::collection::vec((0u8..20, proptest::collection::btree_set(0u8..30, 0..5)), 0..20),
            max in 1usize..12,
        ) {
            let mut idx = RepoSyncIndex::new();
            for (n, relays) in &map {
                idx.upsert_repo(coord(*n), relays.iter().map(|r| url(&format!("wss://r{r}.example"))).collect());
            }
            let t = derive_relay_targets(&idx, &url("wss://r0.example"), &rules(max, false, &[]));
            prop_assert!(t.relays.len() <= max);
            prop_assert!(!t.relays.contains_key(&url("wss://r0.example")));
            let wanted: BTreeSet<RelayUrl> = idx.repos().flat_map(|(_, e)| e.relays.iter().cloned()).collect();
            for w in &wanted {
                prop_assert!(t.relays.contains_key(w) ^ t.refused.contains_key(w));
            }
            prop_assert_eq!(t.overflow, t.refused.values().filter(|r| **r == RefusedReason::OverLimit).count());
            // Deterministic: the same input gives the same answer.
            prop_assert_eq!(&t, &derive_relay_targets(&idx, &url("wss://r0.example"), &rules(max, false, &[])));
            // Each target serves exactly the repositories listing it and their root events.
            for (relay, items) in &t.relays {
                let mut expect = ItemSet::new();
                for (c, e) in idx.repos().filter(|(_, e)| e.relays.contains(relay)) {
                    expect.repos.insert(c.clone());
                    expect.root_events.extend(e.root_events.iter().copied());
                    expect.related.extend(e.related.iter().copied());
                }
                prop_assert_eq!(items, &expect);
            }
        }

        #[test]
        fn refusal_summary_counts_every_refusal_once_and_samples_a_few(
            relays in proptest::collection::btree_set(0u16..400, 0..120),
            max in 0usize..40,
            per_reason in 0usize..5,
        ) {
            let listed: Vec<String> = relays
                .iter()
                .map(|r| match r % 4 {
                    0 => format!("ws://10.0.{}.{}", r / 256, r % 256),
                    1 => format!("ws://127.0.0.{}", r % 256),
                    _ => format!("wss://r{r}.example"),
                })
                .collect();
            let refs: Vec<&str> = listed.iter().map(String::as_str).collect();
            let idx = index(&[(1, &refs, &[])]);
            let t = derive_relay_targets(&idx, &url("wss://grasp.example"), &rules(max, false, &[]));
            let s = summarize_refusals(&t, per_reason);
            prop_assert_eq!(s.total(), t.refused.len());
            prop_assert_eq!(s.over_limit(), t.overflow);
            prop_assert_eq!(s.targets, t.relays.len());
            prop_assert_eq!(s.by_reason.len(), RefusedReason::LABELS.len());
            for label in RefusedReason::LABELS {
                let sampled = s.sample.iter().filter(|(_, r)| r.label() == label).count();
                prop_assert_eq!(sampled, s.by_reason[label].min(per_reason));
            }
            for (u, r) in &s.sample {
                prop_assert_eq!(t.refused.get(u), Some(r));
            }
        }
    }
}
