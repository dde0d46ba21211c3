//! The daemon's single decision loop: fetched events in, verdicts out. It owns the accepted view,
//! the repo index and the per-relay counters; every other task talks to it over channels.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::state::{self, SavedState, STATE_VERSION};
use super::store::HostStore;
use super::SAVE_EVERY;
use crate::accepted::build::Built;
use crate::accepted::RepoSyncIndex;
use crate::config::Config;
use crate::daemon::rejected::RejectedIndex;
use crate::engine::relays::PersistedRelay;
use crate::engine::RefusedReason;
use crate::engine::{EngineHandle, Fetched};
use crate::host::ingest::{IngestClosed, IngestHandle, IngestSlot, Outcome, Report};
use crate::host::stream::StreamEvent;
use crate::metrics::Metrics;
use crate::policy::event::{parse_hex32, KIND_ANNOUNCEMENT};
use crate::policy::{verify_signature, AcceptedSet, AcceptedView, Facts, Id, Note, Policy, RelayUrl, Verdict};
use crate::status::{RefusedRelay, RelayReport};
use crate::wire::unix_now;

/// Accepted events waiting for room in the ingest queue. Fetched events are only read while the
/// outbox holds fewer than this: when the host is down and the ingest queue is full, the loop stops
/// taking fetched events, the engine's sink fills, and relay sessions stop reading their sockets,
/// so remote relays keep what we have not asked for yet and memory stays bounded. The loop itself
/// keeps serving status, reports, the host stream and shutdown meanwhile.
const OUTBOX_LIMIT: usize = 64;
/// How often status and metrics are refreshed from the engine.
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Least time between two copies of the repo index handed to the engine.
const INDEX_EVERY: Duration = Duration::from_millis(50);
/// After a copy of the index, the next one waits this many times as long as the copy took (at
/// least [`INDEX_EVERY`]): what follows a copy (the relay targets derived from it, each session's
/// plan) grows with the index like the copy does, so this keeps handing over the index a small
/// share of the daemon's time at any size (10,000 repositories and 100,000 roots: a copy every few
/// hundred ms instead of every 50 ms).
const INDEX_COST_FACTOR: u32 = 20;

/// How long to wait after a copy of the index that took `took` before the next.
fn index_gap(took: Duration) -> Duration {
    INDEX_EVERY.max(took * INDEX_COST_FACTOR)
}

/// How long the state keeps a relay the engine no longer tracks (at least `quick_reconnect_secs`).
const PERSIST_UNTRACKED_SECS: u64 = 24 * 3600;

/// Events waiting for a retry after a host refusal other than `blocked:`, at most.
const RETRY_LIMIT: usize = 10_000;
/// Tries of one event before it is given up (and forgotten by the view, so a later fetch of it
/// is decided again); the waits double from 1 s up to [`RETRY_MAX_WAIT`].
const RETRY_ATTEMPTS: u32 = 12;
const RETRY_MAX_WAIT: Duration = Duration::from_secs(300);

/// An event the host refused for a reason that can pass (its plugin restarting, an internal error).
#[derive(Debug)]
struct Retry {
    due: tokio::time::Instant,
    note: Note,
    source: Option<RelayUrl>,
    attempts: u32,
}

/// An event to decide: the event, the relay it came from, whether to write it to the host, and
/// since when it was held (when it comes back from the rejected index).
type Work = (Note, Option<RelayUrl>, bool, Option<u64>);

pub(super) struct EventLoop {
    cfg: Config,
    policy: Policy,
    view: AcceptedSet,
    index: RepoSyncIndex,
    index_dirty: bool,
    index_tx: Option<watch::Sender<RepoSyncIndex>>,
    index_sent: tokio::time::Instant,
    /// Least time until the next copy of the index ([`index_gap`] of the last copy).
    index_gap: Duration,
    rejected: Arc<Mutex<RejectedIndex>>,
    store: Arc<HostStore>,
    ingest: IngestHandle,
    /// Accepted events not yet handed to the ingest (see [`OUTBOX_LIMIT`]).
    outbox: VecDeque<(Note, Option<RelayUrl>)>,
    /// Events the policy accepted and that are on their way to the host (outbox, ingest,
    /// retries): the view records them only once the host stored them.
    pending: HashSet<Id>,
    metrics: Metrics,
    engine: EngineHandle,
    relays: BTreeMap<String, PersistedRelay>,
    /// Last status seen per relay, to log each change once.
    last_status: HashMap<String, &'static str>,
    host_connected: bool,
    /// Events refused by the host for a passing reason, oldest first.
    retries: VecDeque<Retry>,
    /// Tries so far per event id (only while it is being retried).
    attempts: HashMap<String, u32>,
    host_refusals: u64,
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: Config,
        policy: Policy,
        built: Built,
        index_tx: watch::Sender<RepoSyncIndex>,
        rejected: Arc<Mutex<RejectedIndex>>,
        store: Arc<HostStore>,
        ingest: IngestHandle,
        metrics: Metrics,
        engine: EngineHandle,
        relays: BTreeMap<String, PersistedRelay>,
    ) -> Self {
        EventLoop {
            cfg,
            policy,
            view: built.accepted,
            index: built.index,
            index_dirty: false,
            index_tx: Some(index_tx),
            index_sent: tokio::time::Instant::now(),
            index_gap: INDEX_EVERY,
            rejected,
            store,
            ingest,
            outbox: VecDeque::new(),
            pending: HashSet::new(),
            metrics,
            engine,
            relays,
            last_status: HashMap::new(),
            host_connected: false,
            retries: VecDeque::new(),
            attempts: HashMap::new(),
            host_refusals: 0,
        }
    }

    pub(super) async fn run(
        &mut self,
        mut fetched: mpsc::Receiver<Fetched>,
        mut reports: mpsc::UnboundedReceiver<Report>,
        mut stream: mpsc::Receiver<StreamEvent>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        // Status and metrics follow the engine within a tick; the index reaches the engine as
        // soon as it changes (at most one copy per `INDEX_EVERY`).
        let mut tick = tokio::time::interval(STATUS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_save = tokio::time::Instant::now();
        let mut last_expire = tokio::time::Instant::now();
        let ingest = self.ingest.clone();
        self.refresh_metrics();
        loop {
            let room = self.outbox.len() < OUTBOX_LIMIT;
            tokio::select! {
                _ = &mut shutdown => return,
                slot = ingest.reserve(), if !self.outbox.is_empty() => self.hand_over(slot),
                Some(f) = fetched.recv(), if room => self.on_fetched(f),
                Some(r) = reports.recv() => self.on_report(r),
                Some(ev) = stream.recv() => self.on_stream(ev),
                _ = tick.tick() => {
                    // The loop's heartbeat for /healthz, on every pass of the status tick.
                    self.metrics.tick();
                    self.publish_index();
                    let reports = self.engine.status.relays();
                    self.track_relays(&reports);
                    self.refresh_metrics();
                    if last_expire.elapsed() >= Duration::from_secs(1) {
                        last_expire = tokio::time::Instant::now();
                        self.on_tick();
                    }
                    if last_save.elapsed() >= SAVE_EVERY {
                        last_save = tokio::time::Instant::now();
                        if let Err(e) = self.save_state(Vec::new(), false) {
                            tracing::error!(error = %e, "cannot save state");
                        }
                    }
                }
            }
            self.publish_index();
        }
    }

    /// Hands the repo index to the engine when it changed: new repositories and root events
    /// become sync targets as soon as the daemon accepts them.
    fn publish_index(&mut self) {
        if !self.index_dirty || self.index_sent.elapsed() < self.index_gap {
            return;
        }
        self.index_dirty = false;
        self.index_sent = tokio::time::Instant::now();
        if let Some(tx) = &self.index_tx {
            let copy = self.index.clone();
            self.index_gap = index_gap(self.index_sent.elapsed());
            tx.send_replace(copy);
        }
    }

    /// Events that were to be written before the last stop: they go out first.
    pub(super) fn resubmit(&mut self, notes: impl IntoIterator<Item = Note>) {
        for note in notes {
            if let Some(id) = parse_hex32(&note.id) {
                self.pending.insert(id);
            }
            self.outbox.push_back((note, None));
        }
    }

    /// Accepted events not handed to the ingest, for the state file at shutdown.
    pub(super) fn take_outbox(&mut self) -> Vec<Note> {
        self.outbox.drain(..).map(|(n, _)| n).collect()
    }

    /// Moves outbox events into the ingest queue: one into the slot waited for, then as many as
    /// fit right now.
    fn hand_over(&mut self, slot: Result<IngestSlot, IngestClosed>) {
        let Ok(slot) = slot else {
            tracing::error!(events = self.outbox.len(), "ingest has stopped; events kept for the state file");
            return;
        };
        let mut slot = Some(slot);
        while let Some(s) = slot.take().or_else(|| self.ingest.try_reserve()) {
            let Some((note, source)) = self.outbox.pop_front() else { break };
            s.submit(note, source);
        }
    }

    fn on_fetched(&mut self, f: Fetched) {
        let Some(id) = parse_hex32(&f.note.id) else { return };
        if self.view.has_event(&id) || self.pending.contains(&id) || self.rejected().knows(&id) {
            self.engine.status.update_existing(&f.relay, |r| r.events_duplicate += 1);
            return;
        }
        // The engine checked the id (the hash of the content). The signature is checked by the
        // host, which checks every event it is given (checking here too doubled a bulk sync's
        // signature work); what is kept here without the host (the rejected hold) is checked
        // before it is kept, and the host's `invalid:` answers are traced back to the relay.
        self.offer(f.note, Some(f.relay), true);
    }

    /// Counts a forged event against the relay that sent it (its misbehaviour budget).
    fn on_bad_signature(&mut self, relay: &RelayUrl, id: &str, what: &str) {
        self.engine.status.update_existing(relay, |r| r.events_bad_signature += 1);
        self.engine.bad_signature(relay);
        tracing::debug!(%relay, %id, "{what}");
    }

    /// Decides on an event. An accepted one is queued for writing (when `write`; the view records
    /// it once the host stored it) or, when the host holds it already, recorded now; what it
    /// unlocks is decided in turn.
    fn offer(&mut self, note: Note, source: Option<RelayUrl>, write: bool) {
        self.decide_all(vec![(note, source, write, None)]);
    }

    fn decide_all(&mut self, mut work: Vec<Work>) {
        while let Some((note, source, write, held_since)) = work.pop() {
            let facts = match Facts::from_note(&note) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(id = %note.id, error = %e, "malformed event dropped");
                    continue;
                }
            };
            match self.policy.decide(&self.view, &facts) {
                Verdict::Accept(_) if write => {
                    if self.pending.insert(facts.id) {
                        self.outbox.push_back((note, source));
                    }
                }
                Verdict::Accept(_) => work.extend(self.record(&facts)),
                Verdict::Reject(_) => {
                    // Held here, not by the host: only a genuine event may wait (and be saved).
                    if let (Some(relay), None) = (&source, held_since) {
                        if !verify_signature(&note) {
                            self.on_bad_signature(relay, &note.id, "event with a bad signature dropped");
                            continue;
                        }
                    }
                    let mut rejected = self.rejected();
                    match held_since {
                        Some(since) => rejected.hold_again(note, facts, since),
                        None => {
                            rejected.hold(note, facts, unix_now());
                        }
                    }
                }
            }
        }
    }

    /// Records an event the host holds in the view (and the index); returns the held events it
    /// may unlock, to be decided again (and written).
    fn record(&mut self, facts: &Facts) -> Vec<Work> {
        let lists_service = facts.kind == KIND_ANNOUNCEMENT && self.policy.lists_service(facts);
        let change = self.view.record(facts, lists_service);
        self.index_dirty |= self.index.apply_change(self.policy.service(), &self.view, &change);
        let unlocked = self.rejected().unlocked_by(facts);
        unlocked.into_iter().map(|(n, _, since)| (n, None, true, Some(since))).collect()
    }

    /// The host stored an event we wrote (or had it already): from now on the view counts it,
    /// and events that waited for it are decided again.
    fn confirm(&mut self, note: &Note) {
        let Some(id) = parse_hex32(&note.id) else { return };
        self.pending.remove(&id);
        if self.view.has_event(&id) {
            return;
        }
        let Ok(facts) = Facts::from_note(note) else { return };
        let unlocked = self.record(&facts);
        self.decide_all(unlocked);
    }

    fn rejected(&self) -> std::sync::MutexGuard<'_, RejectedIndex> {
        self.rejected.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_report(&mut self, r: Report) {
        if let Outcome::Rejected(msg) = &r.outcome {
            self.on_refused(r.note.clone(), r.source.clone(), msg);
            return;
        }
        if let Some(relay) = &r.source {
            let duplicate = matches!(r.outcome, Outcome::Duplicate);
            self.engine.status.update_existing(relay, |c| {
                if duplicate {
                    c.events_duplicate += 1
                } else {
                    c.events_stored += 1
                }
            });
        }
        self.attempts.remove(&r.note.id);
        self.store.host_has(&r.note);
        self.confirm(&r.note);
    }

    /// The host refused an event the policy here accepted (the view never counted it). A
    /// `blocked:` refusal is the host's policy speaking (held as rejected, like our own
    /// rejections); `invalid:` will not change; anything else (strfry's `error: internal error`
    /// while its plugin restarts) is retried with backoff, and counted. A final refusal may be
    /// of a forged event (strfry's `invalid:`; `blocked:` from a host whose policy runs before
    /// its signature check): then the relay that sent it answers for it, and it is dropped,
    /// never held.
    fn on_refused(&mut self, note: Note, source: Option<RelayUrl>, msg: &str) {
        let transient = !(msg.starts_with("blocked:") || msg.starts_with("invalid:"));
        let forged = !transient && source.is_some() && !verify_signature(&note);
        if let Some(relay) = &source {
            if forged {
                self.on_bad_signature(relay, &note.id, "the host refused an event with a bad signature");
            } else {
                self.engine.status.update_existing(relay, |c| c.events_host_rejected += 1);
            }
        }
        if !forged {
            tracing::info!(id = %note.id, kind = note.kind, reason = %msg, "host refused an event");
        }
        let Ok(facts) = Facts::from_note(&note) else { return };
        if transient {
            self.host_refusals += 1;
            let attempts = self.attempts.entry(note.id.clone()).or_default();
            *attempts += 1;
            let attempts = *attempts;
            if attempts < RETRY_ATTEMPTS && self.retries.len() < RETRY_LIMIT {
                let wait = Duration::from_secs(1u64 << (attempts - 1).min(16)).min(RETRY_MAX_WAIT);
                self.retries.push_back(Retry { due: tokio::time::Instant::now() + wait, note, source, attempts });
                return;
            }
            tracing::warn!(id = %note.id, attempts, "host keeps refusing an event; giving up on it for now");
            self.attempts.remove(&note.id);
        }
        // Given up: a later fetch of it is decided again.
        self.pending.remove(&facts.id);
        if msg.starts_with("blocked:") && !forged {
            self.rejected().hold(note, facts, unix_now());
        }
    }

    /// Retries whose wait is over go back to the outbox.
    fn due_retries(&mut self) {
        let now = tokio::time::Instant::now();
        let mut waiting = VecDeque::with_capacity(self.retries.len());
        while let Some(r) = self.retries.pop_front() {
            if r.due <= now {
                tracing::debug!(id = %r.note.id, attempt = r.attempts + 1, "retrying an event the host refused");
                self.outbox.push_back((r.note, r.source));
            } else {
                waiting.push_back(r);
            }
        }
        self.retries = waiting;
    }

    fn on_stream(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::Connected(up) => self.host_connected = up,
            StreamEvent::Batch(notes) => {
                for note in notes {
                    self.store.host_has(&note);
                    let Some(id) = parse_hex32(&note.id) else { continue };
                    if self.pending.contains(&id) {
                        // One we wrote: the host has stored it.
                        self.confirm(&note);
                    } else if !self.view.has_event(&id) {
                        // The host holds it already: decide for the index, do not write it back.
                        self.offer(note, None, false);
                    }
                }
            }
        }
    }

    fn on_tick(&mut self) {
        self.due_retries();
        // Held events may wait for one the host has not answered yet (an issue for its
        // announcement): none is settled while any is on its way, or it would miss that answer
        // (the count and byte bounds of the rejected index still hold).
        if !self.pending.is_empty() {
            return;
        }
        let settled = self.rejected().expire(unix_now());
        if settled > 0 {
            tracing::debug!(settled, "rejected events settled");
        }
    }

    /// Logs each relay status change.
    fn track_relays(&mut self, reports: &BTreeMap<RelayUrl, RelayReport>) {
        self.last_status.retain(|url, _| reports.keys().any(|u| u.as_str() == url));
        for (url, report) in reports {
            let now_status = report.status.as_str();
            let before = self.last_status.insert(url.to_string(), now_status);
            if before != Some(now_status) {
                tracing::info!(
                    relay = %url,
                    from = before.unwrap_or("new"),
                    to = now_status,
                    health = report.health.as_str(),
                    negentropy = ?report.negentropy,
                    error = report.last_error.as_deref().unwrap_or(""),
                    "relay status"
                );
            }
        }
    }

    /// What the engine says to persist for each relay it runs (relays it no longer runs are
    /// forgotten; before it has started them, what was saved is kept).
    fn collect_persisted(&mut self) {
        let persisted = self.engine.status.persisted();
        // Relays the engine no longer tracks are forgotten once a restart could not resume them
        // quickly anyway (their entry would only save a negentropy probe).
        let keep_after = unix_now().saturating_sub(self.cfg.sync.quick_reconnect_secs.max(PERSIST_UNTRACKED_SECS));
        self.relays.retain(|url, r| {
            persisted.keys().any(|u| u.as_str() == url)
                || r.disconnected_at.or(r.last_connected).is_some_and(|t| t >= keep_after)
        });
        self.relays.extend(persisted.into_iter().map(|(url, p)| (url.to_string(), p)));
    }

    /// Refreshes the daemon-wide part of the status (each relay's report is read from the
    /// engine's board when the status is served).
    fn refresh_metrics(&mut self) {
        let refusals = self.engine.status.refusals();
        let sample: Vec<RefusedRelay> = self
            .engine
            .status
            .refused()
            .into_iter()
            .map(|r| RefusedRelay { url: r.url, reason: r.reason.to_string(), detail: r.detail })
            .collect();
        let mut by_reason: BTreeMap<String, usize> = RefusedReason::LABELS.iter().map(|l| (l.to_string(), 0)).collect();
        by_reason.extend(refusals.by_reason.iter().map(|(l, n)| (l.to_string(), *n)));
        let ignored = self.index.ignored_relays();
        let ignored: BTreeMap<String, u64> = [
            ("invalid".to_string(), u64::from(ignored.invalid)),
            ("duplicate".to_string(), u64::from(ignored.duplicate)),
            ("over_limit".to_string(), u64::from(ignored.over_limit)),
        ]
        .into();
        let queue = self.ingest.backlog() + self.outbox.len();
        // Up only when both the host's event stream and the ingest connection are.
        let host_connected =
            self.host_connected && self.ingest.stats.connected.load(std::sync::atomic::Ordering::Relaxed) > 0;
        let (held, settled, reopened, too_large) = {
            let r = self.rejected();
            (r.held_len(), r.settled_len(), r.reopened(), r.too_large())
        };
        self.metrics.update(|s| {
            s.repos = self.index.len();
            s.root_events = self.index.root_count();
            s.refused_relays = refusals.total();
            s.refused_relays_by_reason = by_reason;
            s.refused_relays_sample = sample;
            s.relay_targets = refusals.targets;
            s.max_relays = self.cfg.sync.max_relays;
            s.announcement_relays_ignored = ignored;
            s.ingest_queue = queue;
            s.host_connected = host_connected;
            s.events_pending_retry = held;
            s.events_settled = settled;
            s.events_reopened = reopened;
            s.events_too_large = too_large;
            s.host_refusals = self.host_refusals
                + self.ingest.stats.transient_refusals.load(std::sync::atomic::Ordering::Relaxed) as u64;
            s.host_retries_pending = self.retries.len();
        });
    }

    /// Stops feeding the engine: it closes its relays.
    pub(super) fn stop_engine(&mut self) {
        self.index_tx = None;
    }

    /// Writes the state file; `unsent` are events fetched but not written to the host.
    /// `stopping`: relays connected now are recorded as left now, so a restart within
    /// `quick_reconnect_secs` resumes them quickly. Periodic saves leave them as connected: after a
    /// crash (events in flight may be lost) the engine starts them fresh.
    pub(super) fn save_state(&mut self, unsent: Vec<Note>, stopping: bool) -> Result<(), state::StateError> {
        self.collect_persisted();
        let t = unix_now();
        let mut relays = self.relays.clone();
        if stopping {
            for r in relays.values_mut() {
                // Still connected: its last disconnect is older than its last connect.
                if let Some(up) = r.last_connected {
                    if r.disconnected_at.is_none_or(|down| down < up) {
                        r.disconnected_at = Some(t);
                    }
                }
            }
        }
        // Settled rejected events are written only when they changed.
        let dirty = self.rejected().take_settled_dirty();
        if dirty {
            let result = {
                let r = self.rejected();
                state::save_settled(&self.cfg.state.dir, r.settled_notes())
            };
            if let Err(e) = result {
                self.rejected().mark_settled_dirty();
                return Err(e);
            }
        }
        let saved = SavedState { version: STATE_VERSION, saved_at: t, relays, settled_rejected: Vec::new(), unsent };
        state::save(&self.cfg.state.dir, &saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_index_reaches_the_engine_every_50_ms_a_large_one_less_often() {
        assert_eq!(index_gap(Duration::from_micros(200)), INDEX_EVERY);
        // A copy of 10,000 repositories and 100,000 roots takes tens of milliseconds.
        assert_eq!(index_gap(Duration::from_millis(30)), Duration::from_millis(600));
    }
}
