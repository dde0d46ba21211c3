//! A websocket proxy in front of a test relay that injects faults: refuse connections (relay
//! down), cut a connection after N events, answer or ignore NEG-OPEN, close REQs as rate limited,
//! and emulate strfry's subscription overflow (NOTICE after EOSE, live part dropped).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// What the proxy does with NEG-OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegMode {
    Forward,
    /// Swallow it: the relay never answers.
    Silent,
    Notice(String),
    NegErr(String),
    Closed(String),
}

#[derive(Debug)]
pub struct ProxyState {
    pub down: AtomicBool,
    pub neg: Mutex<NegMode>,
    /// The next this-many REQs are answered `CLOSED rate-limited:` (plus a NOTICE), not forwarded.
    pub rate_limit_reqs: AtomicUsize,
    /// REQs refused as rate limited.
    pub rate_limited: AtomicUsize,
    /// strfry-like cap on concurrent REQs per connection.
    pub max_subs: Mutex<Option<usize>>,
    /// Cut the connection once this many EVENTs were forwarded (then clears itself).
    pub cut_after_events: Mutex<Option<usize>>,
    /// The next this-many EVENTs get their content changed (their id no longer matches).
    pub corrupt_events: AtomicUsize,
    /// After the next EOSE, send one event on that subscription that matches none of its filters.
    pub inject_foreign: AtomicBool,
    /// The next this-many EVENTs the client writes are answered `OK false "error: internal
    /// error"` (what strfry answers when its plugin fails), not forwarded.
    pub refuse_writes: AtomicUsize,
    /// EVENT writes refused so.
    pub writes_refused: AtomicUsize,
    pub connections: AtomicUsize,
    pub reqs: AtomicUsize,
    pub neg_opens: AtomicUsize,
    pub events_forwarded: AtomicUsize,
    pub overflows: AtomicUsize,
}

pub struct Proxy {
    pub url: String,
    pub state: Arc<ProxyState>,
    cut: tokio::sync::watch::Sender<u64>,
    freeze: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = Arc::new(ProxyState {
            down: AtomicBool::new(false),
            neg: Mutex::new(NegMode::Forward),
            rate_limit_reqs: AtomicUsize::new(0),
            rate_limited: AtomicUsize::new(0),
            max_subs: Mutex::new(None),
            cut_after_events: Mutex::new(None),
            corrupt_events: AtomicUsize::new(0),
            inject_foreign: AtomicBool::new(false),
            refuse_writes: AtomicUsize::new(0),
            writes_refused: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            reqs: AtomicUsize::new(0),
            neg_opens: AtomicUsize::new(0),
            events_forwarded: AtomicUsize::new(0),
            overflows: AtomicUsize::new(0),
        });
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let (freeze, freeze_rx) = tokio::sync::watch::channel(0u64);
        let (st, up) = (state.clone(), upstream.to_string());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if st.down.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                st.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, up.clone(), st.clone(), cut_rx.clone(), freeze_rx.clone()));
            }
        });
        Proxy { url, state, cut, freeze }
    }

    /// Cuts every open connection.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Makes every open connection half-open: from now on nothing is read or written on either
    /// side and nothing is closed, as when a peer vanishes without a FIN or RST. Later
    /// connections work normally.
    pub fn freeze_all(&self) {
        self.freeze.send_modify(|n| *n += 1);
    }

    pub fn set_neg(&self, mode: NegMode) {
        *self.state.neg.lock().unwrap() = mode;
    }
}

fn text(v: Value) -> Message {
    Message::text(v.to_string())
}

async fn serve(
    tcp: TcpStream,
    upstream: String,
    st: Arc<ProxyState>,
    mut cut: tokio::sync::watch::Receiver<u64>,
    mut freeze: tokio::sync::watch::Receiver<u64>,
) {
    cut.borrow_and_update();
    freeze.borrow_and_update();
    let cfg = grasp_sync::remote::dial::ws_config();
    let Ok(mut client) = tokio_tungstenite::accept_async_with_config(tcp, Some(cfg)).await else { return };
    let Ok((mut relay, _)) = tokio_tungstenite::connect_async_with_config(upstream.as_str(), Some(cfg), false).await
    else {
        return;
    };
    let mut open: HashSet<String> = HashSet::new();
    let mut overflow: HashSet<String> = HashSet::new();
    let mut silenced: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = cut.changed() => break,
            _ = freeze.changed() => {
                // Hold both sockets and never touch them again.
                let _held = (client, relay);
                std::future::pending::<()>().await;
                return;
            }
            m = client.next() => {
                let Some(Ok(m)) = m else { break };
                let Message::Text(t) = &m else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                let kind = v[0].as_str().unwrap_or_default().to_string();
                let sub = v[1].as_str().unwrap_or_default().to_string();
                match kind.as_str() {
                    "EVENT" if st.refuse_writes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() => {
                        st.writes_refused.fetch_add(1, Ordering::SeqCst);
                        let id = v[1]["id"].clone();
                        let _ = client.send(text(json!(["OK", id, false, "error: internal error"]))).await;
                        continue;
                    }
                    "REQ" => {
                        st.reqs.fetch_add(1, Ordering::SeqCst);
                        let limited = st.rate_limit_reqs.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                        if limited {
                            st.rate_limited.fetch_add(1, Ordering::SeqCst);
                            let _ = client.send(text(json!(["NOTICE", "rate-limited: slow down"]))).await;
                            let _ = client.send(text(json!(["CLOSED", sub, "rate-limited: slow down"]))).await;
                            continue;
                        }
                        open.insert(sub.clone());
                        if st.max_subs.lock().unwrap().is_some_and(|max| open.len() > max) {
                            overflow.insert(sub);
                        }
                    }
                    "CLOSE" => {
                        open.remove(&sub);
                        overflow.remove(&sub);
                        silenced.remove(&sub);
                    }
                    "NEG-OPEN" => {
                        st.neg_opens.fetch_add(1, Ordering::SeqCst);
                        let mode = st.neg.lock().unwrap().clone();
                        let answer = match mode {
                            NegMode::Forward => None,
                            NegMode::Silent => continue,
                            NegMode::Notice(t) => Some(json!(["NOTICE", t])),
                            NegMode::NegErr(t) => Some(json!(["NEG-ERR", sub, t])),
                            NegMode::Closed(t) => Some(json!(["CLOSED", sub, t])),
                        };
                        if let Some(a) = answer {
                            let _ = client.send(text(a)).await;
                            continue;
                        }
                    }
                    _ => {}
                }
                if relay.send(m).await.is_err() { break }
            }
            m = relay.next() => {
                let Some(Ok(m)) = m else { break };
                let Message::Text(t) = &m else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                let kind = v[0].as_str().unwrap_or_default();
                let sub = v[1].as_str().unwrap_or_default().to_string();
                match kind {
                    "EVENT" => {
                        if silenced.contains(&sub) { continue }
                        let m = if st.corrupt_events.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                            let mut v = v.clone();
                            v[2]["content"] = json!("tampered");
                            text(v)
                        } else {
                            m
                        };
                        if client.send(m).await.is_err() { break }
                        let n = st.events_forwarded.fetch_add(1, Ordering::SeqCst) + 1;
                        let cut = {
                            let mut c = st.cut_after_events.lock().unwrap();
                            let hit = c.is_some_and(|limit| n >= limit);
                            if hit { *c = None; }
                            hit
                        };
                        if cut { break }
                        continue;
                    }
                    "EOSE" if st.inject_foreign.swap(false, Ordering::SeqCst) => {
                        let mut foreign = json!({"kind": 7, "pubkey": "11".repeat(32), "created_at": 1, "tags": [], "content": "+", "sig": "00".repeat(64)});
                        let canonical = json!([0, foreign["pubkey"], 1, 7, [], "+"]).to_string();
                        foreign["id"] = json!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes())));
                        let _ = client.send(text(json!(["EVENT", sub, foreign]))).await;
                    }
                    "EOSE" if overflow.contains(&sub) => {
                        if client.send(m).await.is_err() { break }
                        st.overflows.fetch_add(1, Ordering::SeqCst);
                        silenced.insert(sub);
                        let _ = client.send(text(json!(["NOTICE", "ERROR: too many concurrent REQs"]))).await;
                        continue;
                    }
                    _ => {}
                }
                if client.send(m).await.is_err() { break }
            }
        }
    }
    // Dropping both sockets cuts the connection without a close handshake.
}
