//! GRASP acceptance rules (DESIGN.md §4). Pure: facts and an accepted view in, a verdict out.

use std::collections::{HashMap, HashSet};

use super::event::{Facts, Id, RepoCoord, KIND_ANNOUNCEMENT, KIND_DELETION, KIND_GRASP_LIST, KIND_STATE};
use super::url::{url_host, RelayUrl};
use super::view::{AcceptedView, Announcement};

/// Why an event was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A 30617 whose `relays` tag lists the service.
    ListsService,
    /// A 30617 by an owner or (recursive) maintainer of an anchored repository with that `d`.
    MaintainerChain,
    /// A 30618 by a maintainer of an accepted repository.
    StateByMaintainer,
    /// Kind 5: strfry applies NIP-09 itself.
    Deletion,
    /// A 10317 (a user's GRASP server list) that lists the service.
    GraspListListsService,
    /// References an accepted repository by coordinate.
    ReferencesRepo,
    /// References an accepted event by id.
    ReferencesEvent,
    /// An accepted event references it.
    ReferencedByAccepted,
}

/// The outcome of the rules for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept(Reason),
    /// The message starts with `blocked:`.
    Reject(String),
}

impl Verdict {
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept(_))
    }
}

/// The acceptance policy of one GRASP service.
#[derive(Debug, Clone)]
pub struct Policy {
    service: RelayUrl,
    service_host: String,
    require_clone: bool,
}

impl Policy {
    pub fn new(service: RelayUrl, require_clone: bool) -> Self {
        let service_host = service.host().to_ascii_lowercase();
        Policy { service, service_host, require_clone }
    }

    pub fn service(&self) -> &RelayUrl {
        &self.service
    }

    /// Whether an announcement's tags make it list this service (and, in strict mode, clone from it).
    pub fn lists_service(&self, facts: &Facts) -> bool {
        let Some(tags) = &facts.announcement else { return false };
        let in_relays =
            tags.relays.iter().filter_map(|r| RelayUrl::parse(r).ok()).any(|r| r.same_endpoint(&self.service));
        let clone_ok =
            !self.require_clone || tags.clone.iter().filter_map(|c| url_host(c)).any(|h| h == self.service_host);
        in_relays && clone_ok
    }

    /// Whether a GRASP server list (kind 10317) names this service in a `g` tag (normalised,
    /// exact endpoint, as for announcements).
    pub fn grasp_list_lists_service(&self, facts: &Facts) -> bool {
        facts.grasp_servers.iter().filter_map(|g| RelayUrl::parse(g).ok()).any(|g| g.same_endpoint(&self.service))
    }

    /// Applies the rules to one event.
    pub fn decide(&self, view: &impl AcceptedView, ev: &Facts) -> Verdict {
        if ev.kind != KIND_DELETION && view.is_deleted(&ev.id, &ev.pubkey) {
            return Verdict::Reject("blocked: this event was deleted by its author".into());
        }
        match ev.kind {
            KIND_ANNOUNCEMENT => self.decide_announcement(view, ev),
            KIND_STATE => decide_state(view, ev),
            KIND_DELETION => Verdict::Accept(Reason::Deletion),
            KIND_GRASP_LIST if self.grasp_list_lists_service(ev) => Verdict::Accept(Reason::GraspListListsService),
            _ => decide_other(view, ev),
        }
    }

    fn decide_announcement(&self, view: &impl AcceptedView, ev: &Facts) -> Verdict {
        let Some(d) = &ev.d else {
            return Verdict::Reject("blocked: repository announcement has no d tag".into());
        };
        let coord = RepoCoord { pubkey: ev.pubkey, d: d.clone() };
        if let Some(until) = view.deleted_until(&coord).filter(|&t| ev.created_at <= t) {
            return Verdict::Reject(format!(
                "blocked: repository '{}' was deleted by its owner (deletion at {until}); publish a newer announcement",
                truncate(d)
            ));
        }
        if self.lists_service(ev) {
            return Verdict::Accept(Reason::ListsService);
        }
        if maintainer_set(view, d).contains(&ev.pubkey) {
            return Verdict::Accept(Reason::MaintainerChain);
        }
        let what = if self.require_clone {
            format!("list {} in relays and a clone URL on {}", self.service, self.service_host)
        } else {
            format!("list {} in its relays tag", self.service)
        };
        Verdict::Reject(format!(
            "blocked: repository announcement does not {what}, and its author maintains no repository '{}' here",
            truncate(d)
        ))
    }
}

fn decide_state(view: &impl AcceptedView, ev: &Facts) -> Verdict {
    let Some(d) = &ev.d else {
        return Verdict::Reject("blocked: repository state has no d tag".into());
    };
    if view.announcements(d).is_empty() {
        return Verdict::Reject(format!("blocked: no repository '{}' is announced for this relay", truncate(d)));
    }
    if maintainer_set(view, d).contains(&ev.pubkey) {
        Verdict::Accept(Reason::StateByMaintainer)
    } else {
        Verdict::Reject(format!("blocked: author of this state is not a maintainer of repository '{}'", truncate(d)))
    }
}

fn decide_other(view: &impl AcceptedView, ev: &Facts) -> Verdict {
    if ev.repo_refs.iter().any(|c| view.has_repo(c)) {
        Verdict::Accept(Reason::ReferencesRepo)
    } else if ev.id_refs.iter().any(|id| view.has_event(id)) {
        Verdict::Accept(Reason::ReferencesEvent)
    } else if view.is_referenced(&ev.id) {
        Verdict::Accept(Reason::ReferencedByAccepted)
    } else {
        Verdict::Reject("blocked: event references no repository or event held by this GRASP relay".into())
    }
}

/// Owners and recursive maintainers of the accepted announcements with this `d`. Cycle-safe:
/// each author's announcement is expanded at most once.
pub fn maintainer_set(view: &impl AcceptedView, d: &str) -> HashSet<Id> {
    let anns = view.announcements(d);
    maintainer_closure(anns, anns.iter().map(|a| a.pubkey))
}

/// `start` and, recursively, the maintainers named by their announcements among `anns`.
pub fn maintainer_closure(anns: &[Announcement], start: impl IntoIterator<Item = Id>) -> HashSet<Id> {
    let by_author: HashMap<Id, Vec<&Announcement>> = anns.iter().fold(HashMap::new(), |mut m, a| {
        m.entry(a.pubkey).or_default().push(a);
        m
    });
    let mut set: HashSet<Id> = start.into_iter().collect();
    let mut queue: Vec<Id> = set.iter().copied().collect();
    while let Some(pk) = queue.pop() {
        for ann in by_author.get(&pk).into_iter().flatten() {
            for m in &ann.maintainers {
                if set.insert(*m) {
                    queue.push(*m);
                }
            }
        }
    }
    set
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
