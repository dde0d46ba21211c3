//! The "accepted view": what the host holds that the acceptance rules care about, and which of it
//! is accepted now.
//!
//! "Accepted" is one definition, whatever the order events arrived in (DESIGN.md §4):
//! - the host keeps the newest announcement per author and `d` (older copies are ignored) and
//!   drops what its author deleted (kind 5: `e` tags by id, `a` tags for every version of that
//!   coordinate up to the deletion's `created_at`);
//! - an announcement is accepted (*anchored*) when its author is in the maintainer closure of the
//!   held announcements with its `d` that list this service: the authors of those, the
//!   maintainers they name, the maintainers named by those maintainers' announcements, and so on;
//! - a state event is accepted when its `d` has anchored announcements and its author is in
//!   that closure;
//! - any other event (deletions aside) is accepted when it references an anchored repository, or
//!   an accepted event, or an accepted event references it — the least fixpoint.
//!
//! [`AcceptedSet::record`] keeps this true as events arrive: additions propagate through the
//! references of what they unlock, and anything that can make accepted events lose their support
//! (a deletion, a replacement that drops this service or a maintainer) recomputes the fixpoint over
//! everything held. `accepted::build` reaches the same view from a host's store; a property test
//! checks that both agree after every step.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::accept::maintainer_closure;
pub use super::announced::{select_announced_relays, AnnouncedRelays, IgnoredRelays, MAX_ANNOUNCED_RELAYS};
use super::event::{is_root_kind, Facts, Id, RepoCoord, KIND_ANNOUNCEMENT, KIND_DELETION, KIND_GRASP_LIST, KIND_STATE};
use super::url::RelayUrl;

/// An accepted repository announcement (the newest one per author and `d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub id: Id,
    pub pubkey: Id,
    pub created_at: u64,
    pub maintainers: Vec<Id>,
    /// Whether its `relays` tag lists this service (as opposed to accepted by the maintainer chain
    /// or as an owner's update).
    pub lists_service: bool,
    /// Its `relays` tag values, normalised and deduplicated, at most [`MAX_ANNOUNCED_RELAYS`]
    /// (see [`select_announced_relays`]).
    pub relays: Vec<RelayUrl>,
    /// The `relays` tag values that were not kept, by reason.
    pub ignored_relays: IgnoredRelays,
}

/// Deleted `(event id, author)` pairs remembered for events not seen yet, at most.
pub const MAX_DELETED_IDS: usize = 200_000;

/// Read access to what has been accepted.
pub trait AcceptedView {
    /// Anchored announcements with this `d` (at most one per author).
    fn announcements(&self, d: &str) -> &[Announcement];
    /// An event with this id is accepted.
    fn has_event(&self, id: &Id) -> bool;
    /// An accepted event references this id in an `e`, `E` or `q` tag.
    fn is_referenced(&self, id: &Id) -> bool;
    /// The newest deletion (its `created_at`) of this coordinate by its author: announcements up
    /// to that time are deleted.
    fn deleted_until(&self, coord: &RepoCoord) -> Option<u64>;
    /// `author` deleted the event with this id.
    fn is_deleted(&self, id: &Id, author: &Id) -> bool;

    /// An anchored announcement exists for this coordinate.
    fn has_repo(&self, coord: &RepoCoord) -> bool {
        self.announcements(&coord.d).iter().any(|a| a.pubkey == coord.pubkey)
    }
}

/// What one [`AcceptedSet::record`] changed, for whoever derives from the view (the repo index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// `d` values whose anchored announcements changed (added, removed, relays or maintainers).
    pub ds: BTreeSet<String>,
    /// The accepted set was recomputed from everything held: derive again from scratch.
    pub recomputed: bool,
    /// Ids that became accepted (when not recomputed).
    pub accepted: Vec<Id>,
    /// Ids that stopped being accepted (when not recomputed).
    pub removed: Vec<Id>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.ds.is_empty() && !self.recomputed && self.accepted.is_empty() && self.removed.is_empty()
    }

    /// Adds `other` (a later change) to this one.
    pub fn merge(&mut self, other: Change) {
        self.ds.extend(other.ds);
        self.recomputed |= other.recomputed;
        self.accepted.extend(other.accepted);
        self.removed.extend(other.removed);
    }
}

/// What is kept of a held event: its references.
#[derive(Debug, Clone)]
struct Held {
    pubkey: Id,
    kind: u64,
    d: Option<String>,
    repo_refs: Box<[RepoCoord]>,
    id_refs: Box<[Id]>,
}

impl Held {
    /// Kinds accepted through references (rule 4): not announcements, states or deletions.
    fn by_reference(&self) -> bool {
        !matches!(self.kind, KIND_ANNOUNCEMENT | KIND_STATE | KIND_DELETION)
    }
}

/// The accepted view kept in memory, updated with every event the host takes.
#[derive(Debug, Default, Clone)]
pub struct AcceptedSet {
    /// Newest held, undeleted announcement per author, by `d` (anchored or not).
    held_anns: HashMap<String, Vec<Announcement>>,
    /// Per `d`: the anchored announcements.
    anchored: HashMap<String, Vec<Announcement>>,
    /// Per `d`: the maintainer closure of the announcements that list this service.
    maintainers: HashMap<String, HashSet<Id>>,
    /// Every held event (deletions aside), accepted or not.
    held: HashMap<Id, Held>,
    /// Newest held state event per (author, `d`): `(created_at, id)`.
    states: HashMap<(Id, String), (u64, Id)>,
    accepted: HashSet<Id>,
    /// Id → how many accepted events reference it.
    referenced: HashMap<Id, u32>,
    /// Id → held events that reference it.
    referrers: HashMap<Id, Vec<Id>>,
    /// Coordinate → held events that reference it.
    coord_referrers: HashMap<RepoCoord, Vec<Id>>,
    /// Coordinate → `created_at` of its author's newest deletion of it.
    tombstones: HashMap<RepoCoord, u64>,
    /// `(id, author)` deleted by that author.
    deleted: HashSet<(Id, Id)>,
    deleted_order: VecDeque<(Id, Id)>,
}

fn newer(a: (u64, Id), b: (u64, Id)) -> bool {
    (a.0, std::cmp::Reverse(a.1)) > (b.0, std::cmp::Reverse(b.1))
}

impl AcceptedSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event the host holds (or is about to: the policy accepted it). Whether it is
    /// accepted is decided here by the rules above; `lists_service` matters for announcements
    /// only. Returns what changed.
    pub fn record(&mut self, facts: &Facts, lists_service: bool) -> Change {
        let mut ch = Change::default();
        if facts.kind == KIND_DELETION {
            self.record_deletion(facts, &mut ch);
            return ch;
        }
        // A user's GRASP server list is accepted on its own and makes nothing else acceptable.
        if facts.kind == KIND_GRASP_LIST {
            return ch;
        }
        if self.held.contains_key(&facts.id) || self.deleted.contains(&(facts.id, facts.pubkey)) {
            return ch;
        }
        match facts.kind {
            KIND_ANNOUNCEMENT => self.record_announcement(facts, lists_service, &mut ch),
            KIND_STATE => self.record_state(facts, &mut ch),
            _ => {
                self.insert_held(facts);
                if self.qualifies(&facts.id) {
                    self.propagate(vec![facts.id], &mut ch);
                }
            }
        }
        ch
    }

    fn insert_held(&mut self, f: &Facts) {
        for t in &f.id_refs {
            self.referrers.entry(*t).or_default().push(f.id);
        }
        for c in &f.repo_refs {
            self.coord_referrers.entry(c.clone()).or_default().push(f.id);
        }
        let held = Held {
            pubkey: f.pubkey,
            kind: f.kind,
            d: f.d.clone(),
            repo_refs: f.repo_refs.clone().into_boxed_slice(),
            id_refs: f.id_refs.clone().into_boxed_slice(),
        };
        self.held.insert(f.id, held);
    }

    /// Forgets a held event. Returns whether accepted events may have lost their support.
    fn remove_held(&mut self, id: &Id, ch: &mut Change) -> bool {
        let Some(h) = self.held.remove(id) else { return false };
        for t in h.id_refs.iter() {
            unlink(&mut self.referrers, t, id);
        }
        for c in h.repo_refs.iter() {
            unlink(&mut self.coord_referrers, c, id);
        }
        if h.kind == KIND_STATE {
            if let Some(d) = &h.d {
                let key = (h.pubkey, d.clone());
                if self.states.get(&key).is_some_and(|(_, s)| s == id) {
                    self.states.remove(&key);
                }
            }
        }
        if !self.accepted.remove(id) {
            return false;
        }
        ch.removed.push(*id);
        for t in h.id_refs.iter() {
            if let Some(n) = self.referenced.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    self.referenced.remove(t);
                }
            }
        }
        // Others may have been accepted through it, by reference either way: its accepted
        // referrers, and what it references unless that stands on its own (an announcement or
        // state, or an event that tags a repository).
        let referrer_accepted = self.referrers.get(id).into_iter().flatten().any(|r| self.accepted.contains(r));
        referrer_accepted
            || h.id_refs.iter().any(|t| {
                self.accepted.contains(t)
                    && self
                        .held
                        .get(t)
                        .is_some_and(|th| th.by_reference() && !th.repo_refs.iter().any(|c| self.has_repo(c)))
            })
    }

    fn record_announcement(&mut self, f: &Facts, lists_service: bool, ch: &mut Change) {
        let (Some(d), Some(tags)) = (&f.d, &f.announcement) else { return };
        let coord = RepoCoord { pubkey: f.pubkey, d: d.clone() };
        if self.tombstones.get(&coord).is_some_and(|&t| f.created_at <= t) {
            return;
        }
        let list = self.held_anns.entry(d.clone()).or_default();
        let old = list.iter().position(|a| a.pubkey == f.pubkey);
        if let Some(i) = old {
            if !newer((f.created_at, f.id), (list[i].created_at, list[i].id)) {
                return;
            }
        }
        let announced = select_announced_relays(&tags.relays, MAX_ANNOUNCED_RELAYS);
        let ann = Announcement {
            id: f.id,
            pubkey: f.pubkey,
            created_at: f.created_at,
            maintainers: tags.maintainers.clone(),
            lists_service,
            relays: announced.relays,
            ignored_relays: announced.ignored,
        };
        let mut unsupported = false;
        let replaced = match old {
            Some(i) => Some(std::mem::replace(&mut list[i], ann)),
            None => {
                list.push(ann);
                None
            }
        };
        if let Some(r) = replaced {
            unsupported |= self.remove_held(&r.id, ch);
        }
        self.insert_held(f);
        self.refresh_anchors(d, unsupported, ch);
    }

    fn record_state(&mut self, f: &Facts, ch: &mut Change) {
        let Some(d) = &f.d else { return };
        let key = (f.pubkey, d.clone());
        let mut unsupported = false;
        if let Some(&(at, old)) = self.states.get(&key) {
            if !newer((f.created_at, f.id), (at, old)) {
                return;
            }
            unsupported = self.remove_held(&old, ch);
        }
        self.states.insert(key, (f.created_at, f.id));
        self.insert_held(f);
        if unsupported {
            self.recompute(ch);
        } else if self.state_accepted(&f.pubkey, d) {
            self.propagate(vec![f.id], ch);
        }
    }

    fn record_deletion(&mut self, f: &Facts, ch: &mut Change) {
        let mut unsupported = false;
        let mut ds: BTreeSet<String> = BTreeSet::new();
        for c in f.repo_refs.iter().filter(|c| c.pubkey == f.pubkey) {
            let t = self.tombstones.entry(c.clone()).or_insert(f.created_at);
            *t = (*t).max(f.created_at);
            let until = *t;
            if let Some(list) = self.held_anns.get_mut(&c.d) {
                if let Some(i) = list.iter().position(|a| a.pubkey == c.pubkey && a.created_at <= until) {
                    let gone = list.swap_remove(i);
                    if list.is_empty() {
                        self.held_anns.remove(&c.d);
                    }
                    unsupported |= self.remove_held(&gone.id, ch);
                    ds.insert(c.d.clone());
                }
            }
        }
        for id in &f.id_refs {
            if self.deleted.insert((*id, f.pubkey)) {
                self.deleted_order.push_back((*id, f.pubkey));
                if self.deleted_order.len() > MAX_DELETED_IDS {
                    if let Some(old) = self.deleted_order.pop_front() {
                        self.deleted.remove(&old);
                    }
                }
            }
            let Some(h) = self.held.get(id) else { continue };
            if h.pubkey != f.pubkey {
                continue;
            }
            if h.kind == KIND_ANNOUNCEMENT {
                if let Some(d) = h.d.clone() {
                    if let Some(list) = self.held_anns.get_mut(&d) {
                        list.retain(|a| a.id != *id);
                        if list.is_empty() {
                            self.held_anns.remove(&d);
                        }
                    }
                    ds.insert(d);
                }
            }
            unsupported |= self.remove_held(id, ch);
        }
        for d in &ds {
            self.refresh_anchors(d, unsupported, ch);
            unsupported = false;
        }
        if unsupported {
            self.recompute(ch);
        }
    }

    /// Recomputes the anchored announcements and maintainers of `d`; recomputes the accepted
    /// set when something lost its support (`unsupported`, or a maintainer or repository dropped
    /// out), else propagates what was added.
    fn refresh_anchors(&mut self, d: &str, unsupported: bool, ch: &mut Change) {
        let held: &[Announcement] = self.held_anns.get(d).map(Vec::as_slice).unwrap_or(&[]);
        let maint = maintainer_closure(held, held.iter().filter(|a| a.lists_service).map(|a| a.pubkey));
        let anchored: Vec<Announcement> = held.iter().filter(|a| maint.contains(&a.pubkey)).cloned().collect();
        let old_anchored = self.anchored.get(d).map(Vec::as_slice).unwrap_or(&[]);
        if old_anchored != anchored.as_slice() {
            ch.ds.insert(d.to_string());
        }
        let old_maint = self.maintainers.get(d);
        let lost = old_maint.is_some_and(|m| !m.is_subset(&maint))
            || old_anchored.iter().any(|a| !anchored.iter().any(|b| b.pubkey == a.pubkey));
        let fresh_anns: Vec<Id> = anchored.iter().map(|a| a.id).filter(|id| !self.accepted.contains(id)).collect();
        let new_maint: Vec<Id> = maint.iter().filter(|m| !old_maint.is_some_and(|o| o.contains(*m))).copied().collect();
        let new_coords: Vec<RepoCoord> = anchored
            .iter()
            .filter(|a| !old_anchored.iter().any(|b| b.pubkey == a.pubkey))
            .map(|a| RepoCoord { pubkey: a.pubkey, d: d.to_string() })
            .collect();
        let lost_anns: Vec<Announcement> =
            old_anchored.iter().filter(|a| !anchored.iter().any(|b| b.pubkey == a.pubkey)).cloned().collect();
        let lost_maint: Vec<Id> =
            old_maint.map(|m| m.iter().filter(|x| !maint.contains(*x)).copied().collect()).unwrap_or_default();
        let had_anchor = !old_anchored.is_empty();
        if anchored.is_empty() {
            self.anchored.remove(d);
        } else {
            self.anchored.insert(d.to_string(), anchored);
        }
        if maint.is_empty() {
            self.maintainers.remove(d);
        } else {
            self.maintainers.insert(d.to_string(), maint);
        }
        if unsupported || (lost && self.anything_stood_on(d, &lost_anns, &lost_maint)) {
            self.recompute(ch);
            return;
        }
        // What dropped out supported nothing else (e.g. a repository nobody wrote to).
        for a in &lost_anns {
            if self.accepted.remove(&a.id) {
                ch.removed.push(a.id);
            }
        }
        // Growth: the new anchored announcements, states by new maintainers (or all, when `d`
        // just gained its first anchor), events referencing the new repositories.
        let mut seeds = fresh_anns;
        let authors: Vec<Id> =
            if had_anchor { new_maint } else { self.maintainers.get(d).into_iter().flatten().copied().collect() };
        for a in authors {
            if let Some(&(_, id)) = self.states.get(&(a, d.to_string())) {
                seeds.push(id);
            }
        }
        for c in &new_coords {
            let refs = self.coord_referrers.get(c).into_iter().flatten();
            seeds.extend(refs.filter(|id| self.held.get(*id).is_some_and(Held::by_reference)).copied());
        }
        self.propagate(seeds, ch);
    }

    /// Whether accepted events may stand on these announcements that stopped being anchored or on
    /// these maintainers of `d` that dropped out.
    fn anything_stood_on(&self, d: &str, lost_anns: &[Announcement], lost_maint: &[Id]) -> bool {
        let accepted_in = |v: Option<&Vec<Id>>| v.into_iter().flatten().any(|r| self.accepted.contains(r));
        lost_anns.iter().any(|a| {
            let coord = RepoCoord { pubkey: a.pubkey, d: d.to_string() };
            accepted_in(self.coord_referrers.get(&coord))
                || accepted_in(self.referrers.get(&a.id))
                || self.held.get(&a.id).is_some_and(|h| !h.id_refs.is_empty())
        }) || lost_maint
            .iter()
            .any(|m| self.states.get(&(*m, d.to_string())).is_some_and(|(_, id)| self.accepted.contains(id)))
    }

    fn state_accepted(&self, author: &Id, d: &str) -> bool {
        self.anchored.contains_key(d) && self.maintainers.get(d).is_some_and(|m| m.contains(author))
    }

    /// Whether a held event of rule 4 is accepted given what is accepted now.
    fn qualifies(&self, id: &Id) -> bool {
        let Some(h) = self.held.get(id) else { return false };
        h.by_reference()
            && (h.repo_refs.iter().any(|c| self.has_repo(c))
                || h.id_refs.iter().any(|t| self.accepted.contains(t))
                || self.referenced.contains_key(id))
    }

    /// Accepts `seeds` (each already known to be acceptable) and, through references in both
    /// directions, every held event of rule 4 they support.
    fn propagate(&mut self, seeds: Vec<Id>, ch: &mut Change) {
        let mut queue: VecDeque<Id> = VecDeque::new();
        for id in seeds {
            if self.held.contains_key(&id) && self.accepted.insert(id) {
                queue.push_back(id);
            }
        }
        while let Some(id) = queue.pop_front() {
            if !ch.recomputed {
                ch.accepted.push(id);
            }
            let Some(h) = self.held.get(&id) else { continue };
            let mut next: Vec<Id> = Vec::new();
            for t in h.id_refs.iter() {
                *self.referenced.entry(*t).or_default() += 1;
                next.push(*t);
            }
            next.extend(self.referrers.get(&id).into_iter().flatten().copied());
            for n in next {
                if self.held.get(&n).is_some_and(Held::by_reference) && self.accepted.insert(n) {
                    queue.push_back(n);
                }
            }
        }
    }

    /// The least fixpoint over everything held.
    fn recompute(&mut self, ch: &mut Change) {
        self.accepted.clear();
        self.referenced.clear();
        ch.recomputed = true;
        ch.accepted.clear();
        ch.removed.clear();
        let mut seeds: Vec<Id> = self.anchored.values().flatten().map(|a| a.id).collect();
        seeds.extend(self.states.iter().filter(|((pk, d), _)| self.state_accepted(pk, d)).map(|(_, (_, id))| *id));
        let coords: Vec<RepoCoord> = self
            .anchored
            .iter()
            .flat_map(|(d, anns)| anns.iter().map(move |a| RepoCoord { pubkey: a.pubkey, d: d.clone() }))
            .collect();
        for c in &coords {
            seeds.extend(
                self.coord_referrers
                    .get(c)
                    .into_iter()
                    .flatten()
                    .filter(|id| self.held.get(*id).is_some_and(Held::by_reference)),
            );
        }
        self.propagate(seeds, ch);
    }

    /// Number of accepted events.
    pub fn event_count(&self) -> usize {
        self.accepted.len()
    }

    /// Number of events held (accepted or not).
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Every anchored announcement, grouped by `d`.
    pub fn all_announcements(&self) -> impl Iterator<Item = (&str, &Announcement)> {
        self.anchored.iter().flat_map(|(d, v)| v.iter().map(move |a| (d.as_str(), a)))
    }

    /// Held announcements with this `d`, anchored or not (the newest per author).
    pub fn held_announcements(&self, d: &str) -> &[Announcement] {
        self.held_anns.get(d).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Accepted root events (patches, PRs, issues) that tag this repository.
    pub fn roots_of(&self, coord: &RepoCoord) -> Vec<Id> {
        self.coord_referrers
            .get(coord)
            .into_iter()
            .flatten()
            .filter(|id| self.accepted.contains(*id) && self.held.get(*id).is_some_and(|h| is_root_kind(h.kind)))
            .copied()
            .collect()
    }

    /// The kind and repository references of a held event.
    pub fn held_refs(&self, id: &Id) -> Option<(u64, &[RepoCoord])> {
        self.held.get(id).map(|h| (h.kind, &h.repo_refs[..]))
    }

    /// The ids a held event references.
    pub fn held_id_refs(&self, id: &Id) -> &[Id] {
        self.held.get(id).map(|h| &h.id_refs[..]).unwrap_or(&[])
    }

    /// Held events that reference this id (`e`, `E`, `q`), accepted or not.
    pub fn referrers(&self, id: &Id) -> &[Id] {
        self.referrers.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Held events that tag this repository (`a`, `A`, `q`), accepted or not.
    pub fn coord_referrers(&self, coord: &RepoCoord) -> &[Id] {
        self.coord_referrers.get(coord).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Accepted ids, for comparisons in tests and checks.
    pub fn accepted_ids(&self) -> impl Iterator<Item = &Id> {
        self.accepted.iter()
    }
}

fn unlink<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<Id>>, key: &K, id: &Id) {
    if let Some(v) = map.get_mut(key) {
        v.retain(|x| x != id);
        if v.is_empty() {
            map.remove(key);
        }
    }
}

impl AcceptedView for AcceptedSet {
    fn announcements(&self, d: &str) -> &[Announcement] {
        self.anchored.get(d).map(Vec::as_slice).unwrap_or(&[])
    }
    fn has_event(&self, id: &Id) -> bool {
        self.accepted.contains(id)
    }
    fn is_referenced(&self, id: &Id) -> bool {
        self.referenced.contains_key(id)
    }
    fn deleted_until(&self, coord: &RepoCoord) -> Option<u64> {
        self.tombstones.get(coord).copied()
    }
    fn is_deleted(&self, id: &Id, author: &Id) -> bool {
        self.deleted.contains(&(*id, *author))
    }
}

#[cfg(test)]
mod tests;
