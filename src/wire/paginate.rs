//! REQ pagination for historic sync when a relay does not speak NIP-77.
//!
//! One [`Paginator`] walks one filter backwards in time. Each page is a REQ with an explicit
//! `limit` (never above [`MAX_PAGE_LIMIT`], strfry's default `maxFilterLimit`) and an `until`.
//! Events are counted as they arrive on the wire. The next page uses `until = min created_at`
//! of the page, inclusive, because several events may share that second; ids already seen at
//! that boundary are dropped as duplicates.
//!
//! Relays cap `limit` silently (strfry at 500, many others at 100 or less), so a page with
//! fewer events than asked does **not** end the walk. The first page teaches the relay's cap:
//! when it brings fewer than asked (but at least [`MIN_PLAUSIBLE_CAP`]), later pages ask for
//! that many. The walk ends on an empty page. A page that brings no new id means the walk has
//! reached the boundary second's events again: it steps past that second once
//! (`until = min − 1`), and if that page was full, records the second as possibly truncated
//! (the relay may hold more events in it than one page can carry).
//!
//! A relay that caps below [`MIN_PLAUSIBLE_CAP`] (and below our limit) cannot be told from a
//! small result set; a second holding more events than its cap may then be cut silently.
//!
//! A relay known to serve a full page whenever it holds one (our own strfry host, asked for at
//! most its `maxFilterLimit`) is walked with [`Paginator::full_pages_served`]: there a short page
//! is the end, which saves the two confirming round trips per walk.

use std::collections::{BTreeSet, HashSet};

use crate::wire::filter::Filter;

/// Highest page size ever requested.
pub const MAX_PAGE_LIMIT: u64 = 500;
/// Default page size.
pub const DEFAULT_PAGE_LIMIT: u64 = 500;
/// A first page shorter than asked is taken as the relay's cap only from this many events on:
/// fewer is far more likely the whole result than a cap.
pub const MIN_PLAUSIBLE_CAP: u64 = 20;

/// What to do after a page ended (EOSE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageEnd {
    /// Send this filter as the next page.
    Next(Filter),
    /// The walk is over.
    Done(PaginationReport),
}

/// Summary of a finished walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaginationReport {
    /// Pages requested.
    pub pages: u32,
    /// Distinct events delivered.
    pub events: u64,
    /// Seconds that held at least `limit` events on their own: events there may have been
    /// missed (try NIP-77, or a narrower filter).
    pub truncated_seconds: BTreeSet<u64>,
    /// The relay answered outside the requested window (`created_at` above `until`) in a way
    /// that stopped progress; the walk was cut short.
    pub misbehaving: bool,
    /// The page size the relay was found to cap at, when it gave fewer than asked.
    pub relay_cap: Option<u64>,
}

impl PaginationReport {
    /// Whether the walk is known to have seen every event of its filter.
    pub fn is_complete(&self) -> bool {
        !self.truncated() && !self.misbehaving
    }

    /// Whether a second held a full page on its own, so events in it may have been missed.
    pub fn truncated(&self) -> bool {
        !self.truncated_seconds.is_empty()
    }
}

/// State of one paginated walk over one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paginator {
    /// Boxed: a paginator lives inside every open page subscription; keep it small.
    base: Box<Filter>,
    limit: u64,
    until: Option<u64>,
    /// Ids seen at `boundary_at` (the only second a later page can repeat).
    boundary_at: Option<u64>,
    boundary_ids: HashSet<String>,
    page_count: u64,
    page_new: u64,
    page_min: Option<u64>,
    report: PaginationReport,
    done: bool,
    /// The relay serves `limit` events per page whenever it holds that many.
    full_pages: bool,
}

impl Paginator {
    /// Starts a walk. `base` keeps its `since` and other conditions; its `until` (if any) is the
    /// first page's upper bound and its `limit` is replaced by `limit` clamped to 1..=500.
    pub fn new(base: Filter, limit: u64) -> Self {
        let until = base.until;
        let base = Box::new(Filter { until: None, limit: None, ..base });
        Paginator {
            base,
            limit: limit.clamp(1, MAX_PAGE_LIMIT),
            until,
            boundary_at: None,
            boundary_ids: HashSet::new(),
            page_count: 0,
            page_new: 0,
            page_min: None,
            report: PaginationReport::default(),
            done: false,
            full_pages: false,
        }
    }

    /// The relay is known to serve `limit` events per page whenever it holds that many (it does
    /// not cap below the limit asked): a page shorter than asked ends the walk, and no cap is
    /// learned.
    pub fn full_pages_served(mut self) -> Self {
        self.full_pages = true;
        self
    }

    /// The page size requested.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the walk is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Starts the first page and returns its filter (`None` once done). Later pages are started
    /// by [`Paginator::on_eose`], which returns their filter in [`PageEnd::Next`].
    pub fn start_page(&mut self) -> Option<Filter> {
        if self.done {
            return None;
        }
        self.page_count = 0;
        self.page_new = 0;
        self.page_min = None;
        self.report.pages += 1;
        Some(self.current_filter())
    }

    /// The current page's filter, without counting anything.
    pub fn current_filter(&self) -> Filter {
        let mut f = (*self.base).clone().limit(self.limit);
        f.until = self.until;
        f
    }

    /// An event arrived on the wire for the current page. Returns true when it is new (hand it
    /// on), false for a duplicate of an event already delivered by this walk.
    pub fn on_event(&mut self, id: &str, created_at: u64) -> bool {
        self.page_count += 1;
        self.page_min = Some(self.page_min.map_or(created_at, |m| m.min(created_at)));
        if self.boundary_at == Some(created_at) && self.boundary_ids.contains(id) {
            return false;
        }
        // Only the lowest second seen so far can come back on a later page.
        match self.boundary_at {
            Some(b) if created_at > b => {}
            Some(b) if created_at == b => {
                self.boundary_ids.insert(id.to_string());
            }
            _ => {
                self.boundary_at = Some(created_at);
                self.boundary_ids.clear();
                self.boundary_ids.insert(id.to_string());
            }
        }
        self.page_new += 1;
        self.report.events += 1;
        true
    }

    /// The current page ended (EOSE). Returns the next page's filter or the final report.
    pub fn on_eose(&mut self) -> PageEnd {
        if self.done {
            return PageEnd::Done(self.report.clone());
        }
        let Some(min) = self.page_min else {
            // An empty page: nothing at or below `until` is left.
            return self.finish();
        };
        let full = self.page_count >= self.limit;
        if self.full_pages && !full {
            return self.finish();
        }
        if self.report.pages == 1 && !full && self.page_count >= MIN_PLAUSIBLE_CAP {
            // The relay capped the first page: ask for what it gives.
            self.limit = self.page_count;
            self.report.relay_cap = Some(self.page_count);
        }
        let cap = self.until.unwrap_or(u64::MAX);
        let next = if self.page_new > 0 {
            // Inclusive: the boundary second may hold more events.
            min.min(cap)
        } else {
            // Nothing new: only the boundary second's known events came back. Step past it.
            if min > cap {
                // Only events above the requested `until`: the relay ignores it.
                self.report.misbehaving = true;
                return self.finish();
            }
            if full {
                // That second alone filled a page: it may hold more than we saw.
                self.report.truncated_seconds.insert(min);
            }
            match min.checked_sub(1) {
                Some(n) => n,
                None => return self.finish(),
            }
        };
        if self.base.since.is_some_and(|s| next < s) {
            return self.finish();
        }
        self.until = Some(next);
        match self.start_page() {
            Some(f) => PageEnd::Next(f),
            None => PageEnd::Done(self.report.clone()),
        }
    }

    fn finish(&mut self) -> PageEnd {
        self.done = true;
        PageEnd::Done(self.report.clone())
    }

    /// The report so far.
    pub fn report(&self) -> &PaginationReport {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A relay holding `(created_at, id)` pairs that answers like strfry: the newest `limit`
    /// events (silently capped at `relay_cap`) with `since ≤ created_at ≤ until`, newest first,
    /// ties in an order of its own.
    fn serve(store: &[(u64, String)], f: &Filter, relay_cap: u64) -> Vec<(u64, String)> {
        let mut hits: Vec<(u64, String)> = store
            .iter()
            .filter(|(t, _)| f.since.is_none_or(|s| *t >= s) && f.until.is_none_or(|u| *t <= u))
            .cloned()
            .collect();
        // Ties in an order that changes from page to page.
        let salt = |id: &String| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (id, f.until).hash(&mut h);
            h.finish()
        };
        hits.sort_by(|a, b| b.0.cmp(&a.0).then(salt(&a.1).cmp(&salt(&b.1))));
        hits.truncate(f.limit.unwrap_or(u64::MAX).min(relay_cap) as usize);
        hits
    }

    fn walk(store: &[(u64, String)], base: Filter, limit: u64) -> (Vec<String>, PaginationReport, u32) {
        walk_capped(store, base, limit, u64::MAX)
    }

    fn walk_capped(
        store: &[(u64, String)],
        base: Filter,
        limit: u64,
        relay_cap: u64,
    ) -> (Vec<String>, PaginationReport, u32) {
        walk_with(store, Paginator::new(base, limit), relay_cap)
    }

    fn walk_with(store: &[(u64, String)], mut p: Paginator, relay_cap: u64) -> (Vec<String>, PaginationReport, u32) {
        let mut got = Vec::new();
        let mut filter = p.start_page().unwrap();
        let mut requests = 1;
        loop {
            assert!(filter.limit.unwrap() <= MAX_PAGE_LIMIT);
            for (t, id) in serve(store, &filter, relay_cap) {
                if p.on_event(&id, t) {
                    got.push(id);
                }
            }
            match p.on_eose() {
                PageEnd::Next(f) => {
                    filter = f;
                    requests += 1;
                    assert!(requests < 10_000, "walk does not terminate");
                }
                PageEnd::Done(r) => return (got, r, requests),
            }
        }
    }

    fn store(times: &[u64]) -> Vec<(u64, String)> {
        times.iter().enumerate().map(|(i, t)| (*t, format!("{i:064x}"))).collect()
    }

    #[test]
    fn limit_is_explicit_and_never_above_500() {
        let mut p = Paginator::new(Filter::kinds([1]), 10_000);
        assert_eq!(p.start_page().unwrap().limit, Some(500));
        let mut p = Paginator::new(Filter::kinds([1]), 0);
        assert_eq!(p.start_page().unwrap().limit, Some(1));
    }

    #[test]
    fn pages_step_down_with_inclusive_until_and_deduplicate() {
        let s = store(&[10, 9, 9, 9, 8, 7, 7, 1]);
        let (got, report, requests) = walk(&s, Filter::kinds([1]), 4);
        assert_eq!(got.len(), s.len());
        assert!(report.is_complete());
        assert!(requests >= 2);
        assert_eq!(report.events, 8);
    }

    #[test]
    fn a_second_with_more_events_than_a_page_is_reported_as_truncated() {
        let s = store(&[20, 5, 5, 5, 5, 5, 3]);
        let (got, report, _) = walk(&s, Filter::kinds([1]), 3);
        assert_eq!(report.truncated_seconds, [5].into());
        assert!(!report.is_complete());
        assert!(got.contains(&s[6].1), "older events are still reached after the full second");
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
    }

    #[test]
    fn since_bounds_the_walk_and_empty_relay_ends_at_once() {
        let s = store(&[10, 9, 8, 7, 6, 5]);
        let (got, report, _) = walk(&s, Filter::kinds([1]).since(8), 2);
        assert_eq!(got.len(), 3);
        assert!(report.is_complete());
        let (got, report, requests) = walk(&[], Filter::kinds([1]), 5);
        assert!(got.is_empty());
        assert_eq!((report.pages, requests), (1, 1));
    }

    #[test]
    fn a_relay_ignoring_until_cannot_loop_forever() {
        let mut p = Paginator::new(Filter::kinds([1]), 2);
        let mut f = p.start_page();
        let mut rounds = 0;
        while let Some(_filter) = f {
            rounds += 1;
            assert!(rounds < 100);
            p.on_event("a", 100);
            p.on_event("b", 100);
            f = match p.on_eose() {
                PageEnd::Next(next) => Some(next),
                PageEnd::Done(r) => {
                    assert!(!r.is_complete());
                    None
                }
            };
        }
    }

    #[test]
    fn a_relay_capping_at_100_gives_all_1000_events_to_a_limit_of_500() {
        let times: Vec<u64> = (0..1_000).map(|i| 5_000 - i / 7).collect();
        let s = store(&times);
        let (got, report, requests) = walk_capped(&s, Filter::kinds([1]), 500, 100);
        assert_eq!(got.len(), 1_000);
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.relay_cap, Some(100), "the cap is learned from the first page");
        assert!(requests <= 13, "pages of ~100 plus the end: {requests}");
    }

    #[test]
    fn after_the_first_page_the_learned_cap_is_asked_for() {
        let s = store(&(0..300).map(|i| 1_000 - i).collect::<Vec<_>>());
        let mut p = Paginator::new(Filter::kinds([1]), 500);
        let first = p.start_page().unwrap();
        assert_eq!(first.limit, Some(500));
        for (t, id) in serve(&s, &first, 50) {
            p.on_event(&id, t);
        }
        let PageEnd::Next(second) = p.on_eose() else { panic!("a short page is not the end") };
        assert_eq!((second.limit, second.until), (Some(50), Some(951)));
    }

    #[test]
    fn a_small_first_page_is_not_taken_for_a_cap_and_the_walk_ends_on_an_empty_page() {
        let s = store(&[30, 20, 10]);
        let (got, report, requests) = walk_capped(&s, Filter::kinds([1]), 500, 500);
        assert_eq!(got.len(), 3);
        assert!(report.is_complete());
        assert_eq!(report.relay_cap, None);
        // 3 events; `until = 10` brings only the known one; `until = 9` is empty.
        assert_eq!(requests, 3);
    }

    #[test]
    fn a_full_second_under_a_silent_cap_is_reported_as_truncated() {
        // 150 events in one second behind a relay that caps at 100.
        let mut times = vec![900; 150];
        times.extend(800..850);
        let s = store(&times);
        let (got, report, _) = walk_capped(&s, Filter::kinds([1]), 500, 100);
        assert_eq!(report.truncated_seconds, [900].into());
        assert!(report.truncated() && !report.is_complete());
        assert!(got.len() >= 150, "at least 100 of the crowded second");
        let older: HashSet<&String> = s[150..].iter().map(|(_, id)| id).collect();
        assert!(older.iter().all(|id| got.contains(id)), "every older event is still reached");
    }

    #[test]
    fn on_a_relay_serving_full_pages_a_short_page_is_the_end() {
        let s = store(&[30, 20, 10]);
        let (got, report, requests) = walk_with(&s, Paginator::new(Filter::kinds([1]), 500).full_pages_served(), 500);
        assert_eq!((got.len(), requests), (3, 1));
        assert!(report.is_complete());
        let times: Vec<u64> = (0..1_200).map(|i| 5_000 - i / 7).collect();
        let s = store(&times);
        let (got, report, requests) = walk_with(&s, Paginator::new(Filter::kinds([1]), 500).full_pages_served(), 500);
        assert_eq!(got.len(), 1_200);
        assert!(report.is_complete() && report.relay_cap.is_none(), "{report:?}");
        assert_eq!(requests, 3, "500, 500 and the short last page");
    }

    proptest! {
        #[test]
        fn on_a_relay_serving_full_pages_every_event_arrives_once_or_truncation_is_reported(
            times in proptest::collection::vec(0u64..40, 0..200),
            limit in 1u64..30,
        ) {
            let s = store(&times);
            let (got, report, _) = walk_with(&s, Paginator::new(Filter::kinds([1]), limit).full_pages_served(), u64::MAX);
            let unique: HashSet<&String> = got.iter().collect();
            prop_assert_eq!(unique.len(), got.len(), "an event was delivered twice");
            let wanted: HashSet<&String> = s.iter().map(|(_, id)| id).collect();
            if unique != wanted {
                prop_assert!(report.truncated(), "events missed silently");
            }
        }

        #[test]
        fn every_event_arrives_exactly_once_or_truncation_is_reported(
            times in proptest::collection::vec(0u64..40, 0..200),
            limit in 1u64..30,
            since in proptest::option::of(0u64..20),
        ) {
            let s = store(&times);
            let mut base = Filter::kinds([1]);
            base.since = since;
            let (got, report, _) = walk(&s, base, limit);
            let unique: HashSet<&String> = got.iter().collect();
            prop_assert_eq!(unique.len(), got.len(), "an event was delivered twice");
            let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
            let wanted: HashSet<&String> = s
                .iter()
                .filter(|(t, _)| since.is_none_or(|x| *t >= x))
                .map(|(t, id)| {
                    *per_second.entry(*t).or_default() += 1;
                    id
                })
                .collect();
            prop_assert!(unique.is_subset(&wanted));
            let crowded = per_second.values().any(|n| *n >= limit);
            if !crowded {
                prop_assert_eq!(&unique, &wanted, "missed events without a crowded second");
                prop_assert!(report.is_complete());
            } else if unique != wanted {
                prop_assert!(!report.truncated_seconds.is_empty(), "events missed silently");
            }
            for t in &report.truncated_seconds {
                prop_assert!(per_second.get(t).copied().unwrap_or(0) >= limit);
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn behind_a_silent_cap_nothing_is_missed_unless_reported(
            times in proptest::collection::vec(0u64..60, 0..400),
            limit in 1u64..80,
            relay_cap in 1u64..80,
        ) {
            let s = store(&times);
            let (got, report, requests) = walk_capped(&s, Filter::kinds([1]), limit, relay_cap);
            let unique: HashSet<&String> = got.iter().collect();
            prop_assert_eq!(unique.len(), got.len(), "an event was delivered twice");
            let wanted: HashSet<&String> = s.iter().map(|(_, id)| id).collect();
            prop_assert!(unique.is_subset(&wanted));
            let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
            for (t, _) in &s {
                *per_second.entry(*t).or_default() += 1;
            }
            let served = limit.min(relay_cap);
            let knowable = relay_cap >= limit || relay_cap >= MIN_PLAUSIBLE_CAP;
            if knowable && unique != wanted {
                prop_assert!(report.truncated(), "events missed silently");
            }
            // A page can only hold what the relay serves, and never more than everything.
            let crowded = per_second.values().any(|n| *n >= served.min(s.len() as u64));
            if !crowded {
                prop_assert_eq!(&unique, &wanted, "missed events without a crowded second");
                prop_assert!(report.is_complete());
            }
            prop_assert!(u64::from(requests) <= 2 * (s.len() as u64) + 2, "{} requests", requests);
        }
    }
}
