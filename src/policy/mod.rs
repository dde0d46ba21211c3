//! GRASP acceptance policy and relay URL rules, shared by the plugin and the daemon.
//!
//! Everything here is pure: no I/O, no clocks, no globals.

pub mod accept;
pub mod announced;
pub mod event;
pub mod url;
pub mod view;

pub use accept::{maintainer_closure, maintainer_set, Policy, Reason, Verdict};
pub use event::{verify_signature, Facts, Id, Note, RepoCoord};
pub use url::{AddressClass, RelayUrl, UrlError};
pub use view::{
    select_announced_relays, AcceptedSet, AcceptedView, AnnouncedRelays, Announcement, Change, IgnoredRelays,
};

impl Policy {
    /// Decides on an event and, when accepted, records it in the view.
    pub fn decide_and_record(&self, view: &mut AcceptedSet, facts: &Facts) -> Verdict {
        self.decide_and_apply(view, facts).0
    }

    /// [`decide_and_record`](Self::decide_and_record), also saying what the view changed.
    pub fn decide_and_apply(&self, view: &mut AcceptedSet, facts: &Facts) -> (Verdict, Change) {
        let verdict = self.decide(view, facts);
        let change = if verdict.is_accept() {
            view.record(facts, facts.kind == event::KIND_ANNOUNCEMENT && self.lists_service(facts))
        } else {
            Change::default()
        };
        (verdict, change)
    }
}

#[cfg(test)]
pub(crate) mod tests;
