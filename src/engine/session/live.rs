//! Live coverage in tiers (DESIGN §8), with a bounded number of subscriptions whatever the
//! number of repositories and root events:
//!
//! 1. broad filters by kind for the kinds only git uses, and
//! 2. NIP-22 comments whose `K` tag names a git root kind;
//! 3. `#a/#A/#q` and `#e/#E/#q` filters for a **hot set** (repositories, then the newest root
//!    events, then deletions and reactions of the newest related events: `{"kinds":[5,7],"#e":…}`)
//!    packed after them into a fixed share of the budget ([`live_slots`]); the cold rest is
//!    covered by the planner's periodic negentropy sweep.
//!
//! What arrives on the broad filters and is not about our repositories is dropped here
//! ([`Relevance`]), counted, and never held against the relay.

use std::collections::HashSet;
use std::sync::Arc;

use crate::engine::layers::{
    live, related_filter, with_lengths, Packer, ReqLimits, MAX_TAG_VALUE_BYTES, MAX_VALUES_PER_FILTER, RELATED_KINDS,
};
use crate::engine::relay_task::RelayTarget;
use crate::policy::event::{
    parse_hex32, KIND_ANNOUNCEMENT, KIND_GRASP_LIST, KIND_ISSUE, KIND_PATCH, KIND_PR, KIND_STATE,
};
use crate::policy::{Id, Note, RepoCoord};
use crate::wire::Filter;

/// Kinds only git uses (NIP-34): announcements, state, patches, pull requests (and their
/// updates), issues, status events, users' GRASP server lists. One broad filter covers them for
/// every repository.
pub(crate) const GIT_KINDS: [u64; 11] =
    [KIND_ANNOUNCEMENT, KIND_STATE, KIND_PATCH, KIND_PR, 1619, KIND_ISSUE, 1630, 1631, 1632, 1633, KIND_GRASP_LIST];
/// NIP-22 comments.
pub(crate) const KIND_COMMENT: u64 = 1111;

/// Tiers 1 and 2 (one REQ, `limit: 0`).
pub(crate) fn broad_filters() -> Vec<Filter> {
    let roots = [KIND_PATCH, KIND_PR, KIND_ISSUE].iter().map(u64::to_string);
    live(&[Filter::kinds(GIT_KINDS), Filter::kinds([KIND_COMMENT]).tag('K', roots)])
}

/// Subscriptions of a budget given to the hot set: a third of what is left after the broad
/// one, none below a budget of 4.
pub(crate) fn hot_slots(budget: usize) -> usize {
    if budget >= 4 {
        (budget - 1) / 3
    } else {
        0
    }
}

/// Subscriptions reserved for live coverage: the broad one and the hot share.
pub(crate) fn live_slots(budget: usize) -> usize {
    1 + hot_slots(budget)
}

/// Subscriptions left for historic work (at least one).
pub(crate) fn historic_slots(budget: usize) -> usize {
    budget.saturating_sub(live_slots(budget)).max(1)
}

fn tag_filters(letters: [char; 3], values: &[String]) -> Vec<Filter> {
    live(&letters.iter().map(|l| Filter::default().tag(*l, values.iter().cloned())).collect::<Vec<_>>())
}

/// What the hot set may name, each in the order it is taken (roots and related events newest
/// first).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HotCandidates<'a> {
    pub repos: &'a [RepoCoord],
    pub roots: &'a [Id],
    pub related: &'a [Id],
}

/// Live REQs and how many of each candidate list they name (a prefix of each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LivePack {
    pub reqs: Vec<Vec<Filter>>,
    pub repos: usize,
    pub roots: usize,
    pub related: usize,
}

/// The live REQs: the broad filters (tiers 1 and 2) first, then tier 3 for the hot set —
/// repositories within half the slots (rounded up), root events within all but a quarter of
/// them (rounded down; all of them when there are no related events), related events in what
/// is left; blocks of up to 100 values, at most
/// `slots` REQs (at least one), each within the frame limit.
pub(crate) fn live_reqs(c: HotCandidates<'_>, slots: usize, limits: &ReqLimits) -> LivePack {
    pack_live(true, c, slots.max(1), limits)
}

/// More hot REQs (no broad filters) for items that joined the target, in at most `slots`.
pub(crate) fn extra_reqs(c: HotCandidates<'_>, slots: usize, limits: &ReqLimits) -> LivePack {
    pack_live(false, c, slots, limits)
}

fn pack_live(broad: bool, c: HotCandidates<'_>, slots: usize, limits: &ReqLimits) -> LivePack {
    let HotCandidates { repos, roots, related } = c;
    let chunk = limits.max_values_per_filter.clamp(1, MAX_VALUES_PER_FILTER);
    let mut packer = Packer { limits, slots: slots.div_ceil(2), reqs: Vec::new(), size: 0 };
    if broad {
        let placed = packer.place_all(&with_lengths(broad_filters()));
        debug_assert!(placed, "the broad filters fit any frame");
    }
    let mut covered_repos = 0;
    // Values are encoded block by block: only what fits is ever built.
    for block in repos.chunks(chunk) {
        let coords: Vec<String> =
            block.iter().map(|r| r.to_string()).filter(|c| c.len() <= MAX_TAG_VALUE_BYTES).collect();
        if !coords.is_empty() && !packer.place_all(&with_lengths(tag_filters(['a', 'A', 'q'], &coords))) {
            break;
        }
        covered_repos += block.len();
    }
    // A quarter of the slots is kept for related events, when there are any.
    packer.slots = if related.is_empty() { slots } else { slots - slots / 4 };
    let mut covered_roots = 0;
    for block in roots.chunks(chunk) {
        let ids: Vec<String> = block.iter().map(hex::encode).collect();
        if !packer.place_all(&with_lengths(tag_filters(['e', 'E', 'q'], &ids))) {
            break;
        }
        covered_roots += block.len();
    }
    packer.slots = slots;
    let mut covered_related = 0;
    for block in related.chunks(chunk) {
        let ids: Vec<String> = block.iter().map(hex::encode).collect();
        if !packer.place_all(&with_lengths(live(&[related_filter(ids)]))) {
            break;
        }
        covered_related += block.len();
    }
    LivePack { reqs: packer.reqs, repos: covered_repos, roots: covered_roots, related: covered_related }
}

/// Whether an event is about a relay's target: every announcement and GRASP server list (the policy
/// decides whether it names this service); anything tagging one of
/// its repositories (`a`, `A`, `q`) or root events (`e`, `E`, `q`); state (30618) of one of
/// its repository identifiers; a deletion or reaction naming one of its related events (`e`).
/// Root and related events are looked up in the shared target itself (no copy of them).
#[derive(Debug, Default)]
pub(crate) struct Relevance {
    coords: HashSet<String>,
    ds: HashSet<String>,
    target: Arc<RelayTarget>,
}

impl Relevance {
    pub(crate) fn new(t: &Arc<RelayTarget>) -> Self {
        Relevance {
            coords: t.repos.iter().map(|r| r.to_string()).collect(),
            ds: t.repos.iter().map(|r| r.d.clone()).collect(),
            target: t.clone(),
        }
    }

    pub(crate) fn has_root(&self, id: &Id) -> bool {
        self.target.root_events.contains(id)
    }

    fn has_related(&self, id: &Id) -> bool {
        self.target.related.contains(id)
    }

    pub(crate) fn is_relevant(&self, note: &Note) -> bool {
        if note.kind == KIND_ANNOUNCEMENT || note.kind == KIND_GRASP_LIST {
            return true;
        }
        let about_related = RELATED_KINDS.contains(&note.kind);
        note.tags.iter().filter(|t| t.len() >= 2).any(|t| {
            let v = t[1].as_str();
            match t[0].as_str() {
                "a" | "A" => self.coords.contains(v),
                "e" => parse_hex32(v).is_some_and(|id| self.has_root(&id) || (about_related && self.has_related(&id))),
                "E" => parse_hex32(v).is_some_and(|id| self.has_root(&id)),
                "q" => self.coords.contains(v) || parse_hex32(v).is_some_and(|id| self.has_root(&id)),
                "d" => note.kind == KIND_STATE && self.ds.contains(v),
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layers::req_frame_bytes;

    fn roots(n: u32) -> Vec<Id> {
        (0..n)
            .map(|i| {
                let mut id = [9u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect()
    }

    #[test]
    fn broad_filters_name_kinds_not_ids() {
        let f = broad_filters();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.limit == Some(0) && f.ids.is_empty()));
        assert_eq!(f[1].to_json(), serde_json::json!({"kinds":[1111],"#K":["1617","1618","1621"],"limit":0}));
    }

    #[test]
    fn budget_split_leaves_room_for_history() {
        assert_eq!((live_slots(15), historic_slots(15)), (5, 10));
        assert_eq!((live_slots(2), historic_slots(2)), (1, 1));
        assert_eq!((live_slots(3), historic_slots(3)), (1, 2));
        for b in 2..200 {
            assert!(live_slots(b) + historic_slots(b) <= b);
        }
    }

    #[test]
    fn the_hot_set_fits_its_slots_whatever_the_number_of_roots() {
        let limits = ReqLimits::default();
        let many = roots(100_000);
        let pack = live_reqs(HotCandidates { roots: &many, ..Default::default() }, 5, &limits);
        let (reqs, covered) = (pack.reqs, pack.roots);
        assert!(reqs.len() <= 5);
        assert!(reqs.iter().all(|r| req_frame_bytes(r) <= 60_000));
        assert!(covered > 500 && covered < 100_000, "{covered}");
        assert_eq!(reqs[0][..2], broad_filters()[..], "the broad filters come first");
        let few = roots(150);
        let pack = live_reqs(HotCandidates { roots: &few, ..Default::default() }, 5, &limits);
        assert_eq!((pack.reqs.len(), pack.roots), (1, 150));
        let few = roots(10);
        let pack = live_reqs(HotCandidates { roots: &few, ..Default::default() }, 0, &limits);
        assert_eq!((pack.reqs.len(), pack.roots), (1, 10), "one REQ carries broad and hot filters");
    }

    #[test]
    fn related_events_keep_a_share_of_the_hot_set_beside_many_roots() {
        let limits = ReqLimits::default();
        let (many_roots, many_related) = (roots(100_000), roots(200_000)[100_000..].to_vec());
        let c = HotCandidates { repos: &[], roots: &many_roots, related: &many_related };
        let pack = live_reqs(c, 5, &limits);
        assert!(pack.reqs.len() <= 5);
        assert!(pack.reqs.iter().all(|r| req_frame_bytes(r) <= 60_000 && r.len() <= 200));
        assert!(pack.roots > 500 && pack.related > 500, "{} roots, {} related", pack.roots, pack.related);
        assert!(pack.related < many_related.len(), "the cold rest is left to the sweep");
        let related: Vec<&Filter> = pack.reqs.iter().flatten().filter(|f| f.kinds.contains(&5)).collect();
        assert!(related.iter().all(|f| f.kinds == [5, 7].into() && f.tags.keys().eq([&'e']) && f.limit == Some(0)));
    }
}
