//! Items as the planner handles them: the filters of a batch, the compact form saved for a
//! restart, and the order of the hot set.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::engine::layers::{self, ReqLimits};
use crate::engine::relay_task::Item;
use crate::engine::store::LocalStore;
use crate::policy::Id;
use crate::wire::Filter;

/// Filters of one layer chunk (L1 announcements, L2 repo-tagged, L3 root-tagged, L4 related).
pub(crate) fn item_filters(items: &[Item], chunk: usize) -> Vec<Filter> {
    let mut out = Vec::new();
    let mut repos = BTreeSet::new();
    let mut roots = BTreeSet::new();
    let mut related = BTreeSet::new();
    for item in items {
        match item {
            Item::Announcements => out.extend(layers::l1_filters()),
            Item::Repo(c) => {
                repos.insert(c.clone());
            }
            Item::Root(id) => {
                roots.insert(*id);
            }
            Item::Related(id) => {
                related.insert(*id);
            }
        }
    }
    let l2 = layers::l2_filters(&repos, chunk);
    if !l2.unfilterable.is_empty() {
        tracing::warn!(count = l2.unfilterable.len(), "repository coordinates too long to filter on");
    }
    out.extend(l2.filters);
    out.extend(layers::l3_filters(&roots, chunk));
    out.extend(layers::l4_filters(&related, chunk));
    out
}

/// A compact, stable 64-bit name of an item for the state file.
pub(crate) fn item_digest(item: &Item) -> u64 {
    use sha2::Digest;
    match item {
        Item::Announcements => 0,
        Item::Repo(c) => {
            let h = sha2::Sha256::digest(format!("repo:{c}").as_bytes());
            u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
        }
        Item::Root(id) => u64::from_be_bytes(id[..8].try_into().expect("8 bytes")),
        // An event is a root or a related event, never both; flipped bits keep the two apart.
        Item::Related(id) => !u64::from_be_bytes(id[..8].try_into().expect("8 bytes")),
    }
}

/// Confirmed items as sorted 16-hex-digit digests, concatenated.
pub(crate) fn encode_confirmed(items: &BTreeSet<Item>) -> String {
    let mut d: Vec<u64> = items.iter().map(item_digest).collect();
    d.sort_unstable();
    d.dedup();
    d.iter().map(|x| format!("{x:016x}")).collect()
}

/// Reads [`encode_confirmed`] back; anything unreadable yields nothing (a fresh start then).
pub(crate) fn decode_confirmed(s: &str) -> Option<HashSet<u64>> {
    if s.len() % 16 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 16).map(|i| u64::from_str_radix(&s[i * 16..i * 16 + 16], 16).ok()).collect()
}

/// Ranks events (roots, related events) newest first by their `created_at` in the local store;
/// events the store does not hold yet count as the newest.
pub(crate) fn rank_newest(store: &dyn LocalStore, roots: &[Id]) -> Vec<Id> {
    if roots.is_empty() {
        return Vec::new();
    }
    let filter = Filter { ids: roots.iter().map(hex::encode).collect(), ..Default::default() };
    let known: HashMap<Id, u64> =
        store.negentropy_items(&filter).unwrap_or_default().into_iter().map(|(t, id)| (id, t)).collect();
    let mut ranked = roots.to_vec();
    ranked.sort_by_key(|id| std::cmp::Reverse(known.get(id).copied().unwrap_or(u64::MAX)));
    ranked
}

/// REQ limits of this planner.
pub(crate) fn req_limits(frame: usize) -> ReqLimits {
    ReqLimits { max_frame_bytes: frame, ..ReqLimits::default() }
}
