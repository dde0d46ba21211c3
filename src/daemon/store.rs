//! The daemon's [`LocalStore`]: what the host holds (strfry's LMDB when configured, otherwise the
//! events the daemon has seen the host store) plus the rejected index, so negentropy transfers
//! only real differences and a sync never re-downloads what the host refused.

use std::sync::{Arc, Mutex};

use crate::daemon::rejected::RejectedIndex;
use crate::engine::store::{LocalStore, MemoryStore, StoreError};
use crate::host::lmdb::StrfryDb;
use crate::policy::Id;
use crate::wire::Filter;

pub struct HostStore {
    db: Option<Arc<StrfryDb>>,
    /// Without LMDB: events the host confirmed (stored or duplicate) or streamed to us.
    seen: MemoryStore,
    rejected: Arc<Mutex<RejectedIndex>>,
}

impl HostStore {
    pub fn new(db: Option<Arc<StrfryDb>>, rejected: Arc<Mutex<RejectedIndex>>) -> Self {
        HostStore { db, seen: MemoryStore::new(), rejected }
    }

    /// Records an event the host is known to hold (only needed without LMDB).
    pub fn host_has(&self, note: &crate::policy::Note) {
        if self.db.is_none() {
            self.seen.insert(note.clone());
        }
    }
}

/// Runs blocking work (an LMDB scan, a scan of the rejected hold) off the async scheduler: on a
/// multi-threaded runtime the worker hands its other tasks to the rest before blocking, so relay
/// tasks, the event loop and `/status` keep running. (A single-threaded runtime, as in unit
/// tests, has no other worker to hand them to: the work then runs in place.)
fn off_the_scheduler<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

impl LocalStore for HostStore {
    fn negentropy_items(&self, filter: &Filter) -> Result<Vec<(u64, Id)>, StoreError> {
        off_the_scheduler(|| self.scan(filter))
    }
}

impl HostStore {
    fn scan(&self, filter: &Filter) -> Result<Vec<(u64, Id)>, StoreError> {
        let mut items = match &self.db {
            Some(db) => db
                .snapshot()
                .and_then(|snap| snap.local_set(filter))
                .map_err(|e| StoreError::Read { what: "strfry LMDB", source: Box::new(e) })?,
            None => self.seen.negentropy_items(filter)?,
        };
        items.extend(self.rejected.lock().unwrap_or_else(|e| e.into_inner()).local_items(filter));
        items.sort_unstable();
        items.dedup();
        Ok(items)
    }
}
