//! Handling what the relay sends: events, EOSE, CLOSED, NOTICE and NIP-77 answers.

use super::*;
use crate::remote::abuse::clip;

/// Most NIP-77 rounds one reconciliation may take, and most ids it may ask for: a relay that
/// keeps a reconciliation going or claims endless ids is paginated instead.
const MAX_NEG_ROUNDS: u32 = 1_000;
const MAX_NEG_NEED: usize = 250_000;
/// Longest relay-supplied text kept in `last_error` and logs.
const TEXT_CLIP: usize = 200;

impl Session<'_> {
    pub(super) async fn handle(&mut self, msg: RelayMsg) -> Step {
        match msg {
            RelayMsg::Event { sub, note } => self.on_event(sub, *note).await,
            RelayMsg::Eose(sub) => self.on_eose(sub).await,
            RelayMsg::Closed { sub, reason } => self.on_closed(sub, reason).await,
            RelayMsg::Notice(text) => self.on_notice(text).await,
            RelayMsg::NegMsg { sub, msg } => self.on_neg_msg(sub, msg).await,
            RelayMsg::NegErr { sub, reason } => self.on_neg_err(sub, reason).await,
            RelayMsg::Ok { .. } | RelayMsg::Auth(_) | RelayMsg::Other(_) => Ok(()),
        }
    }

    async fn on_event(&mut self, sub: String, note: Note) -> Step {
        self.report(|r| r.events_received += 1);
        let Ok(id) = note.check() else {
            return self.offend(Offence::InvalidEvent);
        };
        let mut live = false;
        // `Some(true)` deliver, `Some(false)` a repeat within this fetch, `None` not asked for.
        let verdict = match self.subs.get_mut(&sub) {
            Some(Sub::Live(fs, ready)) => {
                live = *ready;
                fs.iter().any(|f| f.matches(&note)).then_some(true)
            }
            Some(Sub::Page { pager, filter, .. }) => {
                filter.matches(&note).then(|| pager.on_event(&note.id, note.created_at))
            }
            Some(Sub::Ids { chunk, .. }) => chunk.wanted.contains(&id).then(|| chunk.on_event(&id)),
            Some(Sub::Neg { .. }) | None => None,
        };
        match verdict {
            Some(true) => {
                if live {
                    self.live_event()?;
                }
                self.deliver(note).await
            }
            Some(false) => Ok(()),
            None if !self.ever_opened(&sub) => self.offend(Offence::UnknownSubscription),
            None => self.offend(Offence::UnmatchedEvent),
        }
    }

    async fn on_eose(&mut self, sub: String) -> Step {
        match self.subs.remove(&sub) {
            Some(Sub::Live(fs, _)) => {
                self.subs.insert(sub, Sub::Live(fs, true));
            }
            Some(Sub::Page { batch, mut pager, .. }) => {
                self.send(ClientMsg::Close(sub)).await?;
                match pager.on_eose() {
                    PageEnd::Next(f) => self.send_page(batch, pager, f).await?,
                    PageEnd::Done(report) => {
                        if !report.is_complete() {
                            tracing::warn!(relay = %self.ctx.url, seconds = ?report.truncated_seconds, "pagination may have missed events");
                        }
                        self.job_done(batch, true);
                    }
                }
            }
            Some(Sub::Ids { batch, chunk }) => {
                self.send(ClientMsg::Close(sub)).await?;
                match chunk.finish() {
                    ChunkOutcome::Complete => self.job_done(batch, true),
                    ChunkOutcome::Retry(c) => self.queue.push_front(Job { batch, kind: JobKind::Ids(c) }),
                    ChunkOutcome::Failed(n) => {
                        tracing::warn!(relay = %self.ctx.url, "{n} ids never arrived");
                        self.job_done(batch, false);
                    }
                }
            }
            Some(other) => {
                self.subs.insert(sub, other);
            }
            None => {}
        }
        Ok(())
    }

    async fn on_closed(&mut self, sub: String, reason: String) -> Step {
        let Some(s) = self.subs.remove(&sub) else { return Ok(()) };
        let reason = clip(&reason, TEXT_CLIP);
        let signal = classify(Source::Closed, &reason);
        if signal == Signal::RateLimited {
            self.enter_cooldown(&reason);
            self.requeue(s);
        } else if signal == Signal::SubscriptionOverflow {
            self.requeue(s);
            self.overflow().await?;
        } else if let Sub::Neg { batch, filter, .. } = s {
            self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
            self.negentropy_unsupported(&reason).await?;
        } else {
            tracing::warn!(relay = %self.ctx.url, %sub, "subscription closed: {reason}");
            self.report(|r| r.last_error = Some(reason.clone()));
            match s {
                Sub::Page { batch, .. } | Sub::Ids { batch, .. } => self.job_done(batch, false),
                _ => {}
            }
        }
        Ok(())
    }

    async fn on_notice(&mut self, text: String) -> Step {
        self.offend(Offence::Notice)?;
        let text = clip(&text, TEXT_CLIP);
        let signal = classify(Source::Notice, &text);
        if signal == Signal::SubscriptionOverflow {
            self.overflow().await
        } else if signal == Signal::RateLimited {
            self.enter_cooldown(&text);
            Ok(())
        } else if signal == Signal::NegentropyUnsupported && self.subs.values().any(|s| matches!(s, Sub::Neg { .. })) {
            self.negentropy_unsupported(&text).await
        } else {
            tracing::info!(relay = %self.ctx.url, "NOTICE: {text}");
            self.report(|r| r.last_error = Some(text));
            Ok(())
        }
    }

    async fn on_neg_msg(&mut self, sub: String, msg: String) -> Step {
        let Some(Sub::Neg { batch, filter, mut session, mut need, .. }) = self.subs.remove(&sub) else {
            return Ok(());
        };
        match session.step(&msg) {
            Ok(step) if session.rounds > MAX_NEG_ROUNDS || need.len() + step.need.len() > MAX_NEG_NEED => {
                tracing::warn!(relay = %self.ctx.url, rounds = session.rounds, "negentropy does not converge; paginating this filter");
                self.send(ClientMsg::NegClose(sub)).await?;
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
                    if self.send(ClientMsg::NegMsg { sub: sub.clone(), msg: next }).await? {
                        self.set_deadline(&sub);
                        self.subs.insert(sub, Sub::Neg { batch, filter, session, need, deadline: None });
                    } else {
                        self.job_done(batch, false);
                    }
                    return Ok(());
                }
                self.send(ClientMsg::NegClose(sub)).await?;
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
                self.send(ClientMsg::NegClose(sub)).await?;
                self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
                self.offend(Offence::InvalidFrame)?;
                self.negentropy_unsupported(&format!("unreadable NEG-MSG ({e})")).await?;
            }
        }
        Ok(())
    }

    async fn on_neg_err(&mut self, sub: String, reason: String) -> Step {
        let Some(Sub::Neg { batch, filter, .. }) = self.subs.remove(&sub) else { return Ok(()) };
        let reason = clip(&reason, TEXT_CLIP);
        let signal = classify(Source::NegErr, &reason);
        if signal == Signal::TooManyResults {
            let pager = Paginator::new(filter, self.ctx.settings.page_limit);
            self.queue.push_front(Job { batch, kind: JobKind::Page(pager) });
            Ok(())
        } else if signal == Signal::RateLimited {
            self.enter_cooldown(&reason);
            self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
            Ok(())
        } else {
            self.queue.push_front(Job { batch, kind: JobKind::Neg(filter) });
            self.negentropy_unsupported(&reason).await
        }
    }

    /// The relay lacks NIP-77: every negentropy job becomes REQ pagination.
    pub(super) async fn negentropy_unsupported(&mut self, why: &str) -> Step {
        tracing::info!(relay = %self.ctx.url, "no NIP-77 ({why}); falling back to REQ");
        self.mem.state.negentropy = Some(false);
        self.report(|r| r.negentropy = Some(false));
        let neg: Vec<String> =
            self.subs.iter().filter(|(_, s)| matches!(s, Sub::Neg { .. })).map(|(k, _)| k.clone()).collect();
        for sub in neg {
            if let Some(Sub::Neg { batch, filter, .. }) = self.subs.remove(&sub) {
                self.send(ClientMsg::NegClose(sub)).await?;
                let pager = Paginator::new(filter, self.ctx.settings.page_limit);
                self.queue.push_front(Job { batch, kind: JobKind::Page(pager) });
            }
        }
        let limit = self.ctx.settings.page_limit;
        for job in self.queue.iter_mut() {
            if let JobKind::Neg(f) = &job.kind {
                job.kind = JobKind::Page(Paginator::new(f.clone(), limit));
            }
        }
        Ok(())
    }

    /// strfry dropped the live part of a REQ: shrink the budget and consolidate.
    async fn overflow(&mut self) -> Step {
        let open = self.subs.values().filter(|s| !matches!(s, Sub::Neg { .. })).count();
        self.mem.budget = self.mem.budget.min(open.saturating_sub(1)).max(2);
        tracing::info!(relay = %self.ctx.url, budget = self.mem.budget, "too many subscriptions; consolidating");
        self.consolidate().await
    }
}
