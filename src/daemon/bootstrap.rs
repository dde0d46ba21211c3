//! Building the repo index from any NIP-01 host over its websocket, when strfry's LMDB is not
//! configured: the same [`build`](crate::engine::build::build) algorithm, with each lookup
//! answered by a paginated `REQ`. Slower than LMDB (one round trip per lookup), but it needs
//! nothing but the host's URL.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::engine::build::{build, Built, EventSource};
use crate::policy::{Facts, Id, Note, Policy, RelayUrl};
use crate::wire::Filter;

/// Page size of lookups (strfry clamps larger limits to 500).
const PAGE: u64 = 500;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

type Ws = crate::host::HostWs;

struct WsSource {
    rt: tokio::runtime::Handle,
    ws: Ws,
    next_sub: u64,
    pub lookups: usize,
}

impl WsSource {
    /// Every event matching `filter`, paging backwards with `until` (inclusive, deduplicated).
    fn query_all(&mut self, filter: Filter) -> anyhow::Result<Vec<Facts>> {
        self.lookups += 1;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut until: Option<u64> = None;
        loop {
            let mut f = filter.clone().limit(PAGE);
            f.until = until;
            self.next_sub += 1;
            let sub = format!("idx{}", self.next_sub);
            let page = self.rt.block_on(request(&mut self.ws, &sub, &f))?;
            let full = page.len() as u64 >= PAGE;
            let min = page.iter().map(|n| n.created_at).min();
            let mut fresh = 0;
            for note in page {
                match Facts::from_note(&note) {
                    Ok(facts) if seen.insert(facts.id) => {
                        fresh += 1;
                        out.push(facts);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(id = %note.id, error = %e, "host sent an invalid event; ignored"),
                }
            }
            match (full, min) {
                (true, Some(m)) if fresh > 0 => until = Some(m),
                // A full page with nothing new: step past this second.
                (true, Some(m)) if m > 0 => until = Some(m - 1),
                _ => return Ok(out),
            }
        }
    }
}

async fn request(ws: &mut Ws, sub: &str, filter: &Filter) -> anyhow::Result<Vec<Note>> {
    ws.send(Message::text(json!(["REQ", sub, filter.to_json()]).to_string())).await?;
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(ANSWER_TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("host did not answer a query within {ANSWER_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow::anyhow!("host closed the connection"))??;
        let Message::Text(text) = frame else { continue };
        let Ok(Value::Array(mut msg)) = serde_json::from_str::<Value>(&text) else { continue };
        if msg.get(1).and_then(Value::as_str) != Some(sub) {
            continue;
        }
        match msg.first().and_then(Value::as_str) {
            Some("EVENT") if msg.len() == 3 => {
                if let Ok(note) = serde_json::from_value::<Note>(msg.pop().unwrap_or_default()) {
                    out.push(note);
                }
            }
            Some("EOSE") => {
                ws.send(Message::text(json!(["CLOSE", sub]).to_string())).await?;
                return Ok(out);
            }
            Some("CLOSED") => anyhow::bail!("host refused a query: {text}"),
            _ => {}
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
    let policy = policy.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut source = WsSource { rt, ws, next_sub: 0, lookups: 0 };
        let built = build(&policy, &mut source)?;
        Ok((built, source.lookups))
    })
    .await?
}
