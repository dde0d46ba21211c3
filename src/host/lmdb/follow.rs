//! Following strfry's database by insertion order (levId): every event stored after a known point,
//! whatever its `created_at`, including those written while no websocket was open.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::StrfryDb;
use crate::host::stream::StreamEvent;
use crate::policy::Note;

/// Events read per poll at most; the rest follow on the next poll without waiting.
pub const MAX_PER_POLL: usize = 2000;

/// Reads events stored after `last_lev` now and then, and delivers them as stream batches.
/// Stops when `shutdown` turns true or the receiver is gone.
pub async fn follow(
    db: Arc<StrfryDb>,
    mut last_lev: u64,
    every: Duration,
    out: mpsc::Sender<StreamEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let read = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || read_after(&db, last_lev)).await
        };
        let (notes, next, more) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "host database: cannot read new events");
                (Vec::new(), last_lev, false)
            }
            Err(e) => {
                tracing::error!(error = %e, "host database reader panicked");
                (Vec::new(), last_lev, false)
            }
        };
        last_lev = next;
        if !notes.is_empty() && out.send(StreamEvent::Batch(notes)).await.is_err() {
            return;
        }
        if !more {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Events after `last`: the notes, the new high-water mark, and whether more are waiting.
fn read_after(db: &StrfryDb, last: u64) -> Result<(Vec<Note>, u64, bool), super::LmdbError> {
    let snap = db.snapshot()?;
    let stored = snap.after(last, MAX_PER_POLL)?;
    let more = stored.len() == MAX_PER_POLL;
    let mut next = last;
    let mut notes = Vec::with_capacity(stored.len());
    for ev in stored {
        next = next.max(ev.lev_id);
        match snap.note(ev.lev_id) {
            Ok(n) => notes.push(n),
            Err(e) => tracing::warn!(lev_id = ev.lev_id, error = %e, "host database: unreadable event skipped"),
        }
    }
    Ok((notes, next, more))
}
