//! One websocket connection to a relay: typed send with frame limits, typed receive, byte counts.
//!
//! A connection is owned by exactly one task (the relay's task); nothing here is shared.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::remote::dial::WsStream;
use crate::remote::message::{ClientMsg, MsgError, RelayMsg};

/// Largest NIP-77 frame we send (strfry's negentropy frame budget).
pub const MAX_NEG_FRAME: usize = 60_000;
/// strfry's default `maxWebsocketPayloadSize`: bigger client frames drop the connection.
pub const DEFAULT_REMOTE_PAYLOAD_LIMIT: usize = 131_072;

/// Bytes and frames seen on the wire, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct WireCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
}

impl WireCounters {
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

/// What went wrong on a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error("websocket error: {0}")]
    Ws(String),
    #[error("refusing to send a {len}-byte frame (limit {limit})")]
    TooLarge { len: usize, limit: usize },
    /// The relay sent a message over our accept limit; the connection is dropped.
    #[error("relay sent a message of {size} bytes, over our limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    /// A frame we could not read; the connection stays usable.
    #[error("malformed frame: {0}")]
    Malformed(#[from] MsgError),
}

fn incoming_error(e: tokio_tungstenite::tungstenite::Error) -> ConnError {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match e {
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            ConnError::Oversized { size, limit: max_size }
        }
        other => ConnError::Ws(other.to_string()),
    }
}

/// A relay connection.
pub struct Connection {
    ws: WsStream,
    payload_limit: usize,
    counters: Arc<WireCounters>,
}

impl Connection {
    pub fn new(ws: WsStream, payload_limit: usize, counters: Arc<WireCounters>) -> Self {
        Connection { ws, payload_limit, counters }
    }

    /// The byte counters of this connection.
    pub fn counters(&self) -> &Arc<WireCounters> {
        &self.counters
    }

    /// Frame limit that applies to a message.
    pub fn limit_for(&self, msg: &ClientMsg) -> usize {
        if msg.is_negentropy() {
            MAX_NEG_FRAME.min(self.payload_limit)
        } else {
            self.payload_limit
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ConnError> {
        let text = msg.encode();
        let limit = self.limit_for(msg);
        if text.len() > limit {
            return Err(ConnError::TooLarge { len: text.len(), limit });
        }
        self.counters.bytes_out.fetch_add(text.len() as u64, Ordering::Relaxed);
        self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        self.ws.send(Message::text(text)).await.map_err(|e| ConnError::Ws(e.to_string()))
    }

    /// The next relay message; `None` once the connection is closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<RelayMsg, ConnError>> {
        loop {
            let frame = match self.ws.next().await? {
                Ok(f) => f,
                Err(e) => return Some(Err(incoming_error(e))),
            };
            let text = match &frame {
                Message::Text(t) => t.as_str(),
                Message::Binary(b) => match std::str::from_utf8(b) {
                    Ok(t) => t,
                    Err(_) => return Some(Err(ConnError::Malformed(MsgError::Shape))),
                },
                Message::Close(_) => return None,
                _ => continue,
            };
            self.counters.bytes_in.fetch_add(text.len() as u64, Ordering::Relaxed);
            self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
            return Some(RelayMsg::parse(text).map_err(ConnError::from));
        }
    }

    /// Closes politely; errors are irrelevant at this point.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
