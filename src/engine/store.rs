//! The host's event set as the engine sees it: a [`LocalStore`] trait (LMDB in production, memory
//! in tests) that yields negentropy local sets, and the [`Fetched`] events handed to the sink.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::policy::{Id, Note, RelayUrl};
use crate::wire::Filter;

/// An event fetched from a remote relay, with the relay it came from.
///
/// Its id has been checked ([`Note::check`]) and it matched a filter we sent; its signature has
/// **not** been checked: the consumer does that (strfry checks it on ingest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub relay: RelayUrl,
    pub note: Note,
}

/// Why the local set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The host's database failed (the cause is kept).
    #[error("local store: {what}")]
    Read {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A writer panicked while holding the store.
    #[error("local store: lock poisoned")]
    Poisoned,
}

/// Read access to what the host already holds.
pub trait LocalStore: Send + Sync + 'static {
    /// `(created_at, id)` of every held event matching `filter` (its `limit` ignored), plus the
    /// ids the host rejected before that match it, so that they are not fetched again.
    fn negentropy_items(&self, filter: &Filter) -> Result<Vec<(u64, Id)>, StoreError>;
}

/// An in-memory host: held events and rejected events.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    held: HashMap<Id, Note>,
    rejected: HashMap<Id, Note>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores an event (id checked). Returns whether it was new; malformed events are refused.
    pub fn insert(&self, note: Note) -> bool {
        let Ok(id) = note.check() else { return false };
        self.inner.write().expect("store lock").held.insert(id, note).is_none()
    }

    /// Records an event the host refused.
    pub fn reject(&self, note: Note) {
        if let Ok(id) = note.check() {
            self.inner.write().expect("store lock").rejected.insert(id, note);
        }
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.inner.read().expect("store lock").held.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("store lock").held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every held event.
    pub fn notes(&self) -> Vec<Note> {
        self.inner.read().expect("store lock").held.values().cloned().collect()
    }
}

impl LocalStore for MemoryStore {
    fn negentropy_items(&self, filter: &Filter) -> Result<Vec<(u64, Id)>, StoreError> {
        let inner = self.inner.read().map_err(|_| StoreError::Poisoned)?;
        Ok(inner
            .held
            .iter()
            .chain(inner.rejected.iter())
            .filter(|(_, n)| filter.matches(n))
            .map(|(id, n)| (n.created_at, *id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: u64, content: &str) -> Note {
        let mut n = Note {
            id: String::new(),
            pubkey: "11".repeat(32),
            created_at: 100,
            kind,
            tags: vec![],
            content: content.into(),
            sig: "22".repeat(64),
        };
        n.id = hex::encode(n.compute_id());
        n
    }

    #[test]
    fn local_set_holds_matching_held_and_rejected_events() {
        let s = MemoryStore::new();
        assert!(s.insert(note(1, "a")));
        assert!(!s.insert(note(1, "a")));
        s.reject(note(1, "b"));
        assert!(s.insert(note(7, "c")));
        let mut bad = note(1, "d");
        bad.content = "changed".into();
        assert!(!s.insert(bad), "an event whose id does not match is refused");
        assert_eq!(s.negentropy_items(&Filter::kinds([1])).unwrap().len(), 2);
        assert_eq!(s.len(), 2);
    }
}
