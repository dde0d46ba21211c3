//! strfry writePolicy plugin: one JSON request line in, one JSON answer line out, in order.
//!
//! strfry blocks its single writer thread on every answer and kills the plugin on any protocol
//! error, so this loop never panics on input, never exits on a bad line, and answers fast.
//! Protocol notes: `plugin-spec/README.md`.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::policy::{AcceptedSet, Facts, Note, Policy, Verdict};

/// Lines longer than this are read to their end but only this much is kept (for id recovery).
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// strfry refuses answer lines over 8192 bytes; keep messages far below that.
pub const MAX_MSG_BYTES: usize = 512;
/// strfry's limit on one answer line (newline included). An answer that would be longer (only an
/// absurd event id can make it so) is not sent: strfry would kill the plugin for it.
pub const MAX_ANSWER_BYTES: usize = 8192;
/// Longest event id answered (strfry's ids are 64 hex characters); a line whose id is longer or
/// empty cannot be answered.
pub const MAX_ANSWER_ID_BYTES: usize = 128;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "type")]
    kind: String,
    event: Note,
}

/// One answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    pub action: Action,
    pub msg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Accept,
    Reject,
    ShadowReject,
}

/// Counters kept over the plugin's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    pub rejected: u64,
    /// Requests answered with a reject because the line or event was malformed.
    pub malformed: u64,
    /// Lines that could not be answered at all (no id could be read).
    pub unanswerable: u64,
}

/// The plugin's decision state: the policy and the accepted view it keeps up to date.
#[derive(Debug)]
pub struct Plugin {
    policy: Policy,
    view: AcceptedSet,
    pub stats: Stats,
}

impl Plugin {
    pub fn new(policy: Policy, view: AcceptedSet) -> Self {
        Plugin { policy, view, stats: Stats::default() }
    }

    pub fn view(&self) -> &AcceptedSet {
        &self.view
    }

    /// Handles one request line. `None` when no event id can be read from it.
    pub fn handle_line(&mut self, line: &[u8]) -> Option<Answer> {
        let line = trim_ascii(line);
        // A request is a JSON object; serde would also read a struct from an array.
        let parsed = match line.first() {
            Some(b'{') => serde_json::from_slice::<Request>(line),
            _ => Err(serde::de::Error::custom("request is not a JSON object")),
        };
        match parsed {
            Ok(req) if answerable_id(&req.event.id) => Some(self.handle_request(req)),
            Ok(req) => {
                self.stats.unanswerable += 1;
                tracing::error!(
                    id_bytes = req.event.id.len(),
                    "plugin: request with an empty or overlong event id; not answered"
                );
                None
            }
            Err(e) => {
                let Some(id) = recover_id(line) else {
                    self.stats.unanswerable += 1;
                    tracing::error!(error = %e, bytes = line.len(), "plugin: cannot read an event id from request line; not answered");
                    return None;
                };
                self.stats.malformed += 1;
                tracing::warn!(error = %e, id = %id, "plugin: malformed request");
                Some(reject(id, format!("blocked: malformed request: {e}")))
            }
        }
    }

    /// A line longer than [`MAX_LINE_BYTES`]: rejected by id when the id can be found.
    fn handle_oversized(&mut self, kept: &[u8], read: LineRead) -> Option<Answer> {
        let Some(id) = recover_id(kept).or(read.overflow_id) else {
            self.stats.unanswerable += 1;
            tracing::error!(
                bytes = read.total,
                "plugin: oversized request line without a readable event id; not answered"
            );
            return None;
        };
        self.stats.malformed += 1;
        tracing::warn!(bytes = read.total, id = %id, "plugin: oversized request");
        Some(reject(id, format!("blocked: malformed request: line of {} bytes exceeds {MAX_LINE_BYTES}", read.total)))
    }

    fn handle_request(&mut self, req: Request) -> Answer {
        let id = req.event.id.clone();
        if req.kind != "new" {
            self.stats.malformed += 1;
            return reject(id, format!("blocked: unsupported request type `{}`", req.kind));
        }
        let facts = match Facts::from_note(&req.event) {
            Ok(f) => f,
            Err(e) => {
                self.stats.malformed += 1;
                return reject(id, format!("invalid: {e}"));
            }
        };
        match self.policy.decide_and_record(&mut self.view, &facts) {
            Verdict::Accept(reason) => {
                self.stats.accepted += 1;
                tracing::debug!(id = %id, kind = facts.kind, ?reason, "plugin: accept");
                Answer { id, action: Action::Accept, msg: String::new() }
            }
            Verdict::Reject(msg) => {
                self.stats.rejected += 1;
                tracing::debug!(id = %id, kind = facts.kind, %msg, "plugin: reject");
                reject(id, msg)
            }
        }
    }
}

fn reject(id: String, msg: String) -> Answer {
    Answer { id, action: Action::Reject, msg: bound(msg) }
}

fn bound(mut msg: String) -> String {
    if msg.len() > MAX_MSG_BYTES {
        let mut cut = MAX_MSG_BYTES - 3;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push_str("...");
    }
    msg
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest
        } else {
            break;
        }
    }
    s
}

/// Whether an answer can carry this id: strfry's ids are 64 hex characters, so an empty or
/// absurdly long one cannot be echoed back usefully.
fn answerable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ANSWER_ID_BYTES
}

/// Finds the event id in a line that is not a valid request. strfry writes the event's keys
/// unescaped, so the first `"id":"<64 hex>"` is the event's id (quotes inside strings are escaped).
fn recover_id(line: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
        let id = v.get("event")?.get("id")?.as_str()?;
        return answerable_id(id).then(|| id.to_string());
    }
    scan_id(line)
}

/// The first `"id":"<64 hex>"` in raw bytes.
fn scan_id(line: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"id\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let hex = line.get(at..at + 64)?;
    (hex.iter().all(u8::is_ascii_hexdigit) && line.get(at + 64) == Some(&b'"'))
        .then(|| String::from_utf8_lossy(hex).into_owned())
}

/// What [`read_line_capped`] saw of one line.
#[derive(Debug, Default, PartialEq, Eq)]
struct LineRead {
    /// Bytes in the whole line, newline included.
    total: usize,
    /// For a line longer than the cap: the event id found in the part that was not kept.
    overflow_id: Option<String>,
}

/// Reads one line, keeping at most `cap` bytes in `buf`; the rest of a longer line is consumed
/// and scanned for the event id so that even an oversized request gets its answer.
/// Returns `Ok(None)` at end of input.
fn read_line_capped(input: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<Option<LineRead>> {
    const KEY_AND_ID: usize = 6 + 64 + 1; // "id":" + hex + "
    buf.clear();
    let mut seen = LineRead::default();
    let mut carry: Vec<u8> = Vec::new();
    let mut prefix_has_id = None;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((seen.total > 0).then_some(seen));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        let scan_overflow =
            take > room && seen.overflow_id.is_none() && !*prefix_has_id.get_or_insert_with(|| scan_id(buf).is_some());
        if scan_overflow {
            // Scan the dropped part, with a little carry-over so an id split across reads is found.
            carry.extend_from_slice(&chunk[room.min(take)..take]);
            seen.overflow_id = scan_id(&carry);
            let keep = carry.len().min(KEY_AND_ID);
            carry.drain(..carry.len() - keep);
        }
        seen.total += take;
        input.consume(take);
        if done {
            return Ok(Some(seen));
        }
    }
}

/// Runs the request loop until end of input. Each answer is written and flushed before the next
/// line is read.
pub fn run(plugin: &mut Plugin, mut input: impl BufRead, mut output: impl Write) -> io::Result<Stats> {
    let mut line = Vec::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(1024);
    while let Some(read) = read_line_capped(&mut input, &mut line, MAX_LINE_BYTES)? {
        if trim_ascii(&line).is_empty() {
            continue;
        }
        let answer =
            if read.total > MAX_LINE_BYTES { plugin.handle_oversized(&line, read) } else { plugin.handle_line(&line) };
        if let Some(answer) = answer {
            out.clear();
            serde_json::to_writer(&mut out, &answer).map_err(io::Error::other)?;
            out.push(b'\n');
            if out.len() > MAX_ANSWER_BYTES {
                plugin.stats.unanswerable += 1;
                tracing::error!(
                    id_bytes = answer.id.len(),
                    "plugin: the event id is too long to echo in an answer strfry accepts; not answered"
                );
                continue;
            }
            output.write_all(&out)?;
            output.flush()?;
        }
    }
    Ok(plugin.stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RelayUrl;

    fn plugin() -> Plugin {
        Plugin::new(Policy::new(RelayUrl::parse("wss://grasp.example.com").unwrap(), false), AcceptedSet::new())
    }

    #[test]
    fn recovers_id_from_truncated_line() {
        let id = "ab".repeat(32);
        let line = format!(r#"{{"event":{{"content":"x","created_at":1,"id":"{id}","kind":1,"pub"#);
        assert_eq!(recover_id(line.as_bytes()), Some(id));
        assert_eq!(recover_id(b"garbage"), None);
        let escaped = format!(r#"{{"event":{{"content":"\"id\":\"{}\"","#, "cd".repeat(32));
        assert_eq!(recover_id(escaped.as_bytes()), None, "escaped quotes inside content are not keys");
    }

    #[test]
    fn long_lines_are_capped_but_fully_consumed() {
        let mut data = vec![b'x'; 100];
        data.push(b'\n');
        data.extend_from_slice(b"next\n");
        let mut input = io::Cursor::new(data);
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut input, &mut buf, 10).unwrap().unwrap().total, 101);
        assert_eq!(buf.len(), 10);
        assert_eq!(read_line_capped(&mut input, &mut buf, 10).unwrap().unwrap().total, 5);
        assert_eq!(buf, b"next\n");
        assert_eq!(read_line_capped(&mut input, &mut buf, 10).unwrap(), None);
    }

    #[test]
    fn id_beyond_the_kept_prefix_is_found_across_read_boundaries() {
        let id = "ef".repeat(32);
        let line = format!(
            "{{\"event\":{{\"content\":\"{}\",\"created_at\":1,\"id\":\"{id}\",\"kind\":1}}}}\n",
            "c".repeat(5000)
        );
        // A tiny BufReader capacity splits the id across fill_buf calls.
        let mut input = io::BufReader::with_capacity(7, io::Cursor::new(line.into_bytes()));
        let mut buf = Vec::new();
        let read = read_line_capped(&mut input, &mut buf, 100).unwrap().unwrap();
        assert_eq!(read.overflow_id, Some(id));
    }

    #[test]
    fn long_reject_messages_are_bounded() {
        let a = reject("x".into(), "é".repeat(1000));
        assert!(a.msg.len() <= MAX_MSG_BYTES && a.msg.ends_with("..."));
    }

    #[test]
    fn answers_strfry_would_refuse_for_their_length_are_not_sent() {
        let mut p = plugin();
        let mut out = Vec::new();
        let long_id = format!("{{\"type\":\"new\",\"event\":{{\"id\":\"{}\"}}}}\n", "a".repeat(9000));
        let stats = run(&mut p, io::Cursor::new(long_id.into_bytes()), &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(stats.unanswerable, 1);
    }

    #[test]
    fn a_request_in_array_form_is_not_read_as_a_request() {
        let id = "ab".repeat(32);
        let event = format!(
            r#"{{"id":"{id}","pubkey":"{id}","created_at":1,"kind":1,"tags":[],"content":"","sig":"{}"}}"#,
            "cd".repeat(64)
        );
        let mut p = plugin();
        assert_eq!(p.handle_line(format!(r#"["new",{event}]"#).as_bytes()), None);
        assert_eq!(p.stats.unanswerable, 1);
        let answer = p.handle_line(format!(r#"{{"type":"new","event":{event}}}"#).as_bytes()).unwrap();
        assert_eq!(answer.id, id);
    }

    #[test]
    fn blank_lines_are_skipped_and_garbage_is_not_answered() {
        let mut p = plugin();
        let mut out = Vec::new();
        let stats = run(&mut p, io::Cursor::new(b"\n   \nnot json\n".to_vec()), &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(stats.unanswerable, 1);
    }
}
