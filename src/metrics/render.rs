//! Prometheus exposition of the status snapshot (`grasp_sync_*`), through the `prometheus`
//! crate: a registry is filled from one snapshot per scrape and encoded in the text format.

use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::{CounterVec, Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

use crate::status::{HealthStatus, RelayReport, RelayStatus, Status};

/// The `Content-Type` of [`render_prometheus`]'s output.
pub fn content_type() -> &'static str {
    prometheus::TEXT_FORMAT
}

/// A registry filled from one snapshot. Registration only fails for a bad or repeated name, a
/// mistake in the tables below that the unit tests catch; such a family is left out and logged.
struct Families(Registry);

impl Families {
    fn add<C: Collector + Clone + 'static>(&self, c: C) -> C {
        if let Err(e) = self.0.register(Box::new(c.clone())) {
            tracing::error!(error = %e, "metric family left out");
        }
        c
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric family"))
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        self.add(CounterVec::new(Opts::new(name, help), labels).expect("valid metric family"))
    }

    fn by_label(&self, name: &str, help: &str, label: &str, values: impl IntoIterator<Item = (String, f64)>) {
        let g = self.gauge(name, help, &[label]);
        for (v, n) in values {
            g.with_label_values(&[v.as_str()]).set(n);
        }
    }
}

/// Renders a status snapshot as Prometheus metrics (`grasp_sync_*`).
pub fn render_prometheus(s: &Status) -> String {
    let fam = Families(Registry::new());
    let gauges: [(&str, &str, f64); 7] = [
        ("grasp_sync_repos", "Repositories that list this relay (or are in their maintainer chain).", s.repos as f64),
        ("grasp_sync_root_events", "Root events (patches, PRs, issues) of those repositories.", s.root_events as f64),
        (
            "grasp_sync_relay_targets",
            "Remote relays the engine syncs from (at most max_relays).",
            s.relay_targets as f64,
        ),
        ("grasp_sync_max_relays", "The sync.max_relays limit.", s.max_relays as f64),
        ("grasp_sync_ingest_queue_depth", "Fetched events waiting to be written to the host.", s.ingest_queue as f64),
        (
            "grasp_sync_host_connected",
            "1 when the daemon is connected to the host relay.",
            if s.host_connected { 1.0 } else { 0.0 },
        ),
        (
            "grasp_sync_events_pending_retry",
            "Rejected events kept to be offered again when what they depend on arrives.",
            s.events_pending_retry as f64,
        ),
    ];
    for (name, help, v) in gauges {
        fam.add(Gauge::with_opts(Opts::new(name, help)).expect("valid metric")).set(v);
    }
    let more_gauges: [(&str, &str, f64); 2] = [
        (
            "grasp_sync_events_settled",
            "Rejected events settled: in the negentropy local sets until something re-opens them.",
            s.events_settled as f64,
        ),
        (
            "grasp_sync_host_retries_pending",
            "Events waiting for a retry after a host refusal.",
            s.host_retries_pending as f64,
        ),
    ];
    for (name, help, v) in more_gauges {
        fam.add(Gauge::with_opts(Opts::new(name, help)).expect("valid metric")).set(v);
    }
    let counters: [(&str, &str, f64); 3] = [
        (
            "grasp_sync_events_reopened_total",
            "Settled rejected events re-opened by an accepted event that could change their verdict.",
            s.events_reopened as f64,
        ),
        (
            "grasp_sync_events_too_large_total",
            "Rejected events not held for being over the host's maxEventSize.",
            s.events_too_large as f64,
        ),
        (
            "grasp_sync_host_refusals_total",
            "Events the host refused with something other than blocked: (retried with backoff).",
            s.host_refusals as f64,
        ),
    ];
    for (name, help, v) in counters {
        fam.counter(name, help, &[]).with_label_values(&[] as &[&str]).inc_by(v);
    }
    fam.by_label(
        "grasp_sync_relays_refused",
        "Distinct relay URLs listed by synced repositories that are not dialled, by reason.",
        "reason",
        s.refused_relays_by_reason.iter().map(|(r, n)| (r.clone(), *n as f64)),
    );
    fam.by_label(
        "grasp_sync_announcement_relays_ignored",
        "Relays tag values of synced announcements not taken (invalid, duplicate, over the per-announcement limit).",
        "reason",
        s.announcement_relays_ignored.iter().map(|(r, n)| (r.clone(), *n as f64)),
    );

    // Every status and health value is present, at 0 when no relay has it.
    let mut by_status: BTreeMap<String, f64> = RelayStatus::ALL.iter().map(|st| (st.to_string(), 0.0)).collect();
    let mut by_health: BTreeMap<String, f64> = HealthStatus::ALL.iter().map(|h| (h.to_string(), 0.0)).collect();
    for r in &s.relays {
        *by_status.entry(r.status.to_string()).or_default() += 1.0;
        *by_health.entry(r.health.to_string()).or_default() += 1.0;
    }
    fam.by_label("grasp_sync_relays", "Remote relays by connection status.", "status", by_status);
    fam.by_label("grasp_sync_relays_by_health", "Remote relays by health.", "health", by_health);

    type Field = fn(&RelayReport) -> f64;
    let per_relay: [(&str, &str, &str, Field); 26] = [
        (
            "grasp_sync_bytes_received_total",
            "counter",
            "Websocket payload bytes received from the relay, as on the wire (compressed where agreed).",
            |r| r.bytes_in as f64,
        ),
        (
            "grasp_sync_bytes_sent_total",
            "counter",
            "Websocket payload bytes sent to the relay, as on the wire (compressed where agreed).",
            |r| r.bytes_out as f64,
        ),
        ("grasp_sync_fresh_starts_total", "counter", "Sync sessions started from scratch with the relay.", |r| {
            r.fresh_starts as f64
        }),
        (
            "grasp_sync_quick_reconnects_total",
            "counter",
            "Sync sessions resumed with a catch-up from the last disconnect.",
            |r| r.quick_reconnects as f64,
        ),
        (
            "grasp_sync_events_received_total",
            "counter",
            "Events received from the relay that passed validation.",
            |r| r.events_received as f64,
        ),
        ("grasp_sync_events_stored_total", "counter", "Events from the relay newly stored by the host.", |r| {
            r.events_stored as f64
        }),
        ("grasp_sync_events_duplicate_total", "counter", "Events from the relay the host already had.", |r| {
            r.events_duplicate as f64
        }),
        (
            "grasp_sync_events_rejected_total",
            "counter",
            "Events from the relay refused by the policy or the host.",
            |r| r.events_rejected as f64,
        ),
        (
            "grasp_sync_events_host_rejected_total",
            "counter",
            "Events from the relay the host itself refused (counted in events_rejected too).",
            |r| r.events_host_rejected as f64,
        ),
        ("grasp_sync_connection_attempts_total", "counter", "Connection attempts to the relay.", |r| {
            r.connection_attempts as f64
        }),
        ("grasp_sync_subscriptions", "gauge", "Live subscriptions the relay has confirmed (EOSE received).", |r| {
            r.subscriptions as f64
        }),
        ("grasp_sync_historic_batches_done", "gauge", "Historic sync batches finished in the current round.", |r| {
            r.historic_done as f64
        }),
        ("grasp_sync_historic_batches_planned", "gauge", "Historic sync batches planned in the current round.", |r| {
            r.historic_total as f64
        }),
        ("grasp_sync_relay_repos", "gauge", "Repositories synced from the relay.", |r| r.repos as f64),
        (
            "grasp_sync_relay_frames_invalid_total",
            "counter",
            "Frames from the relay that were no readable message.",
            |r| r.frames_invalid as f64,
        ),
        ("grasp_sync_relay_events_invalid_total", "counter", "Events from the relay whose id did not match.", |r| {
            r.events_invalid as f64
        }),
        (
            "grasp_sync_relay_events_bad_signature_total",
            "counter",
            "Events from the relay whose signature did not verify.",
            |r| r.events_bad_signature as f64,
        ),
        (
            "grasp_sync_relay_events_unmatched_total",
            "counter",
            "Events from the relay matching no filter of their subscription.",
            |r| r.events_unmatched as f64,
        ),
        (
            "grasp_sync_relay_events_unknown_subscription_total",
            "counter",
            "Events from the relay on subscription ids we never opened.",
            |r| r.events_unknown_subscription as f64,
        ),
        ("grasp_sync_relay_notices_total", "counter", "NOTICE messages from the relay.", |r| r.notices as f64),
        (
            "grasp_sync_relay_misbehaving_disconnects_total",
            "counter",
            "Connections closed because the relay misbehaved or sent live events too fast.",
            |r| r.misbehaving_disconnects as f64,
        ),
        (
            "grasp_sync_relay_historic_timeouts_total",
            "counter",
            "Historic subscriptions given up because they did not finish in time.",
            |r| r.historic_timeouts as f64,
        ),
        ("grasp_sync_relay_jobs_queued", "gauge", "Sync work waiting for a subscription slot on the relay.", |r| {
            r.jobs_queued as f64
        }),
        (
            "grasp_sync_relay_historic_failed",
            "gauge",
            "Items whose history from the relay failed in the last round (retried later).",
            |r| r.historic_failed as f64,
        ),
        (
            "grasp_sync_relay_historic_truncated",
            "gauge",
            "Paginated walks of the current round that may have missed events.",
            |r| r.truncated as f64,
        ),
        (
            "grasp_sync_relay_events_unrelated_total",
            "counter",
            "Events on broad live filters about no repository of ours (dropped).",
            |r| r.events_unrelated as f64,
        ),
    ];
    for (name, kind, help, field) in per_relay {
        let values = s.relays.iter().map(|r| (r.url.as_str(), field(r)));
        if kind == "counter" {
            let c = fam.counter(name, help, &["relay"]);
            values.for_each(|(url, v)| c.with_label_values(&[url]).inc_by(v));
        } else {
            let g = fam.gauge(name, help, &["relay"]);
            values.for_each(|(url, v)| g.with_label_values(&[url]).set(v));
        }
    }
    let up =
        fam.gauge("grasp_sync_relay_up", "1 when the relay is connected (status connected or syncing).", &["relay"]);
    for r in &s.relays {
        up.with_label_values(&[r.url.as_str()]).set(if r.status.is_connected() { 1.0 } else { 0.0 });
    }

    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&fam.0.gather(), &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
