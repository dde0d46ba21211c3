//! Live coverage in tiers (DESIGN §8), with a bounded number of subscriptions whatever the
//! number of repositories and root events:
//!
//! 1. broad filters by kind for the kinds only git uses, and
//! 2. NIP-22 comments whose `K` tag names a git root kind;
//! 3. `#a/#A/#q` and `#e/#E/#q` filters for a **hot set** (repositories, then the newest root
//!    events) packed after them into a fixed share of the budget ([`live_slots`]); the cold
//!    rest is covered by the planner's periodic negentropy sweep.
//!
//! What arrives on the broad filters and is not about our repositories is dropped here
//! ([`Relevance`]), counted, and never held against the relay.

use std::collections::HashSet;

use crate::engine::layers::{live, with_lengths, Packer, ReqLimits, MAX_TAG_VALUE_BYTES, MAX_VALUES_PER_FILTER};
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

/// The live REQs: the broad filters (tiers 1 and 2) first, then tier 3 for the hot set —
/// repositories (in the order given) within half the slots (rounded up), then root events (in
/// the order given: newest first) in what is left; blocks of up to 100 values, at most `slots`
/// REQs (at least one), each within the frame limit. Returns the REQs and how many
/// repositories and roots they name.
pub(crate) fn live_reqs(
    repos: &[RepoCoord],
    roots: &[Id],
    slots: usize,
    limits: &ReqLimits,
) -> (Vec<Vec<Filter>>, usize, usize) {
    pack_live(true, repos, roots, slots.max(1), limits)
}

/// More hot REQs (no broad filters) for items that joined the target, in at most `slots`.
pub(crate) fn extra_reqs(
    repos: &[RepoCoord],
    roots: &[Id],
    slots: usize,
    limits: &ReqLimits,
) -> (Vec<Vec<Filter>>, usize, usize) {
    pack_live(false, repos, roots, slots, limits)
}

fn pack_live(
    broad: bool,
    repos: &[RepoCoord],
    roots: &[Id],
    slots: usize,
    limits: &ReqLimits,
) -> (Vec<Vec<Filter>>, usize, usize) {
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
    packer.slots = slots;
    let mut covered_roots = 0;
    for block in roots.chunks(chunk) {
        let ids: Vec<String> = block.iter().map(hex::encode).collect();
        if !packer.place_all(&with_lengths(tag_filters(['e', 'E', 'q'], &ids))) {
            break;
        }
        covered_roots += block.len();
    }
    (packer.reqs, covered_repos, covered_roots)
}

/// Whether an event is about a relay's target: every announcement and GRASP server list (the policy
/// decides whether it names this service); anything tagging one of
/// its repositories (`a`, `A`, `q`) or root events (`e`, `E`, `q`); state (30618) of one of
/// its repository identifiers.
#[derive(Debug, Default)]
pub(crate) struct Relevance {
    coords: HashSet<String>,
    ds: HashSet<String>,
    roots: HashSet<Id>,
}

impl Relevance {
    pub(crate) fn new(t: &RelayTarget) -> Self {
        Relevance {
            coords: t.repos.iter().map(|r| r.to_string()).collect(),
            ds: t.repos.iter().map(|r| r.d.clone()).collect(),
            roots: t.root_events.iter().copied().collect(),
        }
    }

    pub(crate) fn has_root(&self, id: &Id) -> bool {
        self.roots.contains(id)
    }

    pub(crate) fn is_relevant(&self, note: &Note) -> bool {
        if note.kind == KIND_ANNOUNCEMENT || note.kind == KIND_GRASP_LIST {
            return true;
        }
        note.tags.iter().filter(|t| t.len() >= 2).any(|t| {
            let v = t[1].as_str();
            match t[0].as_str() {
                "a" | "A" => self.coords.contains(v),
                "e" | "E" => parse_hex32(v).is_some_and(|id| self.roots.contains(&id)),
                "q" => self.coords.contains(v) || parse_hex32(v).is_some_and(|id| self.roots.contains(&id)),
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
        let (reqs, _, covered) = live_reqs(&[], &roots(100_000), 5, &limits);
        assert!(reqs.len() <= 5);
        assert!(reqs.iter().all(|r| req_frame_bytes(r) <= 60_000));
        assert!(covered > 500 && covered < 100_000, "{covered}");
        assert_eq!(reqs[0][..2], broad_filters()[..], "the broad filters come first");
        let (reqs, _, covered) = live_reqs(&[], &roots(150), 5, &limits);
        assert_eq!((reqs.len(), covered), (1, 150));
        let (reqs, _, covered) = live_reqs(&[], &roots(10), 0, &limits);
        assert_eq!((reqs.len(), covered), (1, 10), "one REQ carries broad and hot filters");
    }
}
