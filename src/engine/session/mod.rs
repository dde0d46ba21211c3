//! One connected session with a relay. The decisions are the [`planner::Planner`]'s (a state
//! machine without I/O, unit-tested without sockets); this module is the thin driver around the
//! socket: it feeds the planner what the relay says, the commands of the task's inbox and a
//! fixed-rate tick, and carries out the actions it returns (frames to send, events to hand on).

mod guard;
mod handlers;
pub(crate) mod items;
mod jobs;
pub(crate) mod live;
pub(crate) mod planner;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use crate::engine::inbox::{Inbox, RelayCommand};
use crate::engine::lifecycle::ConnectStrategy;
use crate::engine::relay_task::{Ctx, RelayMemory};
use crate::engine::store::Fetched;
use crate::remote::dial::RemoteStream;
use crate::wire::{ConnError, Connection};

/// A connection to a remote relay.
type RemoteConn = Connection<RemoteStream>;

pub(crate) use planner::{Action, Planner, PlannerCtx};

/// How often the planner's timers are checked. An `Interval` on absolute deadlines: steady
/// traffic cannot postpone it.
const TICK: Duration = Duration::from_millis(50);

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The connection failed or the relay closed it (the cause is kept).
    Lost(ConnError),
    /// A misbehaviour budget ran out (the text says which).
    Misbehaving(String),
    /// Live events came faster than the per-relay rate.
    TooFast(String),
    Unneeded,
    Shutdown,
    Daily,
}

/// Runs a session until the connection is lost, the relay is no longer needed, or shutdown.
/// Returns why it ended, the relay's memory and when data was last received.
pub(crate) async fn run(
    ctx: &Ctx,
    mem: RelayMemory,
    mut conn: RemoteConn,
    degraded_until: Option<Instant>,
    inbox: &mut Inbox,
    strategy: ConnectStrategy,
) -> (SessionEnd, RelayMemory, Option<u64>) {
    let pctx = PlannerCtx {
        url: ctx.url.clone(),
        bootstrap: ctx.bootstrap,
        settings: ctx.settings.clone(),
        store: ctx.store.clone(),
        status: ctx.status.clone(),
        counters: conn.counters().clone(),
    };
    let mut p = Planner::new(pctx, mem, degraded_until, Instant::now());
    let mut step = p.start(strategy, &inbox.take_target(), Instant::now());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = loop {
        if let Err(end) = carry_out(ctx, &mut conn, p.take_actions()).await {
            break end;
        }
        if let Err(end) = step {
            break end;
        }
        if p.should_close(&inbox.target()) {
            break SessionEnd::Unneeded;
        }
        step = tokio::select! {
            msg = conn.recv() => match msg {
                None => Err(SessionEnd::Lost(ConnError::Closed)),
                Some(Err(ConnError::Malformed(e))) => p.on_malformed(&e.to_string(), Instant::now()),
                Some(Err(e)) => Err(SessionEnd::Lost(e)),
                Some(Ok(m)) => p.on_msg(m, Instant::now()),
            },
            cmd = inbox.recv() => match cmd {
                RelayCommand::Target(t) => p.on_target(&t, Instant::now()),
                RelayCommand::BadSignature => p.on_bad_signature(Instant::now()),
                RelayCommand::Shutdown => Err(SessionEnd::Shutdown),
            },
            _ = tick.tick() => p.on_tick(Instant::now()),
        };
    };
    let last_data = p.last_data();
    let mem = p.into_memory();
    // A relay that stops reading cannot hold the task: the close handshake has a deadline.
    let _ = tokio::time::timeout(ctx.settings.send_timeout, conn.close()).await;
    (end, mem, last_data)
}

/// Sends the planner's frames (each within `send_timeout`) and hands its events to the sink.
async fn carry_out(ctx: &Ctx, conn: &mut RemoteConn, actions: Vec<Action>) -> Result<(), SessionEnd> {
    for action in actions {
        match action {
            Action::Send(msg) => {
                let Ok(sent) = tokio::time::timeout(ctx.settings.send_timeout, conn.send(&msg)).await else {
                    return Err(SessionEnd::Lost(ConnError::SendTimeout(ctx.settings.send_timeout)));
                };
                match sent {
                    Ok(()) => {}
                    Err(e @ ConnError::TooLarge { .. }) => {
                        // The planner keeps frames within limits; this is a bug, not the relay's.
                        tracing::error!(relay = %ctx.url, "{e}");
                        ctx.status.update(&ctx.url, |r| r.last_error = Some(e.to_string()));
                    }
                    Err(e) => return Err(SessionEnd::Lost(e)),
                }
            }
            Action::Deliver(note) => {
                let fetched = Fetched { relay: ctx.url.clone(), note };
                ctx.sink.send(fetched).await.map_err(|_| SessionEnd::Shutdown)?;
            }
        }
    }
    Ok(())
}
