//! What the daemon reports: one shape per remote relay ([`RelayReport`]) and the whole snapshot
//! ([`Status`]). The engine and the daemon fill the reports; `/status` serves them as JSON, the
//! Prometheus families and `grasp-sync status`'s table are derived from the same values. Plain
//! data: no module here decides anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Every status, in the order operators read them.
    pub const ALL: [RelayStatus; 5] = [
        RelayStatus::Disconnected,
        RelayStatus::Connecting,
        RelayStatus::Syncing,
        RelayStatus::Connected,
        RelayStatus::ConnectedHistoricSyncFailures,
    ];

    /// Whether a socket is open and subscriptions may be sent.
    pub fn is_connected(self) -> bool {
        matches!(self, RelayStatus::Syncing | RelayStatus::Connected | RelayStatus::ConnectedHistoricSyncFailures)
    }

    /// Name used in `/status`, metrics labels and logs.
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

/// How a relay is doing, for `/status` and for choosing what to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Working, or never tried.
    #[default]
    Healthy,
    /// Recovered less than `degraded_secs` ago, or closed for misbehaving.
    Degraded,
    /// Told us to slow down; waiting out the cooldown.
    RateLimited,
    /// Failing, retrying with backoff.
    Failing,
    /// Failing for `dead_after_secs` or more: one try per `dead_retry_secs`.
    Dead,
}

impl HealthStatus {
    /// Every health value, in the order operators read them.
    pub const ALL: [HealthStatus; 5] = [
        HealthStatus::Healthy,
        HealthStatus::Degraded,
        HealthStatus::RateLimited,
        HealthStatus::Failing,
        HealthStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::RateLimited => "rate_limited",
            HealthStatus::Failing => "failing",
            HealthStatus::Dead => "dead",
        }
    }
}

macro_rules! compares_with_str {
    ($t:ty) => {
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
compares_with_str!(RelayStatus);
compares_with_str!(HealthStatus);

/// One remote relay: its state and counters. The relay's task fills most fields, the daemon the
/// host's answers (`events_stored`, `events_duplicate`, `events_host_rejected`,
/// `events_bad_signature`); `events_rejected` and `historic_total` are derived when read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayReport {
    pub url: String,
    pub status: RelayStatus,
    pub health: HealthStatus,
    /// Closed because no repository needs it any more (status is then Disconnected).
    pub closed_unneeded: bool,
    /// A configured bootstrap relay (always connected, full announcements layer).
    pub bootstrap: bool,
    /// Repositories and root events this relay is synced for.
    pub repos: usize,
    pub root_events: usize,
    /// NIP-77 support: `null` until probed.
    pub negentropy: Option<bool>,
    /// Dials, connections established, sessions started from scratch (first connect, long
    /// outage, daily) and quick reconnects (resumed from where the last connection left off).
    pub connection_attempts: u64,
    pub connects: u64,
    pub fresh_starts: u64,
    pub quick_reconnects: u64,
    /// Events that arrived on the wire in any subscription, and those passed on to the host.
    pub events_received: u64,
    pub events_delivered: u64,
    /// The host's answers for this relay's events: stored, already held, refused.
    pub events_stored: u64,
    pub events_duplicate: u64,
    /// Refused by the host itself (`OK false`: its own limits, the writePolicy plugin).
    pub events_host_rejected: u64,
    /// Everything dropped or refused: host refusals, bad signatures, bad ids, events matching no
    /// filter we sent, events on subscriptions we never opened.
    pub events_rejected: u64,
    /// Events with a bad id, or matching no filter of their subscription.
    pub events_invalid: u64,
    pub events_unmatched: u64,
    /// Events on broad live filters about no repository of ours (dropped, not an offence).
    pub events_unrelated: u64,
    /// Events on subscription ids we never opened (dropped).
    pub events_unknown_subscription: u64,
    /// Events whose signature did not verify.
    pub events_bad_signature: u64,
    /// Frames that were no readable relay message (bad JSON, wrong shape, garbage NIP-77).
    pub frames_invalid: u64,
    pub notices: u64,
    /// Connections we closed because a misbehaviour budget ran out or live events came too fast.
    pub misbehaving_disconnects: u64,
    /// Historic subscriptions given up because they did not finish in time.
    pub historic_timeouts: u64,
    /// Queue depths of the current connection: jobs waiting for a subscription slot, open
    /// subscriptions, items in historic sync, items waiting for a historic retry.
    pub jobs_queued: usize,
    pub subscriptions_open: usize,
    pub items_pending: usize,
    pub items_failed: usize,
    /// Ids asked for after negentropy reconciliation.
    pub ids_requested: u64,
    pub historic_failures: u64,
    /// Items whose history failed in the last round (retried after `historic_retry`). A relay
    /// with failed items, truncated walks or a history error is never plain "connected".
    pub historic_failed: usize,
    /// Paginated walks of the current round that may have missed events (same-second overflow).
    pub truncated: u64,
    /// Why history is incomplete (latest reason), cleared when a round completes fully.
    pub history_error: Option<String>,
    /// Retries of failed history, and periodic sweeps of cold items, on this relay.
    pub historic_retries: u64,
    pub sweeps: u64,
    /// Items named by live hot-set filters.
    pub hot_items: usize,
    /// Largest client frame sent.
    pub largest_frame: usize,
    /// Historic batches finished in the current sync round, and planned in all.
    pub historic_done: u64,
    pub historic_open: usize,
    pub historic_total: u64,
    pub rate_limited: u64,
    pub consolidations: u64,
    /// Live subscriptions the relay has confirmed with EOSE.
    pub subscriptions: usize,
    /// Most subscriptions open at once, and the current budget.
    pub max_open_subscriptions: usize,
    pub subscription_budget: usize,
    /// Websocket payload bytes, all connections of this relay so far.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_error: Option<String>,
}

impl RelayReport {
    pub fn new(url: &str) -> Self {
        RelayReport { url: url.to_string(), ..Default::default() }
    }

    /// Fills the derived fields from the counted ones.
    pub fn derive(mut self) -> Self {
        self.events_rejected = self.events_host_rejected
            + self.events_bad_signature
            + self.events_invalid
            + self.events_unmatched
            + self.events_unknown_subscription;
        self.historic_total = self.historic_done + self.historic_open as u64;
        self
    }
}

/// A relay URL not dialled, as an example of its reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefusedRelay {
    pub url: String,
    /// own_service, loopback, private, link_local, multicast, reserved or over_limit.
    pub reason: String,
    #[serde(default)]
    pub detail: String,
}

/// Everything `/status` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub service_url: String,
    pub repos: usize,
    pub root_events: usize,
    /// One report per remote relay, sorted by URL.
    pub relays: Vec<RelayReport>,
    /// Distinct relay URLs listed by synced repositories that are not dialled (our own, private
    /// addresses, over `sync.max_relays`): the sum of `refused_relays_by_reason`.
    #[serde(default)]
    pub refused_relays: usize,
    /// Those URLs by reason: own_service, loopback, private, link_local, multicast, reserved,
    /// over_limit.
    #[serde(default)]
    pub refused_relays_by_reason: BTreeMap<String, usize>,
    /// A few refused URLs per reason (not all of them).
    #[serde(default)]
    pub refused_relays_sample: Vec<RefusedRelay>,
    /// Relays the engine syncs from (bootstrap relays included) and the configured limit.
    #[serde(default)]
    pub relay_targets: usize,
    #[serde(default)]
    pub max_relays: usize,
    /// `relays` tag values of synced announcements not taken, by reason: invalid (not a ws/wss
    /// URL), duplicate (same relay once normalised), over_limit (past the first 20 per
    /// announcement). Counts tag values, not distinct URLs.
    #[serde(default)]
    pub announcement_relays_ignored: BTreeMap<String, u64>,
    #[serde(default)]
    pub ingest_queue: usize,
    #[serde(default)]
    pub host_connected: bool,
    #[serde(default)]
    pub events_pending_retry: usize,
    /// Rejected events settled (in the negentropy local sets until re-opened).
    #[serde(default)]
    pub events_settled: usize,
    /// Settled rejected events re-opened by an accepted event that could change their verdict.
    #[serde(default)]
    pub events_reopened: u64,
    /// Refused events not held for being over the host's maxEventSize.
    #[serde(default)]
    pub events_too_large: u64,
    /// Host refusals other than `blocked:` (e.g. `error: internal error`), each retried.
    #[serde(default)]
    pub host_refusals: u64,
    /// Events waiting for a retry after such a refusal.
    #[serde(default)]
    pub host_retries_pending: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_health_serialise_as_their_names() {
        for s in RelayStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert!(s == s.as_str());
        }
        for h in HealthStatus::ALL {
            assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
        }
    }

    #[test]
    fn derived_fields_follow_the_counts() {
        let r = RelayReport {
            events_host_rejected: 1,
            events_bad_signature: 2,
            events_invalid: 3,
            events_unmatched: 4,
            events_unknown_subscription: 5,
            historic_done: 6,
            historic_open: 7,
            ..RelayReport::new("wss://r.example.com")
        }
        .derive();
        assert_eq!((r.events_rejected, r.historic_total), (15, 13));
        let back: RelayReport = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r, "the /status JSON reads back into the same report");
    }
}
