//! REQ pagination for historic sync when a relay does not speak NIP-77.
//!
//! One [`Paginator`] walks one filter backwards in time. Each page is a REQ with an explicit
//! `limit` (never above [`MAX_PAGE_LIMIT`], strfry's default `maxFilterLimit`, which it clamps to
//! silently) and an `until`. Events are counted as they arrive on the wire. The next page uses
//! `until = min created_at` of the page, inclusive, because several events may share that second;
//! ids already seen at that boundary are dropped as duplicates.
//!
//! A page that brings fewer than `limit` events ends the walk. A page that brings nothing new
//! means the boundary second alone holds at least `limit` events: the walk steps past it
//! (`until = min − 1`) and records that second as possibly truncated.

use std::collections::{BTreeSet, HashSet};

use crate::remote::filter::Filter;

/// Highest page size ever requested.
pub const MAX_PAGE_LIMIT: u64 = 500;
/// Default page size.
pub const DEFAULT_PAGE_LIMIT: u64 = 500;

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
}

impl PaginationReport {
    /// Whether events may have been missed.
    pub fn is_complete(&self) -> bool {
        self.truncated_seconds.is_empty() && !self.misbehaving
    }
}

/// State of one paginated walk over one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paginator {
    base: Filter,
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
}

impl Paginator {
    /// Starts a walk. `base` keeps its `since` and other conditions; its `until` (if any) is the
    /// first page's upper bound and its `limit` is replaced by `limit` clamped to 1..=500.
    pub fn new(base: Filter, limit: u64) -> Self {
        let until = base.until;
        let base = Filter { until: None, limit: None, ..base };
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
        }
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
        let mut f = self.base.clone().limit(self.limit);
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
            return self.finish();
        };
        if self.page_count < self.limit {
            return self.finish();
        }
        let cap = self.until.unwrap_or(u64::MAX);
        let next = if self.page_new > 0 {
            // Inclusive: the boundary second may hold more events.
            min.min(cap)
        } else {
            // Nothing new: the boundary second alone fills a page. Step past it.
            if min > cap {
                // Only events above the requested `until`: the relay ignores it.
                self.report.misbehaving = true;
                return self.finish();
            }
            self.report.truncated_seconds.insert(min);
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
    /// events with `since ≤ created_at ≤ until`, newest first, ties in an order of its own.
    fn serve(store: &[(u64, String)], f: &Filter) -> Vec<(u64, String)> {
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
        hits.truncate(f.limit.unwrap_or(u64::MAX) as usize);
        hits
    }

    fn walk(store: &[(u64, String)], base: Filter, limit: u64) -> (Vec<String>, PaginationReport, u32) {
        let mut p = Paginator::new(base, limit);
        let mut got = Vec::new();
        let mut filter = p.start_page().unwrap();
        let mut requests = 1;
        loop {
            assert!(filter.limit.unwrap() <= MAX_PAGE_LIMIT);
            for (t, id) in serve(store, &filter) {
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

    proptest! {
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
}
