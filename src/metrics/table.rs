//! `grasp-sync status`: the status snapshot as a readable table, one line per relay.

use std::fmt::Write as _;

use crate::status::{RelayStatus, Status};

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
        let status = match r.status {
            RelayStatus::ConnectedHistoricSyncFailures => "connected*",
            other => other.as_str(),
        };
        let _ = writeln!(
            out,
            "{:<40} {:<14} {:<12} {:>5} {:>5} {:>4} {:>8} {:>8} {:>6} {:>9}  {}",
            truncate(&r.url, 40),
            status,
            r.health.as_str(),
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
    if s.relays.iter().any(|r| r.status == RelayStatus::ConnectedHistoricSyncFailures) {
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
