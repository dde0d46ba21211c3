//! `PendingSyncIndex`: per relay, the batches of work in flight.
//!
//! A batch is one decision to sync a set of items of one layer on one relay: its live REQ
//! and/or its historic sync (negentropy or paginated REQ), with the subscription ids still
//! open. When its last subscription ends, the batch leaves the index and its items become
//! confirmed (the caller moves them to the `RelaySyncIndex`). A failed batch leaves too, with
//! `failed` set, so the relay ends as ConnectedHistoricSyncFailures rather than retrying forever;
//! the next fresh start retries.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::layers::Layer;
use crate::engine::targets::ItemSet;
use crate::policy::RelayUrl;
use crate::remote::Paginator;

/// Identifies a batch; unique within one `PendingSyncIndex`.
pub type BatchId = u64;

/// How historic events are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// NIP-77 set reconciliation, then `ids` REQs for the missing events.
    Negentropy,
    /// REQ with `limit`/`until` pagination.
    Req,
}

/// What a new batch is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpec {
    pub layer: Layer,
    /// Repositories (L2) or root events (L3); empty for L1.
    pub items: ItemSet,
    /// Opens a live subscription (`limit: 0`).
    pub live: bool,
    /// Runs a historic sync.
    pub historic: bool,
    /// Lower bound of the historic sync (`None` = everything).
    pub since: Option<u64>,
    pub method: Method,
}

/// A batch in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub spec: BatchSpec,
    /// Subscription ids (REQ or NEG) not yet finished.
    pub subscriptions: BTreeSet<String>,
    /// Pagination state of paginated REQ subscriptions, by subscription id.
    pub pagination: BTreeMap<String, Paginator>,
    /// The batch gave up (timeouts, retries exhausted, truncation).
    pub failed: bool,
    pub started_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RelayPending {
    batches: BTreeMap<BatchId, Batch>,
    /// Batches failed since the relay was last cleared.
    failed: u32,
    /// When the last batch left (for the settle window).
    idle_since: Option<u64>,
}

/// Relay URL → batches in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSyncIndex {
    relays: BTreeMap<RelayUrl, RelayPending>,
    next_id: BatchId,
}

impl PendingSyncIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new batch with no subscription yet. Returns its id.
    pub fn add(&mut self, relay: &RelayUrl, spec: BatchSpec, now: u64) -> BatchId {
        self.next_id += 1;
        let id = self.next_id;
        let batch = Batch {
            id,
            spec,
            subscriptions: BTreeSet::new(),
            pagination: BTreeMap::new(),
            failed: false,
            started_at: now,
        };
        let rp = self.relays.entry(relay.clone()).or_default();
        rp.batches.insert(id, batch);
        rp.idle_since = None;
        id
    }

    pub fn get(&self, relay: &RelayUrl, id: BatchId) -> Option<&Batch> {
        self.relays.get(relay)?.batches.get(&id)
    }

    pub fn get_mut(&mut self, relay: &RelayUrl, id: BatchId) -> Option<&mut Batch> {
        self.relays.get_mut(relay)?.batches.get_mut(&id)
    }

    /// Attaches an open subscription to a batch. Returns false when the batch is unknown.
    pub fn add_subscription(&mut self, relay: &RelayUrl, id: BatchId, sub_id: &str) -> bool {
        match self.get_mut(relay, id) {
            Some(b) => {
                b.subscriptions.insert(sub_id.to_string());
                true
            }
            None => false,
        }
    }

    /// The batch a subscription belongs to.
    pub fn batch_of(&self, relay: &RelayUrl, sub_id: &str) -> Option<BatchId> {
        let rp = self.relays.get(relay)?;
        rp.batches.values().find(|b| b.subscriptions.contains(sub_id)).map(|b| b.id)
    }

    /// A subscription finished (EOSE of a live REQ, negentropy done, last page). When it was
    /// the batch's last, the batch leaves the index and is returned (confirm its items).
    pub fn finish_subscription(&mut self, relay: &RelayUrl, sub_id: &str, now: u64) -> Option<Batch> {
        let id = self.batch_of(relay, sub_id)?;
        let batch = self.get_mut(relay, id)?;
        batch.subscriptions.remove(sub_id);
        batch.pagination.remove(sub_id);
        if batch.subscriptions.is_empty() {
            self.take(relay, id, now)
        } else {
            None
        }
    }

    /// Removes a finished batch and returns it.
    pub fn complete(&mut self, relay: &RelayUrl, id: BatchId, now: u64) -> Option<Batch> {
        self.take(relay, id, now)
    }

    /// Removes a batch that gave up, marked `failed`, and counts the failure on the relay.
    pub fn fail(&mut self, relay: &RelayUrl, id: BatchId, now: u64) -> Option<Batch> {
        let mut batch = self.take(relay, id, now)?;
        batch.failed = true;
        if let Some(rp) = self.relays.get_mut(relay) {
            rp.failed += 1;
        }
        Some(batch)
    }

    fn take(&mut self, relay: &RelayUrl, id: BatchId, now: u64) -> Option<Batch> {
        let rp = self.relays.get_mut(relay)?;
        let batch = rp.batches.remove(&id)?;
        if rp.batches.is_empty() {
            rp.idle_since = Some(now);
        }
        Some(batch)
    }

    /// Drops everything about a relay (disconnect, fresh start, consolidation). Returns the
    /// batches that were in flight.
    pub fn clear_relay(&mut self, relay: &RelayUrl) -> Vec<Batch> {
        self.relays.remove(relay).map(|rp| rp.batches.into_values().collect()).unwrap_or_default()
    }

    /// Union of the items of every batch in flight on a relay.
    pub fn pending_items(&self, relay: &RelayUrl) -> ItemSet {
        let mut out = ItemSet::new();
        if let Some(rp) = self.relays.get(relay) {
            for b in rp.batches.values() {
                out.extend(&b.spec.items);
            }
        }
        out
    }

    pub fn has_pending(&self, relay: &RelayUrl) -> bool {
        self.relays.get(relay).is_some_and(|rp| !rp.batches.is_empty())
    }

    /// Whether a batch of `layer` is in flight (e.g. L1 after a connect).
    pub fn has_layer_pending(&self, relay: &RelayUrl, layer: Layer) -> bool {
        self.batches(relay).any(|b| b.spec.layer == layer)
    }

    pub fn batches(&self, relay: &RelayUrl) -> impl Iterator<Item = &Batch> {
        self.relays.get(relay).into_iter().flat_map(|rp| rp.batches.values())
    }

    pub fn batch_count(&self, relay: &RelayUrl) -> usize {
        self.relays.get(relay).map_or(0, |rp| rp.batches.len())
    }

    /// Open subscriptions of the relay's batches.
    pub fn subscription_count(&self, relay: &RelayUrl) -> usize {
        self.batches(relay).map(|b| b.subscriptions.len()).sum()
    }

    /// Batches failed since the relay was last cleared.
    pub fn failed_count(&self, relay: &RelayUrl) -> u32 {
        self.relays.get(relay).map_or(0, |rp| rp.failed)
    }

    /// Since when the relay has had no batch in flight (`None` while busy or never used).
    pub fn idle_since(&self, relay: &RelayUrl) -> Option<u64> {
        self.relays.get(relay).and_then(|rp| if rp.batches.is_empty() { rp.idle_since } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RepoCoord;

    fn relay() -> RelayUrl {
        RelayUrl::parse("wss://a.example").unwrap()
    }

    fn spec(layer: Layer, n: u8) -> BatchSpec {
        let mut items = ItemSet::new();
        if layer == Layer::Repos {
            items.repos.insert(RepoCoord { pubkey: [n; 32], d: "d".into() });
        } else if layer == Layer::Roots {
            items.root_events.insert([n; 32]);
        }
        BatchSpec { layer, items, live: true, historic: true, since: None, method: Method::Negentropy }
    }

    #[test]
    fn batch_completes_when_its_last_subscription_ends() {
        let mut p = PendingSyncIndex::new();
        let id = p.add(&relay(), spec(Layer::Roots, 1), 10);
        assert!(p.add_subscription(&relay(), id, "live-1"));
        assert!(p.add_subscription(&relay(), id, "neg-1"));
        assert_eq!(p.subscription_count(&relay()), 2);
        assert_eq!(p.pending_items(&relay()).root_events.len(), 1);
        assert!(p.finish_subscription(&relay(), "live-1", 11).is_none());
        assert_eq!(p.idle_since(&relay()), None);
        let done = p.finish_subscription(&relay(), "neg-1", 12).unwrap();
        assert_eq!(done.id, id);
        assert!(!done.failed);
        assert!(!p.has_pending(&relay()));
        assert_eq!(p.idle_since(&relay()), Some(12));
        assert!(p.finish_subscription(&relay(), "neg-1", 13).is_none(), "unknown subscriptions are ignored");
    }

    #[test]
    fn failed_batches_leave_and_are_counted_until_cleared() {
        let mut p = PendingSyncIndex::new();
        let a = p.add(&relay(), spec(Layer::Announcements, 0), 1);
        let b = p.add(&relay(), spec(Layer::Repos, 2), 1);
        assert_ne!(a, b);
        assert!(p.has_layer_pending(&relay(), Layer::Announcements));
        let failed = p.fail(&relay(), b, 5).unwrap();
        assert!(failed.failed);
        assert_eq!(p.failed_count(&relay()), 1);
        assert!(p.pending_items(&relay()).is_empty());
        assert_eq!(p.clear_relay(&relay()).len(), 1);
        assert_eq!(p.failed_count(&relay()), 0);
        assert!(p.fail(&relay(), a, 6).is_none());
        assert!(!p.add_subscription(&relay(), a, "x"));
    }

    #[test]
    fn pagination_state_rides_with_its_subscription() {
        let mut p = PendingSyncIndex::new();
        let id = p.add(&relay(), spec(Layer::Roots, 3), 1);
        p.add_subscription(&relay(), id, "page");
        p.get_mut(&relay(), id).unwrap().pagination.insert("page".into(), Paginator::new(Default::default(), 500));
        assert_eq!(p.batch_of(&relay(), "page"), Some(id));
        let done = p.finish_subscription(&relay(), "page", 2).unwrap();
        assert!(done.pagination.is_empty());
    }
}
