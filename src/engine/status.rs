//! Engine settings and the board where relay tasks publish their [`RelayReport`]s (read by
//! `/status`, tests and benchmarks) and what to save for each relay. Everything lives behind a
//! std mutex that is never held across an `.await`; nothing here steers a relay (commands go
//! through each task's inbox).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::relays::PersistedRelay;
use crate::engine::targets::RefusalSummary;
use crate::policy::RelayUrl;
pub use crate::status::{HealthStatus, RelayReport, RelayStatus};

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
    /// What to save per relay (its confirmed items apart, below).
    persisted: BTreeMap<RelayUrl, PersistedRelay>,
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
        f(inner.relays.entry(url.clone()).or_insert_with(|| RelayReport::new(url.as_str())))
    }

    /// Updates one relay's report if the relay is still on the board (counts that arrive after
    /// a relay left are dropped with it).
    pub fn update_existing(&self, url: &RelayUrl, f: impl FnOnce(&mut RelayReport)) {
        if let Some(r) = self.inner.lock().expect("status lock").relays.get_mut(url) {
            f(r);
        }
    }

    /// Updates what to save for one relay.
    pub fn update_persisted(&self, url: &RelayUrl, f: impl FnOnce(&mut PersistedRelay)) {
        f(self.inner.lock().expect("status lock").persisted.entry(url.clone()).or_default())
    }

    /// Forgets a relay's report (it is no longer a target and its task has ended).
    pub fn remove(&self, url: &RelayUrl) {
        let mut inner = self.inner.lock().expect("status lock");
        inner.relays.remove(url);
        inner.persisted.remove(url);
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
            .persisted
            .iter()
            .filter(|(url, _)| inner.relays.contains_key(*url))
            .map(|(url, p)| {
                let mut p = p.clone();
                p.confirmed = inner.confirmed.get(url).map(|c| c.to_string());
                (url.clone(), p)
            })
            .collect()
    }

    /// One relay's report, derived fields filled.
    pub fn relay(&self, url: &RelayUrl) -> Option<RelayReport> {
        self.inner.lock().expect("status lock").relays.get(url).cloned().map(RelayReport::derive)
    }

    /// Every relay's report, derived fields filled.
    pub fn relays(&self) -> BTreeMap<RelayUrl, RelayReport> {
        let inner = self.inner.lock().expect("status lock");
        inner.relays.iter().map(|(u, r)| (u.clone(), r.clone().derive())).collect()
    }

    /// Every relay's report in URL order, as `/status` lists them.
    pub fn reports(&self) -> Vec<RelayReport> {
        self.relays().into_values().collect()
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
