//! Historic fetch state: `ids` chunks after negentropy (count on the wire, retry once) and REQ
//! pagination with explicit `limit` and inclusive `until` (dedupe at the boundary second, stop on
//! a short page or on no progress).

use std::collections::{BTreeSet, HashSet};

use crate::policy::{Id, Note};
use crate::remote::Filter;

/// Default number of ids per `ids` REQ (strfry's `maxFilterLimit` is 500).
pub const DEFAULT_ID_CHUNK: usize = 300;
/// Default page size for REQ pagination.
pub const DEFAULT_PAGE_LIMIT: u64 = 500;

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

/// REQ pagination over one filter, newest first.
#[derive(Debug, Clone)]
pub struct Pager {
    base: Filter,
    limit: u64,
    until: Option<u64>,
    /// Ids already seen at the current boundary second (the only ones a next page can repeat).
    boundary: (u64, HashSet<String>),
    page_count: u64,
    page_new: u64,
    page_min: Option<u64>,
    pub pages: u64,
    /// Set when more than `limit` events share one second: some may have been skipped.
    pub truncated: bool,
}

/// After a page: ask for the next one or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStep {
    Next(Filter),
    Done,
}

impl Pager {
    pub fn new(base: Filter, limit: u64) -> Self {
        let until = base.until;
        Pager {
            base,
            limit: limit.max(1),
            until,
            boundary: (u64::MAX, HashSet::new()),
            page_count: 0,
            page_new: 0,
            page_min: None,
            pages: 0,
            truncated: false,
        }
    }

    /// The filter for the current page.
    pub fn filter(&self) -> Filter {
        let mut f = self.base.clone().limit(self.limit);
        f.until = self.until;
        f
    }

    /// Counts an event from the wire; returns whether it is new to this pagination.
    pub fn on_event(&mut self, note: &Note) -> bool {
        self.page_count += 1;
        self.page_min = Some(self.page_min.map_or(note.created_at, |m| m.min(note.created_at)));
        if note.created_at == self.boundary.0 && self.boundary.1.contains(&note.id) {
            return false;
        }
        if note.created_at < self.boundary.0 {
            self.boundary = (note.created_at, HashSet::new());
        }
        if note.created_at == self.boundary.0 {
            self.boundary.1.insert(note.id.clone());
        }
        self.page_new += 1;
        true
    }

    /// Forgets a page that was cut short (e.g. CLOSED by a rate limit) so it can be asked again.
    pub fn retry_page(&mut self) {
        self.page_count = 0;
        self.page_new = 0;
        self.page_min = None;
    }

    /// Ends the current page.
    pub fn on_eose(&mut self) -> PageStep {
        self.pages += 1;
        let (count, new, min) = (self.page_count, self.page_new, self.page_min);
        self.page_count = 0;
        self.page_new = 0;
        self.page_min = None;
        let Some(min) = min else { return PageStep::Done };
        if count < self.limit {
            return PageStep::Done;
        }
        let next_until = if new == 0 {
            // The whole page was already seen: more than `limit` events share this second.
            self.truncated = true;
            match min.checked_sub(1) {
                Some(u) => u,
                None => return PageStep::Done,
            }
        } else {
            min
        };
        if self.base.since.is_some_and(|s| next_until < s) {
            return PageStep::Done;
        }
        self.until = Some(next_until);
        PageStep::Next(self.filter())
    }
}

/// Text classification of relay answers (NOTICE, CLOSED, NEG-ERR, `OK false`).
pub mod classify {
    /// A rate limit: back off for a cooldown.
    pub fn is_rate_limit(text: &str) -> bool {
        let t = text.to_ascii_lowercase();
        t.contains("rate-limited")
            || (t.contains("rate") && t.contains("limit"))
            || (t.contains("too many") && !is_too_many_reqs(text) && !t.contains("query results"))
            || t.contains("slow down")
            || t.contains("throttl")
    }

    /// strfry's subscription overflow: the live part of the last REQ was dropped.
    pub fn is_too_many_reqs(text: &str) -> bool {
        let t = text.to_ascii_lowercase();
        t.contains("too many concurrent reqs") || t.contains("too many subscriptions")
    }

    /// The relay does not speak NIP-77.
    pub fn is_neg_unsupported(text: &str) -> bool {
        let t = text.to_ascii_lowercase();
        t.contains("negentropy") || t.contains("neg-") || t.contains("unknown cmd") || t.contains("bad msg")
    }

    /// strfry's NEG-ERR when the filter matches too much.
    pub fn is_too_many_results(text: &str) -> bool {
        text.to_ascii_lowercase().contains("too many query results")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: u32, at: u64) -> Note {
        Note {
            id: format!("{id:064x}"),
            pubkey: "11".repeat(32),
            created_at: at,
            kind: 1,
            tags: vec![],
            content: String::new(),
            sig: "22".repeat(64),
        }
    }

    /// Serves `events` like a relay: matching, newest first, at most `limit`.
    fn page(events: &[Note], f: &Filter) -> Vec<Note> {
        let mut m: Vec<Note> = events.iter().filter(|e| f.matches(e)).cloned().collect();
        m.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        m.truncate(f.limit.unwrap() as usize);
        m
    }

    fn run(events: &[Note], limit: u64) -> (BTreeSet<String>, Pager) {
        let mut p = Pager::new(Filter::kinds([1]), limit);
        let mut got = BTreeSet::new();
        let mut f = p.filter();
        for _ in 0..10_000 {
            for e in page(events, &f) {
                if p.on_event(&e) {
                    assert!(got.insert(e.id.clone()), "duplicate passed on");
                }
            }
            match p.on_eose() {
                PageStep::Next(n) => f = n,
                PageStep::Done => return (got, p),
            }
        }
        panic!("pagination did not end");
    }

    #[test]
    fn pagination_gets_everything_across_equal_timestamps() {
        let events: Vec<Note> = (0..2_000).map(|i| note(i, 1_000 + u64::from(i / 40))).collect();
        let (got, p) = run(&events, 100);
        assert_eq!(got.len(), 2_000);
        assert!(!p.truncated);
    }

    #[test]
    fn a_second_with_more_than_a_page_is_stepped_over_and_flagged() {
        let mut events: Vec<Note> = (0..150).map(|i| note(i, 500)).collect();
        events.extend((150..200).map(|i| note(i, 400)));
        let (got, p) = run(&events, 100);
        assert!(p.truncated);
        assert_eq!(got.iter().filter(|id| events.iter().any(|e| &&e.id == id && e.created_at == 400)).count(), 50);
    }

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

    #[test]
    fn relay_texts_are_classified() {
        use classify::*;
        assert!(is_rate_limit("rate-limited: slow down"));
        assert!(is_rate_limit("ERROR: you are being throttled"));
        assert!(!is_rate_limit("ERROR: too many concurrent REQs"));
        assert!(is_too_many_reqs("ERROR: too many concurrent REQs"));
        assert!(is_neg_unsupported("ERROR: unknown cmd"));
        assert!(is_neg_unsupported("negentropy disabled"));
        assert!(is_too_many_results("blocked: too many query results"));
        assert!(!is_rate_limit("blocked: too many query results"));
    }
}
