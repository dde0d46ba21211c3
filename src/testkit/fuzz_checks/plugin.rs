//! The writePolicy plugin's request handling, line by line, against a view that already holds an
//! accepted repository (so the accept paths are reachable).
//!
//! Input: any bytes, split into lines at `\n`. Every non-blank line is handled as strfry would
//! send it; when a line holds an event whose id does not match its content, the same line with
//! the true id is handled right after it, so mutated events still reach the policy.
//!
//! Invariants per line: exactly one counter moves; an answer is given exactly when the line is an
//! object whose `event.id` is a usable id (or, for lines that are not JSON, when a 64-hex
//! `"id":"…"` can be found), and it carries that id; the answer line fits strfry's 8192-byte limit
//! and reads back unchanged; accepts carry no message and only ever go to events whose id checks;
//! rejects carry a bounded `blocked:`/`invalid:` message. Over the whole input, [`run`] over the
//! same stream writes exactly the answers given line by line.

use serde_json::Value;

use crate::host::plugin::{run, Action, Answer, Plugin, MAX_ANSWER_ID_BYTES, MAX_MSG_BYTES};
use crate::policy::event::parse_hex32;
use crate::policy::{AcceptedSet, AcceptedView, Facts, Note, Policy, RelayUrl};

/// strfry refuses plugin answer lines longer than this (newline included).
pub const STRFRY_MAX_ANSWER_LINE: usize = 8192;

pub const SERVICE: &str = "wss://grasp.example.com";
/// Owner of the accepted repository `alpha` (same keys as the shared fixtures).
pub const ALICE: &str = "9997a497d964fc1a62885b05a51166a65a90df00492c8d7cf61d6accf54803be";
/// Named maintainer of `alpha`.
pub const BOB: &str = "4edfcf9dfe6c0b5c83d1ab3f78d1b39a46ebac6798e08e19761f5ed89ec83c10";
const CAROL: &str = "9094567ba7245794198952f68e5723ac5866ad2f67dd97223db40e14c15b092e";
const ANN_ALPHA: &str = "bb1559f4528118fa12233b1eb90ba9dd1b182e906ec9c0f26a5cfd3354d2b9dd";
/// An accepted issue on `alpha`: events that reference it are accepted.
pub const ISSUE_ALPHA: &str = "81f260ee203847626f386c42e476daf16df38b20cc0ac493c4d11a3e34c597c0";
/// An id the accepted issue references: that event is accepted when it arrives.
pub const REFERENCED: &str = "9aaabba973c55541c3020c9f125289e6aa7d31830f7587aee2a4606a00c9f3c7";

fn hex32(s: &str) -> [u8; 32] {
    parse_hex32(s).expect("constant is 64 hex")
}

fn tags(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter().map(|r| r.iter().map(|s| s.to_string()).collect()).collect()
}

/// A plugin for [`SERVICE`] whose view holds Alice's `alpha` announcement (listing the service,
/// naming Bob as maintainer) and an issue on it.
pub fn seeded_plugin() -> Plugin {
    let policy = Policy::new(RelayUrl::parse(SERVICE).expect("service URL"), false);
    let mut view = AcceptedSet::new();
    let ann_tags = tags(&[&["d", "alpha"], &["relays", SERVICE, "wss://r1.example.com"], &["maintainers", BOB]]);
    view.record(&Facts::from_parts(hex32(ANN_ALPHA), hex32(ALICE), 30617, 1_795_000_000, &ann_tags), true);
    let coord = format!("30617:{ALICE}:alpha");
    let issue_tags = tags(&[&["a", &coord], &["e", REFERENCED]]);
    view.record(&Facts::from_parts(hex32(ISSUE_ALPHA), hex32(CAROL), 1621, 1_795_000_100, &issue_tags), false);
    Plugin::new(policy, view)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// What the answer to one line must look like, judged without the plugin's own code.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// A JSON object: answered exactly when `event.id` is a usable id, with that id.
    Id(Option<String>),
    /// Not strict JSON (say, invalid UTF-8 inside a field no one reads) but an object whose
    /// `event.id` reads: unanswered, or answered with that id.
    MaybeId(String),
    /// Not JSON: at most a 64-hex `"id":"…"` found in the raw line.
    Scanned,
}

/// Reads only `event.id`, skipping everything else without validating it (as a serde struct does).
#[derive(serde::Deserialize)]
struct Probe {
    event: ProbeEvent,
}

#[derive(serde::Deserialize)]
struct ProbeEvent {
    id: String,
}

/// The lenient shape the plugin reads a request with.
#[derive(serde::Deserialize)]
struct ProbeRequest {
    #[serde(rename = "type")]
    kind: String,
    event: Note,
}

fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ANSWER_ID_BYTES
}

fn expected(line: &[u8]) -> Expect {
    let line = line.trim_ascii();
    if let Ok(v) = serde_json::from_slice::<Value>(line) {
        let id = v.as_object().and_then(|o| o.get("event")).and_then(|e| e.get("id")).and_then(Value::as_str);
        return Expect::Id(id.filter(|id| usable(id)).map(str::to_string));
    }
    match serde_json::from_slice::<Probe>(line) {
        Ok(p) if line.first() == Some(&b'{') && usable(&p.event.id) => Expect::MaybeId(p.event.id),
        _ => Expect::Scanned,
    }
}

/// The same line with `event.id` replaced by the hash of the event, when that changes anything.
fn with_true_id(line: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(line).ok()?;
    let event = v.as_object_mut()?.get_mut("event")?;
    let note: Note = serde_json::from_value(event.clone()).ok()?;
    let id = hex::encode(note.compute_id());
    if note.id == id {
        return None;
    }
    event.as_object_mut()?.insert("id".into(), Value::String(id));
    serde_json::to_vec(&v).ok()
}

fn check_line(plugin: &mut Plugin, line: &[u8], answers: &mut Vec<u8>) {
    let before = plugin.stats;
    let answer = plugin.handle_line(line);
    let after = plugin.stats;
    let moved = [
        after.accepted - before.accepted,
        after.rejected - before.rejected,
        after.malformed - before.malformed,
        after.unanswerable - before.unanswerable,
    ];
    assert_eq!(moved.iter().sum::<u64>(), 1, "exactly one counter per line: {moved:?}");
    assert_eq!(answer.is_none(), moved[3] == 1, "unanswerable is counted exactly when no answer is given");

    match expected(line) {
        Expect::Id(id) => assert_eq!(answer.as_ref().map(|a| &a.id), id.as_ref(), "answer id"),
        Expect::MaybeId(id) => {
            if let Some(a) = &answer {
                assert_eq!(a.id, id, "answer id");
            }
        }
        Expect::Scanned => {
            if let Some(a) = &answer {
                assert!(parse_hex32(&a.id.to_ascii_lowercase()).is_some(), "id scanned from a non-JSON line is 64 hex");
                let key = format!("\"id\":\"{}\"", a.id);
                assert!(line.windows(key.len()).any(|w| w == key.as_bytes()), "scanned id occurs in the line");
            }
        }
    }
    let Some(answer) = answer else { return };

    let mut out = serde_json::to_vec(&answer).expect("answer serialises");
    out.push(b'\n');
    assert!(out.len() <= STRFRY_MAX_ANSWER_LINE, "answer line of {} bytes", out.len());
    let back: Answer = serde_json::from_slice(&out).expect("answer line reads back");
    assert_eq!(back, answer);
    answers.extend_from_slice(&out);

    match answer.action {
        Action::Accept => {
            assert!(answer.msg.is_empty(), "accepts carry no message");
            let req: ProbeRequest = serde_json::from_slice(line.trim_ascii()).expect("accepted line is a request");
            assert_eq!(req.kind, "new");
            let id = req.event.check().expect("accepted event's id checks");
            assert!(plugin.view().has_event(&id), "accepted event is recorded in the view");
        }
        Action::Reject | Action::ShadowReject => {
            assert!(answer.msg.len() <= MAX_MSG_BYTES, "reject message of {} bytes", answer.msg.len());
            assert!(
                answer.msg.starts_with("blocked:") || answer.msg.starts_with("invalid:"),
                "reject message prefix: {:?}",
                answer.msg
            );
        }
    }
}

/// Fuzz entry point (see the module docs).
pub fn check(data: &[u8]) {
    let mut plugin = seeded_plugin();
    let mut answers = Vec::new();
    let mut stream = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        if is_blank(line) {
            continue;
        }
        let fixed = with_true_id(line);
        for l in std::iter::once(line).chain(fixed.as_deref()) {
            check_line(&mut plugin, l, &mut answers);
            stream.extend_from_slice(l);
            stream.push(b'\n');
        }
    }
    let mut again = seeded_plugin();
    let mut out = Vec::new();
    let stats = run(&mut again, std::io::Cursor::new(stream), &mut out).expect("in-memory I/O");
    assert_eq!(stats, plugin.stats, "the request loop counts as the line handler does");
    assert_eq!(out, answers, "the request loop writes the answers the line handler gives");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_lines() -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/plugin-input.jsonl")).unwrap()
    }

    #[test]
    fn seeded_view_accepts_events_on_the_seeded_repository() {
        let mut p = seeded_plugin();
        let text = String::from_utf8(fixture_lines()).unwrap();
        let issue = text.lines().find(|l| l.contains(ISSUE_ALPHA)).unwrap();
        assert_eq!(p.handle_line(issue.as_bytes()).unwrap().action, Action::Accept);
        assert!(p.view().has_event(&hex32(ISSUE_ALPHA)));
    }

    #[test]
    fn fixture_lines_pass_the_plugin_checks() {
        check(&fixture_lines());
    }

    #[test]
    fn a_tampered_event_is_also_tried_with_its_true_id() {
        let text = String::from_utf8(fixture_lines()).unwrap();
        let line = text.lines().next().unwrap().replace("repo alpha", "repo alpha!");
        let fixed = with_true_id(line.as_bytes()).expect("id changes");
        let mut p = seeded_plugin();
        assert_eq!(p.handle_line(line.as_bytes()).unwrap().action, Action::Reject);
        assert_eq!(p.handle_line(&fixed).unwrap().action, Action::Accept);
    }
}
