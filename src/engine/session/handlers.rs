//! What the relay sends: events, EOSE, CLOSED, NOTICE and NIP-77 answers.

use std::time::Instant;

use super::planner::{Job, JobKind, Planner, Step, Sub, SubKind};
use crate::policy::Note;
use crate::remote::abuse::{clip, Offence};
use crate::remote::classify::{classify, Signal, Source};
use crate::remote::historic::{chunk_ids, ChunkOutcome};
use crate::wire::paginate::{PageEnd, Paginator};
use crate::wire::{unix_now, ClientMsg, RelayMsg};

/// Most NIP-77 rounds one reconciliation may take, and most ids it may ask for: a relay that
/// keeps a reconciliation going or claims endless ids is paginated instead.
const MAX_NEG_ROUNDS: u32 = 1_000;
const MAX_NEG_NEED: usize = 250_000;
/// Longest relay-supplied text kept in `last_error` and logs.
const TEXT_CLIP: usize = 200;

impl Planner {
    /// A message from the relay.
    pub(crate) fn on_msg(&mut self, msg: RelayMsg, now: Instant) -> Step {
        self.now = now;
        self.last_data = Some(unix_now());
        match msg {
            RelayMsg::Event { sub, note } => self.on_event(sub, *note)?,
            RelayMsg::Eose(sub) => self.on_eose(sub),
            RelayMsg::Closed { sub, reason } => self.on_closed(sub, reason),
            RelayMsg::Notice(text) => self.on_notice(text)?,
            RelayMsg::NegMsg { sub, msg } => self.on_neg_msg(sub, msg)?,
            RelayMsg::NegErr { sub, reason } => self.on_neg_err(sub, reason),
            RelayMsg::Ok { .. } | RelayMsg::Auth(_) | RelayMsg::Other(_) => {}
        }
        self.settle()
    }

    fn on_event(&mut self, sub: String, note: Note) -> Step {
        self.report(|r| r.events_received += 1);
        let Ok(id) = note.check() else {
            return self.offend(Offence::InvalidEvent);
        };
        let Some(s) = self.subs.get_mut(&sub) else {
            return if self.ever_opened(&sub) { Ok(()) } else { self.offend(Offence::UnknownSubscription) };
        };
        s.acked = true;
        match &mut s.kind {
            SubKind::Live { filters, prev, ready } => {
                let ready = *ready;
                if !filters.iter().chain(prev.iter()).any(|f| f.matches(&note)) {
                    return self.offend(Offence::UnmatchedEvent);
                }
                if ready {
                    self.live_event()?;
                }
                if !self.relevance.is_relevant(&note) {
                    // A broad filter brings what other repositories do: dropped, not held
                    // against the relay.
                    self.report(|r| r.events_unrelated += 1);
                    return Ok(());
                }
                self.deliver(id, note, false);
                Ok(())
            }
            SubKind::Page { pager, filter, .. } => {
                if !filter.matches(&note) {
                    return self.offend(Offence::UnmatchedEvent);
                }
                if pager.on_event(&note.id, note.created_at) {
                    self.deliver(id, note, true);
                }
                Ok(())
            }
            SubKind::Ids { chunk, .. } => {
                if !chunk.wanted.contains(&id) {
                    return self.offend(Offence::UnmatchedEvent);
                }
                if chunk.on_event(&id) {
                    self.deliver(id, note, true);
                }
                Ok(())
            }
            SubKind::Neg { .. } => self.offend(Offence::UnmatchedEvent),
        }
    }

    fn on_eose(&mut self, sub: String) {
        let Some(mut s) = self.subs.remove(&sub) else { return };
        s.acked = true;
        match s.kind {
            SubKind::Live { filters, .. } => {
                s.kind = SubKind::Live { filters, prev: Default::default(), ready: true };
                self.subs.insert(sub, s);
            }
            SubKind::Page { batch, mut pager, .. } => {
                self.emit(ClientMsg::Close(sub));
                match pager.on_eose() {
                    PageEnd::Next(f) => self.send_page(batch, pager, f),
                    PageEnd::Done(report) => {
                        if report.is_complete() {
                            self.job_done(batch, true);
                        } else {
                            let why = format!(
                                "pagination truncated: more events share the second(s) {:?} than one page holds",
                                report.truncated_seconds
                            );
                            tracing::warn!(relay = %self.ctx.url, "{why}");
                            self.report(|r| r.truncated += 1);
                            self.history_problem(why);
                            self.job_done(batch, false);
                        }
                    }
                }
            }
            SubKind::Ids { batch, chunk } => {
                self.emit(ClientMsg::Close(sub));
                match chunk.finish() {
                    ChunkOutcome::Complete => self.job_done(batch, true),
                    ChunkOutcome::Retry(c) => self.queue.push_front(Job { batch, kind: JobKind::Ids(c) }),
                    ChunkOutcome::Failed(n) => {
                        let why = format!("{n} ids never arrived");
                        tracing::warn!(relay = %self.ctx.url, "{why}");
                        self.history_problem(why);
                        self.job_done(batch, false);
                    }
                }
            }
            SubKind::Neg { .. } => {
                self.subs.insert(sub, s);
            }
        }
    }

    fn on_closed(&mut self, sub: String, reason: String) {
        let Some(s) = self.subs.remove(&sub) else { return };
        let reason = clip(&reason, TEXT_CLIP);
        let signal = classify(Source::Closed, &reason);
        let live = s.is_live();
        if live {
            // The live set is reopened by `ensure_live` (after any cooldown).
            self.live_pending = true;
            for id in std::mem::take(&mut self.live_subs) {
                if self.subs.remove(&id).is_some() {
                    self.emit(ClientMsg::Close(id));
                }
            }
            if signal != Signal::SubscriptionOverflow {
                // Reopened after a pause, not at once: the relay may close it again.
                self.live_hold_until = Some(self.now + self.ctx.settings.rate_limit_cooldown);
                self.catch_up_live_gap();
            }
        }
        if signal == Signal::RateLimited {
            self.enter_cooldown(&reason);
            self.requeue(s);
        } else if signal == Signal::SubscriptionOverflow {
            self.requeue(s);
            self.overflow();
        } else if let SubKind::Neg { batch, filter, .. } = s.kind {
            self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
            self.negentropy_unsupported(&reason);
        } else {
            tracing::warn!(relay = %self.ctx.url, %sub, "subscription closed: {reason}");
            self.report(|r| r.last_error = Some(reason.clone()));
            match s.kind {
                SubKind::Page { batch, .. } | SubKind::Ids { batch, .. } => {
                    self.history_problem(format!("subscription closed by the relay: {reason}"));
                    self.job_done(batch, false);
                }
                _ => {}
            }
        }
    }

    fn on_notice(&mut self, text: String) -> Step {
        self.offend(Offence::Notice)?;
        let text = clip(&text, TEXT_CLIP);
        let signal = classify(Source::Notice, &text);
        if signal == Signal::SubscriptionOverflow {
            self.overflow();
        } else if signal == Signal::RateLimited {
            self.enter_cooldown(&text);
        } else if signal == Signal::NegentropyUnsupported
            && self.subs.values().any(|s| matches!(s.kind, SubKind::Neg { .. }))
        {
            self.negentropy_unsupported(&text);
        } else {
            tracing::info!(relay = %self.ctx.url, "NOTICE: {text}");
            self.report(|r| r.last_error = Some(text));
        }
        Ok(())
    }

    fn on_neg_msg(&mut self, sub: String, msg: String) -> Step {
        let Some(Sub { kind: SubKind::Neg { batch, filter, mut session, mut need, .. }, .. }) = self.subs.remove(&sub)
        else {
            return Ok(());
        };
        match session.step(&msg) {
            Ok(step) if session.rounds > MAX_NEG_ROUNDS || need.len() + step.need.len() > MAX_NEG_NEED => {
                tracing::warn!(relay = %self.ctx.url, rounds = session.rounds, "negentropy does not converge; paginating this filter");
                self.emit(ClientMsg::NegClose(sub));
                let pager = Paginator::new(filter, self.ctx.settings.page_limit);
                self.queue.push_front(Job { batch, kind: JobKind::Page(pager) });
            }
            Ok(step) => {
                if self.mem.state.negentropy.is_none() {
                    self.mem.state.negentropy = Some(true);
                    self.report(|r| r.negentropy = Some(true));
                }
                need.extend(step.need);
                if let Some(next) = step.next {
                    if self.emit(ClientMsg::NegMsg { sub: sub.clone(), msg: next }) {
                        let kind = SubKind::Neg { batch, filter, session, need, silent_until: None };
                        let deadline = Some(self.historic_deadline());
                        self.subs.insert(sub, Sub { kind, acked: true, deadline });
                    } else {
                        self.job_done(batch, false);
                    }
                    return Ok(());
                }
                self.emit(ClientMsg::NegClose(sub));
                // Each needed id is fetched once per connection, whichever filters matched it.
                need.retain(|id| self.requested.insert(*id));
                let chunks = chunk_ids(&need, self.ctx.settings.id_chunk);
                if let Some(b) = batch.and_then(|id| self.batches.get_mut(&id)) {
                    b.jobs_left += chunks.len();
                }
                for c in chunks.into_iter().rev() {
                    self.queue.push_front(Job { batch, kind: JobKind::Ids(c) });
                }
                self.job_done(batch, true);
            }
            Err(e) => {
                // A NEG-MSG we cannot read: this relay's NIP-77 is not usable, page with REQ.
                self.emit(ClientMsg::NegClose(sub));
                self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
                self.offend(Offence::InvalidFrame)?;
                self.negentropy_unsupported(&format!("unreadable NEG-MSG ({e})"));
            }
        }
        Ok(())
    }

    fn on_neg_err(&mut self, sub: String, reason: String) {
        let Some(Sub { kind: SubKind::Neg { batch, filter, .. }, .. }) = self.subs.remove(&sub) else { return };
        let reason = clip(&reason, TEXT_CLIP);
        let signal = classify(Source::NegErr, &reason);
        if signal == Signal::TooManyResults {
            let pager = Paginator::new(filter, self.ctx.settings.page_limit);
            self.queue.push_front(Job { batch, kind: JobKind::Page(pager) });
        } else if signal == Signal::RateLimited {
            self.enter_cooldown(&reason);
            self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
        } else {
            self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
            self.negentropy_unsupported(&reason);
        }
    }

    /// The relay lacks NIP-77: every negentropy job becomes REQ pagination.
    pub(super) fn negentropy_unsupported(&mut self, why: &str) {
        tracing::info!(relay = %self.ctx.url, "no NIP-77 ({why}); falling back to REQ");
        self.mem.state.negentropy = Some(false);
        self.report(|r| r.negentropy = Some(false));
        let neg: Vec<String> =
            self.subs.iter().filter(|(_, s)| matches!(s.kind, SubKind::Neg { .. })).map(|(k, _)| k.clone()).collect();
        let limit = self.ctx.settings.page_limit;
        for sub in neg {
            if let Some(Sub { kind: SubKind::Neg { batch, filter, .. }, .. }) = self.subs.remove(&sub) {
                self.emit(ClientMsg::NegClose(sub));
                self.queue.push_front(Job { batch, kind: JobKind::Page(Paginator::new(filter, limit)) });
            }
        }
        for job in self.queue.iter_mut() {
            if let JobKind::Neg(f) = &job.kind {
                job.kind = JobKind::Page(Paginator::new(f.clone(), limit));
            }
        }
    }
}
