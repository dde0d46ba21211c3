//! A scripted relay for hostile-relay tests, on loopback only. Every accepted connection runs a
//! per-test behaviour over the raw websocket: it may send any text, frames of any size, garbage
//! bytes, nothing at all, a frame trickled byte by byte, or reset the TCP connection. What the
//! client sends through [`Peer::recv`] is recorded.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the scripted relay saw.
#[derive(Debug, Default)]
pub struct ScriptLog {
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    accepted_at: Mutex<Vec<Instant>>,
    received: Mutex<Vec<Value>>,
}

impl ScriptLog {
    /// Every client message read by a behaviour, in order.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Client messages of one type (`REQ`, `CLOSE`, `NEG-OPEN`, …).
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.received().into_iter().filter(|v| v[0] == kind).collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// When each connection was accepted.
    pub fn accepted_at(&self) -> Vec<Instant> {
        self.accepted_at.lock().unwrap().clone()
    }
}

/// A running scripted relay.
pub struct Scripted {
    pub url: String,
    pub log: Arc<ScriptLog>,
}

/// One client connection, handed to the behaviour.
pub struct Peer {
    pub ws: WebSocketStream<TcpStream>,
    pub log: Arc<ScriptLog>,
    /// 1 for the first connection, 2 for the second, …
    pub number: usize,
}

impl Scripted {
    /// Starts a relay on 127.0.0.1 that runs `behaviour` on every websocket connection.
    pub async fn start<F, Fut>(behaviour: F) -> Scripted
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Scripted::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), behaviour)
    }

    /// [`Scripted::start`] with a small socket receive buffer on every connection, so a
    /// behaviour that stops reading makes the client's writes block after a few kilobytes.
    pub async fn start_with_recv_buffer<F, Fut>(bytes: u32, behaviour: F) -> Scripted
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Scripted::start_on(socket.listen(64).unwrap(), behaviour)
    }

    fn start_on<F, Fut>(listener: TcpListener, behaviour: F) -> Scripted
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let log = Arc::new(ScriptLog::default());
        let l = log.clone();
        let behaviour = Arc::new(behaviour);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let number = l.connections.fetch_add(1, Ordering::SeqCst) + 1;
                l.accepted_at.lock().unwrap().push(Instant::now());
                let (b, log) = (behaviour.clone(), l.clone());
                tokio::spawn(async move {
                    // Client frames are read with tungstenite's defaults; what we send is unlimited.
                    let cfg = WebSocketConfig::default();
                    if let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(cfg)).await {
                        b(Peer { ws, log, number }).await;
                    }
                });
            }
        });
        Scripted { url, log }
    }
}

impl Peer {
    /// The next client message (recorded), or `None` once the client has gone.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    self.log.received.lock().unwrap().push(v.clone());
                    return Some(v);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next REQ as `(subscription id, filters)`; other messages are recorded and skipped.
    pub async fn next_req(&mut self) -> Option<(String, Vec<Value>)> {
        loop {
            let v = self.recv().await?;
            if v[0] == "REQ" {
                let sub = v[1].as_str().unwrap_or_default().to_string();
                let filters = v.as_array().map(|a| a[2..].to_vec()).unwrap_or_default();
                return Some((sub, filters));
            }
        }
    }

    /// Sends a JSON message as a text frame; `false` once the client has gone.
    pub async fn send(&mut self, v: Value) -> bool {
        self.send_text(v.to_string()).await
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> bool {
        self.ws.send(Message::text(text.into())).await.is_ok()
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> bool {
        self.ws.send(Message::binary(bytes)).await.is_ok()
    }

    /// Writes bytes straight to the TCP stream, around the websocket framing.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> bool {
        let tcp = self.ws.get_mut();
        tcp.write_all(bytes).await.is_ok() && tcp.flush().await.is_ok()
    }

    /// Writes `bytes` one at a time, `gap` apart (a relay's behaviour, not a test's wait).
    pub async fn drip(&mut self, bytes: &[u8], gap: Duration) -> bool {
        for b in bytes {
            if !self.write_raw(std::slice::from_ref(b)).await {
                return false;
            }
            tokio::time::sleep(gap).await;
        }
        true
    }

    /// Resets the TCP connection (RST, no close handshake).
    pub fn reset(self) {
        let tcp = self.ws.into_inner();
        let _ = tcp.set_zero_linger();
        drop(tcp);
    }

    /// Reads and records until the client leaves, answering nothing.
    pub async fn silent(mut self) {
        while self.recv().await.is_some() {}
    }
}

/// An unmasked server-to-client text frame with `payload` (any length the header can say).
pub fn text_frame_header(len: u64) -> Vec<u8> {
    let mut out = vec![0x81];
    if len < 126 {
        out.push(len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out
}

/// A whole text frame.
pub fn text_frame(payload: &str) -> Vec<u8> {
    let mut f = text_frame_header(payload.len() as u64);
    f.extend_from_slice(payload.as_bytes());
    f
}
