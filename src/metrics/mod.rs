//! Metrics and status: one snapshot the daemon keeps up to date, served as Prometheus text on
//! `GET /metrics` (render), as JSON on `GET /status` and as a health check on `GET /healthz`
//! (http), and printed by `grasp-sync status` (table).

mod http;
mod render;
mod table;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::status::{HealthStatus, RefusedRelay, RelayReport, RelayStatus, Status};

pub use http::{
    fetch_status, get, serve, serve_with, Limits, CONNECTION_LIFETIME, HEADER_READ_TIMEOUT, MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
};
pub use render::render_prometheus;
pub use table::render_table;

/// `/healthz` fails when the daemon's event loop has not ticked (once a second) for this long.
pub const TICK_STALE: Duration = Duration::from_secs(30);

/// Where each relay's report is read when the status is served.
type RelaySource = Arc<dyn Fn() -> Vec<RelayReport> + Send + Sync>;

/// Shared, cheaply cloneable snapshot. The lock is only held for short synchronous updates.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Status>>,
    /// The engine's board: read at each snapshot, so `/status` shows a relay's state as it is.
    relays: Arc<Mutex<Option<RelaySource>>>,
    /// When the daemon's event loop last ticked.
    ticked: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("status", &self.snapshot()).finish()
    }
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

    /// Reads the relays' reports from `source` at every snapshot (instead of `Status::relays`).
    pub fn set_relay_source(&self, source: impl Fn() -> Vec<RelayReport> + Send + Sync + 'static) {
        *self.relays.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(source));
    }

    pub fn snapshot(&self) -> Status {
        let mut s = self.update(|s| s.clone());
        let source = self.relays.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(source) = source {
            s.relays = source();
        }
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
        m.update(|s| {
            s.relays.push(RelayReport {
                status: RelayStatus::Connected,
                events_received: 10,
                events_stored: 8,
                negentropy: Some(true),
                ..RelayReport::new("wss://r1.example.com")
            });
            s.relays.push(RelayReport { status: RelayStatus::Syncing, ..RelayReport::new("wss://r\"2") });
        });
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
