//! Follows the host relay's new events that change what we sync: repository announcements, root
//! events, deletions, and the comments, status, PR updates and reactions whose deletions and
//! reactions are synced. A websocket subscription, delivered in short batches, re-opened with
//! backoff whenever the host goes away (strfry restarts).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::policy::event::{KIND_ANNOUNCEMENT, KIND_DELETION, KIND_ISSUE, KIND_PATCH, KIND_PR, KIND_REACTION};
use crate::policy::{Note, RelayUrl};
use crate::wire::conn::DEFAULT_PAYLOAD_LIMIT;
use crate::wire::{backoff, unix_now, ClientMsg, ConnError, Connection, Filter, RelayMsg};

/// Kinds whose arrival changes the repository index (its repositories, root events and related
/// events: NIP-22 comments, PR updates, status, reactions).
pub const STREAM_KINDS: [u64; 12] = [
    KIND_ANNOUNCEMENT,
    KIND_PATCH,
    KIND_PR,
    KIND_ISSUE,
    KIND_DELETION,
    1111,
    1619,
    1630,
    1631,
    1632,
    1633,
    KIND_REACTION,
];
/// After a reconnect, events this much older than the last moment we were connected are asked
/// for again (clock skew, events written during the outage).
pub const RECONNECT_MARGIN_SECS: u64 = 120;
/// A batch is delivered early once it holds this many events.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub url: RelayUrl,
    /// First subscription starts here (unix seconds): the moment the index was built.
    pub since: u64,
    /// How long events gather before a batch is delivered (default 1 s).
    pub batch_window: Duration,
    pub base_backoff_secs: u64,
    pub max_backoff_secs: u64,
}

/// What the stream delivers.
#[derive(Debug)]
pub enum StreamEvent {
    /// New events, in arrival order.
    Batch(Vec<Note>),
    /// Connection state of the host, for status and metrics.
    Connected(bool),
}

/// Runs until `shutdown` turns true or the receiver is dropped.
pub async fn run(cfg: StreamConfig, out: mpsc::Sender<StreamEvent>, mut shutdown: watch::Receiver<bool>) {
    let mut since = cfg.since;
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let attempt =
            tokio::time::timeout(Duration::from_secs(cfg.base_backoff_secs.max(5)), super::connect(&cfg.url)).await;
        let error = match attempt {
            Ok(Ok(ws)) => {
                failures = 0;
                if out.send(StreamEvent::Connected(true)).await.is_err() {
                    return;
                }
                tracing::info!(url = %cfg.url, since, "host stream: subscribed");
                let conn = Connection::new(ws, DEFAULT_PAYLOAD_LIMIT, Arc::default());
                let outcome = follow(conn, &cfg, since, &out, &mut shutdown).await;
                since = unix_now().saturating_sub(RECONNECT_MARGIN_SECS);
                if out.send(StreamEvent::Connected(false)).await.is_err() {
                    return;
                }
                match outcome {
                    Ok(()) => return,
                    Err(e) => e,
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_string(),
        };
        failures += 1;
        let wait =
            backoff(failures, Duration::from_secs(cfg.base_backoff_secs), Duration::from_secs(cfg.max_backoff_secs));
        tracing::warn!(url = %cfg.url, error = %error, retry_in = ?wait, "host stream: disconnected");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connected session. `Ok(())` means stop for good; `Err` means reconnect.
async fn follow(
    mut conn: Connection,
    cfg: &StreamConfig,
    since: u64,
    out: &mpsc::Sender<StreamEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    // Live: `limit: 0` asks for new events only, whatever their `created_at` (a back-dated
    // announcement published now must be seen). Catch-up: what was stored since `since`, for the
    // gap before this subscription. Events stored in that gap with an older `created_at` are only
    // visible through strfry's LMDB (see `host::lmdb::follow`).
    let live = ClientMsg::Req { sub: "grasp-sync-live".into(), filters: vec![Filter::kinds(STREAM_KINDS).limit(0)] };
    let catch_up =
        ClientMsg::Req { sub: "grasp-sync-catchup".into(), filters: vec![Filter::kinds(STREAM_KINDS).since(since)] };
    for req in [live, catch_up] {
        conn.send(&req).await.map_err(|e| e.to_string())?;
    }
    let mut batch: Vec<Note> = Vec::new();
    let mut flush_at: Option<Instant> = None;
    loop {
        let deadline = flush_at;
        tokio::select! {
            msg = conn.recv() => match msg {
                Some(Ok(msg)) => {
                    if let Some(note) = event_of(msg) {
                        batch.push(note);
                        flush_at.get_or_insert_with(|| Instant::now() + cfg.batch_window);
                    }
                }
                Some(Err(ConnError::Malformed(_))) => {}
                None => {
                    deliver(out, &mut batch).await?;
                    return Err("host closed the connection".into());
                }
                Some(Err(e)) => {
                    deliver(out, &mut batch).await?;
                    return Err(e.to_string());
                }
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                flush_at = None;
                deliver(out, &mut batch).await?;
            }
            _ = shutdown.changed() => {
                deliver(out, &mut batch).await?;
                conn.close().await;
                return Ok(());
            }
        }
        if batch.len() >= MAX_BATCH {
            flush_at = None;
            deliver(out, &mut batch).await?;
        }
    }
}

async fn deliver(out: &mpsc::Sender<StreamEvent>, batch: &mut Vec<Note>) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let events = std::mem::take(batch);
    // A closed receiver means the daemon is stopping: end quietly.
    out.send(StreamEvent::Batch(events)).await.map_err(|_| "receiver gone".to_string())
}

/// The event of an EVENT message, when it is well-formed and its id checks out.
fn event_of(msg: RelayMsg) -> Option<Note> {
    let note = match msg {
        RelayMsg::Event { note, .. } => *note,
        RelayMsg::Closed { sub, reason } => {
            tracing::warn!(sub, reason, "host stream: host closed a subscription");
            return None;
        }
        RelayMsg::Notice(notice) => {
            tracing::warn!(notice, "host stream: host says");
            return None;
        }
        _ => return None,
    };
    match note.check() {
        Ok(_) => Some(note),
        Err(e) => {
            tracing::warn!(id = %note.id, error = %e, "host stream: host sent an invalid event");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{json, Value};

    fn event_in(frame: &str) -> Option<Note> {
        RelayMsg::parse(frame).ok().and_then(event_of)
    }

    #[test]
    fn only_valid_events_are_taken_from_frames() {
        let line =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events.jsonl")).unwrap();
        let first: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        let frame = json!(["EVENT", "s", first["event"]]).to_string();
        assert!(event_in(&frame).is_some());
        let mut tampered = first["event"].clone();
        tampered["content"] = json!("changed");
        assert!(event_in(&json!(["EVENT", "s", tampered]).to_string()).is_none());
        assert!(event_in("[\"EOSE\",\"s\"]").is_none());
        assert!(event_in("[\"NOTICE\",\"hi\"]").is_none());
        assert!(event_in("not json").is_none());
    }
}
