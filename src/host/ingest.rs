//! Writes fetched events into the host relay through its normal ingest path: `EVENT` messages over
//! a websocket, so strfry checks signatures, deduplicates, applies replaceable rules and asks the
//! policy plugin.
//!
//! - Pipelined: up to `window` events are in flight; each `OK` frees a slot.
//! - Parents before children: queued events leave in class order (announcements, states, root
//!   events, the rest), oldest first within a class.
//! - Nothing is dropped: while the host is down, events wait in the queue (bounded; submitters wait
//!   when it is full) and in-flight events are re-sent after reconnecting. Transient refusals
//!   (`error: …`, rate limits) are retried a few times before they count as rejected.
//! - On shutdown the queue is flushed until a deadline; what is left is returned to the caller.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::policy::event::{is_root_kind, KIND_ANNOUNCEMENT, KIND_DELETION, KIND_STATE};
use crate::policy::{Note, RelayUrl};
use crate::wire::reason::mentions_rate_limit;
use crate::wire::{backoff, ClientMsg, ConnError, Connection, RelayMsg};

/// Settings of the ingest task.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub url: RelayUrl,
    /// Events in flight at once.
    pub window: usize,
    /// Events queued before submitters wait.
    pub queue: usize,
    pub base_backoff_secs: u64,
    pub max_backoff_secs: u64,
    /// An in-flight event without an `OK` for this long means the connection is stuck.
    pub ok_timeout: Duration,
    /// Attempts for transient refusals before an event counts as rejected.
    pub max_attempts: u32,
    /// Largest EVENT frame sent to the host. strfry drops a connection that sends a bigger one
    /// (`maxWebsocketPayloadSize`), so a bigger event is refused here instead of killing the
    /// connection over and over.
    pub max_frame: usize,
}

impl IngestConfig {
    pub fn new(url: RelayUrl) -> Self {
        IngestConfig {
            url,
            window: 256,
            queue: 10_000,
            base_backoff_secs: 1,
            max_backoff_secs: 30,
            ok_timeout: Duration::from_secs(30),
            max_attempts: 3,
            max_frame: crate::wire::conn::DEFAULT_PAYLOAD_LIMIT,
        }
    }
}

/// What the host said about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// The host already had it.
    Duplicate,
    /// Refused, with the host's message (`blocked: …`, `invalid: …`).
    Rejected(String),
}

/// One answered event.
#[derive(Debug, Clone)]
pub struct Report {
    pub note: Note,
    pub source: Option<RelayUrl>,
    pub outcome: Outcome,
}

/// Counters and queue depth, readable at any time.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub queued: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub connected: AtomicUsize,
    pub reconnects: AtomicUsize,
    /// Refusals other than `blocked:`/`invalid:` (strfry's `error: internal error` while its
    /// plugin restarts, rate limits), each retried.
    pub transient_refusals: AtomicUsize,
}

struct Item {
    note: Note,
    source: Option<RelayUrl>,
    attempts: u32,
}

/// Queue order: class, then `created_at`, then arrival.
type QueueKey = (u8, u64, u64);

fn class_of(kind: u64) -> u8 {
    match kind {
        KIND_ANNOUNCEMENT => 0,
        KIND_STATE => 1,
        k if is_root_kind(k) => 2,
        KIND_DELETION => 4,
        _ => 3,
    }
}

/// Handle for submitting events. Dropping every handle lets the task flush and finish.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<(Note, Option<RelayUrl>)>,
    pub stats: Arc<IngestStats>,
}

/// The ingest task is gone (it only stops after every handle is dropped or on shutdown).
#[derive(Debug, thiserror::Error)]
#[error("ingest task has stopped")]
pub struct IngestClosed;

impl IngestHandle {
    /// Queues an event; waits while the queue is full.
    pub async fn submit(&self, note: Note, source: Option<RelayUrl>) -> Result<(), IngestClosed> {
        self.tx.send((note, source)).await.map_err(|_| IngestClosed)
    }

    /// Waits for room for one event. A caller that must stay responsive while the host is down
    /// waits on this in a `select!` instead of blocking in [`submit`](Self::submit).
    pub async fn reserve(&self) -> Result<IngestSlot, IngestClosed> {
        self.tx.clone().reserve_owned().await.map(IngestSlot).map_err(|_| IngestClosed)
    }

    /// Room for one event if there is some now.
    pub fn try_reserve(&self) -> Option<IngestSlot> {
        self.tx.clone().try_reserve_owned().ok().map(IngestSlot)
    }

    /// Events submitted and not yet answered by the host: queued, in flight, or still in the
    /// hand-over channel.
    pub fn backlog(&self) -> usize {
        let in_channel = self.tx.max_capacity() - self.tx.capacity();
        self.stats.queued.load(Ordering::Relaxed) + self.stats.in_flight.load(Ordering::Relaxed) + in_channel
    }
}

/// Room for one event in the ingest queue, from [`IngestHandle::reserve`].
pub struct IngestSlot(mpsc::OwnedPermit<(Note, Option<RelayUrl>)>);

impl IngestSlot {
    pub fn submit(self, note: Note, source: Option<RelayUrl>) {
        self.0.send((note, source));
    }
}

/// Starts the ingest task. Every submitted event gets one [`Report`] on `reports`.
/// `shutdown` flips to `true` to stop: the task keeps writing until the
/// queue is empty or `flush` has passed, then returns the events it could not write.
pub fn spawn(
    cfg: IngestConfig,
    reports: mpsc::UnboundedSender<Report>,
    shutdown: watch::Receiver<bool>,
    flush: Duration,
) -> (IngestHandle, tokio::task::JoinHandle<Vec<Note>>) {
    let (tx, rx) = mpsc::channel(cfg.window.max(16));
    let stats = Arc::new(IngestStats::default());
    let task = Ingest {
        cfg,
        rx,
        rx_open: true,
        reports,
        shutdown,
        flush,
        queue: BTreeMap::new(),
        queued_ids: HashSet::new(),
        in_flight: HashMap::new(),
        seq: 0,
        stats: stats.clone(),
    };
    (IngestHandle { tx, stats }, tokio::spawn(task.run()))
}

struct Ingest {
    cfg: IngestConfig,
    rx: mpsc::Receiver<(Note, Option<RelayUrl>)>,
    rx_open: bool,
    reports: mpsc::UnboundedSender<Report>,
    shutdown: watch::Receiver<bool>,
    flush: Duration,
    queue: BTreeMap<QueueKey, Item>,
    /// Ids queued or in flight, so the same event submitted twice is written once.
    queued_ids: HashSet<String>,
    in_flight: HashMap<String, (Item, Instant)>,
    seq: u64,
    stats: Arc<IngestStats>,
}

enum Stop {
    /// Connection lost: reconnect.
    Disconnected(String),
    /// Nothing more to do.
    Finished,
}

impl Ingest {
    async fn run(mut self) -> Vec<Note> {
        let mut failures = 0u32;
        let mut flush_deadline: Option<Instant> = None;
        loop {
            if self.is_done() {
                break;
            }
            if *self.shutdown.borrow() && flush_deadline.is_none() {
                flush_deadline = Some(Instant::now() + self.flush);
            }
            if flush_deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let connect = tokio::time::timeout(
                Duration::from_secs(self.cfg.base_backoff_secs.max(5)),
                super::connect(&self.cfg.url),
            );
            let stop = match connect.await {
                Ok(Ok(ws)) => {
                    if failures > 0 {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    failures = 0;
                    tracing::info!(url = %self.cfg.url, "ingest: connected to host");
                    self.stats.connected.store(1, Ordering::Relaxed);
                    let conn = Connection::new(ws, self.cfg.max_frame, Arc::default());
                    let stop = self.session(conn, &mut flush_deadline).await;
                    self.stats.connected.store(0, Ordering::Relaxed);
                    self.requeue_in_flight();
                    stop
                }
                Ok(Err(e)) => Stop::Disconnected(e.to_string()),
                Err(_) => Stop::Disconnected("connect timed out".into()),
            };
            match stop {
                Stop::Finished => break,
                Stop::Disconnected(why) => {
                    failures += 1;
                    let wait = backoff(
                        failures,
                        Duration::from_secs(self.cfg.base_backoff_secs),
                        Duration::from_secs(self.cfg.max_backoff_secs),
                    );
                    tracing::warn!(url = %self.cfg.url, error = %why, retry_in = ?wait, queued = self.queue.len(), "ingest: host unreachable");
                    self.wait_offline(wait, &mut flush_deadline).await;
                }
            }
        }
        self.requeue_in_flight();
        let left: Vec<Note> = std::mem::take(&mut self.queue).into_values().map(|i| i.note).collect();
        if !left.is_empty() {
            tracing::warn!(events = left.len(), "ingest: stopped with events not yet written");
        }
        left
    }

    fn is_done(&self) -> bool {
        !self.rx_open && self.queue.is_empty() && self.in_flight.is_empty()
    }

    fn enqueue(&mut self, note: Note, source: Option<RelayUrl>, attempts: u32) {
        if !self.queued_ids.insert(note.id.clone()) && attempts == 0 {
            return;
        }
        self.seq += 1;
        let key = (class_of(note.kind), note.created_at, self.seq);
        self.queue.insert(key, Item { note, source, attempts });
        self.publish_depth();
    }

    fn publish_depth(&self) {
        self.stats.queued.store(self.queue.len(), Ordering::Relaxed);
        self.stats.in_flight.store(self.in_flight.len(), Ordering::Relaxed);
    }

    fn requeue_in_flight(&mut self) {
        for (_, (item, _)) in std::mem::take(&mut self.in_flight) {
            self.seq += 1;
            let key = (class_of(item.note.kind), item.note.created_at, self.seq);
            self.queue.insert(key, item);
        }
        self.publish_depth();
    }

    fn room_for_more(&self) -> bool {
        self.rx_open && self.queue.len() < self.cfg.queue
    }

    /// While disconnected: keep accepting submissions (up to the queue bound) until it is time to retry.
    async fn wait_offline(&mut self, wait: Duration, flush_deadline: &mut Option<Instant>) {
        let until = Instant::now() + wait;
        let until = flush_deadline.map_or(until, |d| d.min(until));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                got = self.rx.recv(), if self.room_for_more() => match got {
                    Some((note, source)) => self.enqueue(note, source, 0),
                    None => self.rx_open = false,
                },
                _ = self.shutdown.changed(), if flush_deadline.is_none() => {
                    *flush_deadline = Some(Instant::now() + self.flush);
                    return;
                }
            }
        }
    }

    async fn session(&mut self, mut conn: Connection, flush_deadline: &mut Option<Instant>) -> Stop {
        loop {
            if let Err(e) = self.fill_window(&mut conn).await {
                return Stop::Disconnected(e.to_string());
            }
            if self.is_done() {
                conn.close().await;
                return Stop::Finished;
            }
            let oldest = self.in_flight.values().map(|(_, sent)| *sent).min();
            let stuck_at = oldest.map(|t| t + self.cfg.ok_timeout);
            let flush_at = *flush_deadline;
            tokio::select! {
                got = self.rx.recv(), if self.room_for_more() => self.take_submissions(got),
                msg = conn.recv() => {
                    if let Err(stop) = self.take_answers(&mut conn, msg) {
                        return stop;
                    }
                }
                _ = sleep_until_opt(stuck_at) => return Stop::Disconnected("no OK from host within the timeout".into()),
                _ = sleep_until_opt(flush_at) => return Stop::Finished,
                _ = self.shutdown.changed(), if flush_deadline.is_none() => {
                    *flush_deadline = Some(Instant::now() + self.flush);
                }
            }
        }
    }

    /// Takes one submission and every further one waiting (while the queue has room), so events
    /// submitted together leave together, in class order, in one write.
    fn take_submissions(&mut self, first: Option<(Note, Option<RelayUrl>)>) {
        let mut next = first;
        let mut budget = self.cfg.window.max(1);
        loop {
            match next {
                Some((note, source)) => self.enqueue(note, source, 0),
                None => {
                    self.rx_open = false;
                    return;
                }
            }
            budget -= 1;
            if budget == 0 || !self.room_for_more() {
                return;
            }
            next = match self.rx.try_recv() {
                Ok(got) => Some(got),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
        }
    }

    /// Takes one message from the host and every further one already received, so the slots
    /// they free are refilled by one write: strfry answers a whole write batch at once, and
    /// refilling after each `OK` would send one frame per write (one wake-up of the host's
    /// websocket and ingester threads per event, and small write batches).
    fn take_answers(&mut self, conn: &mut Connection, first: Option<Result<RelayMsg, ConnError>>) -> Result<(), Stop> {
        let mut next = Some(first);
        // At most a window's worth, so a host that answers faster than we read cannot hold the
        // loop (and the submissions waiting on it) for long.
        let mut budget = self.cfg.window.max(1);
        while let Some(msg) = next.take() {
            match msg {
                Some(Ok(msg)) => self.on_message(msg),
                Some(Err(ConnError::Malformed(e))) => tracing::debug!(error = %e, "ingest: unreadable frame from host"),
                Some(Err(e)) => return Err(Stop::Disconnected(e.to_string())),
                None => return Err(Stop::Disconnected("host closed the connection".into())),
            }
            budget -= 1;
            if budget > 0 {
                // `recv` is cancel-safe: a frame not complete yet stays buffered for the next call.
                next = conn.recv().now_or_never();
            }
        }
        Ok(())
    }

    /// Sends queued events until the window is full, then flushes them in one write.
    async fn fill_window(&mut self, conn: &mut Connection) -> Result<(), ConnError> {
        while self.in_flight.len() < self.cfg.window {
            let Some((_, item)) = self.queue.pop_first() else { break };
            match conn.feed(&ClientMsg::Event(Box::new(item.note.clone()))).await {
                Ok(()) => {
                    let id = item.note.id.clone();
                    self.in_flight.insert(id, (item, Instant::now()));
                }
                Err(ConnError::TooLarge { len, .. }) => {
                    let why = format!("invalid: event of {len} bytes is over the host's frame limit");
                    tracing::info!(id = %item.note.id, bytes = len, "ingest: event too large for the host; not sent");
                    self.answered(item, false, &why);
                }
                Err(e) => {
                    // Perhaps sent: re-sent after reconnecting like every event in flight.
                    let id = item.note.id.clone();
                    self.in_flight.insert(id, (item, Instant::now()));
                    return Err(e);
                }
            }
        }
        conn.flush().await?;
        self.publish_depth();
        Ok(())
    }

    fn on_message(&mut self, msg: RelayMsg) {
        match msg {
            RelayMsg::Ok { id, accepted, reason } => {
                let Some((item, _)) = self.in_flight.remove(&id) else { return };
                self.answered(item, accepted, &reason);
            }
            RelayMsg::Notice(notice) => tracing::warn!(notice, "ingest: host notice"),
            _ => {}
        }
        self.publish_depth();
    }

    fn answered(&mut self, mut item: Item, ok: bool, text: &str) {
        let outcome = if ok && text.starts_with("duplicate:") {
            Outcome::Duplicate
        } else if ok {
            Outcome::Stored
        } else if is_transient(text) && item.attempts + 1 < self.cfg.max_attempts {
            self.stats.transient_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            item.attempts += 1;
            tracing::debug!(id = %item.note.id, reason = %text, attempt = item.attempts, "ingest: transient refusal, will retry");
            self.seq += 1;
            // Retries go after everything of the same class that is already waiting.
            let key = (class_of(item.note.kind), u64::MAX, self.seq);
            self.queue.insert(key, item);
            return;
        } else {
            Outcome::Rejected(text.to_string())
        };
        self.queued_ids.remove(&item.note.id);
        let report = Report { note: item.note, source: item.source, outcome };
        // Never waits: a consumer that is itself waiting to submit must still get its reports
        // (it cannot both block on a full queue and drain answers). Reports are bounded by what
        // was queued, which is bounded. The consumer may be gone at shutdown; that is fine.
        let _ = self.reports.send(report);
    }
}

/// Refusals that say nothing about the event itself: worth another try.
fn is_transient(text: &str) -> bool {
    text.starts_with("error:") || mentions_rate_limit(text)
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_leave_the_queue_before_children() {
        let mut kinds = [1111u64, 1621, 5, 30618, 30617, 1, 1617];
        kinds.sort_by_key(|k| class_of(*k));
        assert_eq!(kinds, [30617, 30618, 1621, 1617, 1111, 1, 5]);
    }

    #[test]
    fn host_errors_and_rate_limits_are_transient_but_policy_refusals_are_not() {
        assert!(is_transient("error: internal error"));
        assert!(is_transient("rate-limited: slow down"));
        assert!(!is_transient("blocked: event references no repository"));
        assert!(!is_transient("invalid: bad signature"));
    }
}
