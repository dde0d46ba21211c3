//! The rejected index: valid events the policy refused.
//!
//! Order is not guaranteed across relays, so a reply, a state event or a co-maintainer's
//! announcement may arrive before what makes it acceptable. Such events are **held** for a while
//! (default 15 min, bounded in count) and handed back when an event they depend on is accepted.
//! Once their time is up they are **settled**: their ids join the negentropy local set so that a
//! daily sync does not download them again. Settled ids are bounded too (oldest forgotten first)
//! and persisted by the daemon.
//!
//! A settled entry is **re-opened** when an accepted event arrives that could change its verdict
//! (the same dependencies a held event waits for), at any age: it leaves the local sets, so the
//! next sync fetches it again and the policy decides anew. Held events are bounded by count and by
//! bytes; an event larger than the host's `maxEventSize` is never held (the host would refuse it).
//!
//! Events that are invalid (bad id or signature) are never recorded here: a forged copy must not
//! stop the real event with the same id from being fetched elsewhere.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::policy::event::{parse_hex32, KIND_ANNOUNCEMENT, KIND_STATE};
use crate::policy::{Facts, Id, Note, RepoCoord};
use crate::wire::Filter;

/// What is kept of a settled event: enough to match sync filters (id, author, kind, time,
/// single-letter tags), without content or signature.
pub fn compact(note: &Note) -> Note {
    Note {
        id: note.id.clone(),
        pubkey: note.pubkey.clone(),
        created_at: note.created_at,
        kind: note.kind,
        tags: note
            .tags
            .iter()
            .filter(|t| t.len() >= 2 && t[0].chars().count() == 1)
            .take(32)
            .map(|t| t[..2].to_vec())
            .collect(),
        content: String::new(),
        sig: String::new(),
    }
}

/// strfry's default `maxEventSize`: the longest event JSON it stores.
pub const MAX_EVENT_BYTES: usize = 65_536;

/// Limits of the rejected index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedLimits {
    pub hold_secs: u64,
    pub max_held: usize,
    /// Bytes of event JSON held at most.
    pub max_held_bytes: usize,
    pub max_settled: usize,
}

impl Default for RejectedLimits {
    fn default() -> Self {
        RejectedLimits { hold_secs: 900, max_held: 10_000, max_held_bytes: 64 << 20, max_settled: 100_000 }
    }
}

/// Why [`RejectedIndex::hold`] did not hold an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// Held or settled already.
    Known,
    /// Larger than [`MAX_EVENT_BYTES`]: the host would refuse it anyway.
    TooLarge,
}

/// Bytes of an event's JSON.
pub fn json_len(note: &Note) -> usize {
    serde_json::to_vec(note).map(|v| v.len()).unwrap_or(usize::MAX)
}

/// What a held event waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// An accepted event with this id (the held event references it).
    Event(Id),
    /// An accepted announcement of this repository.
    Repo(RepoCoord),
    /// An accepted announcement with this `d` (for announcements and states by maintainers).
    D(String),
    /// An accepted event that references the held event's own id.
    ReferencedBy(Id),
}

#[derive(Debug, Clone)]
struct Held {
    note: Note,
    facts: Facts,
    since: u64,
    keys: Vec<Key>,
    bytes: usize,
}

/// Held and settled rejected events.
#[derive(Debug, Default)]
pub struct RejectedIndex {
    limits: RejectedLimits,
    held: HashMap<Id, Held>,
    waiting: HashMap<Key, HashSet<Id>>,
    /// Held ids in arrival order (may contain ids already released; skipped lazily).
    held_order: VecDeque<(u64, Id)>,
    held_bytes: usize,
    settled: HashMap<Id, Note>,
    settled_order: VecDeque<Id>,
    /// What settled ids wait for, as for held ones.
    settled_waiting: HashMap<Key, HashSet<Id>>,
    /// Settled entries changed since [`RejectedIndex::take_settled_dirty`].
    settled_dirty: bool,
    /// Settled entries re-opened so far.
    reopened: u64,
    /// Events not held for being larger than [`MAX_EVENT_BYTES`].
    too_large: u64,
}

fn keys_of(f: &Facts) -> Vec<Key> {
    match f.kind {
        KIND_ANNOUNCEMENT | KIND_STATE => f.d.iter().map(|d| Key::D(d.clone())).collect(),
        _ => f
            .id_refs
            .iter()
            .map(|id| Key::Event(*id))
            .chain(f.repo_refs.iter().map(|c| Key::Repo(c.clone())))
            .chain(std::iter::once(Key::ReferencedBy(f.id)))
            .collect(),
    }
}

impl RejectedIndex {
    pub fn new(limits: RejectedLimits) -> Self {
        RejectedIndex { limits, ..Default::default() }
    }

    /// Holds a policy-rejected event. Returns false when it is already held or settled, or too
    /// large to hold.
    pub fn hold(&mut self, note: Note, facts: Facts, now: u64) -> bool {
        self.try_hold(note, facts, now).is_ok()
    }

    /// [`hold`](Self::hold), saying why an event was not held.
    pub fn try_hold(&mut self, note: Note, facts: Facts, now: u64) -> Result<(), NotHeld> {
        if self.held.contains_key(&facts.id) || self.settled.contains_key(&facts.id) {
            return Err(NotHeld::Known);
        }
        self.insert_held(note, facts, now)
    }

    fn insert_held(&mut self, note: Note, facts: Facts, since: u64) -> Result<(), NotHeld> {
        let bytes = json_len(&note);
        if bytes > MAX_EVENT_BYTES {
            self.too_large += 1;
            return Err(NotHeld::TooLarge);
        }
        while self.held.len() >= self.limits.max_held || self.held_bytes + bytes > self.limits.max_held_bytes {
            let Some((_, oldest)) = self.held_order.pop_front() else { break };
            if let Some(h) = self.release(&oldest) {
                self.settle(oldest, compact(&h.note));
            }
        }
        let keys = keys_of(&facts);
        for k in &keys {
            self.waiting.entry(k.clone()).or_default().insert(facts.id);
        }
        self.held_order.push_back((since, facts.id));
        self.held_bytes += bytes;
        self.held.insert(facts.id, Held { note, facts, since, keys, bytes });
        Ok(())
    }

    fn release(&mut self, id: &Id) -> Option<Held> {
        let held = self.held.remove(id)?;
        self.held_bytes -= held.bytes;
        for k in &held.keys {
            unwait(&mut self.waiting, k, id);
        }
        Some(held)
    }

    fn settle(&mut self, id: Id, note: Note) {
        if self.settled.contains_key(&id) {
            return;
        }
        if let Some(pk) = parse_hex32(&note.pubkey) {
            for k in keys_of(&Facts::from_parts(id, pk, note.kind, note.created_at, &note.tags)) {
                self.settled_waiting.entry(k).or_default().insert(id);
            }
        }
        self.settled.insert(id, note);
        self.settled_order.push_back(id);
        self.settled_dirty = true;
        while self.settled.len() > self.limits.max_settled {
            match self.settled_order.pop_front() {
                Some(old) => {
                    self.unsettle(&old);
                }
                None => break,
            }
        }
    }

    /// Forgets a settled entry (and what it waits for).
    fn unsettle(&mut self, id: &Id) -> bool {
        let Some(note) = self.settled.remove(id) else { return false };
        if let Some(pk) = parse_hex32(&note.pubkey) {
            for k in keys_of(&Facts::from_parts(*id, pk, note.kind, note.created_at, &note.tags)) {
                unwait(&mut self.settled_waiting, &k, id);
            }
        }
        self.settled_dirty = true;
        true
    }

    /// Takes out the held events that `accepted` may unlock, for the caller to decide again.
    /// Those still rejected should be held again with [`RejectedIndex::hold_again`].
    pub fn unlocked_by(&mut self, accepted: &Facts) -> Vec<(Note, Facts, u64)> {
        let mut keys = vec![Key::Event(accepted.id)];
        keys.extend(accepted.id_refs.iter().map(|id| Key::ReferencedBy(*id)));
        if accepted.kind == KIND_ANNOUNCEMENT {
            keys.extend(accepted.d.iter().map(|d| Key::D(d.clone())));
            keys.extend(accepted.own_coord().map(Key::Repo));
        }
        // Settled entries this event may change the verdict of leave the local sets: the next
        // sync fetches them again.
        let reopen: HashSet<Id> = keys.iter().filter_map(|k| self.settled_waiting.get(k)).flatten().copied().collect();
        for id in &reopen {
            if self.unsettle(id) {
                self.reopened += 1;
            }
        }
        if !reopen.is_empty() {
            self.settled_order.retain(|id| !reopen.contains(id));
        }
        let ids: HashSet<Id> = keys.iter().filter_map(|k| self.waiting.get(k)).flatten().copied().collect();
        let mut out: Vec<(Note, Facts, u64)> =
            ids.iter().filter_map(|id| self.release(id)).map(|h| (h.note, h.facts, h.since)).collect();
        out.sort_by_key(|(n, _, _)| (n.created_at, n.id.clone()));
        out
    }

    /// Holds again an event that [`RejectedIndex::unlocked_by`] returned and that is still
    /// rejected, keeping its original hold time.
    pub fn hold_again(&mut self, note: Note, facts: Facts, since: u64) {
        let _ = self.insert_held(note, facts, since);
    }

    /// Settles events held longer than the hold time. Returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(since, id)) = self.held_order.front() {
            let current = self.held.get(&id).map(|h| h.since);
            match current {
                // Stale entry (released or re-held later): drop it.
                Some(s) if s != since => {
                    self.held_order.pop_front();
                }
                None => {
                    self.held_order.pop_front();
                }
                Some(s) if now.saturating_sub(s) >= self.limits.hold_secs => {
                    self.held_order.pop_front();
                    if let Some(h) = self.release(&id) {
                        self.settle(id, compact(&h.note));
                    }
                    n += 1;
                }
                Some(_) => break,
            }
        }
        n
    }

    /// Restores settled events from saved state (compact copies, oldest first).
    pub fn restore_settled(&mut self, notes: impl IntoIterator<Item = Note>) {
        for note in notes {
            if let Some(id) = parse_hex32(&note.id) {
                self.settle(id, compact(&note));
            }
        }
        self.settled_dirty = false;
    }

    /// The id is held or settled: the host need not be offered it again by a sync.
    pub fn knows(&self, id: &Id) -> bool {
        self.held.contains_key(id) || self.settled.contains_key(id)
    }

    /// `(created_at, id)` of held and settled events matching `filter`: they join the negentropy
    /// local set so that a sync does not fetch them again.
    pub fn local_items(&self, filter: &Filter) -> Vec<(u64, Id)> {
        let held = self.held.iter().filter(|(_, h)| filter.matches(&h.note)).map(|(id, h)| (h.note.created_at, *id));
        let settled = self.settled.iter().filter(|(_, n)| filter.matches(n)).map(|(id, n)| (n.created_at, *id));
        held.chain(settled).collect()
    }

    /// Settled events (compact), oldest first: what the daemon persists.
    pub fn settled_notes(&self) -> impl Iterator<Item = &Note> {
        self.settled_order.iter().filter_map(|id| self.settled.get(id))
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    pub fn settled_len(&self) -> usize {
        self.settled.len()
    }

    /// Bytes of event JSON held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Settled entries re-opened so far.
    pub fn reopened(&self) -> u64 {
        self.reopened
    }

    /// Events refused for being larger than [`MAX_EVENT_BYTES`] so far.
    pub fn too_large(&self) -> u64 {
        self.too_large
    }

    /// Marks the settled entries as needing a write (e.g. restored from an older state file).
    pub fn mark_settled_dirty(&mut self) {
        self.settled_dirty = true;
    }

    /// Whether the settled entries changed since the last call (then they need writing).
    pub fn take_settled_dirty(&mut self) -> bool {
        std::mem::take(&mut self.settled_dirty)
    }
}

fn unwait(map: &mut HashMap<Key, HashSet<Id>>, k: &Key, id: &Id) {
    if let Some(set) = map.get_mut(k) {
        set.remove(id);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: u8, kind: u64, d: Option<&str>, id_refs: &[u8], repo_refs: &[(u8, &str)]) -> Facts {
        Facts {
            id: [id; 32],
            pubkey: [id; 32],
            kind,
            created_at: id as u64,
            d: d.map(str::to_string),
            repo_refs: repo_refs.iter().map(|(pk, d)| RepoCoord { pubkey: [*pk; 32], d: d.to_string() }).collect(),
            id_refs: id_refs.iter().map(|r| [*r; 32]).collect(),
            announcement: (kind == KIND_ANNOUNCEMENT).then(Default::default),
            grasp_servers: Vec::new(),
        }
    }

    fn note(f: &Facts) -> Note {
        Note {
            id: hex::encode(f.id),
            pubkey: hex::encode(f.pubkey),
            created_at: f.created_at,
            kind: f.kind,
            tags: vec![],
            content: String::new(),
            sig: String::new(),
        }
    }

    fn hold(idx: &mut RejectedIndex, f: Facts, now: u64) {
        assert!(idx.hold(note(&f), f, now));
    }

    #[test]
    fn reply_is_released_when_its_parent_is_accepted() {
        let mut idx = RejectedIndex::new(RejectedLimits::default());
        hold(&mut idx, facts(2, 1111, None, &[1], &[]), 0);
        assert!(idx.unlocked_by(&facts(9, 1, None, &[], &[])).is_empty());
        let out = idx.unlocked_by(&facts(1, 1621, None, &[], &[]));
        assert_eq!(out.len(), 1);
        assert_eq!(idx.held_len(), 0);
    }

    #[test]
    fn parent_is_released_when_an_accepted_event_references_it() {
        let mut idx = RejectedIndex::new(RejectedLimits::default());
        hold(&mut idx, facts(1, 1621, None, &[], &[]), 0);
        assert_eq!(idx.unlocked_by(&facts(2, 1111, None, &[1], &[])).len(), 1);
    }

    #[test]
    fn announcements_states_and_repo_references_wait_for_an_announcement() {
        let mut idx = RejectedIndex::new(RejectedLimits::default());
        hold(&mut idx, facts(2, KIND_ANNOUNCEMENT, Some("r"), &[], &[]), 0);
        hold(&mut idx, facts(3, KIND_STATE, Some("r"), &[], &[]), 0);
        hold(&mut idx, facts(4, 1621, None, &[], &[(1, "r")]), 0);
        hold(&mut idx, facts(5, KIND_STATE, Some("other"), &[], &[]), 0);
        let out = idx.unlocked_by(&facts(1, KIND_ANNOUNCEMENT, Some("r"), &[], &[]));
        assert_eq!(out.len(), 3);
        assert_eq!(idx.held_len(), 1);
    }

    #[test]
    fn expired_events_are_settled_and_not_held_twice() {
        let mut idx = RejectedIndex::new(RejectedLimits { hold_secs: 10, ..Default::default() });
        hold(&mut idx, facts(1, 1, None, &[], &[]), 0);
        hold(&mut idx, facts(2, 1, None, &[], &[]), 5);
        assert_eq!(idx.expire(9), 0);
        assert_eq!(idx.expire(10), 1);
        assert!(idx.knows(&[1; 32]) && idx.knows(&[2; 32]));
        assert_eq!((idx.held_len(), idx.settled_len()), (1, 1));
        let f = facts(1, 1, None, &[], &[]);
        assert!(!idx.hold(note(&f), f, 20), "a settled event is not held again");
    }

    #[test]
    fn re_held_events_keep_their_original_hold_time() {
        let mut idx = RejectedIndex::new(RejectedLimits { hold_secs: 10, ..Default::default() });
        hold(&mut idx, facts(2, 1111, None, &[1, 3], &[]), 0);
        let out = idx.unlocked_by(&facts(1, 1, None, &[], &[]));
        for (n, f, since) in out {
            idx.hold_again(n, f, since);
        }
        assert_eq!(idx.expire(10), 1);
    }

    #[test]
    fn held_and_settled_events_join_matching_local_sets_and_survive_a_restore() {
        let mut idx = RejectedIndex::new(RejectedLimits { hold_secs: 10, ..Default::default() });
        let mut f = facts(1, 1621, None, &[], &[]);
        f.created_at = 77;
        let mut n = note(&f);
        n.tags = vec![vec!["a".into(), "30617:x:r".into(), "extra".into()], vec!["subject".into(), "s".into()]];
        n.content = "long body".into();
        idx.hold(n, f, 0);
        let issues = Filter::kinds([1621]);
        assert_eq!(idx.local_items(&issues), vec![(77, [1; 32])]);
        assert!(idx.local_items(&Filter::kinds([1617])).is_empty());
        idx.expire(10);
        let tagged = Filter::kinds([1621]).tag('a', ["30617:x:r".to_string()]);
        assert_eq!(idx.local_items(&tagged), vec![(77, [1; 32])], "settled copies still match tag filters");
        let saved: Vec<Note> = idx.settled_notes().cloned().collect();
        assert!(saved[0].content.is_empty() && saved[0].tags == vec![vec!["a".to_string(), "30617:x:r".to_string()]]);
        let mut restored = RejectedIndex::new(RejectedLimits::default());
        restored.restore_settled(saved);
        assert_eq!(restored.local_items(&tagged), vec![(77, [1; 32])]);
    }

    #[test]
    fn counts_stay_bounded() {
        let mut idx =
            RejectedIndex::new(RejectedLimits { hold_secs: 1000, max_held: 3, max_settled: 4, ..Default::default() });
        for i in 0..10u8 {
            hold(&mut idx, facts(i, 1, None, &[], &[]), i as u64);
        }
        assert_eq!(idx.held_len(), 3);
        assert_eq!(idx.settled_len(), 4);
        assert!(idx.knows(&[9; 32]) && !idx.knows(&[0; 32]), "oldest settled ids are forgotten first");
    }
}

#[cfg(test)]
mod reopen_tests {
    use super::*;

    fn ann(id: u8, pk: u8, d: &str, at: u64) -> Note {
        Note {
            id: hex::encode([id; 32]),
            pubkey: hex::encode([pk; 32]),
            created_at: at,
            kind: KIND_ANNOUNCEMENT,
            tags: vec![vec!["d".into(), d.into()], vec!["relays".into(), "wss://b.example".into()]],
            content: String::new(),
            sig: "00".repeat(64),
        }
    }

    fn held(idx: &mut RejectedIndex, note: &Note, now: u64) {
        assert!(idx.hold(note.clone(), facts_of(note), now));
    }

    fn facts_of(note: &Note) -> Facts {
        let mut f = Facts::from_parts([0; 32], [0; 32], note.kind, note.created_at, &note.tags);
        f.id = parse_hex32(&note.id).unwrap();
        f.pubkey = parse_hex32(&note.pubkey).unwrap();
        f
    }

    #[test]
    fn a_settled_entry_is_reopened_at_any_age_by_an_event_that_could_change_its_verdict() {
        let mut idx = RejectedIndex::new(RejectedLimits::default());
        let bob = ann(2, 2, "r", 10);
        held(&mut idx, &bob, 0);
        // Long past the hold time (and a restart: settled entries come back from the state file).
        assert_eq!(idx.expire(1_000_000), 1);
        let saved: Vec<Note> = idx.settled_notes().cloned().collect();
        let mut idx = RejectedIndex::new(RejectedLimits::default());
        idx.restore_settled(saved);
        let id = parse_hex32(&bob.id).unwrap();
        let all = Filter { kinds: [KIND_ANNOUNCEMENT].into(), ..Default::default() };
        assert_eq!(idx.local_items(&all), vec![(10, id)], "settled: in the local set");
        // An unrelated announcement changes nothing; the owner's announcement of `r` re-opens it.
        assert!(idx.unlocked_by(&facts_of(&ann(3, 3, "other", 11))).is_empty());
        assert!(idx.knows(&id));
        assert!(idx.unlocked_by(&facts_of(&ann(1, 1, "r", 11))).is_empty(), "nothing held to hand back");
        assert!(!idx.knows(&id), "re-opened: the next sync fetches it again");
        assert!(idx.local_items(&all).is_empty());
        assert_eq!(idx.reopened(), 1);
        assert!(idx.take_settled_dirty(), "the settled file needs writing");
        assert!(!idx.take_settled_dirty());
    }

    #[test]
    fn held_events_are_bounded_by_bytes_and_oversized_ones_are_not_held() {
        let mut big = ann(1, 1, "r", 1);
        big.content = "x".repeat(MAX_EVENT_BYTES);
        let mut idx = RejectedIndex::new(RejectedLimits { max_held_bytes: 3 * 1024, ..Default::default() });
        assert_eq!(idx.try_hold(big.clone(), facts_of(&big), 0), Err(NotHeld::TooLarge));
        assert_eq!(idx.too_large(), 1);
        assert!(!idx.knows(&parse_hex32(&big.id).unwrap()));
        for i in 0..10u8 {
            let mut n = ann(10 + i, 10 + i, "r", 1);
            n.content = "y".repeat(700);
            assert!(idx.hold(n.clone(), facts_of(&n), u64::from(i)));
            assert!(idx.held_bytes() <= 3 * 1024);
        }
        assert!(idx.held_len() < 10 && idx.held_len() >= 2);
        assert_eq!(idx.held_len() + idx.settled_len(), 10, "the oldest settle, none is lost");
    }
}
