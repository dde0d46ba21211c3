//! The "accepted view": what the acceptance rules know about events already accepted.

use std::collections::{HashMap, HashSet};

use super::event::{Facts, Id, RepoCoord, KIND_ANNOUNCEMENT};
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
    /// (unparseable values skipped).
    pub relays: Vec<RelayUrl>,
}

/// Relays kept from one announcement; announcements are untrusted, the rest is ignored.
pub const MAX_ANNOUNCED_RELAYS: usize = 20;

/// Read access to what has been accepted. Implemented in memory here; other stores (strfry's
/// LMDB at start) seed an [`AcceptedSet`].
pub trait AcceptedView {
    /// Accepted announcements with this `d`, at most one per author.
    fn announcements(&self, d: &str) -> &[Announcement];
    /// An event with this id was accepted.
    fn has_event(&self, id: &Id) -> bool;
    /// An accepted event references this id in an `e`, `E` or `q` tag.
    fn is_referenced(&self, id: &Id) -> bool;

    /// An accepted announcement exists for this coordinate.
    fn has_repo(&self, coord: &RepoCoord) -> bool {
        self.announcements(&coord.d).iter().any(|a| a.pubkey == coord.pubkey)
    }
}

/// In-memory accepted view, updated with each accept decision.
#[derive(Debug, Default, Clone)]
pub struct AcceptedSet {
    announcements: HashMap<String, Vec<Announcement>>,
    events: HashSet<Id>,
    referenced: HashSet<Id>,
}

impl AcceptedSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an accepted event. `lists_service` matters for announcements only.
    pub fn record(&mut self, facts: &Facts, lists_service: bool) {
        self.events.insert(facts.id);
        self.referenced.extend(facts.id_refs.iter().copied());
        if facts.kind != KIND_ANNOUNCEMENT {
            return;
        }
        let (Some(d), Some(tags)) = (&facts.d, &facts.announcement) else { return };
        let ann = Announcement {
            id: facts.id,
            pubkey: facts.pubkey,
            created_at: facts.created_at,
            maintainers: tags.maintainers.clone(),
            lists_service,
            relays: announced_relays(&tags.relays),
        };
        let list = self.announcements.entry(d.clone()).or_default();
        match list.iter_mut().find(|a| a.pubkey == facts.pubkey) {
            // Replaceable: the newest wins; equal timestamps keep the lower id, as NIP-01 says.
            Some(old) if (ann.created_at, std::cmp::Reverse(ann.id)) > (old.created_at, std::cmp::Reverse(old.id)) => {
                *old = ann
            }
            Some(_) => {}
            None => list.push(ann),
        }
    }

    /// Number of accepted events recorded.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Every accepted announcement, grouped by `d`.
    pub fn all_announcements(&self) -> impl Iterator<Item = (&str, &Announcement)> {
        self.announcements.iter().flat_map(|(d, v)| v.iter().map(move |a| (d.as_str(), a)))
    }
}

fn announced_relays(raw: &[String]) -> Vec<RelayUrl> {
    let mut out: Vec<RelayUrl> = Vec::new();
    for url in raw.iter().filter_map(|r| RelayUrl::parse(r).ok()) {
        if out.len() >= MAX_ANNOUNCED_RELAYS {
            break;
        }
        if !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

impl AcceptedView for AcceptedSet {
    fn announcements(&self, d: &str) -> &[Announcement] {
        self.announcements.get(d).map(Vec::as_slice).unwrap_or(&[])
    }
    fn has_event(&self, id: &Id) -> bool {
        self.events.contains(id)
    }
    fn is_referenced(&self, id: &Id) -> bool {
        self.referenced.contains(id)
    }
}
