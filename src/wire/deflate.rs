//! permessage-deflate (RFC 7692) for the connections we open to relays, as a byte-stream layer
//! between the socket (plain or TLS) and tungstenite, which has no support for it.
//!
//! The client offers `permessage-deflate` with no parameters (both sides keep 15-bit windows).
//! This layer reads the server's handshake response as it passes: if the relay accepted the
//! extension, every later frame goes through it.
//!
//! - **Incoming:** a message whose first frame has RSV1 set is collected (its fragments, up to
//!   the incoming limit), inflated (bounded by the same limit: a small message cannot expand
//!   into a large one) and handed on as one plain frame. Control frames and uncompressed
//!   messages pass untouched.
//! - **Outgoing:** each unfragmented text or binary frame tungstenite writes is unmasked,
//!   deflated (level 1: hex ids compress about as well as at level 6, at half the CPU), masked
//!   again with its key and marked RSV1 (without context takeover, only when
//!   that makes it smaller: an uncompressed message is always allowed). Control frames pass
//!   untouched.
//! - `server_no_context_takeover` / `client_no_context_takeover` reset the inflater / deflater
//!   after each message; without client context takeover (strfry's answer) the deflater, a few
//!   hundred kilobytes, exists only while a message is compressed, so idle connections do not
//!   keep one each. A `client_max_window_bits` below 15 (never offered, so never expected)
//!   turns outgoing compression off. An unknown parameter fails the handshake.
//!
//! Byte counts: each compressed message is counted in [`WireCounters`]' `deflated_*` fields once
//! the counters are attached, so the reported bytes are the payload bytes on the wire.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::conn::WireCounters;

/// The offer sent in the handshake request.
pub const OFFER: &str = "permessage-deflate";

/// The four bytes a sync flush ends with; RFC 7692 strips them from each message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Outgoing bytes held before tungstenite is told to wait.
const MAX_PENDING_OUT: usize = 1 << 20;
/// Longest handshake response read before giving up.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// What the relay agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// Whether our messages may be compressed (the relay did not ask for a smaller window).
    pub compress_out: bool,
}

/// The relay's answer to our offer, from the `Sec-WebSocket-Extensions` values of its response:
/// `Ok(None)` when it did not accept permessage-deflate.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Option<Agreed>, String> {
    for value in values {
        for ext in value.split(',') {
            let mut parts = ext.split(';').map(str::trim);
            if !parts.next().is_some_and(|name| name.eq_ignore_ascii_case(OFFER)) {
                continue;
            }
            let mut a =
                Agreed { server_no_context_takeover: false, client_no_context_takeover: false, compress_out: true };
            for p in parts.filter(|p| !p.is_empty()) {
                let (key, val) = match p.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                    None => (p, None),
                };
                match key.to_ascii_lowercase().as_str() {
                    "server_no_context_takeover" => a.server_no_context_takeover = true,
                    "client_no_context_takeover" => a.client_no_context_takeover = true,
                    "server_max_window_bits" => {} // a smaller window inflates fine with ours
                    "client_max_window_bits" => {
                        if val.and_then(|v| v.parse::<u8>().ok()).is_some_and(|bits| bits < 15) {
                            a.compress_out = false;
                        }
                    }
                    _ => return Err(format!("unknown permessage-deflate parameter {p:?}")),
                }
            }
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// A frame header as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Bytes of the header itself.
    len: usize,
    payload: usize,
}

/// Parses a frame header at the start of `b`; `None` until it is complete.
fn parse_header(b: &[u8]) -> Option<Header> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    let (mut len, payload) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, usize::try_from(u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)).unwrap_or(usize::MAX)),
        n => (2, n as usize),
    };
    let mask = if b1 & 0x80 != 0 {
        let key: [u8; 4] = b.get(len..len + 4)?.try_into().ok()?;
        len += 4;
        Some(key)
    } else {
        None
    };
    Some(Header { fin: b0 & 0x80 != 0, rsv1: b0 & 0x40 != 0, opcode: b0 & 0x0f, mask, len, payload })
}

/// Appends a final frame (RSV1 as given) with this payload, masked when a key is given.
fn write_frame(out: &mut Vec<u8>, opcode: u8, rsv1: bool, mask: Option<[u8; 4]>, payload: &[u8]) {
    out.push(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

fn unmask(payload: &mut [u8], key: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Raw DEFLATE of one message with a sync flush, its tail stripped.
fn deflate_message(c: &mut Compress, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let start_in = c.total_in();
    loop {
        out.reserve(4096.max(data.len() / 4));
        let done = (c.total_in() - start_in) as usize;
        c.compress_vec(&data[done..], &mut out, FlushCompress::Sync).map_err(|e| invalid(e.to_string()))?;
        // Finished once all input is in and the flush fitted with room to spare.
        if (c.total_in() - start_in) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Ok(out)
}

/// Inflates one message (its stripped tail restored), refusing to produce more than `limit`.
fn inflate_message(d: &mut Decompress, data: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let input = [data, &TAIL].concat();
    let mut out = Vec::with_capacity((data.len() * 3).min(limit) + 64);
    let start_in = d.total_in();
    loop {
        out.reserve(16 * 1024);
        let done = (d.total_in() - start_in) as usize;
        let before = out.len();
        let status =
            d.decompress_vec(&input[done..], &mut out, FlushDecompress::Sync).map_err(|e| invalid(e.to_string()))?;
        if out.len() > limit {
            return Err(invalid(format!("a compressed message inflates past {limit} bytes")));
        }
        let all_in = (d.total_in() - start_in) as usize == input.len();
        if status == Status::StreamEnd || (all_in && out.len() < out.capacity()) {
            break;
        }
        if out.len() == before && (d.total_in() - start_in) as usize == done {
            return Err(invalid("a compressed message does not inflate"));
        }
    }
    Ok(out)
}

enum Mode {
    /// Before the handshake response has been read in full.
    Handshake,
    Plain,
    Deflate(Box<Codec>),
}

struct Codec {
    agreed: Agreed,
    inflater: Decompress,
    /// Kept between messages only with client context takeover.
    deflater: Option<Compress>,
    /// A compressed message being collected: its opcode and payload so far.
    collecting: Option<(u8, Vec<u8>)>,
    /// An uncompressed fragmented message is passing through.
    plain_fragments: bool,
}

/// The byte-stream layer; see the module documentation.
pub struct Deflate<S> {
    inner: S,
    mode: Mode,
    /// Incoming bytes not yet processed, and processed bytes not yet read by tungstenite.
    raw_in: Vec<u8>,
    ready_in: Vec<u8>,
    ready_pos: usize,
    /// Outgoing bytes not yet forming a whole frame, and bytes ready for the socket.
    raw_out: Vec<u8>,
    ready_out: Vec<u8>,
    out_pos: usize,
    limit: usize,
    counters: OnceLock<Arc<WireCounters>>,
}

impl<S> Deflate<S> {
    /// Wraps a socket before the websocket handshake; `limit` bounds an incoming message.
    pub fn new(inner: S, limit: usize) -> Self {
        Deflate {
            inner,
            mode: Mode::Handshake,
            raw_in: Vec::new(),
            ready_in: Vec::new(),
            ready_pos: 0,
            raw_out: Vec::new(),
            ready_out: Vec::new(),
            out_pos: 0,
            limit,
            counters: OnceLock::new(),
        }
    }

    /// What the relay agreed to, once the handshake is through (`None`: not compressed).
    pub fn agreed(&self) -> Option<Agreed> {
        match &self.mode {
            Mode::Deflate(c) => Some(c.agreed),
            _ => None,
        }
    }

    /// Where the bytes compression saves are counted (the connection's counters).
    pub fn attach(&self, counters: Arc<WireCounters>) {
        let _ = self.counters.set(counters);
    }

    /// Counts a message that crossed the wire compressed: `plain` bytes as `wire` bytes.
    fn count(&self, incoming: bool, plain: usize, wire: usize) {
        let Some(c) = self.counters.get() else { return };
        let (p, w) = if incoming {
            (&c.deflated_plain_in, &c.deflated_wire_in)
        } else {
            (&c.deflated_plain_out, &c.deflated_wire_out)
        };
        p.fetch_add(plain as u64, Ordering::Relaxed);
        w.fetch_add(wire as u64, Ordering::Relaxed);
    }

    /// Moves what can be decided from `raw_in` to `ready_in`.
    fn process_in(&mut self) -> io::Result<()> {
        if matches!(self.mode, Mode::Handshake) {
            let Some(end) = self.raw_in.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.raw_in.len() > MAX_RESPONSE_HEAD {
                    return Err(invalid("handshake response too long"));
                }
                return Ok(());
            };
            let head: Vec<u8> = self.raw_in.drain(..end + 4).collect();
            self.mode = match negotiate(extension_values(&head)).map_err(invalid)? {
                Some(agreed) => Mode::Deflate(Box::new(Codec {
                    agreed,
                    inflater: Decompress::new(false),
                    deflater: None,
                    collecting: None,
                    plain_fragments: false,
                })),
                None => Mode::Plain,
            };
            self.ready_in.extend_from_slice(&head);
        }
        let Mode::Deflate(codec) = &mut self.mode else {
            self.ready_in.append(&mut self.raw_in);
            return Ok(());
        };
        let mut pos = 0;
        let (mut plain_total, mut wire_total) = (0usize, 0usize);
        while let Some(h) = parse_header(&self.raw_in[pos..]) {
            if h.payload > self.limit {
                return Err(invalid(format!("a frame of {} bytes is over the limit", h.payload)));
            }
            let end = pos + h.len + h.payload;
            if self.raw_in.len() < end {
                break;
            }
            let frame = &self.raw_in[pos..end];
            let first_compressed = h.rsv1 && (h.opcode == 1 || h.opcode == 2);
            if h.opcode >= 8 || (!first_compressed && codec.collecting.is_none()) {
                // Control frames, uncompressed messages and their fragments pass as they are.
                if h.opcode == 1 || h.opcode == 2 {
                    codec.plain_fragments = !h.fin;
                } else if h.opcode == 0 && !codec.plain_fragments {
                    return Err(invalid("a continuation frame outside any message"));
                } else if h.opcode == 0 && h.fin {
                    codec.plain_fragments = false;
                }
                self.ready_in.extend_from_slice(frame);
            } else {
                if first_compressed && codec.collecting.is_some() {
                    return Err(invalid("a new message before the last one ended"));
                }
                let (opcode, mut body) = codec.collecting.take().unwrap_or((h.opcode, Vec::new()));
                let start = body.len();
                body.extend_from_slice(&frame[h.len..]);
                if let Some(key) = h.mask {
                    unmask(&mut body[start..], key);
                }
                if body.len() > self.limit {
                    return Err(invalid("a compressed message over the limit"));
                }
                if h.fin {
                    let plain = inflate_message(&mut codec.inflater, &body, self.limit)?;
                    if codec.agreed.server_no_context_takeover {
                        codec.inflater.reset(false);
                    }
                    plain_total += plain.len();
                    wire_total += body.len();
                    write_frame(&mut self.ready_in, opcode, false, None, &plain);
                } else {
                    codec.collecting = Some((opcode, body));
                }
            }
            pos = end;
        }
        self.raw_in.drain(..pos);
        if plain_total > 0 {
            self.count(true, plain_total, wire_total);
        }
        Ok(())
    }

    /// Moves every whole frame of `raw_out` to `ready_out`, compressing messages.
    fn process_out(&mut self) -> io::Result<()> {
        let Mode::Deflate(codec) = &mut self.mode else {
            self.ready_out.append(&mut self.raw_out);
            return Ok(());
        };
        let mut pos = 0;
        let (mut plain_total, mut wire_total) = (0usize, 0usize);
        while let Some(h) = parse_header(&self.raw_out[pos..]) {
            let end = pos + h.len + h.payload;
            if self.raw_out.len() < end {
                break;
            }
            let frame = &self.raw_out[pos..end];
            let whole_message = h.fin && !h.rsv1 && (h.opcode == 1 || h.opcode == 2);
            match (whole_message && codec.agreed.compress_out, h.mask) {
                (true, Some(key)) => {
                    let mut payload = frame[h.len..].to_vec();
                    unmask(&mut payload, key);
                    let deflater = codec.deflater.get_or_insert_with(|| Compress::new(Compression::fast(), false));
                    let packed = deflate_message(deflater, &payload)?;
                    if codec.agreed.client_no_context_takeover {
                        codec.deflater = None;
                    }
                    // Without context takeover a message that does not shrink goes as it is;
                    // with it, the deflater's window now holds the message and the relay's
                    // inflater must see it too, so it goes compressed whatever its size.
                    if codec.agreed.client_no_context_takeover && packed.len() >= payload.len() {
                        self.ready_out.extend_from_slice(frame);
                    } else {
                        write_frame(&mut self.ready_out, h.opcode, true, Some(key), &packed);
                        plain_total += payload.len();
                        wire_total += packed.len();
                    }
                }
                _ => self.ready_out.extend_from_slice(frame),
            }
            pos = end;
        }
        self.raw_out.drain(..pos);
        if plain_total > 0 {
            self.count(false, plain_total, wire_total);
        }
        Ok(())
    }
}

/// The values of every `Sec-WebSocket-Extensions` header of a response head.
fn extension_values(head: &[u8]) -> Vec<&str> {
    let text = std::str::from_utf8(head).unwrap_or("");
    text.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, v)| v.trim())
        .collect()
}

impl<S: AsyncRead + Unpin> AsyncRead for Deflate<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_pos < this.ready_in.len() {
                let n = buf.remaining().min(this.ready_in.len() - this.ready_pos);
                buf.put_slice(&this.ready_in[this.ready_pos..this.ready_pos + n]);
                this.ready_pos += n;
                if this.ready_pos == this.ready_in.len() {
                    this.ready_in.clear();
                    this.ready_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Plain) && this.raw_in.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())), // end of stream
                Poll::Ready(Ok(())) => {
                    this.raw_in.extend_from_slice(rb.filled());
                    this.process_in()?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Deflate<S> {
    /// Writes `ready_out` to the socket as far as it takes it.
    fn drain_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.ready_out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.ready_out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.ready_out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deflate<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if matches!(this.mode, Mode::Handshake | Mode::Plain) && this.ready_out.is_empty() && this.raw_out.is_empty() {
            // The request goes out before the response (and so the mode) is known.
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.ready_out.len() - this.out_pos >= MAX_PENDING_OUT {
            match this.drain_out(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.raw_out.extend_from_slice(data);
        this.process_out()?;
        // Start writing at once; the rest goes at the next write or flush.
        if let Poll::Ready(Err(e)) = this.drain_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.drain_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.drain_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    const LIMIT: usize = 1_200_000;

    /// The relay's end: a raw byte stream speaking permessage-deflate by hand.
    struct Relay {
        io: DuplexStream,
        buf: Vec<u8>,
        inflater: Decompress,
        deflater: Compress,
        no_takeover: bool,
    }

    impl Relay {
        /// Answers the handshake with `extension` (if any); returns the request head.
        async fn accept(mut io: DuplexStream, extension: Option<&str>) -> (Relay, String) {
            let mut buf = Vec::new();
            let end = loop {
                let mut chunk = [0u8; 4096];
                let n = io.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            let key = head
                .split("\r\n")
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ").or_else(|| l.strip_prefix("sec-websocket-key: ")))
                .unwrap();
            let mut resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                derive_accept_key(key.trim().as_bytes())
            );
            if let Some(e) = extension {
                resp.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
            }
            resp.push_str("\r\n");
            io.write_all(resp.as_bytes()).await.unwrap();
            let no_takeover = extension.is_some_and(|e| e.contains("server_no_context_takeover"));
            let relay = Relay {
                io,
                buf: buf[end..].to_vec(),
                inflater: Decompress::new(false),
                deflater: Compress::new(Compression::default(), false),
                no_takeover,
            };
            (relay, head)
        }

        /// The next frame from the client: (RSV1, payload unmasked and inflated if compressed).
        async fn frame(&mut self) -> (bool, Vec<u8>) {
            loop {
                if let Some(h) = parse_header(&self.buf) {
                    if self.buf.len() >= h.len + h.payload {
                        let mut p = self.buf[h.len..h.len + h.payload].to_vec();
                        self.buf.drain(..h.len + h.payload);
                        unmask(&mut p, h.mask.expect("client frames are masked"));
                        if h.rsv1 {
                            p = inflate_message(&mut self.inflater, &p, LIMIT).unwrap();
                        }
                        return (h.rsv1, p);
                    }
                }
                let mut chunk = [0u8; 65536];
                let n = self.io.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the client closed");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        /// Sends `text` compressed, split into `parts` frames.
        async fn send_compressed(&mut self, text: &str, parts: usize) {
            let packed = deflate_message(&mut self.deflater, text.as_bytes()).unwrap();
            if self.no_takeover {
                self.deflater.reset();
            }
            let size = packed.len().div_ceil(parts);
            let mut out = Vec::new();
            for (i, part) in packed.chunks(size).enumerate() {
                let last = (i + 1) * size >= packed.len();
                let opcode = if i == 0 { 1 } else { 0 };
                out.push(if last { 0x80 } else { 0 } | if i == 0 { 0x40 } else { 0 } | opcode);
                out.push(126);
                out.extend_from_slice(&(part.len() as u16).to_be_bytes());
                out.extend_from_slice(part);
            }
            self.io.write_all(&out).await.unwrap();
        }
    }

    async fn client(io: DuplexStream, counters: &Arc<WireCounters>) -> WebSocketStream<Deflate<DuplexStream>> {
        let mut req = "ws://relay.test/".into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Extensions", HeaderValue::from_static(OFFER));
        let (ws, _) = tokio_tungstenite::client_async(req, Deflate::new(io, LIMIT)).await.unwrap();
        ws.get_ref().attach(counters.clone());
        ws
    }

    fn filter_text(i: usize) -> String {
        let ids: Vec<String> =
            (0..100).map(|j| format!("{:064x}", (i * 1000 + j) as u128 * 0x9e37_79b9_7f4a_7c15)).collect();
        let ids = format!("{ids:?}");
        format!(r##"["REQ","s{i}",{{"#e":{ids}}},{{"#E":{ids}}},{{"#q":{ids}}}]"##)
    }

    #[tokio::test]
    async fn messages_cross_compressed_both_ways_when_the_relay_accepts_deflate() {
        for ext in [
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=12",
        ] {
            let (a, b) = tokio::io::duplex(1 << 16);
            let counters = Arc::new(WireCounters::default());
            let relay = tokio::spawn(async move {
                let (mut relay, head) = Relay::accept(b, Some(ext)).await;
                assert!(head.contains("permessage-deflate"), "offered: {head}");
                let mut got = Vec::new();
                for _ in 0..3 {
                    got.push(relay.frame().await);
                }
                relay.send_compressed(r#"["NOTICE","hello hello hello hello"]"#, 1).await;
                relay.send_compressed(&format!(r#"["NOTICE","{}"]"#, "x".repeat(70_000)), 3).await;
                relay.io.write_all(&[0x89, 0x00]).await.unwrap(); // a ping between messages
                relay.send_compressed(r#"["EOSE","s0"]"#, 1).await;
                let pong = relay.frame().await;
                (got, pong, relay)
            });
            let mut ws = client(a, &counters).await;
            assert!(ws.get_ref().agreed().is_some(), "{ext}");
            for i in 0..3 {
                ws.send(Message::text(filter_text(i))).await.unwrap();
            }
            let mut texts = Vec::new();
            while texts.len() < 3 {
                match ws.next().await.unwrap().unwrap() {
                    Message::Text(t) => texts.push(t.to_string()),
                    _ => continue,
                }
            }
            let (got, _pong, _relay) = relay.await.unwrap();
            for (i, (rsv1, text)) in got.into_iter().enumerate() {
                assert!(rsv1, "{ext}: sent compressed");
                assert_eq!(String::from_utf8(text).unwrap(), filter_text(i), "{ext}");
            }
            assert_eq!(texts[0], r#"["NOTICE","hello hello hello hello"]"#);
            assert_eq!(texts[1].len(), 70_000 + r#"["NOTICE",""]"#.len(), "{ext}: three fragments, one message");
            assert_eq!(texts[2], r#"["EOSE","s0"]"#);
            let plain_out = counters.deflated_plain_out.load(Ordering::Relaxed);
            let wire_out = counters.deflated_wire_out.load(Ordering::Relaxed);
            assert_eq!(plain_out, (0..3).map(|i| filter_text(i).len() as u64).sum::<u64>());
            assert!(wire_out * 2 < plain_out, "{ext}: {wire_out} of {plain_out}");
            assert!(counters.deflated_wire_in.load(Ordering::Relaxed) < 1_000, "{ext}");
        }
    }

    #[tokio::test]
    async fn a_relay_that_declines_gets_plain_frames() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let relay = tokio::spawn(async move {
            let (mut relay, _) = Relay::accept(b, None).await;
            relay.io.write_all(&[0x81, 0x05]).await.unwrap();
            relay.io.write_all(b"hello").await.unwrap();
            relay.frame().await
        });
        let counters = Arc::new(WireCounters::default());
        let mut ws = client(a, &counters).await;
        assert_eq!(ws.get_ref().agreed(), None);
        ws.send(Message::text(filter_text(0))).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        let (rsv1, text) = relay.await.unwrap();
        assert!(!rsv1);
        assert_eq!(String::from_utf8(text).unwrap(), filter_text(0));
        assert_eq!(counters.deflated_plain_out.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_message_that_inflates_past_the_limit_ends_the_connection() {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let (mut relay, _) = Relay::accept(b, Some("permessage-deflate")).await;
            // 2 MB of zeros deflate to about 2 kB.
            relay.send_compressed(&"0".repeat(2_000_000), 1).await;
            let _ = relay.io.read(&mut [0u8; 16]).await;
        });
        let mut req = "ws://relay.test/".into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Extensions", HeaderValue::from_static(OFFER));
        // The bomb may arrive with the handshake response (then the handshake fails) or after it.
        if let Ok((mut ws, _)) = tokio_tungstenite::client_async(req, Deflate::new(a, LIMIT)).await {
            let got = ws.next().await;
            assert!(matches!(got, Some(Err(_)) | None), "{got:?}");
        }
    }

    #[test]
    fn the_relays_answer_decides_what_is_compressed() {
        let a = |s: &str| negotiate([s]);
        assert_eq!(a("").unwrap(), None);
        assert_eq!(a("x-webkit-deflate-frame").unwrap(), None);
        let plain = Agreed { server_no_context_takeover: false, client_no_context_takeover: false, compress_out: true };
        assert_eq!(a("permessage-deflate").unwrap(), Some(plain));
        assert_eq!(a("foo, Permessage-Deflate ; server_max_window_bits=10").unwrap(), Some(plain));
        let both = a("permessage-deflate; server_no_context_takeover; client_no_context_takeover").unwrap().unwrap();
        assert!(both.server_no_context_takeover && both.client_no_context_takeover);
        assert!(!a("permessage-deflate; client_max_window_bits=10").unwrap().unwrap().compress_out);
        assert!(a("permessage-deflate; client_max_window_bits=15").unwrap().unwrap().compress_out);
        assert!(a("permessage-deflate; mystery").is_err(), "an unknown parameter fails the handshake");
    }
}
