//! GRASP acceptance policy and relay URL rules, shared by the plugin and the daemon.
//!
//! Everything here is pure: no I/O, no clocks, no globals.

pub mod accept;
pub mod event;
pub mod url;
pub mod view;

pub use accept::{maintainer_closure, maintainer_set, Policy, Reason, Verdict};
pub use event::{verify_signature, Facts, Id, Note, RepoCoord};
pub use url::{AddressClass, RelayUrl, UrlError};
pub use view::{select_announced_relays, AcceptedSet, AcceptedView, AnnouncedRelays, Announcement, IgnoredRelays};

impl Policy {
    /// Decides on an event and, when accepted, records it in the view.
    pub fn decide_and_record(&self, view: &mut AcceptedSet, facts: &Facts) -> Verdict {
        let verdict = self.decide(view, facts);
        if verdict.is_accept() {
            // An announcement is accepted for listing us before anything else is checked.
            view.record(facts, verdict == Verdict::Accept(Reason::ListsService));
        }
        verdict
    }
}

#[cfg(test)]
pub(crate) mod tests;
