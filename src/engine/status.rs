//! Engine settings and the per-relay report the engine publishes (read by `/status`, tests and
//! benchmarks). Reports live behind a std mutex that is never held across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::engine::relays::{PersistedRelay, RelayStatus};
use crate::engine::targets::RefusalSummary;
use crate::policy::RelayUrl;
pub use crate::remote::health::HealthStatus;

/// Tunables of the sync engine. Defaults follow DESIGN.md; tests shrink the durations.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Try NIP-77 first (re-probed on every fresh start).
    pub negentropy: bool,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Connect timeout (defaults to the base backoff).
    pub connect_timeout: Duration,
    /// A relay failing this long is Dead and retried once per `dead_retry`.
    pub dead_after: Duration,
    pub dead_retry: Duration,
    /// A recovered relay counts as Degraded this long.
    pub degraded_for: Duration,
    /// Reconnects within this time resume (`since = disconnected_at − catchup_margin`).
    pub quick_reconnect: Duration,
    pub catchup_margin: Duration,
    pub rate_limit_cooldown: Duration,
    /// No answer to NEG-OPEN within this time: the relay lacks NIP-77.
    pub negentropy_timeout: Duration,
    /// Concurrent subscriptions per relay (REQ and NEG).
    pub max_subscriptions: usize,
    /// Ids per `ids` REQ after negentropy.
    pub id_chunk: usize,
    /// `limit` of REQ pagination pages.
    pub page_limit: u64,
    /// Values per tag filter in L2/L3.
    pub filter_chunk: usize,
    /// Largest client frame the remote accepts.
    pub payload_limit: usize,
    /// Daily fresh start, drawn uniformly from this range per relay.
    pub daily: (Duration, Duration),
    /// A historic subscription (REQ page, `ids` fetch, negentropy round) that has not finished
    /// within this time is given up: its batch fails and is retried after `historic_retry`.
    pub historic_timeout: Duration,
    /// Delay before the items of a failed historic batch are synced again.
    pub historic_retry: Duration,
    /// A connection lost sooner than this after it opened counts as a failed connect (the
    /// backoff keeps growing), so a relay that accepts and drops cannot make us redial at once.
    pub stable_session: Duration,
    /// Longest a frame may take to be written before the connection counts as lost.
    pub send_timeout: Duration,
    /// Keepalive, pong, send and close deadlines of every connection.
    pub liveness: crate::wire::conn::Liveness,
    /// Misbehaviour budgets and the live event rate per connection.
    pub abuse: crate::remote::abuse::AbuseLimits,
    /// How often confirmed items outside the live hot set are caught up by negentropy.
    pub sweep_interval: Duration,
    /// The live hot set is rebuilt at most once per this interval.
    pub consolidation_interval: Duration,
    /// After an overflow, the subscription budget grows back by one per this quiet time.
    pub budget_regrow: Duration,
    /// How long history waits for a root event it fetched to join the target (the daemon
    /// accepts it and the index grows) before the relay counts as synced without it.
    pub root_wait: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            negentropy: true,
            base_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            dead_after: Duration::from_secs(24 * 3600),
            dead_retry: Duration::from_secs(24 * 3600),
            degraded_for: Duration::from_secs(300),
            quick_reconnect: Duration::from_secs(900),
            catchup_margin: Duration::from_secs(120),
            rate_limit_cooldown: Duration::from_secs(65),
            negentropy_timeout: Duration::from_secs(10),
            max_subscriptions: 15,
            id_chunk: crate::remote::historic::DEFAULT_ID_CHUNK,
            page_limit: crate::wire::paginate::DEFAULT_PAGE_LIMIT,
            filter_chunk: 100,
            payload_limit: crate::wire::conn::DEFAULT_PAYLOAD_LIMIT,
            daily: (Duration::from_secs(23 * 3600), Duration::from_secs(25 * 3600)),
            historic_timeout: Duration::from_secs(120),
            historic_retry: Duration::from_secs(600),
            stable_session: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            liveness: crate::wire::conn::Liveness::default(),
            abuse: crate::remote::abuse::AbuseLimits::default(),
            sweep_interval: Duration::from_secs(3600),
            consolidation_interval: Duration::from_secs(60),
            budget_regrow: Duration::from_secs(600),
            root_wait: Duration::from_secs(5),
        }
    }
}

/// One relay's state and counters.
#[derive(Debug, Clone, Default)]
pub struct RelayReport {
    pub status: RelayStatus,
    pub health: Option<HealthStatus>,
    /// Closed because no repository needs it any more (status is then Disconnected).
    pub closed_unneeded: bool,
    pub bootstrap: bool,
    pub repos: usize,
    pub root_events: usize,
    /// `None` until probed.
    pub negentropy: Option<bool>,
    pub dial_attempts: u64,
    pub connects: u64,
    pub fresh_starts: u64,
    pub quick_reconnects: u64,
    /// Events that arrived on the wire in any subscription.
    pub events_received: u64,
    /// Events passed on to the sink.
    pub events_delivered: u64,
    /// Events dropped: bad id, or matching no filter of their subscription.
    pub events_invalid: u64,
    pub events_unmatched: u64,
    /// Events on broad live filters about no repository of ours (dropped, not an offence).
    pub events_unrelated: u64,
    /// Events on subscription ids we never opened (dropped).
    pub events_unknown_subscription: u64,
    /// Events whose signature did not verify, as reported back by the consumer.
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
    /// Items whose history failed in the last round (retried after `historic_retry`).
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
    /// Historic batches finished in the current sync round, and still open.
    pub historic_batches_done: u64,
    pub historic_batches_open: usize,
    pub rate_limited: u64,
    pub consolidations: u64,
    /// Live subscriptions the relay has confirmed with EOSE.
    pub live_ready: usize,
    /// Most subscriptions open at once.
    pub max_open_subscriptions: usize,
    pub subscription_budget: usize,
    /// Websocket payload bytes, all connections of this relay so far.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// What the daemon should write to the state dir for this relay (its confirmed items, which
    /// may be large, are kept apart: [`SyncStatus::persisted`]).
    pub persisted: PersistedRelay,
    pub last_error: Option<String>,
}

/// A URL the engine refused to dial, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub url: String,
    /// Short name ([`RefusedReason::label`](crate::engine::RefusedReason::label)).
    pub reason: &'static str,
    /// The reason in words.
    pub detail: String,
}

/// Refused URLs kept as examples per reason; the rest are only counted.
pub const REFUSED_SAMPLE_PER_REASON: usize = 10;

/// Shared view of every relay's report and of refused URLs.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    inner: Arc<Mutex<StatusInner>>,
}

#[derive(Debug, Default)]
struct StatusInner {
    relays: BTreeMap<RelayUrl, RelayReport>,
    /// Confirmed items per relay in their saved form (read only when the state is saved).
    confirmed: BTreeMap<RelayUrl, Arc<str>>,
    /// From the latest target choice only: bounded however many relays are listed.
    refusals: RefusalSummary,
}

impl SyncStatus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Updates one relay's report (the lock is released before returning).
    pub fn update<R>(&self, url: &RelayUrl, f: impl FnOnce(&mut RelayReport) -> R) -> R {
        let mut inner = self.inner.lock().expect("status lock");
        f(inner.relays.entry(url.clone()).or_default())
    }

    /// The consumer found an event from this relay with a bad signature: counted, and the
    /// relay's task holds it against the relay's misbehaviour budget.
    pub fn bad_signature(&self, url: &RelayUrl) {
        if let Some(r) = self.inner.lock().expect("status lock").relays.get_mut(url) {
            r.events_bad_signature += 1;
        }
    }

    /// Forgets a relay's report (it is no longer a target and its task has ended).
    pub fn remove(&self, url: &RelayUrl) {
        let mut inner = self.inner.lock().expect("status lock");
        inner.relays.remove(url);
        inner.confirmed.remove(url);
    }

    /// Records a relay's confirmed items in their saved form.
    pub fn set_confirmed(&self, url: &RelayUrl, confirmed: Arc<str>) {
        self.inner.lock().expect("status lock").confirmed.insert(url.clone(), confirmed);
    }

    /// What to save for every relay: its persisted fields and confirmed items.
    pub fn persisted(&self) -> BTreeMap<RelayUrl, PersistedRelay> {
        let inner = self.inner.lock().expect("status lock");
        inner
            .relays
            .iter()
            .map(|(url, r)| {
                let mut p = r.persisted.clone();
                p.confirmed = inner.confirmed.get(url).map(|c| c.to_string());
                (url.clone(), p)
            })
            .collect()
    }

    pub fn relay(&self, url: &RelayUrl) -> Option<RelayReport> {
        self.inner.lock().expect("status lock").relays.get(url).cloned()
    }

    pub fn relays(&self) -> BTreeMap<RelayUrl, RelayReport> {
        self.inner.lock().expect("status lock").relays.clone()
    }

    /// Replaces what the latest target choice refused.
    pub fn set_refusals(&self, summary: RefusalSummary) {
        self.inner.lock().expect("status lock").refusals = summary;
    }

    /// Counts of the latest target choice: targets and refusals per reason.
    pub fn refusals(&self) -> RefusalSummary {
        self.inner.lock().expect("status lock").refusals.clone()
    }

    /// Example refused URLs of the latest target choice, at most
    /// [`REFUSED_SAMPLE_PER_REASON`] per reason.
    pub fn refused(&self) -> Vec<Refused> {
        let inner = self.inner.lock().expect("status lock");
        inner
            .refusals
            .sample
            .iter()
            .map(|(u, r)| Refused { url: u.to_string(), reason: r.label(), detail: r.to_string() })
            .collect()
    }
}
