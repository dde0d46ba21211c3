//! `RepoSyncIndex`: what we want to hold. Repository coordinate → the relays its announcement
//! lists (normalised, this service excluded), the root events (patches, PRs, issues) that tag it,
//! and its other accepted events (comments, status, PR updates, replies, reactions) whose
//! deletions and reactions are synced too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::policy::event::{
    is_root_kind, AnnouncementTags, KIND_ANNOUNCEMENT, KIND_DELETION, KIND_GRASP_LIST, KIND_STATE,
};
use crate::policy::view::select_announced_relays;
use crate::policy::{AcceptedSet, AcceptedView, Change, Id, IgnoredRelays, RelayUrl, RepoCoord};

/// Relays taken from one announcement at most; the rest are ignored (announcements are untrusted).
pub const MAX_RELAYS_PER_ANNOUNCEMENT: usize = crate::policy::view::MAX_ANNOUNCED_RELAYS;

/// One repository we sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoEntry {
    pub relays: BTreeSet<RelayUrl>,
    pub root_events: BTreeSet<Id>,
    /// Accepted events about it that are not roots (see [`RepoSyncIndex::related_repos`]):
    /// deletions and reactions naming them are synced (layer 4).
    pub related: BTreeSet<Id>,
    /// Its announcement's `relays` tag values that were not taken, by reason.
    pub ignored_relays: IgnoredRelays,
}

/// Repository coordinate → relays and root events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSyncIndex {
    repos: BTreeMap<RepoCoord, RepoEntry>,
    /// `d` → owners of the indexed repositories with that `d`, so that an announcement updates
    /// its `d` without a scan of every repository.
    owners: HashMap<String, BTreeSet<Id>>,
}

/// Kinds whose accepted events are related events: accepted by reference and not roots
/// (deletions make nothing acceptable and are not deleted in turn).
fn is_related_kind(kind: u64) -> bool {
    !is_root_kind(kind) && !matches!(kind, KIND_ANNOUNCEMENT | KIND_STATE | KIND_DELETION | KIND_GRASP_LIST)
}

impl RepoSyncIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a repository or replaces its relay list; its root events are kept.
    /// Returns whether anything changed.
    pub fn upsert_repo(&mut self, coord: RepoCoord, relays: BTreeSet<RelayUrl>) -> bool {
        self.upsert_announced(coord, relays, IgnoredRelays::default())
    }

    /// [`upsert_repo`](Self::upsert_repo), also recording what the announcement's relay list
    /// lost (reported on `/status`).
    pub fn upsert_announced(&mut self, coord: RepoCoord, relays: BTreeSet<RelayUrl>, ignored: IgnoredRelays) -> bool {
        match self.repos.get_mut(&coord) {
            Some(entry) if entry.relays == relays && entry.ignored_relays == ignored => false,
            Some(entry) => {
                entry.relays = relays;
                entry.ignored_relays = ignored;
                true
            }
            None => {
                self.owners.entry(coord.d.clone()).or_default().insert(coord.pubkey);
                self.repos.insert(coord, RepoEntry { relays, ignored_relays: ignored, ..RepoEntry::default() });
                true
            }
        }
    }

    /// Removes a repository (announcement replaced by one that no longer lists us, or deleted).
    pub fn remove_repo(&mut self, coord: &RepoCoord) -> Option<RepoEntry> {
        let entry = self.repos.remove(coord)?;
        if let Some(owners) = self.owners.get_mut(&coord.d) {
            owners.remove(&coord.pubkey);
            if owners.is_empty() {
                self.owners.remove(&coord.d);
            }
        }
        Some(entry)
    }

    /// Records a root event of a repository in the index. Returns whether it was new.
    pub fn add_root(&mut self, coord: &RepoCoord, id: Id) -> bool {
        self.repos.get_mut(coord).is_some_and(|e| e.root_events.insert(id))
    }

    /// Forgets a root event wherever it is recorded (deleted). Returns whether it was known.
    pub fn remove_root(&mut self, id: &Id) -> bool {
        !self.take_root(id).is_empty()
    }

    /// [`remove_root`](Self::remove_root), returning the repositories it was recorded in.
    fn take_root(&mut self, id: &Id) -> Vec<RepoCoord> {
        let mut found = Vec::new();
        for (c, entry) in self.repos.iter_mut() {
            if entry.root_events.remove(id) {
                found.push(c.clone());
            }
        }
        found
    }

    /// Follows a change of the accepted view: the anchored announcements of each changed `d`
    /// add, update or remove repositories, and root events follow what the view accepts (all
    /// of them again after a recompute). Returns whether the index changed.
    pub fn apply_change(&mut self, service: &RelayUrl, view: &AcceptedSet, change: &Change) -> bool {
        let mut changed = false;
        for d in &change.ds {
            changed |= self.refresh_d(service, view, d);
        }
        if change.recomputed {
            for (coord, entry) in self.repos.iter_mut() {
                let roots: BTreeSet<Id> = view.roots_of(coord).into_iter().collect();
                if entry.root_events != roots {
                    entry.root_events = roots;
                    changed = true;
                }
            }
            let coords: Vec<RepoCoord> = self.repos.keys().cloned().collect();
            let before: Vec<BTreeSet<Id>> = self.repos.values_mut().map(|e| std::mem::take(&mut e.related)).collect();
            for c in &coords {
                self.relate_repo(view, c);
            }
            changed |= self.repos.values().zip(before).any(|(e, b)| e.related != b);
            return changed;
        }
        // Roots removed, with the repositories they were in (a deleted root's tags are gone from
        // the view).
        let mut removed_roots: Vec<(Id, Vec<RepoCoord>)> = Vec::new();
        for id in &change.removed {
            let coords = self.take_root(id);
            if !coords.is_empty() {
                changed = true;
                removed_roots.push((*id, coords));
            }
            if view.held_refs(id).is_none() {
                // Deleted: its tags are gone too, so it leaves every related set.
                for e in self.repos.values_mut() {
                    changed |= e.related.remove(id);
                }
            }
        }
        for id in &change.accepted {
            let Some((kind, refs)) = view.held_refs(id) else { continue };
            if is_root_kind(kind) {
                for c in refs {
                    changed |= self.add_root(c, *id);
                }
            }
        }
        // Events whose repositories may have changed: those accepted or removed, and the events
        // referencing a root accepted or removed.
        for id in change.removed.iter().chain(&change.accepted) {
            changed |= self.relate(view, id, &[]);
            if view.held_refs(id).is_some_and(|(kind, _)| is_root_kind(kind)) {
                for r in view.referrers(id) {
                    changed |= self.relate(view, r, &[]);
                }
            }
        }
        for (root, coords) in &removed_roots {
            for r in view.referrers(root) {
                changed |= self.relate(view, r, coords);
            }
        }
        changed
    }

    /// The indexed repositories an accepted related event is about: those it tags (`a`, `A`,
    /// `q`) and those of the accepted root events it references (`e`, `E`, `q`). One step only:
    /// a reaction to a comment that names no root is not itself related.
    pub fn related_repos(&self, view: &AcceptedSet, id: &Id) -> BTreeSet<RepoCoord> {
        let mut out = BTreeSet::new();
        let Some((kind, refs)) = view.held_refs(id) else { return out };
        if !is_related_kind(kind) || !view.has_event(id) {
            return out;
        }
        out.extend(refs.iter().filter(|c| self.repos.contains_key(*c)).cloned());
        for r in view.held_id_refs(id) {
            match view.held_refs(r) {
                Some((k, root_refs)) if is_root_kind(k) && view.has_event(r) => {
                    out.extend(root_refs.iter().filter(|c| self.repos.contains_key(*c)).cloned());
                }
                _ => {}
            }
        }
        out
    }

    /// Brings one event's place in the `related` sets to [`related_repos`](Self::related_repos).
    /// The repositories it may have been in: those it or the events it references tag, and
    /// `also` (those of a root deleted meanwhile). Returns whether anything changed.
    fn relate(&mut self, view: &AcceptedSet, id: &Id, also: &[RepoCoord]) -> bool {
        let now = self.related_repos(view, id);
        let mut maybe: BTreeSet<RepoCoord> = also.iter().cloned().collect();
        if let Some((_, refs)) = view.held_refs(id) {
            maybe.extend(refs.iter().cloned());
        }
        for r in view.held_id_refs(id) {
            if let Some((_, refs)) = view.held_refs(r) {
                maybe.extend(refs.iter().cloned());
            }
        }
        let mut changed = false;
        for c in maybe.iter().chain(&now) {
            if let Some(e) = self.repos.get_mut(c) {
                changed |= if now.contains(c) { e.related.insert(*id) } else { e.related.remove(id) };
            }
        }
        changed
    }

    /// Fills a repository's `related` set: the events that tag it, and those that reference its
    /// root events.
    fn relate_repo(&mut self, view: &AcceptedSet, coord: &RepoCoord) {
        let Some(entry) = self.repos.get(coord) else { return };
        let mut candidates: Vec<Id> = view.coord_referrers(coord).to_vec();
        for r in &entry.root_events {
            candidates.extend_from_slice(view.referrers(r));
        }
        for id in candidates {
            self.relate(view, &id, &[]);
        }
    }

    /// The index of everything `view` accepts.
    pub fn from_view(service: &RelayUrl, view: &AcceptedSet) -> Self {
        let mut index = RepoSyncIndex::new();
        let ds: BTreeSet<&str> = view.all_announcements().map(|(d, _)| d).collect();
        for d in ds {
            index.refresh_d(service, view, d);
        }
        index
    }

    /// Makes the repositories with this `d` the anchored announcements of the view (relays
    /// without this service); a repository new to the index takes the view's accepted roots.
    pub fn refresh_d(&mut self, service: &RelayUrl, view: &AcceptedSet, d: &str) -> bool {
        let anns = view.announcements(d);
        let stale: Vec<RepoCoord> = self
            .owners
            .get(d)
            .into_iter()
            .flatten()
            .filter(|pk| !anns.iter().any(|a| a.pubkey == **pk))
            .map(|pk| RepoCoord { pubkey: *pk, d: d.to_string() })
            .collect();
        let mut changed = !stale.is_empty();
        for coord in stale {
            self.remove_repo(&coord);
        }
        for ann in anns {
            let relays = ann.relays.iter().filter(|r| !r.same_endpoint(service)).cloned().collect();
            let coord = RepoCoord { pubkey: ann.pubkey, d: d.to_string() };
            let new = !self.repos.contains_key(&coord);
            changed |= self.upsert_announced(coord.clone(), relays, ann.ignored_relays);
            if new {
                if let Some(e) = self.repos.get_mut(&coord) {
                    e.root_events = view.roots_of(&coord).into_iter().collect();
                }
                self.relate_repo(view, &coord);
            }
        }
        changed
    }

    pub fn get(&self, coord: &RepoCoord) -> Option<&RepoEntry> {
        self.repos.get(coord)
    }

    pub fn contains(&self, coord: &RepoCoord) -> bool {
        self.repos.contains_key(coord)
    }

    pub fn repos(&self) -> impl Iterator<Item = (&RepoCoord, &RepoEntry)> {
        self.repos.iter()
    }

    pub fn len(&self) -> usize {
        self.repos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.repos.is_empty()
    }

    pub fn root_count(&self) -> usize {
        self.repos.values().map(|e| e.root_events.len()).sum()
    }

    /// Related events over all repositories (an event about two repositories counts twice).
    pub fn related_count(&self) -> usize {
        self.repos.values().map(|e| e.related.len()).sum()
    }

    /// Relay entries held over all repositories (one per repository and relay).
    pub fn relay_entry_count(&self) -> usize {
        self.repos.values().map(|e| e.relays.len()).sum()
    }

    /// Announcement relay values not taken, summed over all repositories.
    pub fn ignored_relays(&self) -> IgnoredRelays {
        let mut sum = IgnoredRelays::default();
        for e in self.repos.values() {
            sum.add(&e.ignored_relays);
        }
        sum
    }
}

/// The relays an announcement lists, as the index takes them: the first
/// [`MAX_RELAYS_PER_ANNOUNCEMENT`] distinct valid URLs in tag order (normalised; this service
/// counts as one of them), then this service removed. Also what was left out, by reason.
/// The accepted view keeps the same list, so an index built at start and one grown event by
/// event agree.
pub fn announcement_relays(service: &RelayUrl, tags: &AnnouncementTags) -> (BTreeSet<RelayUrl>, IgnoredRelays) {
    let announced = select_announced_relays(&tags.relays, MAX_RELAYS_PER_ANNOUNCEMENT);
    let relays = announced.relays.into_iter().filter(|u| !u.same_endpoint(service)).collect();
    (relays, announced.ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_relays_are_normalised_deduplicated_and_exclude_self() {
        let service = RelayUrl::parse("wss://grasp.example.com").unwrap();
        let tags = AnnouncementTags {
            relays: [
                "wss://GRASP.example.com/",
                "wss://r1.example.com",
                "WSS://r1.example.com:443/",
                "https://x",
                "wss://r2.example.com",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        };
        let (relays, ignored) = announcement_relays(&service, &tags);
        let got: Vec<String> = relays.into_iter().map(String::from).collect();
        assert_eq!(got, ["wss://r1.example.com", "wss://r2.example.com"]);
        assert_eq!(ignored, IgnoredRelays { invalid: 1, duplicate: 1, over_limit: 0 });
    }

    #[test]
    fn announcement_relays_are_capped() {
        let service = RelayUrl::parse("wss://grasp.example.com").unwrap();
        let tags = AnnouncementTags {
            relays: (0..100).map(|i| format!("wss://r{i}.example.com")).collect(),
            ..Default::default()
        };
        let (relays, ignored) = announcement_relays(&service, &tags);
        assert_eq!(relays.len(), MAX_RELAYS_PER_ANNOUNCEMENT);
        assert_eq!(ignored.over_limit, 80);
    }

    #[test]
    fn roots_attach_only_to_known_repos_and_survive_relay_updates() {
        let mut idx = RepoSyncIndex::new();
        let coord = RepoCoord { pubkey: [1; 32], d: "r".into() };
        let other = RepoCoord { pubkey: [2; 32], d: "r".into() };
        let relays: BTreeSet<RelayUrl> = [RelayUrl::parse("wss://a.example").unwrap()].into();
        assert!(idx.upsert_repo(coord.clone(), relays.clone()));
        assert!(!idx.upsert_repo(coord.clone(), relays));
        assert!(idx.add_root(&coord, [7; 32]));
        assert!(!idx.add_root(&other, [8; 32]));
        idx.upsert_repo(coord.clone(), BTreeSet::new());
        assert_eq!(idx.root_count(), 1);
        assert!(idx.remove_root(&[7; 32]));
        assert_eq!(idx.root_count(), 0);
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use crate::policy::event::{KIND_DELETION, KIND_ISSUE};
    use crate::policy::Facts;
    use crate::policy::{AcceptedSet, Policy};

    const S: &str = "wss://grasp.example.com";

    fn ann(pk: u8, d: &str, relays: &[&str], maintainers: &[u8], at: u64) -> Facts {
        crate::policy::tests::ann(pk, d, relays, &[], maintainers, at)
    }

    fn other(id: u8, author: u8, kind: u64, repo_refs: Vec<RepoCoord>, id_refs: Vec<Id>) -> Facts {
        Facts {
            id: [id; 32],
            pubkey: [author; 32],
            kind,
            created_at: 9,
            d: None,
            repo_refs,
            id_refs,
            announcement: None,
            grasp_servers: Vec::new(),
        }
    }

    struct World {
        policy: Policy,
        view: AcceptedSet,
        index: RepoSyncIndex,
    }

    impl World {
        fn new() -> Self {
            World {
                policy: Policy::new(RelayUrl::parse(S).unwrap(), false),
                view: AcceptedSet::new(),
                index: RepoSyncIndex::new(),
            }
        }
        fn offer(&mut self, f: Facts) -> bool {
            let (verdict, change) = self.policy.decide_and_apply(&mut self.view, &f);
            self.index.apply_change(self.policy.service(), &self.view, &change);
            verdict.is_accept()
        }
        fn coords(&self) -> Vec<(u8, String)> {
            self.index.repos().map(|(c, _)| (c.pubkey[0], c.d.clone())).collect()
        }
    }

    fn coord(pk: u8, d: &str) -> RepoCoord {
        RepoCoord { pubkey: [pk; 32], d: d.into() }
    }

    #[test]
    fn maintainer_announcement_joins_whatever_the_order() {
        let mut w = World::new();
        // Bob's (2) announcement arrives first: not yet acceptable.
        assert!(!w.offer(ann(2, "r", &["wss://b.example"], &[], 1)));
        assert!(w.offer(ann(1, "r", &[S, "wss://a.example"], &[2], 1)));
        assert!(w.offer(ann(2, "r", &["wss://b.example"], &[], 1)), "re-offered later it is accepted");
        assert_eq!(w.coords(), [(1, "r".to_string()), (2, "r".to_string())]);
        let relays: Vec<&str> = w.index.get(&coord(1, "r")).unwrap().relays.iter().map(|r| r.as_str()).collect();
        assert_eq!(relays, ["wss://a.example"], "our own URL is not a relay to sync from");
    }

    #[test]
    fn replacement_that_drops_the_service_shrinks_the_index_with_its_chain() {
        let mut w = World::new();
        w.offer(ann(1, "r", &[S], &[2], 1));
        w.offer(ann(2, "r", &["wss://b.example"], &[], 1));
        assert!(w.offer(other(50, 7, KIND_ISSUE, vec![coord(1, "r")], vec![])));
        assert_eq!(w.index.root_count(), 1);
        assert!(w.offer(ann(1, "r", &["wss://elsewhere.example"], &[2], 3)));
        assert!(w.index.is_empty(), "no announcement lists us any more: {:?}", w.coords());
    }

    #[test]
    fn deletions_remove_only_the_authors_own_repo_or_root() {
        let mut w = World::new();
        w.offer(ann(1, "r", &[S], &[], 1));
        w.offer(other(50, 7, KIND_ISSUE, vec![coord(1, "r")], vec![]));
        // A stranger's deletion changes nothing.
        w.offer(other(60, 9, KIND_DELETION, vec![coord(1, "r")], vec![[50; 32]]));
        assert_eq!((w.index.len(), w.index.root_count()), (1, 1));
        // The issue's author deletes it; the owner deletes the repository.
        w.offer(other(61, 7, KIND_DELETION, vec![], vec![[50; 32]]));
        assert_eq!(w.index.root_count(), 0);
        w.offer(other(62, 1, KIND_DELETION, vec![coord(1, "r")], vec![]));
        assert!(w.index.is_empty());
    }

    #[test]
    fn a_maintainers_update_does_not_bring_back_a_deleted_repository() {
        let mut w = World::new();
        w.offer(ann(1, "r", &[S, "wss://a.example"], &[2], 1));
        w.offer(ann(2, "r", &["wss://b.example"], &[1], 1));
        w.offer(other(50, 7, KIND_ISSUE, vec![coord(1, "r")], vec![]));
        assert_eq!(w.coords().len(), 2);
        // The owner deletes the repository: both leave the index, and so do their relays.
        assert!(w.offer(other(62, 1, KIND_DELETION, vec![coord(1, "r")], vec![])));
        assert!(w.index.is_empty(), "{:?}", w.coords());
        assert!(!w.offer(ann(2, "r", &["wss://b.example", "wss://c.example"], &[1], 5)));
        assert!(w.index.is_empty(), "{:?}", w.coords());
    }

    #[test]
    fn a_deleted_or_moved_repository_leaves_the_sync_targets() {
        use crate::engine::targets::{derive_relay_targets, TargetRules};
        let mut w = World::new();
        w.offer(ann(1, "r", &[S, "wss://a.example", "wss://shared.example"], &[], 1));
        w.offer(ann(3, "q", &[S, "wss://shared.example", "wss://c.example"], &[], 1));
        w.offer(other(50, 7, KIND_ISSUE, vec![coord(1, "r")], vec![]));
        let rules = TargetRules { allow_private_addresses: true, ..TargetRules::default() };
        let relays = |w: &World| -> Vec<String> {
            derive_relay_targets(&w.index, w.policy.service(), &rules).relays.keys().map(|u| u.to_string()).collect()
        };
        assert_eq!(relays(&w), ["wss://a.example", "wss://c.example", "wss://shared.example"]);
        // The owner of `r` deletes it: its own relay goes, the shared one stays for `q` only.
        assert!(w.offer(other(62, 1, KIND_DELETION, vec![coord(1, "r")], vec![])));
        assert_eq!(relays(&w), ["wss://c.example", "wss://shared.example"]);
        let t = derive_relay_targets(&w.index, w.policy.service(), &rules);
        let shared = t.get(&RelayUrl::parse("wss://shared.example").unwrap()).unwrap();
        assert_eq!((shared.repos.len(), shared.root_events.len()), (1, 0));
        // The owner of `q` moves it elsewhere: nothing is left to sync.
        assert!(w.offer(ann(3, "q", &["wss://elsewhere.example"], &[], 2)));
        assert!(relays(&w).is_empty());
    }

    #[test]
    fn related_events_are_those_about_a_repository_or_its_roots_and_follow_deletions() {
        let mut w = World::new();
        w.offer(ann(1, "r", &[S], &[], 1));
        w.offer(other(50, 7, KIND_ISSUE, vec![coord(1, "r")], vec![]));
        assert!(w.offer(other(51, 8, 1111, vec![], vec![[50; 32]])), "a comment on the issue");
        assert!(w.offer(other(52, 9, 7, vec![], vec![[51; 32]])), "a reaction to the comment");
        assert!(w.offer(other(53, 8, 1630, vec![coord(1, "r")], vec![])), "a status tagging the repository");
        let related = |w: &World| w.index.get(&coord(1, "r")).map(|e| e.related.clone()).unwrap_or_default();
        // The reaction names no root: one step only.
        assert_eq!(related(&w), [[51; 32], [53; 32]].into());
        assert_eq!(w.index.related_count(), 2);
        // The issue's author deletes it: the comment stood on it and leaves with it.
        w.offer(other(60, 7, KIND_DELETION, vec![], vec![[50; 32]]));
        assert_eq!(related(&w), [[53; 32]].into());
        // The owner deletes the repository: nothing is left.
        w.offer(other(61, 1, KIND_DELETION, vec![coord(1, "r")], vec![]));
        assert!(w.index.is_empty());
        assert_eq!(w.index.related_count(), 0);
    }

    #[test]
    fn root_events_only_count_for_indexed_repos() {
        let mut w = World::new();
        w.offer(ann(1, "r", &[S], &[], 1));
        w.offer(other(50, 7, KIND_ISSUE, vec![coord(3, "r")], vec![]));
        w.offer(other(51, 7, 1111, vec![coord(1, "r")], vec![]));
        assert_eq!(w.index.root_count(), 0, "unknown repo, and a comment is not a root");
    }
}

#[cfg(test)]
mod abuse_tests {
    use super::*;
    use crate::policy::{AcceptedSet, Policy};
    use proptest::prelude::*;

    const S: &str = "wss://grasp.example.com";

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(S.to_string()),
            Just("ws://GRASP.example.com:80/".to_string()),
            (0u8..30).prop_map(|i| format!("wss://r{i}.example")),
            (0u8..30).prop_map(|i| format!("WSS://R{i}.EXAMPLE:443/")),
            (0u8..5).prop_map(|i| format!("ws://10.0.0.{i}")),
            Just("http://r1.example".to_string()),
            Just("%%%".to_string()),
        ]
    }

    proptest! {
        /// The index built at start from stored announcements and the one grown event by event
        /// hold the same relays: the per-announcement cap is applied the same way.
        #[test]
        fn start_and_live_paths_take_the_same_relays_from_an_announcement(
            mut raw in proptest::collection::vec(value(), 0..60),
        ) {
            raw.insert(0, S.to_string());
            let refs: Vec<&str> = raw.iter().map(String::as_str).collect();
            let facts = crate::policy::tests::ann(1, "r", &refs, &[], &[], 1);
            let service = RelayUrl::parse(S).unwrap();
            let policy = Policy::new(service.clone(), false);
            let mut view = AcceptedSet::new();
            let (verdict, change) = policy.decide_and_apply(&mut view, &facts);
            prop_assert!(verdict.is_accept());
            let mut live = RepoSyncIndex::new();
            live.apply_change(&service, &view, &change);
            let (relays, ignored) = announcement_relays(&service, facts.announcement.as_ref().unwrap());
            let entry = live.get(&RepoCoord { pubkey: [1; 32], d: "r".into() }).unwrap();
            prop_assert_eq!(&entry.relays, &relays);
            prop_assert_eq!(entry.ignored_relays, ignored);
            prop_assert!(entry.relays.len() < MAX_RELAYS_PER_ANNOUNCEMENT);
            prop_assert!(entry.relays.iter().all(|r| !r.same_endpoint(&service)));
        }
    }
}
