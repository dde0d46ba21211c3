//! How the engine steers a running relay task: one typed inbox per task. Its commands are the
//! only control the task takes (status is written by the task, never read back as an order).
//!
//! Bounds: targets coalesce (only the latest matters, so a slow task never queues stale ones);
//! other commands queue up to [`CONTROL_QUEUE`], and a bad signature reported while the queue is
//! full is dropped from the budget (the relay has then sent far more than the budget allows and
//! is being disconnected anyway; the status still counts it).
//!
//! A target is shared, not copied: the engine's choice, the inbox and the task's planner hold the
//! same [`Arc`] (a relay's target can name tens of thousands of root events).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::engine::relay_task::RelayTarget;

/// Commands other than target changes waiting for one relay task.
pub const CONTROL_QUEUE: usize = 64;

/// What a relay task is told.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayCommand {
    /// Sync this from now on (an empty target: close once idle).
    Target(Arc<RelayTarget>),
    /// An event this relay sent failed signature verification at the consumer.
    BadSignature,
    /// Stop: the engine is shutting down.
    Shutdown,
}

#[derive(Debug)]
enum Control {
    BadSignature,
    Shutdown,
}

/// The engine's end of a relay task's inbox. Dropping it shuts the task down.
#[derive(Debug)]
pub struct RelayHandle {
    target: watch::Sender<Arc<RelayTarget>>,
    control: mpsc::Sender<Control>,
}

/// The task's end.
#[derive(Debug)]
pub struct Inbox {
    target: watch::Receiver<Arc<RelayTarget>>,
    control: mpsc::Receiver<Control>,
}

/// A relay task's inbox, starting with `target`.
pub fn inbox(target: Arc<RelayTarget>) -> (RelayHandle, Inbox) {
    let (ttx, trx) = watch::channel(target);
    let (ctx, crx) = mpsc::channel(CONTROL_QUEUE);
    (RelayHandle { target: ttx, control: ctx }, Inbox { target: trx, control: crx })
}

impl RelayHandle {
    /// Replaces the target; returns whether it changed (the task is woken only then).
    pub fn set_target(&self, target: &Arc<RelayTarget>) -> bool {
        self.target.send_if_modified(|cur| {
            let changed = **cur != **target;
            if changed {
                *cur = target.clone();
            }
            changed
        })
    }

    /// Reports a bad signature; `false` when the queue was full and it was dropped.
    pub fn bad_signature(&self) -> bool {
        self.control.try_send(Control::BadSignature).is_ok()
    }

    /// Asks the task to stop (it also stops when the handle is dropped).
    pub fn shutdown(self) {
        let _ = self.control.try_send(Control::Shutdown);
    }
}

impl Inbox {
    /// The latest target.
    pub fn target(&self) -> watch::Ref<'_, Arc<RelayTarget>> {
        self.target.borrow()
    }

    /// The latest target, marking it seen.
    pub fn take_target(&mut self) -> Arc<RelayTarget> {
        self.target.borrow_and_update().clone()
    }

    /// The next command. Control commands come first; a target change is delivered once however
    /// many changes happened meanwhile. Cancel-safe (usable in `select!`).
    pub async fn recv(&mut self) -> RelayCommand {
        tokio::select! {
            biased;
            c = self.control.recv() => match c {
                Some(Control::BadSignature) => RelayCommand::BadSignature,
                Some(Control::Shutdown) | None => RelayCommand::Shutdown,
            },
            changed = self.target.changed() => match changed {
                Ok(()) => RelayCommand::Target(self.target.borrow_and_update().clone()),
                Err(_) => RelayCommand::Shutdown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(roots: &[u8]) -> Arc<RelayTarget> {
        let mut t = RelayTarget::default();
        t.root_events.extend(roots.iter().map(|b| [*b; 32]));
        Arc::new(t)
    }

    #[tokio::test]
    async fn targets_coalesce_to_the_latest_and_control_comes_first() {
        let (h, mut inbox) = inbox(target(&[1]));
        assert!(!h.set_target(&target(&[1])), "an unchanged target wakes nobody");
        for i in 2..50 {
            assert!(h.set_target(&target(&[i])));
        }
        assert!(h.bad_signature());
        assert_eq!(inbox.recv().await, RelayCommand::BadSignature);
        assert_eq!(inbox.recv().await, RelayCommand::Target(target(&[49])));
        h.shutdown();
        assert_eq!(inbox.recv().await, RelayCommand::Shutdown);
    }

    #[tokio::test]
    async fn the_control_queue_is_bounded_and_a_dropped_handle_shuts_down() {
        let (h, mut inbox) = inbox(Arc::default());
        let sent = (0..CONTROL_QUEUE * 2).filter(|_| h.bad_signature()).count();
        assert_eq!(sent, CONTROL_QUEUE);
        drop(h);
        for _ in 0..CONTROL_QUEUE {
            assert_eq!(inbox.recv().await, RelayCommand::BadSignature);
        }
        assert_eq!(inbox.recv().await, RelayCommand::Shutdown);
    }
}
