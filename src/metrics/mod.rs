//! Metrics and status: one snapshot the daemon keeps up to date, served as Prometheus text on
//! `GET /metrics` (render), as JSON on `GET /status` and as a health check on `GET /healthz`
//! (http), and printed by `grasp-sync status` (table).

mod http;
mod render;
mod table;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use http::{
    fetch_status, get, serve, serve_with, Limits, CONNECTION_LIFETIME, HEADER_READ_TIMEOUT, MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
};
pub use render::render_prometheus;
pub use table::render_table;

/// `/healthz` fails when the daemon's event loop has not ticked (once a second) for this long.
pub const TICK_STALE: Duration = Duration::from_secs(30);

/// One remote relay as operators see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayStatus {
    pub url: String,
    /// disconnected, connecting, syncing, connected, connected_historic_sync_failures.
    pub status: String,
    /// healthy, degraded, rate_limited, failing (backing off), dead.
    pub health: String,
    pub repos: usize,
    pub root_events: usize,
    /// NIP-77 support: `null` until probed.
    pub negentropy: Option<bool>,
    pub events_received: u64,
    pub events_stored: u64,
    #[serde(default)]
    pub events_duplicate: u64,
    pub events_rejected: u64,
    /// Of `events_rejected`, those the host itself refused (`OK false` from strfry: its own
    /// limits, the writePolicy plugin).
    #[serde(default)]
    pub events_host_rejected: u64,
    #[serde(default)]
    pub connection_attempts: u64,
    #[serde(default)]
    pub subscriptions: usize,
    /// Historic batches finished and planned in the current sync round.
    #[serde(default)]
    pub historic_done: usize,
    #[serde(default)]
    pub historic_total: usize,
    /// Sessions started from scratch (first connect, long outage, daily) and quick reconnects
    /// (resumed from where the last connection left off).
    /// Websocket payload bytes exchanged with the relay.
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    #[serde(default)]
    pub fresh_starts: u64,
    #[serde(default)]
    pub quick_reconnects: u64,
    /// What the relay sent that was dropped: unreadable frames, events with bad ids, bad
    /// signatures, events matching no filter we sent, events on subscriptions we never opened.
    #[serde(default)]
    pub frames_invalid: u64,
    #[serde(default)]
    pub events_invalid: u64,
    #[serde(default)]
    pub events_bad_signature: u64,
    #[serde(default)]
    pub events_unmatched: u64,
    #[serde(default)]
    pub events_unknown_subscription: u64,
    #[serde(default)]
    pub notices: u64,
    /// Connections closed because the relay misbehaved or sent live events too fast.
    #[serde(default)]
    pub misbehaving_disconnects: u64,
    /// Historic subscriptions given up for not finishing in time.
    #[serde(default)]
    pub historic_timeouts: u64,
    /// Work waiting for a subscription slot, and subscriptions open, on the current connection.
    #[serde(default)]
    pub jobs_queued: usize,
    #[serde(default)]
    pub subscriptions_open: usize,
    /// Items whose history failed in the last round (retried later), paginated walks that may
    /// have missed events, and why history is incomplete. A relay with any of these is never
    /// plain "connected".
    #[serde(default)]
    pub historic_failed: usize,
    #[serde(default)]
    pub truncated: u64,
    #[serde(default)]
    pub history_error: Option<String>,
    /// Events on broad live filters about no repository of ours (dropped, not an offence).
    #[serde(default)]
    pub events_unrelated: u64,
    pub last_error: Option<String>,
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
    pub relays: Vec<RelayStatus>,
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

/// Shared, cheaply cloneable snapshot. The lock is only held for short synchronous updates.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Status>>,
    /// When the daemon's event loop last ticked.
    ticked: Arc<Mutex<Option<Instant>>>,
}

impl Metrics {
    pub fn new(service_url: &str) -> Self {
        let m = Metrics::default();
        m.update(|s| s.service_url = service_url.to_string());
        m
    }

    /// Applies a change to the snapshot.
    pub fn update<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Applies a change to one relay's entry, creating it if needed.
    pub fn relay<R>(&self, url: &str, f: impl FnOnce(&mut RelayStatus) -> R) -> R {
        self.update(|s| {
            let i = match s.relays.iter().position(|r| r.url == url) {
                Some(i) => i,
                None => {
                    s.relays.push(RelayStatus {
                        url: url.to_string(),
                        status: "disconnected".into(),
                        health: "healthy".into(),
                        ..Default::default()
                    });
                    s.relays.len() - 1
                }
            };
            f(&mut s.relays[i])
        })
    }

    /// Forgets a relay that is no longer tracked.
    pub fn remove_relay(&self, url: &str) {
        self.update(|s| s.relays.retain(|r| r.url != url));
    }

    pub fn snapshot(&self) -> Status {
        let mut s = self.update(|s| s.clone());
        s.relays.sort_by(|a, b| a.url.cmp(&b.url));
        s
    }

    /// Prometheus text exposition of the snapshot.
    pub fn render_prometheus(&self) -> String {
        render_prometheus(&self.snapshot())
    }

    /// The event loop is alive (called on each of its ticks).
    pub fn tick(&self) {
        *self.ticked.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// What `/healthz` answers: healthy, or why not.
    pub fn health(&self) -> Result<(), String> {
        let ticked = *self.ticked.lock().unwrap_or_else(|e| e.into_inner());
        health_of(self.update(|s| s.host_connected), ticked, Instant::now())
    }
}

/// Healthy while the host is connected and the event loop has ticked within [`TICK_STALE`].
pub fn health_of(host_connected: bool, ticked: Option<Instant>, now: Instant) -> Result<(), String> {
    match ticked.map(|t| now.saturating_duration_since(t)) {
        None => Err("the event loop has not started (index still being built?)".into()),
        Some(age) if age > TICK_STALE => Err(format!("the event loop last ticked {}s ago", age.as_secs())),
        Some(_) if !host_connected => Err("the host relay is not connected".into()),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> Metrics {
        let m = Metrics::new("wss://git.example.com");
        m.update(|s| {
            s.repos = 3;
            s.root_events = 7;
        });
        m.relay("wss://r1.example.com", |r| {
            r.status = "connected".into();
            r.events_received = 10;
            r.events_stored = 8;
            r.negentropy = Some(true);
        });
        m.relay("wss://r\"2", |r| r.status = "syncing".into());
        m
    }

    #[test]
    fn prometheus_text_has_typed_families_and_escaped_labels() {
        let text = sample().render_prometheus();
        assert!(text.contains("# TYPE grasp_sync_events_received_total counter"));
        assert!(text.contains("grasp_sync_events_received_total{relay=\"wss://r1.example.com\"} 10"));
        assert!(text.contains("grasp_sync_relays{status=\"connected\"} 1"));
        assert!(!text.contains("grasp_sync_relays{status=\"dead\"}"), "health values are not statuses");
        assert!(text.contains("grasp_sync_relays_by_health{health=\"dead\"} 0"));
        assert!(text.contains("relay=\"wss://r\\\"2\""));
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("grasp_sync_")));
    }

    #[test]
    fn refusals_and_ignored_values_are_labelled_by_reason() {
        let m = sample();
        m.update(|s| {
            s.relay_targets = 50;
            s.max_relays = 50;
            s.refused_relays = 7;
            s.refused_relays_by_reason = [("over_limit".to_string(), 5), ("private".to_string(), 2)].into();
            s.announcement_relays_ignored = [("invalid".to_string(), 9)].into();
        });
        let text = m.render_prometheus();
        assert!(text.contains("# TYPE grasp_sync_relays_refused gauge"));
        assert!(text.contains("grasp_sync_relays_refused{reason=\"over_limit\"} 5"));
        assert!(text.contains("grasp_sync_relays_refused{reason=\"private\"} 2"));
        assert!(text.contains("grasp_sync_announcement_relays_ignored{reason=\"invalid\"} 9"));
        assert!(text.contains("grasp_sync_relay_targets 50") && text.contains("grasp_sync_max_relays 50"));
        let table = render_table(&m.snapshot());
        assert!(table.contains("relays 50/50") && table.contains("over_limit 5, private 2"), "{table}");
    }

    #[test]
    fn status_json_has_the_contract_fields() {
        let v = serde_json::to_value(sample().snapshot()).unwrap();
        for key in ["service_url", "repos", "root_events", "relays"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        let relay = &v["relays"][0];
        for key in [
            "url",
            "status",
            "health",
            "repos",
            "root_events",
            "negentropy",
            "events_received",
            "events_stored",
            "events_rejected",
            "last_error",
        ] {
            assert!(relay.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn healthy_only_while_the_host_is_connected_and_the_loop_ticks() {
        let now = Instant::now();
        let recent = Some(now - Duration::from_secs(1));
        assert!(health_of(true, recent, now).is_ok());
        assert!(health_of(false, recent, now).unwrap_err().contains("host"));
        assert!(health_of(true, None, now).unwrap_err().contains("not started"));
        let stale = Some(now - TICK_STALE - Duration::from_secs(1));
        assert!(health_of(true, stale, now).unwrap_err().contains("ticked"));
    }
}
