//! Building the repo index from the host relay over its websocket, when strfry's LMDB is not
//! configured: the same [`build`](crate::accepted::build::build) algorithm, with each lookup
//! answered by a paginated `REQ` ([`crate::wire::paginate`], pages of 500 that the host is
//! trusted to fill, as strfry does up to its `maxFilterLimit`). Slower than LMDB (one round trip
//! per lookup), but it needs nothing but the host's URL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::accepted::build::{build, Built, EventSource};
use crate::policy::{Facts, Id, Note, Policy, RelayUrl};
use crate::wire::conn::DEFAULT_PAYLOAD_LIMIT;
use crate::wire::{ClientMsg, ConnError, Connection, Filter, PageEnd, Paginator, RelayMsg};

/// Page size of lookups: strfry's `maxFilterLimit`, which it serves in full.
const PAGE: u64 = 500;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

struct WsSource {
    rt: tokio::runtime::Handle,
    conn: Connection,
    next_sub: u64,
    pub lookups: usize,
}

impl WsSource {
    /// Every event matching `filter`, paged backwards by [`Paginator`] (the host serves full pages,
    /// so a short page is the last).
    fn query_all(&mut self, filter: Filter) -> anyhow::Result<Vec<Facts>> {
        self.lookups += 1;
        let mut pages = Paginator::new(filter, PAGE).full_pages_served();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut next = pages.start_page();
        while let Some(page_filter) = next {
            self.next_sub += 1;
            let sub = format!("idx{}", self.next_sub);
            let page = self.rt.block_on(request(&mut self.conn, &sub, page_filter))?;
            for note in page {
                if !pages.on_event(&note.id, note.created_at) {
                    continue;
                }
                match Facts::from_note(&note) {
                    Ok(facts) if seen.insert(facts.id) => out.push(facts),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(id = %note.id, error = %e, "host sent an invalid event; ignored"),
                }
            }
            next = match pages.on_eose() {
                PageEnd::Next(f) => Some(f),
                PageEnd::Done(report) => {
                    if !report.is_complete() {
                        tracing::warn!(?report, "a lookup on the host may have missed events");
                    }
                    None
                }
            };
        }
        Ok(out)
    }
}

/// One page: the events the host sends for `filter` up to its EOSE.
async fn request(conn: &mut Connection, sub: &str, filter: Filter) -> anyhow::Result<Vec<Note>> {
    conn.send(&ClientMsg::Req { sub: sub.to_string(), filters: vec![filter] }).await?;
    let mut out = Vec::new();
    loop {
        let msg = tokio::time::timeout(ANSWER_TIMEOUT, conn.recv())
            .await
            .map_err(|_| anyhow::anyhow!("host did not answer a query within {ANSWER_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow::anyhow!("host closed the connection"))?;
        match msg {
            Ok(RelayMsg::Event { sub: s, note }) if s == sub => out.push(*note),
            Ok(RelayMsg::Eose(s)) if s == sub => {
                conn.send(&ClientMsg::Close(sub.to_string())).await?;
                return Ok(out);
            }
            Ok(RelayMsg::Closed { sub: s, reason }) if s == sub => anyhow::bail!("host refused a query: {reason}"),
            Ok(_) | Err(ConnError::Malformed(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

impl EventSource for WsSource {
    type Error = anyhow::Error;

    fn events_of_kind(&mut self, kind: u64) -> anyhow::Result<Vec<Facts>> {
        self.query_all(Filter::kinds([kind]))
    }

    fn events_tagged(&mut self, letter: char, value: &str, skip: &dyn Fn(&Id) -> bool) -> anyhow::Result<Vec<Facts>> {
        let found = self.query_all(Filter::default().tag(letter, [value.to_string()]))?;
        Ok(found.into_iter().filter(|f| !skip(&f.id)).collect())
    }

    /// One query per 100 ids instead of one per id.
    fn events_referencing(
        &mut self,
        letter: char,
        ids: &[Id],
        skip: &dyn Fn(&Id) -> bool,
    ) -> anyhow::Result<Vec<Facts>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let found = self.query_all(Filter::default().tag(letter, chunk.iter().map(hex::encode)))?;
            out.extend(found.into_iter().filter(|f| !skip(&f.id)));
        }
        Ok(out)
    }

    fn event_by_id(&mut self, id: &Id) -> anyhow::Result<Option<Facts>> {
        let f = Filter { ids: [hex::encode(id)].into(), ..Default::default() };
        Ok(self.query_all(f)?.into_iter().next())
    }
}

/// Builds the accepted view and repo index by querying the host relay.
pub async fn build_over_ws(url: &RelayUrl, policy: &Policy) -> anyhow::Result<(Built, usize)> {
    let ws = tokio::time::timeout(Duration::from_secs(10), crate::host::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to the host at {url}"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to the host at {url}: {e}"))?;
    // Made here, inside the runtime: the connection arms its keepalive timer.
    let conn = Connection::new(ws, DEFAULT_PAYLOAD_LIMIT, Arc::default());
    let policy = policy.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut source = WsSource { rt, conn, next_sub: 0, lookups: 0 };
        let built = build(&policy, &mut source)?;
        Ok((built, source.lookups))
    })
    .await?
}
