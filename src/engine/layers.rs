//! Filter builders for the three sync layers, and packing filters into REQs within a relay's
//! limits and our subscription budget.
//!
//! - L1 announcements: `{"kinds":[30617]}`.
//! - L2 repo-tagged: kind 30618 with `#d` = our repos' identifiers; `#a`, `#A`, `#q` = our repo
//!   coordinates (one tag letter per filter: strfry refuses filters with more than two tags).
//! - L3 root-tagged: `#e`, `#E`, `#q` = our root event ids.
//!
//! Values are chunked, at most [`MAX_VALUES_PER_FILTER`] per filter. Live filters carry
//! `limit: 0`; historic ones an optional `since`. strfry neither indexes nor accepts tag filter
//! values above 255 bytes ([`MAX_TAG_VALUE_BYTES`]): such values are left out and reported.

use std::collections::BTreeSet;

use crate::engine::pending::BatchSpec;
use crate::engine::targets::ItemSet;
use crate::policy::event::{KIND_ANNOUNCEMENT, KIND_STATE};
use crate::policy::{Id, RepoCoord};
use crate::remote::Filter;

/// Most values in one tag filter.
pub const MAX_VALUES_PER_FILTER: usize = 100;
/// Longest tag value strfry accepts in a filter (its `MAX_INDEXED_TAG_VAL_SIZE`).
pub const MAX_TAG_VALUE_BYTES: usize = 255;
/// Longest subscription id the packer budgets for.
pub const MAX_SUB_ID_BYTES: usize = 64;

/// The sync layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// L1: repository announcements (kind 30617), all of them.
    Announcements,
    /// L2: events tagging our repositories, and their state (30618).
    Repos,
    /// L3: events tagging our root events.
    Roots,
}

/// Tag letters used for repository coordinates (L2).
pub const REPO_TAGS: [char; 3] = ['a', 'A', 'q'];
/// Tag letters used for root event ids (L3).
pub const ROOT_TAGS: [char; 3] = ['e', 'E', 'q'];

/// Limits of one REQ frame. Defaults follow strfry: `maxReqFilterSize` 200 filters per REQ;
/// frames kept at 60,000 bytes, well under `maxWebsocketPayloadSize` 131072; 100 values per
/// tag filter (never more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReqLimits {
    pub max_filters_per_req: usize,
    pub max_frame_bytes: usize,
    pub max_values_per_filter: usize,
}

impl Default for ReqLimits {
    fn default() -> Self {
        ReqLimits { max_filters_per_req: 200, max_frame_bytes: 60_000, max_values_per_filter: MAX_VALUES_PER_FILTER }
    }
}

/// Filters for a set of items, and the items that cannot be expressed as filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    pub filters: Vec<Filter>,
    /// Repositories whose coordinate is longer than [`MAX_TAG_VALUE_BYTES`]: no `#a/#A/#q`
    /// filter can name them (their `#d` is still used when short enough).
    pub unfilterable: BTreeSet<RepoCoord>,
}

/// L1 filters (no `since`, no `limit`).
pub fn l1_filters() -> Vec<Filter> {
    vec![Filter::kinds([KIND_ANNOUNCEMENT])]
}

fn chunked(values: Vec<String>, chunk: usize, make: impl Fn(Vec<String>) -> Filter) -> Vec<Filter> {
    let chunk = chunk.max(1);
    values.chunks(chunk).map(|c| make(c.to_vec())).collect()
}

/// L2 filters for `repos`, chunked by `chunk` values (clamped to 1..=100).
pub fn l2_filters(repos: &BTreeSet<RepoCoord>, chunk: usize) -> Built {
    let chunk = chunk.clamp(1, MAX_VALUES_PER_FILTER);
    let mut out = Built::default();
    let ds: BTreeSet<String> = repos.iter().map(|r| r.d.clone()).filter(|d| d.len() <= MAX_TAG_VALUE_BYTES).collect();
    out.filters.extend(chunked(ds.into_iter().collect(), chunk, |c| Filter::kinds([KIND_STATE]).tag('d', c)));
    let mut coords = Vec::new();
    for r in repos {
        let c = r.to_string();
        if c.len() <= MAX_TAG_VALUE_BYTES {
            coords.push(c);
        } else {
            out.unfilterable.insert(r.clone());
        }
    }
    for letter in REPO_TAGS {
        out.filters.extend(chunked(coords.clone(), chunk, |c| Filter::default().tag(letter, c)));
    }
    out
}

/// L3 filters for `roots`, chunked by `chunk` values (clamped to 1..=100).
pub fn l3_filters(roots: &BTreeSet<Id>, chunk: usize) -> Vec<Filter> {
    let chunk = chunk.clamp(1, MAX_VALUES_PER_FILTER);
    let ids: Vec<String> = roots.iter().map(hex::encode).collect();
    let mut out = Vec::new();
    for letter in ROOT_TAGS {
        out.extend(chunked(ids.clone(), chunk, |c| Filter::default().tag(letter, c)));
    }
    out
}

/// L2 and L3 filters for `items`, `chunk` values per filter (clamped to 1..=100).
pub fn item_filters(items: &ItemSet, chunk: usize) -> Built {
    let mut built = l2_filters(&items.repos, chunk);
    built.filters.extend(l3_filters(&items.root_events, chunk));
    built
}

/// Live form: `limit: 0` (only new events), no time bounds.
pub fn live(filters: &[Filter]) -> Vec<Filter> {
    filters.iter().map(|f| Filter { since: None, until: None, ..f.clone() }.limit(0)).collect()
}

/// Historic form: optional `since`, no `limit` (the REQ paginator or negentropy adds its own).
pub fn historic(filters: &[Filter], since: Option<u64>) -> Vec<Filter> {
    filters.iter().map(|f| Filter { since, until: None, limit: None, ..f.clone() }).collect()
}

/// Bytes of `["REQ","<sub id>",f1,…,fn]` with a subscription id of [`MAX_SUB_ID_BYTES`].
pub fn req_frame_bytes(filters: &[Filter]) -> usize {
    let overhead = r#"["REQ","",]"#.len() + MAX_SUB_ID_BYTES;
    overhead + filters.iter().map(|f| f.json_len() + 1).sum::<usize>()
}

/// A filter too big for a REQ frame on its own (the builders here never make one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a filter of {bytes} bytes does not fit a REQ frame of at most {max} bytes")]
pub struct FilterTooLarge {
    pub bytes: usize,
    pub max: usize,
}

/// Packs filters into REQs (first fit, in order): each REQ holds at most
/// `max_filters_per_req` filters and its frame at most `max_frame_bytes`.
pub fn pack(filters: &[Filter], limits: &ReqLimits) -> Result<Vec<Vec<Filter>>, FilterTooLarge> {
    let mut packer = Packer { limits, slots: usize::MAX, reqs: Vec::new(), size: 0 };
    for (f, len) in with_lengths(filters.to_vec()) {
        if !packer.place_all(&[(f, len)]) {
            return Err(FilterTooLarge { bytes: req_frame_bytes(&[]) + len, max: limits.max_frame_bytes });
        }
    }
    Ok(packer.reqs)
}

/// The wire filters of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchFilters {
    /// Live REQs (each one subscription, filters with `limit: 0`); empty unless `spec.live`.
    pub live: Vec<Vec<Filter>>,
    /// Historic filters with the batch's `since` and no `limit`, one per NEG-OPEN or per
    /// paginated REQ; empty unless `spec.historic`.
    pub historic: Vec<Filter>,
    /// Repositories no tag filter can name (their items are still confirmed when the batch ends).
    pub unfilterable: BTreeSet<RepoCoord>,
}

/// Builds the filters of a batch: L1 for [`Layer::Announcements`], otherwise L2/L3 for its items.
pub fn filters_for_batch(spec: &BatchSpec, limits: &ReqLimits) -> BatchFilters {
    let built = match spec.layer {
        Layer::Announcements => Built { filters: l1_filters(), unfilterable: BTreeSet::new() },
        Layer::Repos | Layer::Roots => item_filters(&spec.items, limits.max_values_per_filter),
    };
    let live_reqs =
        if spec.live { pack(&live(&built.filters), limits).expect("builder filters fit a frame") } else { Vec::new() };
    let hist = if spec.historic { historic(&built.filters, spec.since) } else { Vec::new() };
    BatchFilters { live: live_reqs, historic: hist, unfilterable: built.unfilterable }
}

/// How a relay's subscription budget is split: slots reserved for historic work (a third,
/// at least one) and the rest for live REQs.
pub fn historic_slots(max_subscriptions: usize) -> usize {
    (max_subscriptions / 3).max(1).min(max_subscriptions.saturating_sub(1))
}

/// Live REQ slots in a budget of `max_subscriptions` (at least one).
pub fn live_slots(max_subscriptions: usize) -> usize {
    max_subscriptions.saturating_sub(historic_slots(max_subscriptions)).max(1)
}

/// A live subscription set for one relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivePlan {
    /// One entry per REQ (subscription); every filter has `limit: 0`.
    pub reqs: Vec<Vec<Filter>>,
    /// Items that did not fit the slots (repositories kept before root events).
    pub uncovered: ItemSet,
    /// Repositories no tag filter can name (see [`Built::unfilterable`]).
    pub unfilterable: BTreeSet<RepoCoord>,
}

impl LivePlan {
    /// Items covered by the plan.
    pub fn covered(&self, items: &ItemSet) -> ItemSet {
        items.minus(&self.uncovered)
    }
}

/// Items in blocks of at most `chunk` (repositories first, then root events), each with its
/// live filters.
fn live_blocks(items: &ItemSet, chunk: usize) -> (Vec<(ItemSet, Vec<Filter>)>, BTreeSet<RepoCoord>) {
    let chunk = chunk.clamp(1, MAX_VALUES_PER_FILTER);
    let mut blocks = Vec::new();
    let mut unfilterable = BTreeSet::new();
    let repos: Vec<&RepoCoord> = items.repos.iter().collect();
    for block in repos.chunks(chunk) {
        let set: BTreeSet<RepoCoord> = block.iter().map(|r| (*r).clone()).collect();
        let built = l2_filters(&set, chunk);
        unfilterable.extend(built.unfilterable);
        blocks.push((ItemSet { repos: set, root_events: BTreeSet::new() }, live(&built.filters)));
    }
    let roots: Vec<Id> = items.root_events.iter().copied().collect();
    for block in roots.chunks(chunk) {
        let set: BTreeSet<Id> = block.iter().copied().collect();
        let filters = live(&l3_filters(&set, chunk));
        blocks.push((ItemSet { repos: BTreeSet::new(), root_events: set }, filters));
    }
    (blocks, unfilterable)
}

/// First-fit packer state that can test a group of filters before placing it.
struct Packer<'a> {
    limits: &'a ReqLimits,
    slots: usize,
    reqs: Vec<Vec<Filter>>,
    size: usize,
}

impl Packer<'_> {
    /// Places all `filters` (with their serialised lengths) or none; returns whether placed.
    fn place_all(&mut self, filters: &[(Filter, usize)]) -> bool {
        let overhead = req_frame_bytes(&[]);
        let (mut n, mut count, mut size) = (self.reqs.len(), self.reqs.last().map_or(0, Vec::len), self.size);
        for (_, len) in filters {
            if n == 0 || count >= self.limits.max_filters_per_req || size + len > self.limits.max_frame_bytes {
                if overhead + len > self.limits.max_frame_bytes {
                    return false;
                }
                n += 1;
                count = 0;
                size = overhead;
            }
            count += 1;
            size += len;
        }
        if n > self.slots {
            return false;
        }
        for (f, len) in filters {
            let full = self.reqs.last().is_none_or(|last| {
                last.len() >= self.limits.max_filters_per_req || self.size + len > self.limits.max_frame_bytes
            });
            if full {
                self.reqs.push(Vec::new());
                self.size = overhead;
            }
            self.reqs.last_mut().expect("pushed above").push(f.clone());
            self.size += len;
        }
        true
    }
}

fn with_lengths(filters: Vec<Filter>) -> Vec<(Filter, usize)> {
    filters
        .into_iter()
        .map(|f| {
            let len = f.json_len() + 1;
            (f, len)
        })
        .collect()
}

/// Densest live set for `items` (plus L1 when `with_l1`) in at most `slots` REQs (at least
/// one). Items go in blocks of up to `max_values_per_filter` (≤ 100), repositories first; once a block does not fit, it
/// and every later block are reported as `uncovered`.
pub fn plan_live(items: &ItemSet, with_l1: bool, slots: usize, limits: &ReqLimits) -> LivePlan {
    let mut packer = Packer { limits, slots: slots.max(1), reqs: Vec::new(), size: 0 };
    if with_l1 {
        packer.place_all(&with_lengths(live(&l1_filters())));
    }
    let (blocks, unfilterable) = live_blocks(items, limits.max_values_per_filter);
    let mut uncovered = ItemSet::new();
    let mut full = false;
    for (block, filters) in blocks {
        if full || !packer.place_all(&with_lengths(filters)) {
            full = true;
            uncovered.extend(&block);
        }
    }
    LivePlan { reqs: packer.reqs, uncovered, unfilterable }
}

/// Whether adding `new_reqs` live REQs to `open_live` open ones passes the live budget.
pub fn needs_consolidation(open_live: usize, new_reqs: usize, max_subscriptions: usize) -> bool {
    open_live + new_reqs > live_slots(max_subscriptions)
}

/// A rebuilt live set and the historic catch-up it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consolidation {
    pub live: LivePlan,
    /// Run historic sync with this `since` for every covered item (and L1): closing the old
    /// subscriptions and opening new ones leaves a gap.
    pub catch_up_since: u64,
}

/// Rebuilds one relay's live set from all its items (confirmed, pending and new) with the
/// fewest, largest filters. Close every open subscription first, then send `live.reqs` and
/// historic filters with `since = catch_up_since` (= `now − margin`).
pub fn consolidate(
    items: &ItemSet,
    now: u64,
    margin_secs: u64,
    max_subscriptions: usize,
    limits: &ReqLimits,
) -> Consolidation {
    Consolidation {
        live: plan_live(items, true, live_slots(max_subscriptions), limits),
        catch_up_since: now.saturating_sub(margin_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn repo(n: u16, dlen: usize) -> RepoCoord {
        let mut pk = [0u8; 32];
        pk[..2].copy_from_slice(&n.to_be_bytes());
        RepoCoord { pubkey: pk, d: format!("{n}{}", "x".repeat(dlen)) }
    }

    fn root(n: u16) -> Id {
        let mut id = [7u8; 32];
        id[..2].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn items(repos: u16, roots: u16) -> ItemSet {
        ItemSet { repos: (0..repos).map(|n| repo(n, 8)).collect(), root_events: (0..roots).map(root).collect() }
    }

    #[test]
    fn layer_filters_have_the_documented_shape() {
        assert_eq!(l1_filters()[0].to_json(), serde_json::json!({"kinds":[30617]}));
        let built = l2_filters(&[repo(1, 3)].into(), 100);
        assert_eq!(built.filters.len(), 4);
        assert_eq!(built.filters[0], Filter::kinds([30618]).tag('d', ["1xxx".to_string()]));
        for (f, letter) in built.filters[1..].iter().zip(REPO_TAGS) {
            assert_eq!(f.tags.keys().collect::<Vec<_>>(), [&letter]);
            assert!(f.kinds.is_empty(), "repo-tagged filters have no kind restriction");
        }
        let l3 = l3_filters(&[root(1)].into(), 100);
        assert_eq!(l3.iter().map(|f| *f.tags.keys().next().unwrap()).collect::<Vec<_>>(), ROOT_TAGS);
        let live = live(&l3);
        assert!(live.iter().all(|f| f.limit == Some(0) && f.since.is_none()));
        let hist = historic(&l3, Some(99));
        assert!(hist.iter().all(|f| f.limit.is_none() && f.since == Some(99)));
    }

    #[test]
    fn over_long_coordinates_are_reported_not_sent() {
        let long = repo(1, 200);
        let built = l2_filters(&[long.clone(), repo(2, 1)].into(), 100);
        assert_eq!(built.unfilterable, [long].into());
        for f in &built.filters {
            for values in f.tags.values() {
                assert!(values.iter().all(|v| v.len() <= MAX_TAG_VALUE_BYTES));
            }
        }
        assert_eq!(built.filters[0].tags[&'d'].len(), 2, "the long repo's d still fits");
    }

    #[test]
    fn packing_respects_frame_and_filter_count() {
        let built = item_filters(&items(1000, 3000), 100);
        let limits = ReqLimits::default();
        let reqs = pack(&live(&built.filters), &limits).unwrap();
        assert!(reqs.len() > 1);
        for r in &reqs {
            assert!(req_frame_bytes(r) <= 60_000 && r.len() <= 200);
        }
        let small = ReqLimits { max_filters_per_req: 2, ..limits };
        assert!(pack(&l3_filters(&[root(1)].into(), 100), &small).unwrap().iter().all(|r| r.len() <= 2));
        let tiny = ReqLimits { max_frame_bytes: 150, ..limits };
        let err = pack(&l3_filters(&[root(1), root(2)].into(), 100), &tiny).unwrap_err();
        assert!(err.bytes > 150 && err.max == 150);
    }

    #[test]
    fn budget_split_leaves_room_for_history() {
        assert_eq!((live_slots(15), historic_slots(15)), (10, 5));
        assert_eq!((live_slots(2), historic_slots(2)), (1, 1));
        assert!(needs_consolidation(9, 2, 15));
        assert!(!needs_consolidation(9, 1, 15));
    }

    #[test]
    fn consolidation_fits_the_budget_and_names_the_catch_up() {
        let all = items(500, 20_000);
        let c = consolidate(&all, 10_000, 120, 15, &ReqLimits::default());
        assert_eq!(c.catch_up_since, 9_880);
        assert!(c.live.reqs.len() <= live_slots(15));
        assert!(!c.live.uncovered.is_empty(), "20,000 roots exceed ten 60 kB REQs");
        assert!(c.live.uncovered.repos.is_empty(), "repositories are kept before root events");
        let small = consolidate(&items(10, 10), 500, 120, 15, &ReqLimits::default());
        assert_eq!(small.live.reqs.len(), 1);
        assert!(small.live.uncovered.is_empty());
        assert_eq!(small.live.reqs[0][0], Filter::kinds([30617]).limit(0));
    }

    #[test]
    fn batch_filters_follow_the_batch_spec() {
        use crate::engine::pending::Method;
        let spec = BatchSpec {
            layer: Layer::Announcements,
            items: ItemSet::new(),
            live: true,
            historic: true,
            since: Some(5),
            method: Method::Req,
        };
        let f = filters_for_batch(&spec, &ReqLimits::default());
        assert_eq!(f.live, vec![vec![Filter::kinds([30617]).limit(0)]]);
        assert_eq!(f.historic, vec![Filter::kinds([30617]).since(5)]);
        let spec = BatchSpec { layer: Layer::Roots, items: items(0, 250), live: false, since: None, ..spec };
        let f = filters_for_batch(&spec, &ReqLimits::default());
        assert!(f.live.is_empty());
        assert_eq!(f.historic.len(), 9, "three tag letters, three chunks of at most 100");
    }

    /// (tag letter, value) → number of filters naming it.
    fn occurrences(filters: &[Filter]) -> BTreeMap<(char, String), usize> {
        let mut m = BTreeMap::new();
        for f in filters {
            for (letter, values) in &f.tags {
                for v in values {
                    *m.entry((*letter, v.clone())).or_insert(0) += 1;
                }
            }
        }
        m
    }

    proptest! {
        #[test]
        fn every_item_is_in_exactly_one_chunk_per_tag(
            repos in proptest::collection::btree_set((0u16..2000, 0usize..250), 0..300),
            roots in proptest::collection::btree_set(0u16..5000, 0..400),
            chunk in 1usize..150,
        ) {
            let repos: BTreeSet<RepoCoord> = repos.into_iter().map(|(n, l)| repo(n, l)).collect();
            let roots: BTreeSet<Id> = roots.into_iter().map(root).collect();
            let built = l2_filters(&repos, chunk);
            let mut filters = built.filters.clone();
            filters.extend(l3_filters(&roots, chunk));
            let occ = occurrences(&filters);
            for r in &repos {
                let c = r.to_string();
                for letter in REPO_TAGS {
                    let n = occ.get(&(letter, c.clone())).copied().unwrap_or(0);
                    prop_assert_eq!(n, usize::from(!built.unfilterable.contains(r)));
                }
                if r.d.len() <= MAX_TAG_VALUE_BYTES {
                    prop_assert_eq!(occ.get(&('d', r.d.clone())).copied(), Some(1));
                }
            }
            for id in &roots {
                for letter in ROOT_TAGS {
                    prop_assert_eq!(occ.get(&(letter, hex::encode(id))).copied(), Some(1));
                }
            }
            for f in &filters {
                prop_assert_eq!(f.tags.len(), 1);
                prop_assert!(f.tags.values().all(|v| !v.is_empty() && v.len() <= chunk.min(100)));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn live_plans_respect_limits_and_budget(
            n_repos in 0u16..600,
            n_roots in 0u16..4000,
            budget in 2usize..20,
            max_filters in 1usize..250,
        ) {
            let all = items(n_repos, n_roots);
            let limits = ReqLimits { max_filters_per_req: max_filters, ..ReqLimits::default() };
            let slots = live_slots(budget);
            let plan = plan_live(&all, true, slots, &limits);
            prop_assert!(plan.reqs.len() <= slots);
            for r in &plan.reqs {
                prop_assert!(r.len() <= max_filters && req_frame_bytes(r) <= limits.max_frame_bytes);
                prop_assert!(r.iter().all(|f| f.limit == Some(0)));
            }
            // Covered items are all named; uncovered ones are not.
            let covered = plan.covered(&all);
            let occ = occurrences(&plan.reqs.concat());
            for id in &all.root_events {
                let named = occ.contains_key(&('e', hex::encode(id)));
                prop_assert_eq!(named, covered.root_events.contains(id));
            }
            prop_assert_eq!(covered.len() + plan.uncovered.len(), all.len());
        }
    }
}
