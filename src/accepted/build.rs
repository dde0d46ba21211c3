//! Building the accepted view and the repo index from what a host already stores.
//!
//! [`build`] is a pure function over an [`EventSource`] (the host's store seen through three
//! lookups). It reaches the same verdicts as the acceptance policy applied event by event, but
//! independently of arrival order: announcements are decided to a fixpoint (a maintainer's
//! announcement counts whether it was stored before or after the owner's), and references are
//! followed transitively in both directions. Events the host holds that the policy would not
//! accept are never counted, so a strfry full of unrelated events yields the same result as one
//! that only ever held ours.

use std::collections::{HashMap, HashSet, VecDeque};

use super::index::RepoSyncIndex;
use crate::policy::event::{KIND_ANNOUNCEMENT, KIND_DELETION, KIND_STATE};
use crate::policy::{AcceptedSet, AcceptedView, Facts, Id, Policy, RepoCoord};

/// Read access to a host's stored events, enough to rebuild the accepted view.
pub trait EventSource {
    type Error;
    /// Every stored event of this kind.
    fn events_of_kind(&mut self, kind: u64) -> Result<Vec<Facts>, Self::Error>;
    /// Every stored event with a tag `letter` whose first value is `value` (hex ids for
    /// `e`/`E`/`q`, coordinates for `a`/`A`/`q`), except those whose id `skip` names (already
    /// decided: a source may avoid decoding them).
    fn events_tagged(
        &mut self,
        letter: char,
        value: &str,
        skip: &dyn Fn(&Id) -> bool,
    ) -> Result<Vec<Facts>, Self::Error>;
    /// The stored event with this id.
    fn event_by_id(&mut self, id: &Id) -> Result<Option<Facts>, Self::Error>;

    /// Every stored event with a tag `letter` naming one of `ids` (hex), except those `skip`
    /// names. A source with sorted indices may answer a large batch with one range scan
    /// instead of one seek per id.
    fn events_referencing(
        &mut self,
        letter: char,
        ids: &[Id],
        skip: &dyn Fn(&Id) -> bool,
    ) -> Result<Vec<Facts>, Self::Error> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.events_tagged(letter, &hex::encode(id), skip)?);
        }
        Ok(out)
    }
}

/// Counters of one build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Announcements considered (the newest per author and `d`).
    pub announcements: usize,
    pub accepted_announcements: usize,
    pub accepted_states: usize,
    /// Every accepted event, announcements and states included.
    pub accepted_events: usize,
    /// Lookups made on the source.
    pub lookups: usize,
}

/// What a build produces.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// The plugin's view: every event the policy accepts, with its references.
    pub accepted: AcceptedSet,
    /// The repositories we sync (accepted announcements) with their relays and root events.
    pub index: RepoSyncIndex,
    pub stats: BuildStats,
}

/// Tag letters whose values may be event ids.
const ID_LETTERS: [char; 3] = ['e', 'E', 'q'];
/// Tag letters whose values may be repository coordinates.
const REPO_LETTERS: [char; 3] = ['a', 'A', 'q'];

fn newer(a: &Facts, b: &Facts) -> bool {
    (a.created_at, std::cmp::Reverse(a.id)) > (b.created_at, std::cmp::Reverse(b.id))
}

/// Newest event per (author, `d`) of a replaceable kind; events without `d` are kept as they
/// are (the policy rejects them).
fn newest_per_address(events: Vec<Facts>) -> Vec<Facts> {
    let mut by_addr: HashMap<(Id, Option<String>), Facts> = HashMap::new();
    for f in events {
        let key = (f.pubkey, f.d.clone());
        match by_addr.get(&key) {
            Some(old) if !newer(&f, old) => {}
            _ => {
                by_addr.insert(key, f);
            }
        }
    }
    let mut out: Vec<Facts> = by_addr.into_values().collect();
    out.sort_by_key(|f| (f.created_at, f.id));
    out
}

/// Rebuilds the accepted view and the repo index from a host's store.
pub fn build<S: EventSource>(policy: &Policy, source: &mut S) -> Result<Built, S::Error> {
    let mut b = Builder { policy, source, view: AcceptedSet::new(), stats: BuildStats::default() };
    b.deletions()?;
    b.announcements()?;
    b.states()?;
    b.references()?;
    let index = RepoSyncIndex::from_view(policy.service(), &b.view);
    let mut stats = b.stats;
    stats.accepted_announcements = b.view.all_announcements().count();
    stats.accepted_events = b.view.event_count();
    Ok(Built { accepted: b.view, index, stats })
}

struct Builder<'a, S> {
    policy: &'a Policy,
    source: &'a mut S,
    view: AcceptedSet,
    stats: BuildStats,
}

impl<S: EventSource> Builder<'_, S> {
    /// Deletions first: what they delete is never counted, whatever the storage order.
    fn deletions(&mut self) -> Result<(), S::Error> {
        self.stats.lookups += 1;
        for f in self.source.events_of_kind(KIND_DELETION)? {
            self.view.record(&f, false);
        }
        Ok(())
    }

    /// The newest announcement per author and `d`; the view decides which are anchored (the
    /// maintainer chain reaches a fixpoint whatever the order they are recorded in).
    fn announcements(&mut self) -> Result<(), S::Error> {
        self.stats.lookups += 1;
        let all = newest_per_address(self.source.events_of_kind(KIND_ANNOUNCEMENT)?);
        self.stats.announcements = all.len();
        for f in all.iter().filter(|f| f.d.is_some()) {
            self.view.record(f, self.policy.lists_service(f));
        }
        Ok(())
    }

    /// State events (they depend on announcements only).
    fn states(&mut self) -> Result<(), S::Error> {
        self.stats.lookups += 1;
        for f in newest_per_address(self.source.events_of_kind(KIND_STATE)?) {
            if f.d.is_some() {
                self.view.record(&f, false);
                self.stats.accepted_states += usize::from(self.view.has_event(&f.id));
            }
        }
        Ok(())
    }

    /// Follows references from accepted repositories and events until nothing new is accepted.
    fn references(&mut self) -> Result<(), S::Error> {
        // Accepted announcements and states are in the view already; their ids and references
        // start the walk.
        let mut queue: VecDeque<(Id, Vec<Id>)> =
            self.view.accepted_ids().map(|id| (*id, self.view.held_id_refs(id).to_vec())).collect();
        let coords: Vec<RepoCoord> =
            self.view.all_announcements().map(|(d, a)| RepoCoord { pubkey: a.pubkey, d: d.to_string() }).collect();
        for coord in coords {
            let value = coord.to_string();
            for letter in REPO_LETTERS {
                let found = self.tagged(letter, &value)?;
                self.offer(found, &mut queue);
            }
        }
        // Breadth first, one layer of newly accepted events at a time, so that the events
        // referring to a whole layer are found in one batch per tag letter.
        let mut absent: HashSet<Id> = HashSet::new();
        while !queue.is_empty() {
            let layer: Vec<(Id, Vec<Id>)> = queue.drain(..).collect();
            for (_, refs) in &layer {
                for r in refs {
                    if self.view.has_event(r) || absent.contains(r) {
                        continue;
                    }
                    self.stats.lookups += 1;
                    match self.source.event_by_id(r)? {
                        Some(f) => self.offer(vec![f], &mut queue),
                        None => {
                            absent.insert(*r);
                        }
                    }
                }
            }
            let ids: Vec<Id> = layer.into_iter().map(|(id, _)| id).collect();
            for letter in ID_LETTERS {
                self.stats.lookups += 1;
                let view = &self.view;
                let found = self.source.events_referencing(letter, &ids, &|id| view.has_event(id))?;
                self.offer(found, &mut queue);
            }
        }
        Ok(())
    }

    fn tagged(&mut self, letter: char, value: &str) -> Result<Vec<Facts>, S::Error> {
        self.stats.lookups += 1;
        let view = &self.view;
        self.source.events_tagged(letter, value, &|id| view.has_event(id))
    }

    /// Decides candidates found through a reference; accepted ones join the walk.
    fn offer(&mut self, found: Vec<Facts>, queue: &mut VecDeque<(Id, Vec<Id>)>) {
        for f in found {
            // Announcements, states and deletions have rules of their own, already applied.
            if matches!(f.kind, KIND_ANNOUNCEMENT | KIND_STATE | KIND_DELETION) || self.view.has_event(&f.id) {
                continue;
            }
            if !self.policy.decide(&self.view, &f).is_accept() {
                continue;
            }
            self.view.record(&f, false);
            if self.view.has_event(&f.id) {
                queue.push_back((f.id, f.id_refs));
            }
        }
    }
}

/// An [`EventSource`] over events held in memory (tests, and hosts without an index).
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    events: Vec<(Facts, Vec<(char, String)>)>,
    by_tag: HashMap<(char, String), Vec<usize>>,
    by_id: HashMap<Id, usize>,
}

impl MemorySource {
    /// Adds an event: its facts and its tags (name, first value).
    pub fn push(&mut self, facts: Facts, tags: &[Vec<String>]) {
        let tags: Vec<(char, String)> = tags
            .iter()
            .filter_map(|t| {
                let mut name = t.first()?.chars();
                match (name.next(), name.next()) {
                    (Some(c), None) => Some((c, t.get(1).cloned().unwrap_or_default())),
                    _ => None,
                }
            })
            .collect();
        let at = self.events.len();
        for t in &tags {
            let list = self.by_tag.entry(t.clone()).or_default();
            if list.last() != Some(&at) {
                list.push(at);
            }
        }
        self.by_id.entry(facts.id).or_insert(at);
        self.events.push((facts, tags));
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

impl EventSource for MemorySource {
    type Error = std::convert::Infallible;

    fn events_of_kind(&mut self, kind: u64) -> Result<Vec<Facts>, Self::Error> {
        Ok(self.events.iter().filter(|(f, _)| f.kind == kind).map(|(f, _)| f.clone()).collect())
    }

    fn events_tagged(
        &mut self,
        letter: char,
        value: &str,
        skip: &dyn Fn(&Id) -> bool,
    ) -> Result<Vec<Facts>, Self::Error> {
        let Some(list) = self.by_tag.get(&(letter, value.to_string())) else { return Ok(Vec::new()) };
        Ok(list.iter().map(|&i| &self.events[i].0).filter(|f| !skip(&f.id)).cloned().collect())
    }

    fn event_by_id(&mut self, id: &Id) -> Result<Option<Facts>, Self::Error> {
        Ok(self.by_id.get(id).map(|&i| self.events[i].0.clone()))
    }
}

#[cfg(test)]
mod agree_tests;
#[cfg(test)]
mod tests;
