//! Filter builders for the three sync layers, and packing filters into REQs within a relay's
//! limits and our subscription budget.
//!
//! - L1 announcements and users' GRASP server lists: `{"kinds":[10317,30617]}`.
//! - L2 repo-tagged: kind 30618 with `#d` = our repos' identifiers; `#a`, `#A`, `#q` = our repo
//!   coordinates (one tag letter per filter: strfry refuses filters with more than two tags).
//! - L3 root-tagged: `#e`, `#E`, `#q` = our root event ids.
//! - L4 related: `{"kinds":[5,7],"#e":[…]}` = deletions and reactions naming our other accepted
//!   events (comments, status, PR updates, replies, reactions).
//!
//! Values are chunked, at most [`MAX_VALUES_PER_FILTER`] per filter. Live filters carry
//! `limit: 0`; historic ones an optional `since`. strfry neither indexes nor accepts tag filter
//! values above 255 bytes ([`MAX_TAG_VALUE_BYTES`]): such values are left out and reported.

use std::collections::BTreeSet;

use crate::policy::event::{KIND_ANNOUNCEMENT, KIND_DELETION, KIND_GRASP_LIST, KIND_REACTION, KIND_STATE};
use crate::policy::{Id, RepoCoord};
use crate::wire::Filter;

/// Most values in one tag filter.
pub const MAX_VALUES_PER_FILTER: usize = 100;
/// Longest tag value strfry accepts in a filter (its `MAX_INDEXED_TAG_VAL_SIZE`).
pub const MAX_TAG_VALUE_BYTES: usize = 255;
/// Longest subscription id the packer budgets for.
pub const MAX_SUB_ID_BYTES: usize = 64;

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
    vec![Filter::kinds([KIND_ANNOUNCEMENT, KIND_GRASP_LIST])]
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

/// Kinds asked for about related events (L4): deletions and reactions.
pub const RELATED_KINDS: [u64; 2] = [KIND_DELETION, KIND_REACTION];

/// A filter for deletions and reactions naming these ids.
pub fn related_filter(ids: Vec<String>) -> Filter {
    Filter::kinds(RELATED_KINDS).tag('e', ids)
}

/// L4 filters for `related` event ids, chunked by `chunk` values (clamped to 1..=100).
pub fn l4_filters(related: &BTreeSet<Id>, chunk: usize) -> Vec<Filter> {
    let chunk = chunk.clamp(1, MAX_VALUES_PER_FILTER);
    let ids: Vec<String> = related.iter().map(hex::encode).collect();
    chunked(ids, chunk, related_filter)
}

/// Live form: `limit: 0` (only new events), no time bounds.
pub fn live(filters: &[Filter]) -> Vec<Filter> {
    filters.iter().map(|f| Filter { since: None, until: None, ..f.clone() }.limit(0)).collect()
}

/// Bytes of `["REQ","<sub id>",f1,…,fn]` with a subscription id of [`MAX_SUB_ID_BYTES`].
pub fn req_frame_bytes(filters: &[Filter]) -> usize {
    let overhead = r#"["REQ","",]"#.len() + MAX_SUB_ID_BYTES;
    overhead + filters.iter().map(|f| f.json_len() + 1).sum::<usize>()
}

/// First-fit packer state that can test a group of filters before placing it.
pub(crate) struct Packer<'a> {
    pub(crate) limits: &'a ReqLimits,
    pub(crate) slots: usize,
    pub(crate) reqs: Vec<Vec<Filter>>,
    pub(crate) size: usize,
}

impl Packer<'_> {
    /// Places all `filters` (with their serialised lengths) or none; returns whether placed.
    pub(crate) fn place_all(&mut self, filters: &[(Filter, usize)]) -> bool {
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

pub(crate) fn with_lengths(filters: Vec<Filter>) -> Vec<(Filter, usize)> {
    filters
        .into_iter()
        .map(|f| {
            let len = f.json_len() + 1;
            (f, len)
        })
        .collect()
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

    #[test]
    fn layer_filters_have_the_documented_shape() {
        assert_eq!(l1_filters()[0].to_json(), serde_json::json!({"kinds":[10317, 30617]}));
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
}
