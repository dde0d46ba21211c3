//! The planner: one per connected relay, a state machine without I/O. It holds what is open,
//! pending and confirmed and decides every REQ, NEG-OPEN, CLOSE and consolidation; the
//! relay's task feeds it what happens (`start`, `on_target`, `on_msg`, `on_tick`) and carries
//! out the [`Action`]s it returns.
//!
//! Bounds it keeps whatever the target size: open subscriptions ≤ the budget (live tiers in
//! a fixed share, historic jobs in the rest), every client frame ≤ 60,000 bytes, each needed
//! id fetched once per connection, the hot set rebuilt at most once per interval.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::engine::layers;
use crate::engine::lifecycle::ConnectStrategy;
use crate::engine::relay_task::{has_item, items_of, Item, RelayMemory, RelayTarget};
use crate::engine::status::{HealthStatus, RelayReport, RelayStatus, SyncSettings, SyncStatus};
use crate::engine::store::LocalStore;
use crate::policy::{Id, Note, RelayUrl};
use crate::remote::abuse::{Budget, TokenBucket};
use crate::remote::historic::IdChunk;
use crate::remote::negentropy::NegSession;
use crate::wire::paginate::Paginator;
use crate::wire::{unix_now, ClientMsg, Filter, WireCounters};

use super::items::{encode_confirmed, item_digest, item_filters};
use super::live::{self, Relevance};
use super::SessionEnd;

/// Largest client frame we send (strfry accepts 131,072; NIP-77 frames are kept below 60 kB).
pub(crate) const MAX_CLIENT_FRAME: usize = 60_000;
/// Delivered ids remembered per generation to deliver each event once per connection.
const DELIVERED_GENERATION: usize = 50_000;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Send(ClientMsg),
    Deliver(Note),
}

/// What the planner may read: settings, the host's local sets, the status board.
#[derive(Clone)]
pub(crate) struct PlannerCtx {
    pub url: RelayUrl,
    pub bootstrap: bool,
    pub settings: SyncSettings,
    pub store: Arc<dyn LocalStore>,
    pub status: SyncStatus,
    pub counters: Arc<WireCounters>,
}

pub(super) enum JobKind {
    Neg(Filter),
    Page(Paginator),
    Ids(IdChunk),
}

pub(super) struct Job {
    pub batch: Option<u64>,
    pub kind: JobKind,
}

/// The filters of one live REQ, shared by the live plan and the subscription carrying them.
pub(super) type LiveReq = Arc<Vec<Filter>>;

pub(super) enum SubKind {
    /// `prev`: the filters this id carried before it was replaced (events may still come).
    Live {
        filters: LiveReq,
        prev: LiveReq,
        ready: bool,
    },
    Neg {
        batch: Option<u64>,
        filter: Filter,
        session: NegSession,
        need: Vec<Id>,
        silent_until: Option<Instant>,
    },
    Page {
        batch: Option<u64>,
        pager: Paginator,
        filter: Filter,
    },
    Ids {
        batch: Option<u64>,
        chunk: IdChunk,
    },
}

pub(super) struct Sub {
    pub kind: SubKind,
    /// The relay answered on it (EOSE, an event, a NEG-MSG): it is certainly open.
    pub acked: bool,
    /// When historic work on it is given up.
    pub deadline: Option<Instant>,
}

impl Sub {
    pub(super) fn is_live(&self) -> bool {
        matches!(self.kind, SubKind::Live { .. })
    }
}

pub(super) struct Batch {
    pub items: Vec<Item>,
    pub jobs_left: usize,
    pub failed: bool,
    /// A periodic catch-up of confirmed items (does not make the relay Syncing).
    pub sweep: bool,
}

pub(crate) struct Planner {
    pub(super) ctx: PlannerCtx,
    pub(super) mem: RelayMemory,
    pub(super) now: Instant,
    pub(super) out: Vec<Action>,
    pub(super) subs: HashMap<String, Sub>,
    pub(super) queue: VecDeque<Job>,
    pub(super) batches: HashMap<u64, Batch>,
    pub(super) pending: BTreeSet<Item>,
    pub(super) next_id: u64,
    pub(super) cooldown_until: Option<Instant>,
    pub(super) degraded_until: Option<Instant>,
    pub(super) syncing: bool,
    /// Related items (L4) not looked up yet on this relay: the next sweep asks for their whole
    /// history.
    pub(super) related_due: BTreeSet<Item>,
    /// The hot set was ranked again after this connection's first round.
    pub(super) reranked: bool,
    /// The target as planned: the task's shared copy, not one of the planner's own.
    pub(super) current: Arc<RelayTarget>,
    pub(super) relevance: Relevance,
    pub(super) abuse: Budget,
    pub(super) live_rate: TokenBucket,
    pub(super) retry_at: Option<Instant>,
    /// Live REQs wanted (broad filters first, then the hot set), and the ids of the open live
    /// subscriptions (those carrying the plan, and any it replaces that are not closed yet).
    pub(super) live_plan: Vec<LiveReq>,
    pub(super) live_subs: Vec<String>,
    /// Since when every REQ of the plan has had its EOSE (replaced ones close a while after).
    pub(super) live_ready_at: Option<Instant>,
    /// Items a rebuild brought into the hot set, caught up since the last sweep once the new
    /// plan is registered (until then they were the sweep's).
    pub(super) hot_catch_up: BTreeSet<Item>,
    /// Items named by the hot set (the rest is swept).
    pub(super) hot_items: BTreeSet<Item>,
    pub(super) live_dirty: bool,
    /// The open live subscriptions may differ from the plan.
    pub(super) live_pending: bool,
    /// The relay closed a live subscription: none is reopened before this.
    pub(super) live_hold_until: Option<Instant>,
    /// The last catch-up after a live subscription was lost.
    pub(super) last_catch_up: Option<Instant>,
    /// Items left the target since the live set was built (their filters are stale).
    pub(super) live_shrunk: bool,
    pub(super) live_built_at: Option<Instant>,
    /// The next live rebuild is the ranking after the first round (see `maybe_finish`), asked
    /// for at this target generation.
    pub(super) live_rerank: Option<u64>,
    /// Bumped whenever the target's items change.
    pub(super) target_generation: u64,
    /// `(free live slots, target generation)` when the target was last scanned for items to add
    /// to the live set between rebuilds: a scan costs a pass over every item, so it is repeated
    /// only when one of the two changed, not on every message.
    pub(super) live_extend_tried: Option<(usize, u64)>,
    /// Passes over the target made for that (what the tests count).
    #[cfg(test)]
    pub(super) live_extend_scans: usize,
    /// Ids asked for on this connection (each needed id is fetched once).
    pub(super) requested: HashSet<Id>,
    delivered: [HashSet<Id>; 2],
    /// Root events delivered by history that the target does not list yet: history is not
    /// complete until they arrive in the target (or their wait ends).
    pub(super) awaiting_roots: HashMap<Id, Instant>,
    pub(super) sweep_at: Instant,
    pub(super) last_sweep_unix: u64,
    pub(super) last_overflow: Option<Instant>,
    pub(super) grow_at: Option<Instant>,
    pub(super) persist_dirty: bool,
    pub(super) persist_at: Instant,
    /// Unix time of the last frame received.
    pub(super) last_data: Option<u64>,
}

pub(super) type Step = Result<(), SessionEnd>;

/// A target handed to the planner: the task's shared one is kept as it is, without a copy.
pub(crate) trait SharedTarget {
    fn shared(self) -> Arc<RelayTarget>;
}

impl SharedTarget for &Arc<RelayTarget> {
    fn shared(self) -> Arc<RelayTarget> {
        Arc::clone(self)
    }
}

/// Tests plan plain targets.
#[cfg(test)]
impl SharedTarget for &RelayTarget {
    fn shared(self) -> Arc<RelayTarget> {
        Arc::new(self.clone())
    }
}

impl Planner {
    pub(crate) fn new(ctx: PlannerCtx, mem: RelayMemory, degraded_until: Option<Instant>, now: Instant) -> Self {
        let limits = ctx.settings.abuse;
        let retry_at = (!mem.failed.is_empty()).then(|| now + ctx.settings.historic_retry);
        let sweep_at = now + ctx.settings.sweep_interval;
        Planner {
            mem,
            now,
            out: Vec::new(),
            subs: HashMap::new(),
            queue: VecDeque::new(),
            batches: HashMap::new(),
            pending: BTreeSet::new(),
            next_id: 0,
            cooldown_until: None,
            degraded_until,
            syncing: false,
            related_due: BTreeSet::new(),
            reranked: false,
            current: Arc::default(),
            relevance: Relevance::default(),
            abuse: Budget::new(limits, now),
            live_rate: TokenBucket::new(limits.live_events_per_sec, limits.live_burst, now),
            retry_at,
            live_plan: Vec::new(),
            live_subs: Vec::new(),
            live_ready_at: None,
            hot_catch_up: BTreeSet::new(),
            hot_items: BTreeSet::new(),
            live_dirty: true,
            live_pending: true,
            live_hold_until: None,
            last_catch_up: None,
            live_shrunk: false,
            live_built_at: None,
            live_rerank: None,
            target_generation: 0,
            live_extend_tried: None,
            #[cfg(test)]
            live_extend_scans: 0,
            requested: HashSet::new(),
            delivered: [HashSet::new(), HashSet::new()],
            awaiting_roots: HashMap::new(),
            sweep_at,
            last_sweep_unix: unix_now(),
            last_overflow: None,
            grow_at: None,
            persist_dirty: true,
            persist_at: now,
            last_data: None,
            ctx,
        }
    }

    /// The actions decided since the last call, in order.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    pub(crate) fn into_memory(mut self) -> RelayMemory {
        self.publish_persisted();
        self.mem
    }

    /// Unix time of the last frame received on this connection.
    pub(crate) fn last_data(&self) -> Option<u64> {
        self.last_data
    }

    /// The connection is up: plan the first round (fresh start or quick reconnect).
    pub(crate) fn start(&mut self, strategy: ConnectStrategy, target: impl SharedTarget, now: Instant) -> Step {
        let target = &target.shared();
        self.now = now;
        let restored = self.mem.restored.take();
        match strategy {
            ConnectStrategy::FreshStart => {
                self.mem.confirmed.clear();
                self.mem.failed.clear();
                self.mem.state.announcements_synced = false;
                self.mem.state.negentropy = None;
                self.report(|r| r.fresh_starts += 1);
                self.plan(target);
            }
            ConnectStrategy::QuickReconnect { since } => {
                self.report(|r| r.quick_reconnects += 1);
                if let Some(saved) = restored {
                    // A restart: what was confirmed before it, as far as it is still targeted.
                    self.mem.confirmed = items_of(target).filter(|i| saved.contains(&item_digest(i))).collect();
                }
                // Confirmed items: a historic catch-up for the time away (live is by tier).
                let confirmed: Vec<Item> = std::mem::take(&mut self.mem.confirmed).into_iter().collect();
                self.start_items(confirmed, Some(since), false);
                self.plan(target);
            }
        }
        self.settle()
    }

    /// The target changed.
    pub(crate) fn on_target(&mut self, target: impl SharedTarget, now: Instant) -> Step {
        self.now = now;
        self.plan(&target.shared());
        self.settle()
    }

    /// `target − pending − confirmed`: new items get a full historic sync. Confirmed items no
    /// longer targeted are forgotten.
    fn plan(&mut self, target: &Arc<RelayTarget>) {
        // The first plan of a connection is a change (its items include the announcements).
        if self.target_generation == 0 || **target != *self.current {
            self.target_generation += 1;
            self.live_dirty = true;
            self.persist_dirty = true;
            self.live_shrunk |= self.hot_items.iter().any(|i| !has_item(target, i));
        }
        self.current = target.clone();
        self.relevance = Relevance::new(target);
        self.awaiting_roots.retain(|id, _| !target.root_events.contains(id));
        let current = &self.current;
        self.mem.confirmed.retain(|i| has_item(current, i));
        self.related_due.retain(|i| has_item(current, i));
        let (related, new): (Vec<Item>, Vec<Item>) = items_of(&self.current)
            .filter(|i| {
                !self.pending.contains(i)
                    && !self.mem.confirmed.contains(i)
                    && !self.mem.failed.contains(i)
                    && !self.related_due.contains(i)
            })
            .partition(|i| matches!(i, Item::Related(_)));
        self.start_items(new, None, false);
        // Deletions and reactions of accepted comments, status and PR updates (L4) are not part
        // of a historic round: the hot set names the newest live, and the next sweep looks each
        // one up in full, in the background (the relay stays connected; only a failure brings
        // it back to syncing). A round that named them would make every (re)connection send
        // every accepted comment's id.
        self.related_due.extend(related);
    }

    /// Historic batches of `items`, one per layer chunk.
    pub(super) fn start_items(&mut self, items: Vec<Item>, since: Option<u64>, sweep: bool) {
        if items.is_empty() {
            return;
        }
        let chunk = self.ctx.settings.filter_chunk.clamp(1, layers::MAX_VALUES_PER_FILTER);
        let (mut l1, mut l2, mut l3, mut l4) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for item in items {
            match item {
                Item::Announcements => l1.push(item),
                Item::Repo(_) => l2.push(item),
                Item::Root(_) => l3.push(item),
                Item::Related(_) => l4.push(item),
            }
        }
        for layer in [l1, l2, l3, l4] {
            for part in layer.chunks(chunk) {
                self.start_batch(part.to_vec(), since, sweep);
            }
        }
    }

    fn start_batch(&mut self, items: Vec<Item>, since: Option<u64>, sweep: bool) {
        let filters = item_filters(&items, self.ctx.settings.filter_chunk);
        let id = self.next_id();
        let neg = self.use_negentropy();
        let page_limit = self.ctx.settings.page_limit;
        for mut f in filters.iter().cloned() {
            f.since = since;
            let kind = if neg { JobKind::Neg(f) } else { JobKind::Page(Paginator::new(f, page_limit)) };
            self.queue.push_back(Job { batch: Some(id), kind });
        }
        if !sweep {
            self.pending.extend(items.iter().cloned());
        }
        self.batches.insert(id, Batch { items, jobs_left: filters.len(), failed: false, sweep });
        if sweep {
            return;
        }
        let new_round = !self.syncing;
        let open = self.open_batches();
        self.report(|r| {
            if new_round {
                r.historic_done = 0;
                r.truncated = 0;
            }
            r.historic_open = open;
        });
        if !self.syncing {
            self.syncing = true;
            self.report(|r| r.status = RelayStatus::Syncing);
        }
    }

    /// Historic batches of the current round (sweeps not counted).
    pub(super) fn open_batches(&self) -> usize {
        self.batches.values().filter(|b| !b.sweep).count()
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn sub_id(&mut self, prefix: &str) -> String {
        format!("{prefix}{}", self.next_id())
    }

    pub(super) fn report<R>(&self, f: impl FnOnce(&mut RelayReport) -> R) -> R {
        self.ctx.status.update(&self.ctx.url, f)
    }

    pub(super) fn use_negentropy(&self) -> bool {
        self.ctx.settings.negentropy && self.mem.state.negentropy != Some(false)
    }

    pub(super) fn in_cooldown(&self) -> bool {
        self.cooldown_until.is_some_and(|t| self.now < t)
    }

    pub(super) fn frame_limit(&self) -> usize {
        self.ctx.settings.payload_limit.min(MAX_CLIENT_FRAME)
    }

    /// Queues a frame unless it is over the frame limit (then `false`: the caller gives up
    /// that work).
    pub(super) fn emit(&mut self, msg: ClientMsg) -> bool {
        if matches!(msg, ClientMsg::Req { .. } | ClientMsg::NegOpen { .. } | ClientMsg::NegMsg { .. }) {
            let len = msg.encode().len();
            let limit = self.frame_limit();
            if len > limit {
                let e = format!("a frame of {len} bytes is over the limit of {limit}; not sent");
                tracing::warn!(relay = %self.ctx.url, "{e}");
                self.report(|r| r.last_error = Some(e));
                return false;
            }
            self.report(|r| r.largest_frame = r.largest_frame.max(len));
        }
        self.out.push(Action::Send(msg));
        true
    }

    /// Hands an event on, once per connection.
    pub(super) fn deliver(&mut self, id: Id, note: Note, historic: bool) {
        if self.delivered.iter().any(|s| s.contains(&id)) {
            return;
        }
        if self.delivered[0].len() >= DELIVERED_GENERATION {
            self.delivered.swap(0, 1);
            self.delivered[0].clear();
        }
        self.delivered[0].insert(id);
        if historic && self.syncing && crate::policy::event::is_root_kind(note.kind) && !self.relevance.has_root(&id) {
            self.awaiting_roots.insert(id, self.now + self.ctx.settings.root_wait);
        }
        self.out.push(Action::Deliver(note));
        self.report(|r| r.events_delivered += 1);
    }

    /// After every input: start what the budget allows, end the round when it is done, and
    /// publish the gauges.
    pub(super) fn settle(&mut self) -> Step {
        self.ensure_live();
        self.pump();
        self.maybe_finish();
        self.publish_gauges();
        Ok(())
    }

    /// Starts queued historic jobs while the budget, the historic share and cooldown allow.
    fn pump(&mut self) {
        let budget = self.mem.budget;
        let hist_max = live::historic_slots(budget);
        while !self.in_cooldown() && self.subs.len() < budget {
            let hist_open = self.subs.values().filter(|s| !s.is_live()).count();
            if hist_open >= hist_max {
                break;
            }
            let Some(job) = self.queue.pop_front() else { break };
            self.start_job(job);
        }
    }

    fn publish_gauges(&mut self) {
        let open = self.subs.len();
        let ready = self.subs.values().filter(|s| matches!(s.kind, SubKind::Live { ready: true, .. })).count();
        let (bytes_in, bytes_out) = (self.ctx.counters.bytes_in(), self.ctx.counters.bytes_out());
        let (queued, pending, failed) = (self.queue.len(), self.pending.len(), self.mem.failed.len());
        let budget = self.mem.budget;
        let hot = self.hot_items.len();
        self.report(|r| {
            r.jobs_queued = queued;
            r.subscriptions_open = open;
            r.items_pending = pending;
            r.items_failed = failed;
            r.subscriptions = ready;
            r.bytes_in = bytes_in;
            r.bytes_out = bytes_out;
            r.max_open_subscriptions = r.max_open_subscriptions.max(open);
            r.subscription_budget = budget;
            r.hot_items = hot;
        });
    }

    /// Writes what a restart needs into the report (the daemon saves it).
    pub(super) fn publish_persisted(&mut self) {
        self.persist_dirty = false;
        self.persist_at = self.now;
        let persisted = self.mem.state.persisted();
        self.ctx.status.update_persisted(&self.ctx.url, |p| *p = persisted);
        self.ctx.status.set_confirmed(&self.ctx.url, encode_confirmed(&self.mem.confirmed).into());
    }

    fn maybe_finish(&mut self) {
        if !self.syncing || self.open_batches() > 0 || !self.awaiting_roots.is_empty() {
            return;
        }
        self.syncing = false;
        if !self.reranked {
            // The first round brought the roots into the host: rank the hot set again by what
            // the host now holds (during the round, roots it did not hold yet all ranked newest).
            // Not a consolidation: it does not wait for the interval.
            self.reranked = true;
            self.live_dirty = true;
            self.live_rerank = Some(self.target_generation);
        }
        if self.batches.is_empty() {
            // Ids asked for in this round arrived or failed with their batch: forget them.
            self.requested = HashSet::new();
        }
        let status = if !self.mem.failed.is_empty() {
            RelayStatus::ConnectedHistoricSyncFailures
        } else {
            RelayStatus::Connected
        };
        let failed = self.mem.failed.len();
        self.report(|r| {
            r.status = status;
            r.historic_failed = failed;
            if failed == 0 {
                r.history_error = None;
            }
        });
        self.publish_persisted();
    }

    /// Whether the connection is no longer needed (nothing targeted, not bootstrap, idle).
    pub(crate) fn should_close(&self, target: &RelayTarget) -> bool {
        target.is_empty() && !self.ctx.bootstrap && !self.syncing && self.batches.is_empty() && self.queue.is_empty()
    }

    /// A batch's job ended. The batch's items are confirmed when its last job ended and none
    /// failed; a failed batch's items are retried later and never confirmed.
    pub(super) fn job_done(&mut self, batch: Option<u64>, ok: bool) {
        let Some(id) = batch else { return };
        if !ok {
            self.report(|r| r.historic_failures += 1);
        }
        let Some(b) = self.batches.get_mut(&id) else { return };
        b.jobs_left = b.jobs_left.saturating_sub(1);
        b.failed |= !ok;
        if b.jobs_left > 0 {
            return;
        }
        let b = self.batches.remove(&id).expect("batch present");
        self.persist_dirty = true;
        if !b.sweep {
            let open = self.open_batches();
            let done = self.report(|r| {
                r.historic_done += 1;
                r.historic_open = open;
                r.historic_done
            });
            tracing::debug!(relay = %self.ctx.url, items = b.items.len(), failed = b.failed, done, open, "historic batch complete");
        }
        if b.failed {
            for item in &b.items {
                self.pending.remove(item);
                self.mem.confirmed.remove(item);
                if *item == Item::Announcements {
                    self.mem.state.announcements_synced = false;
                }
            }
            self.schedule_retry(&b.items);
            return;
        }
        for item in b.items {
            self.mem.failed.remove(&item);
            if b.sweep {
                if has_item(&self.current, &item) {
                    self.mem.confirmed.insert(item);
                }
                continue;
            }
            self.pending.remove(&item);
            if !has_item(&self.current, &item) {
                continue;
            }
            if item == Item::Announcements {
                self.mem.state.announcements_synced = true;
            }
            self.mem.confirmed.insert(item);
        }
    }

    pub(super) fn enter_cooldown(&mut self, why: &str) {
        let why = &crate::remote::abuse::clip(why, 200);
        tracing::info!(relay = %self.ctx.url, "rate limited ({why}); cooling down");
        self.cooldown_until = Some(self.now + self.ctx.settings.rate_limit_cooldown);
        self.report(|r| {
            r.rate_limited += 1;
            r.health = HealthStatus::RateLimited;
            r.last_error = Some(why.to_string());
        });
    }
}
