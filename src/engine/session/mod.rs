//! One connected session with a relay: live subscriptions, historic jobs (negentropy or REQ
//! pagination, then `ids` fetches), the subscription budget, rate-limit cooldowns, NIP-77
//! fallback and consolidation. Owned by the relay's task; nothing here is shared.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::engine::layers::{self, ReqLimits};
use crate::engine::lifecycle::ConnectStrategy;
use crate::engine::relay_task::{target_items, Ctx, Item, RelayMemory, RelayTarget};
use crate::engine::status::{HealthStatus, RelayStatus};
use crate::engine::store::Fetched;
use crate::engine::targets::ItemSet;
use crate::policy::Note;
use crate::remote::abuse::{Budget, Offence, TokenBucket};
use crate::remote::classify::{classify, Signal, Source};
use crate::remote::conn::MAX_NEG_FRAME;
use crate::remote::historic::{chunk_ids, ChunkOutcome, IdChunk};
use crate::remote::negentropy::{frame_limit_for, NegSession};
use crate::remote::paginate::{PageEnd, Paginator};
use crate::remote::{ClientMsg, ConnError, Connection, Filter, RelayMsg};

mod guard;
mod handlers;

/// How often timers (negentropy silence, cooldown end, daily) are checked.
const TICK: Duration = Duration::from_millis(50);

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    Lost(String),
    /// A misbehaviour budget ran out (the text says which).
    Misbehaving(String),
    /// Live events came faster than the per-relay rate.
    TooFast(String),
    Unneeded,
    Shutdown,
    Daily,
}

enum JobKind {
    Live(Vec<Filter>),
    Neg(Filter),
    Page(Paginator),
    Ids(IdChunk),
}

struct Job {
    batch: Option<u64>,
    kind: JobKind,
}

enum Sub {
    /// Live filters, and whether the relay has answered EOSE (the subscription is in place).
    Live(Vec<Filter>, bool),
    Neg {
        batch: Option<u64>,
        filter: Filter,
        session: NegSession,
        need: Vec<crate::policy::Id>,
        deadline: Option<Instant>,
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

struct Batch {
    items: Vec<Item>,
    jobs_left: usize,
    failed: bool,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Filters of one layer chunk (L1 announcements, L2 repo-tagged, L3 root-tagged).
pub(crate) fn item_filters(items: &[Item], chunk: usize) -> Vec<Filter> {
    let mut out = Vec::new();
    let mut set = ItemSet::default();
    for item in items {
        match item {
            Item::Announcements => out.extend(layers::l1_filters()),
            Item::Repo(c) => {
                set.repos.insert(c.clone());
            }
            Item::Root(id) => {
                set.root_events.insert(*id);
            }
        }
    }
    let l2 = layers::l2_filters(&set.repos, chunk);
    if !l2.unfilterable.is_empty() {
        tracing::warn!(count = l2.unfilterable.len(), "repository coordinates too long to filter on");
    }
    out.extend(l2.filters);
    out.extend(layers::l3_filters(&set.root_events, chunk));
    out
}

pub(crate) struct Session<'a> {
    ctx: &'a Ctx,
    mem: &'a mut RelayMemory,
    conn: Connection,
    subs: HashMap<String, Sub>,
    queue: VecDeque<Job>,
    batches: HashMap<u64, Batch>,
    pending: BTreeSet<Item>,
    next_id: u64,
    cooldown_until: Option<Instant>,
    degraded_until: Option<Instant>,
    syncing: bool,
    /// Items currently targeted (announcements included).
    current: BTreeSet<Item>,
    /// The live set must be rebuilt (items were dropped from the target).
    rebuild_live: bool,
    /// Misbehaviour counts of this connection.
    budget: Budget,
    /// Live events allowed per second.
    live_rate: TokenBucket,
    /// When each historic subscription must have finished.
    deadlines: HashMap<String, Instant>,
    /// When the items of failed historic batches are synced again.
    retry_at: Option<Instant>,
    /// Bad signatures reported for this relay so far (to count new ones).
    bad_signatures_seen: u64,
}

type Step = Result<(), SessionEnd>;

impl<'a> Session<'a> {
    pub(crate) fn new(
        ctx: &'a Ctx,
        mem: &'a mut RelayMemory,
        conn: Connection,
        degraded_until: Option<Instant>,
    ) -> Self {
        let now = Instant::now();
        let limits = ctx.settings.abuse;
        let bad_signatures_seen = ctx.status.update(&ctx.url, |r| r.events_bad_signature);
        let retry_at = (!mem.failed.is_empty()).then(|| now + ctx.settings.historic_retry);
        Session {
            ctx,
            mem,
            conn,
            subs: HashMap::new(),
            queue: VecDeque::new(),
            batches: HashMap::new(),
            pending: BTreeSet::new(),
            next_id: 0,
            cooldown_until: None,
            degraded_until,
            syncing: false,
            current: BTreeSet::new(),
            rebuild_live: false,
            budget: Budget::new(limits, now),
            live_rate: TokenBucket::new(limits.live_events_per_sec, limits.live_burst, now),
            deadlines: HashMap::new(),
            retry_at,
            bad_signatures_seen,
        }
    }

    /// Runs until the connection is lost, the relay is no longer needed, or shutdown.
    pub(crate) async fn run(
        mut self,
        target: &mut watch::Receiver<RelayTarget>,
        strategy: ConnectStrategy,
    ) -> SessionEnd {
        let t = target.borrow_and_update().clone();
        match strategy {
            ConnectStrategy::FreshStart => self.begin(true, None, &t),
            ConnectStrategy::QuickReconnect { since } => self.begin(false, Some(since), &t),
        }
        let end = self.event_loop(target).await;
        self.conn.close().await;
        end
    }

    async fn event_loop(&mut self, target: &mut watch::Receiver<RelayTarget>) -> SessionEnd {
        loop {
            if self.rebuild_live {
                if let Err(end) = self.consolidate().await {
                    return end;
                }
            }
            if let Err(end) = self.pump().await {
                return end;
            }
            self.maybe_finish();
            if self.should_close(&target.borrow()) {
                return SessionEnd::Unneeded;
            }
            let step = tokio::select! {
                msg = self.conn.recv() => match msg {
                    None => Err(SessionEnd::Lost("connection closed by the relay".into())),
                    Some(Err(ConnError::Malformed(e))) => {
                        tracing::debug!(relay = %self.ctx.url, "malformed frame: {e}");
                        self.offend(Offence::InvalidFrame)
                    }
                    Some(Err(e)) => Err(SessionEnd::Lost(e.to_string())),
                    Some(Ok(m)) => self.handle(m).await,
                },
                changed = target.changed() => match changed {
                    Err(_) => Err(SessionEnd::Shutdown),
                    Ok(()) => {
                        let t = target.borrow_and_update().clone();
                        self.plan(&t, None);
                        Ok(())
                    }
                },
                _ = tokio::time::sleep(TICK) => self.on_tick().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn report<R>(&self, f: impl FnOnce(&mut crate::engine::status::RelayReport) -> R) -> R {
        self.ctx.status.update(&self.ctx.url, f)
    }

    fn use_negentropy(&self) -> bool {
        self.ctx.settings.negentropy && self.mem.state.negentropy != Some(false)
    }

    fn begin(&mut self, fresh: bool, since: Option<u64>, target: &RelayTarget) {
        if fresh {
            self.mem.confirmed.clear();
            self.mem.failed.clear();
            self.mem.state.announcements_synced = false;
            self.mem.state.negentropy = None;
            self.report(|r| r.fresh_starts += 1);
            self.plan(target, None);
        } else {
            self.report(|r| r.quick_reconnects += 1);
            // Confirmed items get live subscriptions and a historic catch-up for the time away.
            let confirmed: Vec<Item> = std::mem::take(&mut self.mem.confirmed).into_iter().collect();
            self.start_items(confirmed, since, true);
            self.plan(target, None);
        }
    }

    /// `target − pending − confirmed`: new items get live subscriptions and a full historic sync.
    /// Confirmed items no longer targeted are forgotten and the live set rebuilt without them.
    fn plan(&mut self, target: &RelayTarget, since: Option<u64>) {
        self.report(|r| {
            r.repos = target.repos.len();
            r.root_events = target.root_events.len();
        });
        self.current = target_items(target);
        let before = self.mem.confirmed.len();
        let current = &self.current;
        self.mem.confirmed.retain(|i| current.contains(i));
        if self.mem.confirmed.len() != before {
            self.rebuild_live = true;
        }
        let new: Vec<Item> = target_items(target)
            .into_iter()
            .filter(|i| !self.pending.contains(i) && !self.mem.confirmed.contains(i))
            .collect();
        self.start_items(new, since, true);
    }

    fn start_items(&mut self, items: Vec<Item>, since: Option<u64>, live: bool) {
        if items.is_empty() {
            return;
        }
        let chunk = self.ctx.settings.filter_chunk.max(1);
        let (mut l1, mut l2, mut l3) = (Vec::new(), Vec::new(), Vec::new());
        for item in items {
            match item {
                Item::Announcements => l1.push(item),
                Item::Repo(_) => l2.push(item),
                Item::Root(_) => l3.push(item),
            }
        }
        for layer in [l1, l2, l3] {
            for part in layer.chunks(chunk) {
                self.start_batch(part.to_vec(), since, live);
            }
        }
    }

    fn start_batch(&mut self, items: Vec<Item>, since: Option<u64>, live: bool) {
        let filters = item_filters(&items, self.ctx.settings.filter_chunk);
        if live {
            let live_filters = layers::live(&filters);
            self.queue.push_back(Job { batch: None, kind: JobKind::Live(live_filters) });
        }
        let id = self.next_id();
        let neg = self.use_negentropy();
        for mut f in filters.iter().cloned() {
            f.since = since;
            let kind =
                if neg { JobKind::Neg(f) } else { JobKind::Page(Paginator::new(f, self.ctx.settings.page_limit)) };
            self.queue.push_back(Job { batch: Some(id), kind });
        }
        self.pending.extend(items.iter().cloned());
        self.batches.insert(id, Batch { items, jobs_left: filters.len(), failed: false });
        let new_round = !self.syncing;
        let open = self.batches.len();
        self.report(|r| {
            if new_round {
                r.historic_batches_done = 0;
            }
            r.historic_batches_open = open;
        });
        if !self.syncing {
            self.syncing = true;
            self.report(|r| r.status = RelayStatus::Syncing);
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn sub_id(&mut self, prefix: &str) -> String {
        format!("{prefix}{}", self.next_id())
    }

    fn live_count(&self) -> usize {
        self.subs.values().filter(|s| matches!(s, Sub::Live(..))).count()
    }

    fn in_cooldown(&self) -> bool {
        self.cooldown_until.is_some_and(|t| Instant::now() < t)
    }

    async fn send(&mut self, msg: ClientMsg) -> Result<bool, SessionEnd> {
        let Ok(sent) = tokio::time::timeout(self.ctx.settings.send_timeout, self.conn.send(&msg)).await else {
            return Err(SessionEnd::Lost("the relay does not read what we send (write timed out)".into()));
        };
        match sent {
            Ok(()) => Ok(true),
            Err(e @ ConnError::TooLarge { .. }) => {
                tracing::warn!(relay = %self.ctx.url, "{e}");
                self.report(|r| r.last_error = Some(e.to_string()));
                Ok(false)
            }
            Err(e) => Err(SessionEnd::Lost(e.to_string())),
        }
    }

    /// Starts queued jobs while the subscription budget and cooldown allow.
    async fn pump(&mut self) -> Step {
        while !self.in_cooldown() && self.subs.len() < self.mem.budget {
            let Some(job) = self.queue.pop_front() else { break };
            self.start(job).await?;
        }
        let open = self.subs.len();
        let ready = self.subs.values().filter(|s| matches!(s, Sub::Live(_, true))).count();
        let (bytes_in, bytes_out) = (self.conn.counters().bytes_in(), self.conn.counters().bytes_out());
        let persisted = self.mem.state.persisted();
        let (queued, pending, failed) = (self.queue.len(), self.pending.len(), self.mem.failed.len());
        self.report(|r| {
            r.jobs_queued = queued;
            r.subscriptions_open = open;
            r.items_pending = pending;
            r.items_failed = failed;
            r.persisted = persisted;
            r.live_ready = ready;
            r.bytes_in = bytes_in;
            r.bytes_out = bytes_out;
            r.max_open_subscriptions = r.max_open_subscriptions.max(open);
            r.subscription_budget = self.mem.budget;
        });
        Ok(())
    }

    async fn start(&mut self, job: Job) -> Step {
        match job.kind {
            JobKind::Live(filters) => {
                let live = self.live_count();
                if live > 0 && layers::needs_consolidation(live, 1, self.mem.budget) {
                    // The job's items are pending: the rebuilt live set covers them.
                    return self.consolidate().await;
                }
                self.open_live(filters).await
            }
            JobKind::Neg(filter) => {
                let items = match self.ctx.store.negentropy_items(&filter) {
                    Ok(items) => items,
                    Err(e) => {
                        tracing::warn!(relay = %self.ctx.url, "{e}; paginating instead");
                        let pager = Paginator::new(filter, self.ctx.settings.page_limit);
                        return self.open_page(job.batch, pager).await;
                    }
                };
                // The NEG-OPEN frame carries the filter too: shrink the message budget by its size.
                let overhead = filter.json_len() + 64;
                let limit = frame_limit_for(MAX_NEG_FRAME.min(self.ctx.settings.payload_limit), overhead);
                let (session, msg) = match NegSession::open_with_limit(items, limit) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(relay = %self.ctx.url, "{e}; paginating instead");
                        let pager = Paginator::new(filter, self.ctx.settings.page_limit);
                        return self.open_page(job.batch, pager).await;
                    }
                };
                let sub = self.sub_id("neg");
                if self.send(ClientMsg::NegOpen { sub: sub.clone(), filter: filter.clone(), msg }).await? {
                    let deadline = Some(Instant::now() + self.ctx.settings.negentropy_timeout);
                    self.set_deadline(&sub);
                    self.subs.insert(sub, Sub::Neg { batch: job.batch, filter, session, need: Vec::new(), deadline });
                } else {
                    self.job_done(job.batch, false);
                }
                Ok(())
            }
            JobKind::Page(pager) => self.open_page(job.batch, pager).await,
            JobKind::Ids(chunk) => {
                let sub = self.sub_id("ids");
                let n = chunk.wanted.len() as u64;
                if self.send(ClientMsg::Req { sub: sub.clone(), filters: vec![chunk.filter()] }).await? {
                    self.report(|r| r.ids_requested += n);
                    self.set_deadline(&sub);
                    self.subs.insert(sub, Sub::Ids { batch: job.batch, chunk });
                } else {
                    self.job_done(job.batch, false);
                }
                Ok(())
            }
        }
    }

    async fn open_live(&mut self, filters: Vec<Filter>) -> Step {
        let sub = self.sub_id("live");
        if self.send(ClientMsg::Req { sub: sub.clone(), filters: filters.clone() }).await? {
            self.subs.insert(sub, Sub::Live(filters, false));
        }
        Ok(())
    }

    /// Starts (or restarts) the current page of a walk.
    async fn open_page(&mut self, batch: Option<u64>, mut pager: Paginator) -> Step {
        match pager.start_page() {
            Some(filter) => self.send_page(batch, pager, filter).await,
            None => {
                self.job_done(batch, true);
                Ok(())
            }
        }
    }

    async fn send_page(&mut self, batch: Option<u64>, pager: Paginator, filter: Filter) -> Step {
        let sub = self.sub_id("page");
        if self.send(ClientMsg::Req { sub: sub.clone(), filters: vec![filter.clone()] }).await? {
            self.set_deadline(&sub);
            self.subs.insert(sub, Sub::Page { batch, pager, filter });
        } else {
            self.job_done(batch, false);
        }
        Ok(())
    }

    /// Closes every live subscription and reopens the live set of every confirmed and pending
    /// item in as few REQs as possible (largest filters), with a historic catch-up for the
    /// confirmed items over the gap.
    async fn consolidate(&mut self) -> Step {
        self.rebuild_live = false;
        let live: Vec<String> =
            self.subs.iter().filter(|(_, s)| matches!(s, Sub::Live(..))).map(|(k, _)| k.clone()).collect();
        for sub in live {
            self.subs.remove(&sub);
            self.send(ClientMsg::Close(sub)).await?;
        }
        self.queue.retain(|job| !matches!(job.kind, JobKind::Live(_)));
        let items: Vec<Item> = self.mem.confirmed.union(&self.pending).cloned().collect();
        let all = layers::live(&item_filters(&items, layers::MAX_VALUES_PER_FILTER));
        let limits = ReqLimits { max_frame_bytes: self.ctx.settings.payload_limit.min(60_000), ..ReqLimits::default() };
        let groups = layers::pack(&all, &limits).unwrap_or_else(|_| all.iter().map(|f| vec![f.clone()]).collect());
        for group in groups {
            self.open_live(group).await?;
        }
        let since = unix_now().saturating_sub(self.ctx.settings.catchup_margin.as_secs());
        let confirmed: Vec<Item> = std::mem::take(&mut self.mem.confirmed).into_iter().collect();
        self.start_items(confirmed, Some(since), false);
        let ready = self.subs.values().filter(|s| matches!(s, Sub::Live(_, true))).count();
        self.report(|r| {
            r.consolidations += 1;
            r.live_ready = ready;
        });
        Ok(())
    }

    fn job_done(&mut self, batch: Option<u64>, ok: bool) {
        let Some(id) = batch else { return };
        if !ok {
            self.report(|r| r.historic_failures += 1);
        }
        let Some(b) = self.batches.get_mut(&id) else { return };
        b.jobs_left = b.jobs_left.saturating_sub(1);
        b.failed |= !ok;
        if b.jobs_left == 0 {
            let b = self.batches.remove(&id).expect("batch present");
            let open = self.batches.len();
            let done = self.report(|r| {
                r.historic_batches_done += 1;
                r.historic_batches_open = open;
                r.historic_batches_done
            });
            tracing::info!(
                relay = %self.ctx.url,
                items = b.items.len(),
                failed = b.failed,
                done,
                open,
                "historic batch complete"
            );
            if b.failed {
                self.schedule_retry(&b.items);
            } else {
                for item in &b.items {
                    self.mem.failed.remove(item);
                }
            }
            for item in b.items {
                self.pending.remove(&item);
                if !self.current.contains(&item) {
                    continue;
                }
                if item == Item::Announcements {
                    self.mem.state.announcements_synced = true;
                }
                self.mem.confirmed.insert(item);
            }
        }
    }

    fn maybe_finish(&mut self) {
        if self.syncing && self.batches.is_empty() {
            self.syncing = false;
            let status = if !self.mem.failed.is_empty() {
                RelayStatus::ConnectedHistoricSyncFailures
            } else {
                RelayStatus::Connected
            };
            self.report(|r| r.status = status);
        }
    }

    fn should_close(&self, target: &RelayTarget) -> bool {
        target.is_empty() && !self.ctx.bootstrap && !self.syncing && self.batches.is_empty() && self.queue.is_empty()
    }

    async fn deliver(&mut self, note: Note) -> Step {
        let fetched = Fetched { relay: self.ctx.url.clone(), note };
        self.ctx.sink.send(fetched).await.map_err(|_| SessionEnd::Shutdown)?;
        self.report(|r| r.events_delivered += 1);
        Ok(())
    }

    fn enter_cooldown(&mut self, why: &str) {
        let why = &crate::remote::abuse::clip(why, 200);
        tracing::info!(relay = %self.ctx.url, "rate limited ({why}); cooling down");
        self.cooldown_until = Some(Instant::now() + self.ctx.settings.rate_limit_cooldown);
        self.report(|r| {
            r.rate_limited += 1;
            r.health = Some(HealthStatus::RateLimited);
            r.last_error = Some(why.to_string());
        });
    }

    /// Puts a subscription's work back in the queue (after a rate limit or overflow).
    fn requeue(&mut self, sub: Sub) {
        let job = match sub {
            Sub::Live(fs, _) => Job { batch: None, kind: JobKind::Live(fs) },
            Sub::Neg { batch, filter, .. } => Job { batch, kind: JobKind::Neg(filter) },
            Sub::Page { batch, pager, .. } => Job { batch, kind: JobKind::Page(pager) },
            Sub::Ids { batch, chunk } => Job { batch, kind: JobKind::Ids(chunk) },
        };
        self.queue.push_front(job);
    }
}
