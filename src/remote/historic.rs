//! Historic fetch after negentropy: the needed ids are asked for in `ids` chunks, counted as
//! they arrive on the wire, missing ones asked for once more, then the chunk is given up.
//! (REQ pagination lives in [`crate::wire::paginate`].)

use std::collections::BTreeSet;

use crate::policy::Id;
use crate::wire::Filter;

/// Default number of ids per `ids` REQ (strfry's `maxFilterLimit` is 500).
pub const DEFAULT_ID_CHUNK: usize = 300;

/// One `ids` REQ in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdChunk {
    pub wanted: BTreeSet<Id>,
    pub got: BTreeSet<Id>,
    /// 0 on the first request, 1 on the retry.
    pub attempt: u8,
}

/// What to do once an `ids` REQ has ended (EOSE or CLOSED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    Complete,
    Retry(IdChunk),
    /// Still missing after the retry: this many ids.
    Failed(usize),
}

impl IdChunk {
    pub fn new(ids: impl IntoIterator<Item = Id>) -> Self {
        IdChunk { wanted: ids.into_iter().collect(), got: BTreeSet::new(), attempt: 0 }
    }

    pub fn filter(&self) -> Filter {
        Filter { ids: self.wanted.iter().map(hex::encode).collect(), ..Default::default() }
            .limit(self.wanted.len() as u64)
    }

    /// Records an id that arrived; returns whether it was wanted and new.
    pub fn on_event(&mut self, id: &Id) -> bool {
        self.wanted.contains(id) && self.got.insert(*id)
    }

    pub fn finish(&self) -> ChunkOutcome {
        let missing: BTreeSet<Id> = self.wanted.difference(&self.got).copied().collect();
        if missing.is_empty() {
            ChunkOutcome::Complete
        } else if self.attempt == 0 {
            ChunkOutcome::Retry(IdChunk { wanted: missing, got: BTreeSet::new(), attempt: 1 })
        } else {
            ChunkOutcome::Failed(missing.len())
        }
    }
}

/// Splits needed ids into chunks of at most `size`.
pub fn chunk_ids(ids: &[Id], size: usize) -> Vec<IdChunk> {
    ids.chunks(size.max(1)).map(|c| IdChunk::new(c.iter().copied())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_chunks_retry_once_then_fail() {
        let ids: Vec<Id> = (0..7u8).map(|n| [n; 32]).collect();
        let chunks = chunk_ids(&ids, 3);
        assert_eq!(chunks.len(), 3);
        let mut c = chunks[0].clone();
        assert_eq!(c.filter().limit, Some(3));
        assert!(c.on_event(&[0; 32]));
        assert!(!c.on_event(&[0; 32]));
        assert!(!c.on_event(&[9; 32]));
        let ChunkOutcome::Retry(mut r) = c.finish() else { panic!() };
        assert_eq!(r.wanted.len(), 2);
        r.on_event(&[1; 32]);
        assert_eq!(r.finish(), ChunkOutcome::Failed(1));
        let mut full = chunks[2].clone();
        full.on_event(&[6; 32]);
        assert_eq!(full.finish(), ChunkOutcome::Complete);
    }
}
