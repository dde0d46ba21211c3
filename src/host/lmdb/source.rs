//! strfry's database as an [`EventSource`] for the index build.

use std::time::{Duration, Instant};

use super::{LmdbError, Snapshot, Stored, StrfryDb};
use crate::accepted::build::{self, Built, EventSource};
use crate::policy::{Facts, Id, Policy};

impl Snapshot<'_> {
    fn all_facts(&self, events: Vec<Stored<'_>>) -> Result<Vec<Facts>, LmdbError> {
        events.iter().map(|e| self.facts(e)).collect()
    }
}

impl EventSource for Snapshot<'_> {
    type Error = LmdbError;

    fn events_of_kind(&mut self, kind: u64) -> Result<Vec<Facts>, LmdbError> {
        let events = self.by_kind(kind, 0, u64::MAX)?;
        self.all_facts(events)
    }

    fn events_tagged(
        &mut self,
        letter: char,
        value: &str,
        skip: &dyn Fn(&Id) -> bool,
    ) -> Result<Vec<Facts>, LmdbError> {
        let mut events = self.by_tag(letter, value, 0, u64::MAX)?;
        events.retain(|e| !skip(&e.packed.id()));
        self.all_facts(events)
    }

    fn events_referencing(
        &mut self,
        letter: char,
        ids: &[Id],
        skip: &dyn Fn(&Id) -> bool,
    ) -> Result<Vec<Facts>, LmdbError> {
        let mut events = if ids.len() >= SCAN_BATCH {
            self.referencing_scan(letter, &ids.iter().copied().collect())?
        } else {
            let mut v = Vec::new();
            for id in ids {
                v.extend(self.by_tag(letter, &hex::encode(id), 0, u64::MAX)?);
            }
            v
        };
        events.retain(|e| !skip(&e.packed.id()));
        self.all_facts(events)
    }

    fn event_by_id(&mut self, id: &Id) -> Result<Option<Facts>, LmdbError> {
        match self.by_id(id)? {
            Some(ev) => Ok(Some(self.facts(&ev)?)),
            None => Ok(None),
        }
    }
}

/// From this many ids on, events referring to them are found by one walk over the letter's
/// part of the tag index (sequential pages) rather than one seek per id.
pub const SCAN_BATCH: usize = 2_000;

/// Builds the accepted view and repo index from strfry's database in one read transaction.
/// Returns the result, the highest levId it covers (follow newer events from there) and the
/// time taken.
pub fn load_index(db: &StrfryDb, policy: &Policy) -> Result<(Built, u64, Duration), LmdbError> {
    let started = Instant::now();
    let mut snap = db.snapshot()?;
    let last = snap.last_lev_id()?;
    let built = build::build(policy, &mut snap)?;
    snap.release_mapped_pages();
    Ok((built, last, started.elapsed()))
}
