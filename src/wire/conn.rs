//! One websocket connection to a relay: typed send with frame limits, typed receive, byte counts,
//! and liveness — no await on the peer is unbounded.
//!
//! - `send` gives up after [`Liveness::send_timeout`] (a relay that stops reading fills our
//!   socket buffer; the write would otherwise wait forever).
//! - `recv` keeps the connection honest: after [`Liveness::keepalive`] of read silence it sends a
//!   Ping; if no frame of any kind arrives within [`Liveness::pong_timeout`] after that, the
//!   connection is lost ([`ConnError::Silent`]). Both deadlines are absolute instants measured
//!   from the last frame received, so a busy loop around `recv` cannot postpone them.
//! - `close` sends the close frame for at most [`Liveness::close_timeout`], then drops the socket.
//!
//! A connection is owned by exactly one task (the relay's task); nothing here is shared except
//! the [`WireCounters`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::wire::clock::unix_now;
use crate::wire::message::{ClientMsg, MsgError, RelayMsg};

/// Largest NIP-77 frame we send (strfry's negentropy frame budget).
pub const MAX_NEG_FRAME: usize = 60_000;
/// strfry's default `maxWebsocketPayloadSize`: bigger client frames drop the connection.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 131_072;

/// Deadlines of one connection. Defaults follow DESIGN.md §9; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Read silence after which a Ping is sent.
    pub keepalive: Duration,
    /// After the Ping, how long to wait for any frame before the connection counts as lost.
    pub pong_timeout: Duration,
    /// Longest one frame may take to be written.
    pub send_timeout: Duration,
    /// Longest the close frame may take to be written before the socket is simply dropped.
    pub close_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            keepalive: Duration::from_secs(45),
            pong_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Bytes and frames seen on the wire, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct WireCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Unix time (seconds) of the last frame of any kind received on any connection of this
    /// relay; 0 before the first.
    pub last_data_unix: AtomicU64,
    /// Pings sent because the relay was silent.
    pub pings: AtomicU64,
    /// Messages that crossed the wire compressed (permessage-deflate): their bytes as messages
    /// (also in `bytes_in`/`bytes_out`) and as sent, per direction.
    pub deflated_plain_in: AtomicU64,
    pub deflated_wire_in: AtomicU64,
    pub deflated_plain_out: AtomicU64,
    pub deflated_wire_out: AtomicU64,
}

fn on_wire(all: &AtomicU64, plain: &AtomicU64, wire: &AtomicU64) -> u64 {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    (load(all) + load(wire)).saturating_sub(load(plain))
}

impl WireCounters {
    /// Payload bytes received as they crossed the wire (compressed where they were).
    pub fn bytes_in(&self) -> u64 {
        on_wire(&self.bytes_in, &self.deflated_plain_in, &self.deflated_wire_in)
    }
    /// Payload bytes sent as they crossed the wire (compressed where they were).
    pub fn bytes_out(&self) -> u64 {
        on_wire(&self.bytes_out, &self.deflated_plain_out, &self.deflated_wire_out)
    }
    /// When the relay was last heard from (unix seconds), if ever: the moment up to which
    /// everything it sent has arrived, and so where a quick reconnect's catch-up starts.
    pub fn last_data_unix(&self) -> Option<u64> {
        Some(self.last_data_unix.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }
}

/// What went wrong on a connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// The websocket layer failed (reset, protocol error, TLS…); the cause is kept.
    #[error("websocket error: {0}")]
    Ws(#[source] Arc<tokio_tungstenite::tungstenite::Error>),
    /// The relay closed the connection.
    #[error("connection closed by the relay")]
    Closed,
    #[error("refusing to send a {len}-byte frame (limit {limit})")]
    TooLarge { len: usize, limit: usize },
    /// The relay sent a message over our accept limit; the connection is dropped.
    #[error("relay sent a message of {size} bytes, over our limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    /// A frame we could not read; the connection stays usable.
    #[error("malformed frame: {0}")]
    Malformed(#[from] MsgError),
    /// Nothing arrived for `silent_for`, not even an answer to our Ping: the connection is lost.
    #[error("the relay sent nothing for {silent_for:?}, not even a pong (connection lost)")]
    Silent { silent_for: Duration },
    /// A frame could not be written within the send deadline: the relay does not read.
    #[error("the relay does not read what we send (write took over {0:?})")]
    SendTimeout(Duration),
}

fn incoming_error(e: tokio_tungstenite::tungstenite::Error) -> ConnError {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match e {
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            ConnError::Oversized { size, limit: max_size }
        }
        other => ConnError::Ws(Arc::new(other)),
    }
}

/// The keepalive probe in progress: a Ping is due or out, and when the silence check began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    since: Instant,
    /// The Ping is in the socket's send queue (it may not have reached the wire yet).
    queued: bool,
}

/// When the keepalive timer must fire next, from plain data.
fn keepalive_deadline(last_rx: Instant, probe: Option<Probe>, l: &Liveness) -> Instant {
    match probe {
        None => last_rx + l.keepalive,
        Some(p) => p.since + l.pong_timeout,
    }
}

/// A relay connection. `S` is the byte stream under the websocket (TCP, maybe TLS, in
/// production; an in-memory pipe in unit tests).
pub struct Connection<S = MaybeTlsStream<tokio::net::TcpStream>> {
    ws: WebSocketStream<S>,
    payload_limit: usize,
    counters: Arc<WireCounters>,
    liveness: Liveness,
    /// Last frame of any kind received (or the connection's start).
    last_rx: Instant,
    last_rx_unix: Option<u64>,
    probe: Option<Probe>,
    /// A queued Ping still has to be flushed.
    flush_pending: bool,
    /// Fires at the keepalive deadline; re-armed lazily when it fires early.
    timer: Pin<Box<Sleep>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection with the default deadlines.
    pub fn new(ws: WebSocketStream<S>, payload_limit: usize, counters: Arc<WireCounters>) -> Self {
        Self::with_liveness(ws, payload_limit, counters, Liveness::default())
    }

    /// A connection with these deadlines.
    pub fn with_liveness(
        ws: WebSocketStream<S>,
        payload_limit: usize,
        counters: Arc<WireCounters>,
        liveness: Liveness,
    ) -> Self {
        let now = Instant::now();
        Connection {
            ws,
            payload_limit,
            counters,
            liveness,
            last_rx: now,
            last_rx_unix: None,
            probe: None,
            flush_pending: false,
            timer: Box::pin(tokio::time::sleep_until(now + liveness.keepalive)),
        }
    }

    /// The byte counters of this connection.
    pub fn counters(&self) -> &Arc<WireCounters> {
        &self.counters
    }

    /// The deadlines of this connection.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// When the last frame of any kind (event, EOSE, pong…) arrived on this connection, if any.
    pub fn last_data_at(&self) -> Option<Instant> {
        self.last_rx_unix.map(|_| self.last_rx)
    }

    /// [`Connection::last_data_at`] as unix seconds.
    pub fn last_data_unix(&self) -> Option<u64> {
        self.last_rx_unix
    }

    /// Frame limit that applies to a message.
    pub fn limit_for(&self, msg: &ClientMsg) -> usize {
        if msg.is_negentropy() {
            MAX_NEG_FRAME.min(self.payload_limit)
        } else {
            self.payload_limit
        }
    }

    /// The text frame of a message, counted as sent, or [`ConnError::TooLarge`] (nothing sent;
    /// the connection stays usable).
    fn frame(&self, msg: &ClientMsg) -> Result<Message, ConnError> {
        let text = msg.encode();
        let limit = self.limit_for(msg);
        if text.len() > limit {
            return Err(ConnError::TooLarge { len: text.len(), limit });
        }
        self.counters.bytes_out.fetch_add(text.len() as u64, Ordering::Relaxed);
        self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        Ok(Message::text(text))
    }

    /// Writes one message; gives up after the send deadline ([`ConnError::SendTimeout`], after
    /// which the connection is unusable).
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ConnError> {
        let frame = self.frame(msg)?;
        let deadline = self.liveness.send_timeout;
        match tokio::time::timeout(deadline, self.ws.send(frame)).await {
            Ok(Ok(())) => {
                // The flush at the end of a send also carried any queued Ping.
                self.flush_pending = false;
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError::Ws(Arc::new(e))),
            Err(_) => Err(ConnError::SendTimeout(deadline)),
        }
    }

    /// Queues one message without flushing it, for pipelining many frames behind one
    /// [`Connection::flush`]. Waits only while the socket's buffer is full, for at most the send
    /// deadline.
    pub async fn feed(&mut self, msg: &ClientMsg) -> Result<(), ConnError> {
        let frame = self.frame(msg)?;
        let deadline = self.liveness.send_timeout;
        match tokio::time::timeout(deadline, self.ws.feed(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ConnError::Ws(Arc::new(e))),
            Err(_) => Err(ConnError::SendTimeout(deadline)),
        }
    }

    /// Writes everything queued by [`Connection::feed`], within the send deadline.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        let deadline = self.liveness.send_timeout;
        match tokio::time::timeout(deadline, self.ws.flush()).await {
            Ok(Ok(())) => {
                self.flush_pending = false;
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError::Ws(Arc::new(e))),
            Err(_) => Err(ConnError::SendTimeout(deadline)),
        }
    }

    /// The next relay message; `None` once the connection is closed. Cancel-safe: every bit of
    /// keepalive state lives in the connection, so a `select!` that drops this future loses
    /// nothing and postpones no deadline.
    pub async fn recv(&mut self) -> Option<Result<RelayMsg, ConnError>> {
        loop {
            let frame = match std::future::poll_fn(|cx| self.poll_frame(cx)).await {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
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

    /// The next frame of any kind, driving the keepalive meanwhile.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Message>, ConnError>> {
        loop {
            if self.flush_pending {
                match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flush_pending = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnError::Ws(Arc::new(e)))),
                    Poll::Pending => {}
                }
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(None) => return Poll::Ready(Ok(None)),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(incoming_error(e))),
                Poll::Ready(Some(Ok(m))) => {
                    self.heard();
                    return Poll::Ready(Ok(Some(m)));
                }
                Poll::Pending => {}
            }
            if let Some(p) = self.probe.filter(|p| !p.queued) {
                // A write side so stuck that even the Ping cannot be queued runs into the
                // same pong deadline.
                match Pin::new(&mut self.ws).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        if let Err(e) = Pin::new(&mut self.ws).start_send(Message::Ping(Default::default())) {
                            return Poll::Ready(Err(ConnError::Ws(Arc::new(e))));
                        }
                        self.probe = Some(Probe { queued: true, ..p });
                        self.flush_pending = true;
                        self.counters.pings.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnError::Ws(Arc::new(e)))),
                    Poll::Pending => {}
                }
            }
            let due = keepalive_deadline(self.last_rx, self.probe, &self.liveness);
            if self.timer.deadline() != due {
                self.timer.as_mut().reset(due);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.probe.is_none() => {
                    self.probe = Some(Probe { since: Instant::now(), queued: false });
                }
                Poll::Ready(()) => {
                    return Poll::Ready(Err(ConnError::Silent { silent_for: self.last_rx.elapsed() }));
                }
            }
        }
    }

    fn heard(&mut self) {
        self.last_rx = Instant::now();
        self.probe = None;
        let unix = unix_now();
        self.last_rx_unix = Some(unix);
        self.counters.last_data_unix.store(unix, Ordering::Relaxed);
    }

    /// Closes politely within the close deadline, then drops the socket; errors are irrelevant
    /// at this point.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.liveness.close_timeout, self.ws.close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    type Peer = WebSocketStream<DuplexStream>;

    const L: Liveness = Liveness {
        keepalive: Duration::from_secs(45),
        pong_timeout: Duration::from_secs(20),
        send_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_secs(5),
    };

    /// A client connection and the relay's end of it, over an in-memory pipe of `buffer` bytes.
    async fn pair(buffer: usize) -> (Connection<DuplexStream>, Peer) {
        let (a, b) = tokio::io::duplex(buffer);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let relay = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (Connection::with_liveness(client, DEFAULT_PAYLOAD_LIMIT, Arc::default(), L), relay)
    }

    /// A relay that reads (and so answers Pings) but never says anything; counts Pings.
    fn reading_relay(mut relay: Peer) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let mut pings = 0;
            while let Some(Ok(m)) = relay.next().await {
                if m.is_ping() {
                    pings += 1;
                }
            }
            pings
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_relay_that_answers_pings_stays_connected() {
        let (mut conn, relay) = pair(64 * 1024).await;
        let _relay = reading_relay(relay);
        let quiet = tokio::time::timeout(Duration::from_secs(600), conn.recv()).await;
        assert!(quiet.is_err(), "no message and no error in 10 minutes: {quiet:?}");
        assert_eq!(conn.counters().pings(), 13, "one Ping per 45 s of silence");
        assert!(conn.last_data_at().is_some(), "pongs count as data");
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_stops_answering_is_lost_after_keepalive_plus_pong_deadline() {
        let (mut conn, _relay) = pair(64 * 1024).await;
        let start = Instant::now();
        let got = conn.recv().await;
        assert!(matches!(got, Some(Err(ConnError::Silent { .. }))), "{got:?}");
        assert_eq!(start.elapsed().as_secs(), 65);
        assert_eq!(conn.counters().pings(), 1);
        assert_eq!(conn.last_data_unix(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recv_cancelled_on_every_loop_pass_keeps_its_deadline() {
        let (mut conn, _relay) = pair(64 * 1024).await;
        let start = Instant::now();
        let err = loop {
            tokio::select! {
                got = conn.recv() => break got,
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            }
        };
        assert!(matches!(err, Some(Err(ConnError::Silent { .. }))), "{err:?}");
        assert_eq!(start.elapsed().as_secs(), 65, "a busy loop does not postpone the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn steady_traffic_needs_no_ping_and_is_remembered() {
        let (mut conn, mut relay) = pair(64 * 1024).await;
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_secs(30)).await;
                if relay.send(Message::text(r#"["NOTICE","hi"]"#)).await.is_err() {
                    return;
                }
            }
            // Then silence, while still reading (and answering Pings).
            while relay.next().await.is_some() {}
        });
        for _ in 0..20 {
            assert!(matches!(conn.recv().await, Some(Ok(RelayMsg::Notice(_)))));
        }
        assert_eq!(conn.counters().pings(), 0);
        let heard = conn.last_data_at().unwrap();
        assert!(conn.counters().last_data_unix().is_some());
        let quiet = tokio::time::timeout(Duration::from_secs(100), conn.recv()).await;
        assert!(quiet.is_err());
        assert_eq!(conn.counters().pings(), 2);
        assert!(conn.last_data_at().unwrap() > heard);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_never_reads_times_out_sends_and_close_returns() {
        let (mut conn, _relay) = pair(4096).await;
        let big = ClientMsg::Close("x".repeat(10_000));
        let start = Instant::now();
        let mut sent = 0;
        let err = loop {
            match conn.send(&big).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100, "the pipe holds 4 kB; sends must block");
        };
        assert!(matches!(err, ConnError::SendTimeout(d) if d == L.send_timeout), "{err:?}");
        assert_eq!(start.elapsed().as_secs(), 30);
        let start = Instant::now();
        conn.close().await;
        assert!(start.elapsed() <= L.close_timeout, "close is bounded");
    }

    #[test]
    fn the_deadline_is_keepalive_after_the_last_frame_then_pong_timeout_after_the_ping() {
        let t0 = Instant::now();
        assert_eq!(keepalive_deadline(t0, None, &L), t0 + L.keepalive);
        let probe = Probe { since: t0 + Duration::from_secs(50), queued: true };
        assert_eq!(keepalive_deadline(t0, Some(probe), &L), t0 + Duration::from_secs(70));
    }
}
