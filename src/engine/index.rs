//! `RepoSyncIndex`: what we want to hold. Repository coordinate → the relays its announcement
//! lists (normalised, this service excluded) and the root events (patches, PRs, issues) that tag it.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::event::AnnouncementTags;
use crate::policy::{Id, RelayUrl, RepoCoord};

/// Relays taken from one announcement at most; the rest are ignored (announcements are untrusted).
pub const MAX_RELAYS_PER_ANNOUNCEMENT: usize = 20;

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
}

impl RepoSyncIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a repository or replaces its relay list; its root events are kept.
    /// Returns whether anything changed.
    pub fn upsert_repo(&mut self, coord: RepoCoord, relays: BTreeSet<RelayUrl>) -> bool {
        let entry = self.repos.entry(coord).or_default();
        if entry.relays == relays && !relays.is_empty() {
            return false;
        }
        entry.relays = relays;
        true
    }

    /// Removes a repository (announcement replaced by one that no longer lists us, or deleted).
    pub fn remove_repo(&mut self, coord: &RepoCoord) -> Option<RepoEntry> {
        self.repos.remove(coord)
    }

    /// Records a root event of a repository in the index. Returns whether it was new.
    pub fn add_root(&mut self, coord: &RepoCoord, id: Id) -> bool {
        self.repos.get_mut(coord).is_some_and(|e| e.root_events.insert(id))
    }

    /// Forgets a root event wherever it is recorded (deleted). Returns whether it was known.
    pub fn remove_root(&mut self, id: &Id) -> bool {
        let mut found = false;
        for entry in self.repos.values_mut() {
            found |= entry.root_events.remove(id);
        }
        found
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
