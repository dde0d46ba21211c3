//! `RelaySyncIndex`: what each remote relay has confirmed, and where it is in its lifecycle.
//!
//! Plain data. Times are unix seconds passed in by the caller; nothing here reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::targets::ItemSet;
use crate::policy::RelayUrl;

/// Where a relay is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayStatus {
    /// No socket (never connected, lost, closed as unneeded, or backing off).
    #[default]
    Disconnected,
    /// Dialling; no subscription yet.
    Connecting,
    /// Connected, historic sync in progress.
    Syncing,
    /// Connected, every historic batch finished.
    Connected,
    /// Connected, historic sync finished but at least one batch gave up.
    ConnectedHistoricSyncFailures,
}

impl RelayStatus {
    /// Whether a socket is open and subscriptions may be sent.
    pub fn is_connected(self) -> bool {
        matches!(self, RelayStatus::Syncing | RelayStatus::Connected | RelayStatus::ConnectedHistoricSyncFailures)
    }

    /// Whether the relay is in a transition that must not be interrupted (dialling or syncing).
    pub fn is_busy(self) -> bool {
        matches!(self, RelayStatus::Connecting | RelayStatus::Syncing)
    }

    /// Name used in `/status` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayStatus::Disconnected => "disconnected",
            RelayStatus::Connecting => "connecting",
            RelayStatus::Syncing => "syncing",
            RelayStatus::Connected => "connected",
            RelayStatus::ConnectedHistoricSyncFailures => "connected_historic_sync_failures",
        }
    }
}

/// Everything known about one remote relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayState {
    /// Items whose live subscription is in place and whose historic sync finished (or gave up).
    pub confirmed: ItemSet,
    pub status: RelayStatus,
    /// When the last connection was established.
    pub last_connected: Option<u64>,
    /// When the last established connection was lost (failed dials do not move it).
    pub disconnected_at: Option<u64>,
    /// Layer 1 (announcements) historic sync finished since the last fresh start.
    pub announcements_synced: bool,
    /// Every historic batch since the last connect finished.
    pub historic_sync_completed: bool,
    pub historic_sync_completed_at: Option<u64>,
    /// A configured bootstrap relay: always connected, never closed as unneeded.
    pub is_bootstrap: bool,
    /// When the next daily fresh start is due (see `lifecycle::daily_deadline`).
    pub fresh_start_due: Option<u64>,
    /// NIP-77 support: `None` unknown (probe), `Some(false)` fall back to REQ until the next
    /// fresh start re-probes.
    pub negentropy: Option<bool>,
}

/// The part of [`RelayState`] kept across daemon restarts (state dir).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedRelay {
    pub last_connected: Option<u64>,
    pub disconnected_at: Option<u64>,
    pub announcements_synced: bool,
    pub fresh_start_due: Option<u64>,
    pub negentropy: Option<bool>,
}

impl RelayState {
    /// The fields to persist.
    pub fn persisted(&self) -> PersistedRelay {
        PersistedRelay {
            last_connected: self.last_connected,
            disconnected_at: self.disconnected_at,
            announcements_synced: self.announcements_synced,
            fresh_start_due: self.fresh_start_due,
            negentropy: self.negentropy,
        }
    }
}

/// Relay URL → [`RelayState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelaySyncIndex {
    relays: BTreeMap<RelayUrl, RelayState>,
}

impl RelaySyncIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a relay (Disconnected) unless known; updates its bootstrap flag either way.
    pub fn register(&mut self, url: &RelayUrl, is_bootstrap: bool) -> &mut RelayState {
        let state = self.relays.entry(url.clone()).or_default();
        state.is_bootstrap = is_bootstrap;
        state
    }

    /// Restores persisted fields for a relay read from the state dir (status stays Disconnected,
    /// nothing is confirmed: a restart re-subscribes everything).
    pub fn restore(&mut self, url: &RelayUrl, saved: PersistedRelay) -> &mut RelayState {
        let state = self.relays.entry(url.clone()).or_default();
        state.last_connected = saved.last_connected;
        state.disconnected_at = saved.disconnected_at;
        state.announcements_synced = saved.announcements_synced;
        state.fresh_start_due = saved.fresh_start_due;
        state.negentropy = saved.negentropy;
        state
    }

    pub fn remove(&mut self, url: &RelayUrl) -> Option<RelayState> {
        self.relays.remove(url)
    }

    pub fn get(&self, url: &RelayUrl) -> Option<&RelayState> {
        self.relays.get(url)
    }

    pub fn get_mut(&mut self, url: &RelayUrl) -> Option<&mut RelayState> {
        self.relays.get_mut(url)
    }

    pub fn contains(&self, url: &RelayUrl) -> bool {
        self.relays.contains_key(url)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RelayUrl, &RelayState)> {
        self.relays.iter()
    }

    pub fn len(&self) -> usize {
        self.relays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    pub fn status(&self, url: &RelayUrl) -> RelayStatus {
        self.relays.get(url).map(|s| s.status).unwrap_or_default()
    }

    /// Confirmed items of a relay (empty when unknown).
    pub fn confirmed(&self, url: &RelayUrl) -> ItemSet {
        self.relays.get(url).map(|s| s.confirmed.clone()).unwrap_or_default()
    }

    /// Borrowed confirmed items (`None` when unknown).
    pub fn confirmed_ref(&self, url: &RelayUrl) -> Option<&ItemSet> {
        self.relays.get(url).map(|s| &s.confirmed)
    }

    /// Marks items confirmed on a (registered) relay. Returns false when the relay is unknown.
    pub fn confirm(&mut self, url: &RelayUrl, items: &ItemSet) -> bool {
        match self.relays.get_mut(url) {
            Some(s) => {
                s.confirmed.extend(items);
                true
            }
            None => false,
        }
    }

    /// Forgets confirmed items (for instance items no longer targeted, after consolidation).
    pub fn unconfirm(&mut self, url: &RelayUrl, items: &ItemSet) {
        if let Some(s) = self.relays.get_mut(url) {
            s.confirmed.remove_all(items);
        }
    }

    /// Dial started.
    pub fn mark_connecting(&mut self, url: &RelayUrl) {
        if let Some(s) = self.relays.get_mut(url) {
            s.status = RelayStatus::Connecting;
        }
    }

    /// Connection established; historic sync starts (status Syncing). A fresh start forgets
    /// confirmed items, layer-1 progress and a negative negentropy probe; a quick reconnect keeps
    /// confirmed items (they are re-subscribed with a catch-up `since`).
    pub fn mark_connected(&mut self, url: &RelayUrl, now: u64, fresh: bool) {
        if let Some(s) = self.relays.get_mut(url) {
            s.status = RelayStatus::Syncing;
            s.last_connected = Some(now);
            s.historic_sync_completed = false;
            s.historic_sync_completed_at = None;
            if fresh {
                s.confirmed = ItemSet::new();
                s.announcements_synced = false;
                if s.negentropy == Some(false) {
                    s.negentropy = None;
                }
            }
        }
    }

    /// Socket lost or closed, or a dial failed. `disconnected_at` moves only when an
    /// established connection ends, so a run of failed dials keeps the original outage start.
    pub fn mark_disconnected(&mut self, url: &RelayUrl, now: u64) {
        if let Some(s) = self.relays.get_mut(url) {
            if s.status.is_connected() {
                s.disconnected_at = Some(now);
            }
            s.status = RelayStatus::Disconnected;
        }
    }

    /// Layer-1 historic sync finished.
    pub fn mark_announcements_synced(&mut self, url: &RelayUrl) {
        if let Some(s) = self.relays.get_mut(url) {
            s.announcements_synced = true;
        }
    }

    /// Historic sync finished: Syncing → Connected, or ConnectedHistoricSyncFailures when
    /// `with_failures`. No effect unless the relay is connected.
    pub fn mark_historic_completed(&mut self, url: &RelayUrl, now: u64, with_failures: bool) {
        if let Some(s) = self.relays.get_mut(url) {
            if !s.status.is_connected() {
                return;
            }
            s.status = if with_failures { RelayStatus::ConnectedHistoricSyncFailures } else { RelayStatus::Connected };
            s.historic_sync_completed = true;
            s.historic_sync_completed_at = Some(now);
        }
    }

    /// New work (new items) puts a completed relay back into Syncing.
    pub fn mark_syncing(&mut self, url: &RelayUrl) {
        if let Some(s) = self.relays.get_mut(url) {
            if s.status.is_connected() {
                s.status = RelayStatus::Syncing;
                s.historic_sync_completed = false;
            }
        }
    }

    /// Relay count per status, for `/status` and metrics.
    pub fn status_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for s in self.relays.values() {
            *out.entry(s.status.as_str()).or_insert(0) += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RepoCoord;

    fn url() -> RelayUrl {
        RelayUrl::parse("wss://a.example").unwrap()
    }

    fn items(n: u8) -> ItemSet {
        let mut i = ItemSet::new();
        i.repos.insert(RepoCoord { pubkey: [n; 32], d: "x".into() });
        i.root_events.insert([n; 32]);
        i
    }

    #[test]
    fn disconnect_time_is_kept_through_failed_dials() {
        let mut idx = RelaySyncIndex::new();
        idx.register(&url(), false);
        idx.mark_connecting(&url());
        idx.mark_disconnected(&url(), 50);
        assert_eq!(idx.get(&url()).unwrap().disconnected_at, None, "a failed first dial is no outage");
        idx.mark_connecting(&url());
        idx.mark_connected(&url(), 100, true);
        idx.mark_disconnected(&url(), 200);
        idx.mark_connecting(&url());
        idx.mark_disconnected(&url(), 300);
        let s = idx.get(&url()).unwrap();
        assert_eq!(s.disconnected_at, Some(200));
        assert_eq!(s.last_connected, Some(100));
        assert_eq!(s.status, RelayStatus::Disconnected);
    }

    #[test]
    fn fresh_start_forgets_confirmed_and_quick_reconnect_keeps_them() {
        let mut idx = RelaySyncIndex::new();
        idx.register(&url(), false);
        idx.mark_connected(&url(), 1, true);
        assert!(idx.confirm(&url(), &items(1)));
        idx.mark_announcements_synced(&url());
        idx.mark_disconnected(&url(), 2);
        idx.mark_connected(&url(), 3, false);
        assert_eq!(idx.confirmed(&url()), items(1));
        assert!(idx.get(&url()).unwrap().announcements_synced);
        idx.get_mut(&url()).unwrap().negentropy = Some(false);
        idx.mark_connected(&url(), 4, true);
        let s = idx.get(&url()).unwrap();
        assert!(s.confirmed.is_empty());
        assert!(!s.announcements_synced);
        assert_eq!(s.negentropy, None, "a fresh start re-probes negentropy");
        assert!(!idx.confirm(&RelayUrl::parse("wss://b.example").unwrap(), &items(1)));
    }

    #[test]
    fn historic_completion_sets_status_and_time_only_when_connected() {
        let mut idx = RelaySyncIndex::new();
        idx.register(&url(), true);
        idx.mark_historic_completed(&url(), 5, false);
        assert_eq!(idx.status(&url()), RelayStatus::Disconnected);
        idx.mark_connected(&url(), 6, true);
        assert_eq!(idx.status(&url()), RelayStatus::Syncing);
        idx.mark_historic_completed(&url(), 7, true);
        assert_eq!(idx.status(&url()), RelayStatus::ConnectedHistoricSyncFailures);
        assert_eq!(idx.get(&url()).unwrap().historic_sync_completed_at, Some(7));
        idx.mark_syncing(&url());
        assert_eq!(idx.status(&url()), RelayStatus::Syncing);
        assert_eq!(idx.status_counts()["syncing"], 1);
    }

    #[test]
    fn persisted_fields_round_trip_without_confirmed_items() {
        let mut idx = RelaySyncIndex::new();
        let s = idx.register(&url(), false);
        s.last_connected = Some(1);
        s.disconnected_at = Some(2);
        s.announcements_synced = true;
        s.negentropy = Some(true);
        s.confirmed = items(3);
        let saved = idx.get(&url()).unwrap().persisted();
        let json = serde_json::to_string(&saved).unwrap();
        let mut fresh = RelaySyncIndex::new();
        fresh.restore(&url(), serde_json::from_str(&json).unwrap());
        let r = fresh.get(&url()).unwrap();
        assert_eq!(r.persisted(), saved);
        assert!(r.confirmed.is_empty());
        assert_eq!(r.status, RelayStatus::Disconnected);
    }
}
