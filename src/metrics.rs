//! Metrics and status: one snapshot the daemon keeps up to date, served as Prometheus text on
//! `GET /metrics` and as JSON on `GET /status`, and printed by `grasp-sync status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
}

/// Shared, cheaply cloneable snapshot. The lock is only held for short synchronous updates.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Status>>,
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
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders a status snapshot as Prometheus metrics (`grasp_sync_*`).
pub fn render_prometheus(s: &Status) -> String {
    let mut out = String::new();
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
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        "grasp_sync_relays_refused",
        "gauge",
        "Distinct relay URLs listed by synced repositories that are not dialled, by reason.",
    );
    for (reason, n) in &s.refused_relays_by_reason {
        let _ = writeln!(out, "grasp_sync_relays_refused{{reason=\"{}\"}} {n}", escape_label(reason));
    }
    family(
        &mut out,
        "grasp_sync_announcement_relays_ignored",
        "gauge",
        "Relays tag values of synced announcements not taken (invalid, duplicate, over the per-announcement limit).",
    );
    for (reason, n) in &s.announcement_relays_ignored {
        let _ = writeln!(out, "grasp_sync_announcement_relays_ignored{{reason=\"{}\"}} {n}", escape_label(reason));
    }

    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_health: BTreeMap<&str, usize> = BTreeMap::new();
    for st in ["disconnected", "connecting", "syncing", "connected", "connected_historic_sync_failures"] {
        by_status.insert(st, 0);
    }
    for h in ["healthy", "degraded", "rate_limited", "failing", "dead"] {
        by_health.insert(h, 0);
    }
    for r in &s.relays {
        *by_status.entry(r.status.as_str()).or_default() += 1;
        *by_health.entry(r.health.as_str()).or_default() += 1;
    }
    family(&mut out, "grasp_sync_relays", "gauge", "Remote relays by connection status.");
    for (st, n) in &by_status {
        let _ = writeln!(out, "grasp_sync_relays{{status=\"{st}\"}} {n}");
    }
    family(&mut out, "grasp_sync_relays_by_health", "gauge", "Remote relays by health.");
    for (h, n) in &by_health {
        let _ = writeln!(out, "grasp_sync_relays_by_health{{health=\"{h}\"}} {n}");
    }

    type Field = fn(&RelayStatus) -> f64;
    let per_relay: [(&str, &str, &str, Field); 25] = [
        ("grasp_sync_bytes_received_total", "counter", "Websocket payload bytes received from the relay.", |r| {
            r.bytes_in as f64
        }),
        ("grasp_sync_bytes_sent_total", "counter", "Websocket payload bytes sent to the relay.", |r| {
            r.bytes_out as f64
        }),
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
        ("grasp_sync_connection_attempts_total", "counter", "Connection attempts to the relay.", |r| {
            r.connection_attempts as f64
        }),
        ("grasp_sync_subscriptions", "gauge", "Live subscriptions the relay has confirmed (EOSE received).", |r| {
            r.subscriptions as f64
        }),
        ("grasp_sync_historic_batches_done", "gauge", "Historic sync batches finished in the current round.", |r| {
            r.historic_done as f64
        }),
        ("grasp_sync_historic_batches_total", "gauge", "Historic sync batches planned in the current round.", |r| {
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
        family(&mut out, name, kind, help);
        for r in &s.relays {
            let _ = writeln!(out, "{name}{{relay=\"{}\"}} {}", escape_label(&r.url), field(r));
        }
    }
    family(&mut out, "grasp_sync_relay_up", "gauge", "1 when the relay is connected (status connected or syncing).");
    for r in &s.relays {
        let up = matches!(r.status.as_str(), "connected" | "syncing" | "connected_historic_sync_failures");
        let _ = writeln!(out, "grasp_sync_relay_up{{relay=\"{}\"}} {}", escape_label(&r.url), u8::from(up));
    }
    out
}

/// Serves `GET /metrics` and `GET /status` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, metrics)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, metrics: Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render_prometheus()),
        ("GET", "/status") => {
            ("200 OK", "application/json", serde_json::to_string_pretty(&metrics.snapshot()).unwrap_or_default())
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics or /status\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Fetches `/status` from a running daemon (used by `grasp-sync status`).
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<Status> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to {addr}"))?
        .map_err(|e| anyhow::anyhow!("cannot reach the daemon at {addr} (is `grasp-sync run` running?): {e}"))?;
    stream.write_all(format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("malformed HTTP answer from {addr}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("daemon answered: {}", head.lines().next().unwrap_or(""));
    }
    Ok(serde_json::from_str(body)?)
}

/// A readable table of the status, one line per relay.
pub fn render_table(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "service {}   repos {}   root events {}   host {}   ingest queue {}   relays {}/{}   refused relays {}",
        s.service_url,
        s.repos,
        s.root_events,
        if s.host_connected { "connected" } else { "DISCONNECTED" },
        s.ingest_queue,
        s.relay_targets,
        s.max_relays,
        s.refused_relays
    );
    let refused: Vec<String> =
        s.refused_relays_by_reason.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r} {n}")).collect();
    if !refused.is_empty() {
        let _ = writeln!(out, "refused by reason: {}", refused.join(", "));
    }
    let _ = writeln!(
        out,
        "{:<40} {:<14} {:<12} {:>5} {:>5} {:>4} {:>8} {:>8} {:>6} {:>9}  LAST ERROR",
        "RELAY", "STATUS", "HEALTH", "REPOS", "ROOTS", "NEG", "RECEIVED", "STORED", "REJECT", "HISTORIC"
    );
    for r in &s.relays {
        let neg = match r.negentropy {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let status = match r.status.as_str() {
            "connected_historic_sync_failures" => "connected*",
            other => other,
        };
        let _ = writeln!(
            out,
            "{:<40} {:<14} {:<12} {:>5} {:>5} {:>4} {:>8} {:>8} {:>6} {:>9}  {}",
            truncate(&r.url, 40),
            status,
            r.health,
            r.repos,
            r.root_events,
            neg,
            r.events_received,
            r.events_stored,
            r.events_rejected,
            format!("{}/{}", r.historic_done, r.historic_total),
            r.history_error.as_deref().or(r.last_error.as_deref()).map(|e| truncate(e, 60)).unwrap_or_default()
        );
    }
    if s.relays.iter().any(|r| r.status == "connected_historic_sync_failures") {
        let _ = writeln!(out, "connected* = connected, but history is incomplete (see last error); retried later");
        for r in s.relays.iter().filter(|r| r.historic_failed > 0 || r.truncated > 0) {
            let _ = writeln!(
                out,
                "  {}: {} items failed, {} truncated walks: {}",
                r.url,
                r.historic_failed,
                r.truncated,
                r.history_error.as_deref().unwrap_or("")
            );
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
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

    #[tokio::test]
    async fn http_endpoint_serves_metrics_and_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = sample();
        let server = tokio::spawn(serve(listener, m.clone()));
        let status = fetch_status(addr).await.unwrap();
        assert_eq!(status.repos, 3);
        assert_eq!(status.relays.len(), 2);
        let table = render_table(&status);
        assert!(table.contains("wss://r1.example.com") && table.contains("connected"), "{table}");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200") && body.contains("grasp_sync_repos 3"));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
