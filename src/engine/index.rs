//! `RepoSyncIndex`: what we want to hold. Repository coordinate → the relays its announcement
//! lists (normalised, this service excluded) and the root events (patches, PRs, issues) that tag it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::policy::event::{is_root_kind, AnnouncementTags, KIND_ANNOUNCEMENT, KIND_DELETION};
use crate::policy::{maintainer_closure, AcceptedView, Facts, Id, RelayUrl, RepoCoord};

/// Relays taken from one announcement at most; the rest are ignored (announcements are untrusted).
pub const MAX_RELAYS_PER_ANNOUNCEMENT: usize = crate::policy::view::MAX_ANNOUNCED_RELAYS;

/// One repository we sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoEntry {
    pub relays: BTreeSet<RelayUrl>,
    pub root_events: BTreeSet<Id>,
}

/// Repository coordinate → relays and root events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSyncIndex {
    repos: BTreeMap<RepoCoord, RepoEntry>,
    /// Root event id → its author, so that only the author's deletion removes it.
    root_authors: HashMap<Id, Id>,
}

impl RepoSyncIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a repository or replaces its relay list; its root events are kept.
    /// Returns whether anything changed.
    pub fn upsert_repo(&mut self, coord: RepoCoord, relays: BTreeSet<RelayUrl>) -> bool {
        match self.repos.get_mut(&coord) {
            Some(entry) if entry.relays == relays => false,
            Some(entry) => {
                entry.relays = relays;
                true
            }
            None => {
                self.repos.insert(coord, RepoEntry { relays, root_events: BTreeSet::new() });
                true
            }
        }
    }

    /// Removes a repository (announcement replaced by one that no longer lists us, or deleted).
    pub fn remove_repo(&mut self, coord: &RepoCoord) -> Option<RepoEntry> {
        let entry = self.repos.remove(coord)?;
        for id in &entry.root_events {
            self.root_authors.remove(id);
        }
        Some(entry)
    }

    /// Records a root event of a repository in the index. Returns whether it was new.
    pub fn add_root(&mut self, coord: &RepoCoord, id: Id) -> bool {
        self.repos.get_mut(coord).is_some_and(|e| e.root_events.insert(id))
    }

    /// Forgets a root event wherever it is recorded (deleted). Returns whether it was known.
    pub fn remove_root(&mut self, id: &Id) -> bool {
        self.root_authors.remove(id);
        let mut found = false;
        for entry in self.repos.values_mut() {
            found |= entry.root_events.remove(id);
        }
        found
    }

    /// Applies an event the policy accepted (recorded in `view` already): announcements add,
    /// update or remove repositories with their `d` (the maintainer chain is recomputed), root
    /// events tagging an indexed repository are added, and an author's deletion removes their
    /// repository or root event. Returns whether the index changed.
    pub fn apply_accepted(&mut self, service: &RelayUrl, view: &impl AcceptedView, facts: &Facts) -> bool {
        match facts.kind {
            KIND_ANNOUNCEMENT => facts.d.as_deref().is_some_and(|d| self.refresh_d(service, view, d)),
            KIND_DELETION => {
                let mut changed = false;
                for coord in facts.repo_refs.iter().filter(|c| c.pubkey == facts.pubkey) {
                    changed |= self.remove_repo(coord).is_some();
                }
                for id in &facts.id_refs {
                    if self.root_authors.get(id) == Some(&facts.pubkey) {
                        changed |= self.remove_root(id);
                    }
                }
                changed
            }
            k if is_root_kind(k) => {
                let mut changed = false;
                for coord in &facts.repo_refs {
                    if self.add_root(coord, facts.id) {
                        self.root_authors.insert(facts.id, facts.pubkey);
                        changed = true;
                    }
                }
                changed
            }
            _ => false,
        }
    }

    /// Recomputes which announcements with this `d` are synced: those listing the service and the
    /// recursive maintainers they name.
    pub fn refresh_d(&mut self, service: &RelayUrl, view: &impl AcceptedView, d: &str) -> bool {
        let anns = view.announcements(d);
        let anchored = maintainer_closure(anns, anns.iter().filter(|a| a.lists_service).map(|a| a.pubkey));
        let stale: Vec<RepoCoord> =
            self.repos.keys().filter(|c| c.d == d && !anchored.contains(&c.pubkey)).cloned().collect();
        let mut changed = !stale.is_empty();
        for coord in stale {
            self.remove_repo(&coord);
        }
        for ann in anns.iter().filter(|a| anchored.contains(&a.pubkey)) {
            let relays = ann.relays.iter().filter(|r| !r.same_endpoint(service)).cloned().collect();
            changed |= self.upsert_repo(RepoCoord { pubkey: ann.pubkey, d: d.to_string() }, relays);
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
}

/// The relays an announcement lists: parsed, normalised, deduplicated, this service excluded,
/// at most [`MAX_RELAYS_PER_ANNOUNCEMENT`] (first ones win). Unparseable values are skipped.
pub fn announcement_relays(service: &RelayUrl, tags: &AnnouncementTags) -> BTreeSet<RelayUrl> {
    let mut out = BTreeSet::new();
    for raw in &tags.relays {
        if out.len() >= MAX_RELAYS_PER_ANNOUNCEMENT {
            break;
        }
        if let Ok(url) = RelayUrl::parse(raw) {
            if !url.same_endpoint(service) {
                out.insert(url);
            }
        }
    }
    out
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
        let got: Vec<String> = announcement_relays(&service, &tags).into_iter().map(String::from).collect();
        assert_eq!(got, ["wss://r1.example.com", "wss://r2.example.com"]);
    }

    #[test]
    fn announcement_relays_are_capped() {
        let service = RelayUrl::parse("wss://grasp.example.com").unwrap();
        let tags = AnnouncementTags {
            relays: (0..100).map(|i| format!("wss://r{i}.example.com")).collect(),
            ..Default::default()
        };
        assert_eq!(announcement_relays(&service, &tags).len(), MAX_RELAYS_PER_ANNOUNCEMENT);
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
    use crate::policy::event::KIND_ISSUE;
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
            let accepted = self.policy.decide_and_record(&mut self.view, &f).is_accept();
            if accepted {
                self.index.apply_accepted(self.policy.service(), &self.view, &f);
            }
            accepted
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
        assert!(w.offer(ann(1, "r", &["wss://elsewhere.example"], &[2], 2)));
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
    fn root_events_only_count_for_indexed_repos() {
        let mut w = World::new();
        w.offer(ann(1, "r", &[S], &[], 1));
        w.offer(other(50, 7, KIND_ISSUE, vec![coord(3, "r")], vec![]));
        w.offer(other(51, 7, 1111, vec![coord(1, "r")], vec![]));
        assert_eq!(w.index.root_count(), 0, "unknown repo, and a comment is not a root");
    }
}
