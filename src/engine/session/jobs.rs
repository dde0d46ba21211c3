//! Opening subscriptions: historic jobs (NEG-OPEN, paginated REQ, `ids` REQ) and the live
//! tiers, including the hot-set rebuild (consolidation) and the answer to an overflow.

use std::time::{Duration, Instant};

use super::items::{rank_newest, req_limits};
use super::live::{self, extra_reqs, live_reqs, HotCandidates};
use super::planner::{Job, JobKind, LiveReq, Planner, Sub, SubKind};
use crate::engine::relay_task::{items_of, Item};
use crate::policy::{Id, RepoCoord};
use crate::remote::negentropy::{frame_limit_for, NegSession};
use crate::wire::conn::MAX_NEG_FRAME;
use crate::wire::paginate::Paginator;
use crate::wire::{ClientMsg, Filter};

/// How long live subscriptions replaced by a new plan stay open after the plan's last EOSE.
pub(crate) const LIVE_HANDOVER: Duration = Duration::from_secs(2);

impl Planner {
    pub(super) fn start_job(&mut self, job: Job) {
        match job.kind {
            JobKind::Neg(filter) => self.open_neg(job.batch, filter),
            JobKind::Page(pager) => self.open_page(job.batch, pager),
            JobKind::Ids(chunk) => {
                let sub = self.sub_id("ids");
                let n = chunk.wanted.len() as u64;
                if self.emit(ClientMsg::Req { sub: sub.clone(), filters: vec![chunk.filter()] }) {
                    self.report(|r| r.ids_requested += n);
                    let deadline = Some(self.historic_deadline());
                    self.subs
                        .insert(sub, Sub { kind: SubKind::Ids { batch: job.batch, chunk }, acked: false, deadline });
                } else {
                    self.job_done(job.batch, false);
                }
            }
        }
    }

    pub(super) fn historic_deadline(&self) -> Instant {
        self.now + self.ctx.settings.historic_timeout
    }

    fn open_neg(&mut self, batch: Option<u64>, filter: Filter) {
        let page_limit = self.ctx.settings.page_limit;
        let items = match self.ctx.store.negentropy_items(&filter) {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(relay = %self.ctx.url, "{e}; paginating instead");
                return self.open_page(batch, Paginator::new(filter, page_limit));
            }
        };
        // The NEG-OPEN frame carries the filter too: shrink the message budget by its size.
        let overhead = filter.json_len() + 64;
        let limit = frame_limit_for(MAX_NEG_FRAME.min(self.frame_limit()), overhead);
        let (session, msg) = match NegSession::open_with_limit(items, limit) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(relay = %self.ctx.url, "{e}; paginating instead");
                return self.open_page(batch, Paginator::new(filter, page_limit));
            }
        };
        let sub = self.sub_id("neg");
        if self.emit(ClientMsg::NegOpen { sub: sub.clone(), filter: filter.clone(), msg }) {
            let silent_until = Some(self.now + self.ctx.settings.negentropy_timeout);
            let kind = SubKind::Neg { batch, filter, session, need: Vec::new(), silent_until };
            let deadline = Some(self.historic_deadline());
            self.subs.insert(sub, Sub { kind, acked: false, deadline });
        } else {
            self.job_done(batch, false);
        }
    }

    /// Starts (or restarts) the current page of a walk.
    pub(super) fn open_page(&mut self, batch: Option<u64>, mut pager: Paginator) {
        match pager.start_page() {
            Some(filter) => self.send_page(batch, pager, filter),
            None => self.job_done(batch, true),
        }
    }

    pub(super) fn send_page(&mut self, batch: Option<u64>, pager: Paginator, filter: Filter) {
        let sub = self.sub_id("page");
        if self.emit(ClientMsg::Req { sub: sub.clone(), filters: vec![filter.clone()] }) {
            let deadline = Some(self.historic_deadline());
            self.subs.insert(sub, Sub { kind: SubKind::Page { batch, pager, filter }, acked: false, deadline });
        } else {
            self.job_done(batch, false);
        }
    }

    /// Puts a subscription's work back in the queue (after a rate limit or an overflow).
    pub(super) fn requeue(&mut self, sub: Sub) {
        let job = match sub.kind {
            SubKind::Live { .. } => return,
            SubKind::Neg { batch, filter, .. } => Job { batch, kind: JobKind::Neg(filter) },
            SubKind::Page { batch, pager, .. } => Job { batch, kind: JobKind::Page(pager) },
            SubKind::Ids { batch, chunk } => Job { batch, kind: JobKind::Ids(chunk) },
        };
        self.queue.push_front(job);
    }

    fn open_live(&mut self, filters: LiveReq) -> Option<String> {
        let sub = self.sub_id("live");
        if !self.emit(ClientMsg::Req { sub: sub.clone(), filters: filters.to_vec() }) {
            return None;
        }
        let kind = SubKind::Live { filters, prev: LiveReq::default(), ready: false };
        self.subs.insert(sub.clone(), Sub { kind, acked: false, deadline: None });
        Some(sub)
    }

    /// Brings the live subscriptions to the live plan, within the budget, make before break: a
    /// REQ of the plan that no open subscription carries is opened under a new id, and the
    /// subscriptions it replaces are closed only [`LIVE_HANDOVER`] after every REQ of the plan
    /// has its EOSE. A relay registers a REQ (`limit: 0`) from its EOSE on, but may still be
    /// delivering events it stored just before to the old subscriptions (strfry notices its
    /// own writes up to 100 ms late); closing them, or replacing their filters under the same
    /// id, at once would lose those. Only when the budget has no free slot is a surplus
    /// subscription's REQ replaced in place.
    pub(super) fn ensure_live(&mut self) {
        if self.in_cooldown() || self.live_hold_until.is_some_and(|t| self.now < t) {
            return;
        }
        self.maybe_rebuild_live();
        if !self.live_pending {
            return;
        }
        let mut done = true;
        // Which open subscription carries each REQ of the plan; the others are surplus.
        let mut carrier: Vec<Option<String>> = vec![None; self.live_plan.len()];
        let carries = |carrier: &[Option<String>], id: &String| carrier.iter().flatten().any(|c| c == id);
        for id in &self.live_subs {
            let Some(Sub { kind: SubKind::Live { filters, .. }, .. }) = self.subs.get(id) else { continue };
            let free = (0..self.live_plan.len()).find(|&i| carrier[i].is_none() && self.live_plan[i] == *filters);
            if let Some(i) = free {
                carrier[i] = Some(id.clone());
            }
        }
        for i in 0..self.live_plan.len() {
            if carrier[i].is_some() {
                continue;
            }
            let filters = self.live_plan[i].clone();
            if self.subs.len() < self.mem.budget {
                match self.open_live(filters) {
                    Some(id) => {
                        self.live_subs.push(id.clone());
                        carrier[i] = Some(id);
                    }
                    None => continue,
                }
                continue;
            }
            // No free slot: a surplus subscription takes the REQ under its own id.
            let surplus = self.live_subs.iter().find(|id| !carries(&carrier, id)).cloned();
            let Some(id) = surplus else {
                done = false;
                break;
            };
            if !self.emit(ClientMsg::Req { sub: id.clone(), filters: filters.to_vec() }) {
                continue;
            }
            let sub = self.subs.get_mut(&id).expect("open live subscriptions are in subs");
            // Events of the old filters may still arrive until the new EOSE.
            let blank = SubKind::Live { filters: LiveReq::default(), prev: LiveReq::default(), ready: false };
            let prev = match std::mem::replace(&mut sub.kind, blank) {
                SubKind::Live { filters, .. } => filters,
                _ => LiveReq::default(),
            };
            sub.kind = SubKind::Live { filters, prev, ready: false };
            sub.acked = false;
            carrier[i] = Some(id);
        }
        let plan_ready = carrier.iter().all(|c| {
            c.as_ref()
                .is_some_and(|id| matches!(self.subs.get(id).map(|s| &s.kind), Some(SubKind::Live { ready: true, .. })))
        });
        self.live_ready_at = if plan_ready { Some(self.live_ready_at.unwrap_or(self.now)) } else { None };
        if plan_ready && !self.hot_catch_up.is_empty() {
            // Live from now on; what they got in between (from the last sweep on) is asked for
            // in the background.
            let items = std::mem::take(&mut self.hot_catch_up).into_iter().collect();
            let since = self.last_sweep_unix.saturating_sub(self.ctx.settings.catchup_margin.as_secs());
            self.start_items(items, Some(since), true);
        }
        let surplus: Vec<String> = self.live_subs.iter().filter(|id| !carries(&carrier, id)).cloned().collect();
        if !surplus.is_empty() {
            if self.live_ready_at.is_some_and(|t| self.now >= t + LIVE_HANDOVER) {
                self.live_subs.retain(|id| !surplus.contains(id));
                for id in surplus {
                    self.subs.remove(&id);
                    self.emit(ClientMsg::Close(id));
                }
            } else {
                done = false;
            }
        }
        self.live_pending = !done;
    }

    /// Recomputes the live plan when the target changed, at most once per consolidation
    /// interval (the first plan of a connection is not a consolidation).
    fn maybe_rebuild_live(&mut self) {
        if !self.live_dirty {
            return;
        }
        let first = self.live_built_at.is_none();
        let rerank = self.live_rerank.take();
        // The ranking alone is not a consolidation; with a target change since, it is one.
        let counted = !first && rerank.is_none_or(|g| g != self.target_generation);
        if let Some(t) = self.live_built_at.filter(|_| rerank.is_none()) {
            if self.now < t + self.ctx.settings.consolidation_interval {
                // Too soon to repack: new items may still get a REQ of their own in a free
                // live slot (nothing open is touched). Tried again only once the target or the
                // free slots changed: this runs after every message.
                let free = live::live_slots(self.mem.budget).saturating_sub(self.live_plan.len());
                let attempt = (free, self.target_generation);
                if self.live_extend_tried == Some(attempt) {
                    return;
                }
                self.live_extend_tried = Some(attempt);
                if self.extend_live() && !self.live_shrunk {
                    self.live_dirty = false;
                }
                return;
            }
        }
        self.live_shrunk = false;
        self.live_dirty = false;
        self.live_built_at = Some(self.now);
        let (repos, roots, related) = by_layer(items_of(&self.current));
        let ranked = rank_newest(self.ctx.store.as_ref(), &roots);
        let ranked_related = rank_newest(self.ctx.store.as_ref(), &related);
        let slots = live::live_slots(self.mem.budget);
        let c = HotCandidates { repos: &repos, roots: &ranked, related: &ranked_related };
        let pack = live_reqs(c, slots, &req_limits(self.frame_limit()));
        let reqs: Vec<LiveReq> = pack.reqs.into_iter().map(LiveReq::new).collect();
        let mut hot: std::collections::BTreeSet<Item> = repos.into_iter().take(pack.repos).map(Item::Repo).collect();
        hot.extend(ranked.into_iter().take(pack.roots).map(Item::Root));
        hot.extend(ranked_related.into_iter().take(pack.related).map(Item::Related));
        if !first {
            // The first plan goes out before any history: nothing to catch up.
            self.hot_catch_up.extend(hot.difference(&self.hot_items).cloned());
        }
        self.hot_items = hot;
        if reqs == self.live_plan {
            return;
        }
        if counted {
            tracing::info!(relay = %self.ctx.url, reqs = reqs.len(), hot = self.hot_items.len(), "live set rebuilt");
            self.report(|r| r.consolidations += 1);
        }
        self.live_plan = reqs;
        self.live_pending = true;
    }

    /// Gives items that joined the target since the last rebuild REQs of their own, in free
    /// live slots. Returns whether every new item is now named live.
    fn extend_live(&mut self) -> bool {
        #[cfg(test)]
        {
            self.live_extend_scans += 1;
        }
        let hot = &self.hot_items;
        let (repos, roots, related) = by_layer(items_of(&self.current).filter(|i| !hot.contains(i)));
        if repos.is_empty() && roots.is_empty() && related.is_empty() {
            return true;
        }
        let free = live::live_slots(self.mem.budget).saturating_sub(self.live_plan.len());
        if free == 0 {
            return false;
        }
        let c = HotCandidates { repos: &repos, roots: &roots, related: &related };
        let pack = extra_reqs(c, free, &req_limits(self.frame_limit()));
        let all = pack.repos == repos.len() && pack.roots == roots.len() && pack.related == related.len();
        self.hot_items.extend(repos.into_iter().take(pack.repos).map(Item::Repo));
        self.hot_items.extend(roots.into_iter().take(pack.roots).map(Item::Root));
        self.hot_items.extend(related.into_iter().take(pack.related).map(Item::Related));
        let reqs = pack.reqs;
        if !reqs.is_empty() {
            self.live_plan.extend(reqs.into_iter().map(LiveReq::new));
            self.live_pending = true;
        }
        all
    }

    /// The relay refused a subscription for their number: shrink the budget to what was open,
    /// close what may be over it and what it may have dropped (unanswered historic work is
    /// queued again; live subscriptions are reopened) and catch up on what live may have
    /// missed since the connection opened.
    pub(super) fn overflow(&mut self) {
        let open = self.subs.len();
        let budget = self.mem.budget.min(open.saturating_sub(1)).max(2);
        self.mem.budget = budget;
        self.last_overflow = Some(self.now);
        self.grow_at = Some(self.now + self.ctx.settings.budget_regrow);
        tracing::info!(relay = %self.ctx.url, budget, "too many subscriptions; budget shrunk");
        let suspects: Vec<String> =
            self.subs.iter().filter(|(_, s)| s.is_live() || !s.acked).map(|(k, _)| k.clone()).collect();
        let had_live = suspects.iter().any(|k| self.subs.get(k).is_some_and(Sub::is_live));
        for id in suspects {
            let Some(sub) = self.subs.remove(&id) else { continue };
            let close =
                if matches!(sub.kind, SubKind::Neg { .. }) { ClientMsg::NegClose(id) } else { ClientMsg::Close(id) };
            self.emit(close);
            self.requeue(sub);
        }
        self.live_subs.clear();
        self.live_plan.clear();
        self.live_pending = true;
        self.live_dirty = true;
        self.live_built_at = None;
        if had_live {
            self.catch_up_live_gap();
        }
        self.report(|r| r.consolidations += 1);
    }

    /// A live subscription was lost: a catch-up of the confirmed items since the last sweep.
    pub(super) fn catch_up_live_gap(&mut self) {
        // At most one per consolidation interval: a relay that keeps closing live
        // subscriptions cannot make us re-sync in a loop.
        if self.last_catch_up.is_some_and(|t| self.now < t + self.ctx.settings.consolidation_interval) {
            return;
        }
        self.last_catch_up = Some(self.now);
        let since = self.last_sweep_unix.saturating_sub(self.ctx.settings.catchup_margin.as_secs());
        let items: Vec<Item> = self.mem.confirmed.iter().cloned().collect();
        self.start_items(items, Some(since), true);
    }
}

/// The repositories, root events and related events among `items`, in their order (one pass).
fn by_layer(items: impl Iterator<Item = Item>) -> (Vec<RepoCoord>, Vec<Id>, Vec<Id>) {
    let (mut repos, mut roots, mut related) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        match item {
            Item::Repo(c) => repos.push(c),
            Item::Root(id) => roots.push(id),
            Item::Related(id) => related.push(id),
            Item::Announcements => {}
        }
    }
    (repos, roots, related)
}
