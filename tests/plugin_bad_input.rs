//! Bad input never kills the plugin: each bad request gets a reject for its id when one can be
//! read, the loop continues, and good requests after it are answered correctly.

mod support;

use std::time::Duration;

use grasp_sync::policy::Note;
use serde_json::{json, Value};
use support::*;

const ALICE: &str = "9997a497d964fc1a62885b05a51166a65a90df00492c8d7cf61d6accf54803be";

/// A plugin with Alice's `alpha` announcement already accepted.
fn seeded() -> (tempfile::TempDir, PluginProc) {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = PluginProc::start(&write_config(dir.path(), ""));
    let first =
        std::fs::read_to_string(format!("{FIXTURES}/plugin-input.jsonl")).unwrap().lines().next().unwrap().to_string();
    assert_eq!(plugin.ask(first.as_bytes())["action"], "accept");
    (dir, plugin)
}

/// An event with a correct id (signatures are strfry's job and are not checked by the plugin).
fn event(kind: u64, tags: Vec<Vec<String>>, content: &str) -> Note {
    let mut n = Note {
        id: String::new(),
        pubkey: "9094567ba7245794198952f68e5723ac5866ad2f67dd97223db40e14c15b092e".into(),
        created_at: 1_795_000_100,
        kind,
        tags,
        content: content.into(),
        sig: "ab".repeat(64),
    };
    n.id = hex::encode(n.compute_id());
    n
}

fn request(ev: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"type": "new", "event": ev, "receivedAt": 1, "sourceType": "IP4", "sourceInfo": "127.0.0.1"}),
    )
    .unwrap()
}

fn alpha_tag() -> Vec<String> {
    vec!["a".into(), format!("30617:{ALICE}:alpha")]
}

fn assert_reject(answer: &Value, id: &str, msg_start: &str) {
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(answer["action"], "reject", "{answer}");
    assert!(answer["msg"].as_str().unwrap().starts_with(msg_start), "{answer}");
}

/// After any bad line the plugin still answers a good request correctly.
fn assert_still_deciding(plugin: &mut PluginProc) {
    let good = event(1621, vec![alpha_tag()], "still alive");
    let answer = plugin.ask(&request(&good));
    assert_eq!(answer["id"], good.id.as_str());
    assert_eq!(answer["action"], "accept");
}

#[test]
fn lines_that_are_not_json_get_no_answer_and_the_loop_continues() {
    let (_dir, mut plugin) = seeded();
    for bad in [&b"not json at all"[..], b"{}", b"[1,2,3]", b"\xff\xfe\x00garbage", b"{\"type\":\"new\"}"] {
        plugin.send(bad);
        assert!(plugin.no_answer_within(Duration::from_millis(200)), "{}", String::from_utf8_lossy(bad));
        assert_still_deciding(&mut plugin);
    }
    assert!(plugin.finish().success());
}

#[test]
fn requests_with_missing_or_mistyped_fields_are_rejected_by_id() {
    let (_dir, mut plugin) = seeded();
    let good = serde_json::to_value(event(1621, vec![alpha_tag()], "x")).unwrap();
    let id = good["id"].as_str().unwrap().to_string();
    let mut no_sig = good.clone();
    no_sig.as_object_mut().unwrap().remove("sig");
    let mut kind_string = good.clone();
    kind_string["kind"] = json!("1621");
    let mut no_tags = good.clone();
    no_tags.as_object_mut().unwrap().remove("tags");
    for ev in [no_sig, kind_string, no_tags] {
        assert_reject(&plugin.ask(&request(&ev)), &id, "blocked: malformed request");
    }
    let no_type = serde_json::to_vec(&json!({"event": good})).unwrap();
    assert_reject(&plugin.ask(&no_type), &id, "blocked: malformed request");
    assert_still_deciding(&mut plugin);
}

#[test]
fn tampered_event_is_rejected_as_invalid() {
    let (_dir, mut plugin) = seeded();
    let mut ev = event(1621, vec![alpha_tag()], "original");
    ev.content = "tampered".into();
    assert_reject(&plugin.ask(&request(&ev)), &ev.id, "invalid: id does not match");
    let mut upper = event(1621, vec![alpha_tag()], "upper");
    upper.id = upper.id.to_uppercase();
    assert_reject(&plugin.ask(&request(&upper)), &upper.id, "invalid:");
    assert_still_deciding(&mut plugin);
}

#[test]
fn unknown_request_type_is_rejected() {
    let (_dir, mut plugin) = seeded();
    let ev = event(1621, vec![alpha_tag()], "x");
    let line = serde_json::to_vec(&json!({"type": "lookback", "event": ev})).unwrap();
    assert_reject(&plugin.ask(&line), &ev.id, "blocked: unsupported request type");
    assert_still_deciding(&mut plugin);
}

#[test]
fn unknown_kinds_follow_the_reference_rule() {
    let (_dir, mut plugin) = seeded();
    let related = event(39999, vec![alpha_tag()], "unknown kind about alpha");
    assert_eq!(plugin.ask(&request(&related))["action"], "accept");
    let unrelated = event(39999, vec![], "unknown kind about nothing");
    assert_reject(&plugin.ask(&request(&unrelated)), &unrelated.id, "blocked:");
}

#[test]
fn events_missing_the_tags_their_kind_needs_are_rejected() {
    let (_dir, mut plugin) = seeded();
    let ann_without_d = event(30617, vec![vec!["relays".into(), SERVICE.into()]], "");
    assert_reject(
        &plugin.ask(&request(&ann_without_d)),
        &ann_without_d.id,
        "blocked: repository announcement has no d tag",
    );
    let state_without_d = event(30618, vec![], "");
    assert_reject(&plugin.ask(&request(&state_without_d)), &state_without_d.id, "blocked:");
    let issue_without_tags = event(1621, vec![], "");
    assert_reject(&plugin.ask(&request(&issue_without_tags)), &issue_without_tags.id, "blocked:");
    let empty_tag = event(1621, vec![vec![], vec!["a".into()]], "");
    assert_reject(&plugin.ask(&request(&empty_tag)), &empty_tag.id, "blocked:");
    assert_still_deciding(&mut plugin);
}

#[test]
fn event_with_ten_thousand_tags_is_decided() {
    let (_dir, mut plugin) = seeded();
    let mut tags: Vec<Vec<String>> = (0..10_000).map(|i| vec!["t".into(), format!("topic{i}")]).collect();
    tags.insert(0, alpha_tag());
    let ev = event(1621, tags, "many tags");
    let answer = plugin.ask(&request(&ev));
    assert_eq!((answer["id"].as_str().unwrap(), answer["action"].as_str().unwrap()), (ev.id.as_str(), "accept"));
    let refs: Vec<Vec<String>> = (0..10_000).map(|i| vec!["e".into(), format!("{i:064x}")]).collect();
    let unrelated = event(1621, refs, "many refs to nothing");
    assert_reject(&plugin.ask(&request(&unrelated)), &unrelated.id, "blocked:");
    assert_still_deciding(&mut plugin);
}

#[test]
fn megabyte_lines_are_answered_or_skipped_without_dying() {
    let (_dir, mut plugin) = seeded();
    // A valid 1 MB event about alpha is decided on its merits.
    let big = event(1621, vec![alpha_tag()], &"x".repeat(1 << 20));
    assert_eq!(plugin.ask(&request(&big))["action"], "accept");
    // 1 MB of garbage: nothing to answer, nothing to die of.
    plugin.send(&vec![b'z'; 1 << 20]);
    assert!(plugin.no_answer_within(Duration::from_millis(300)));
    assert_still_deciding(&mut plugin);
    // A 1 MB request cut short: the id is still readable, so strfry gets its answer.
    let ev = event(1621, vec![alpha_tag()], &"y".repeat(1 << 20));
    let full = String::from_utf8(request(&ev)).unwrap();
    let cut = &full[..full.len() - 100];
    assert_reject(&plugin.ask(cut.as_bytes()), &ev.id, "blocked: malformed request");
    // Longer than the plugin keeps in memory (4 MiB): still read to its end, still answered.
    let huge = event(1621, vec![alpha_tag()], &"w".repeat(5 << 20));
    assert_reject(&plugin.ask(&request(&huge)), &huge.id, "blocked: malformed request");
    assert_still_deciding(&mut plugin);
    assert!(plugin.finish().success());
}

/// What the plugin must do with one line.
enum Expect {
    /// No answer: the line carries no event id the plugin could echo back.
    Nothing,
    /// A reject for this id, with a message starting so.
    Reject(String, &'static str),
    Accept(String),
}

/// A request line as strfry writes it, with `bad` bytes put in place of the `_` in the content.
fn request_with_raw_content(bad: &[u8]) -> (String, Vec<u8>) {
    let ev = event(1621, vec![alpha_tag()], "before_after");
    let line = request(&ev);
    let at = line.windows(12).position(|w| w == b"before_after").unwrap() + 6;
    let mut out = line[..at].to_vec();
    out.extend_from_slice(bad);
    out.extend_from_slice(&line[at + 1..]);
    (ev.id, out)
}

#[test]
fn malformed_lines_between_valid_requests_get_exactly_the_answers_they_can() {
    let (_dir, mut plugin) = seeded();
    let mut cases: Vec<(&str, Vec<u8>, Expect)> = Vec::new();

    let cut = event(1621, vec![alpha_tag()], "cut short");
    let full = request(&cut);
    cases.push((
        "truncated JSON with its id",
        full[..full.len() - 40].to_vec(),
        Expect::Reject(cut.id.clone(), "blocked: malformed request"),
    ));
    cases.push(("truncated before the id", full[..30].to_vec(), Expect::Nothing));
    let (id, line) = request_with_raw_content(b"\0\0");
    cases.push(("NUL bytes inside a request", line, Expect::Reject(id, "blocked: malformed request")));
    cases.push(("a line of NUL bytes", vec![0u8; 64], Expect::Nothing));
    let (id, line) = request_with_raw_content(b"\xff\xc3\x28");
    cases.push(("invalid UTF-8 inside a request", line, Expect::Reject(id, "blocked: malformed request")));
    cases.push(("a 5 MB line without an id", vec![b'q'; 5 << 20], Expect::Nothing));
    cases.push(("an empty line", Vec::new(), Expect::Nothing));
    cases.push(("whitespace only", b" \t \r".to_vec(), Expect::Nothing));
    let crlf = event(1621, vec![alpha_tag()], "windows line ending");
    let mut line = request(&crlf);
    line.push(b'\r');
    cases.push(("a request ending in CR LF", line, Expect::Accept(crlf.id.clone())));
    let arr = event(1621, vec![alpha_tag()], "in an array");
    cases.push((
        "a JSON array holding the event",
        serde_json::to_vec(&json!(["EVENT", arr])).unwrap(),
        Expect::Nothing,
    ));
    cases.push((
        "a JSON array holding a request",
        serde_json::to_vec(&json!([json!({"type": "new", "event": arr})])).unwrap(),
        Expect::Nothing,
    ));
    let mut not_hex = serde_json::to_value(event(1621, vec![alpha_tag()], "not hex")).unwrap();
    not_hex["id"] = json!("zz".repeat(32));
    cases.push(("an event id that is not hex", request(&not_hex), Expect::Reject("zz".repeat(32), "invalid:")));
    let mut short = serde_json::to_value(event(1621, vec![alpha_tag()], "short id")).unwrap();
    short["id"] = json!("ab".repeat(31));
    cases.push(("an event id of 62 hex digits", request(&short), Expect::Reject("ab".repeat(31), "invalid:")));
    let mut numeric = serde_json::to_value(event(1621, vec![alpha_tag()], "numeric id")).unwrap();
    numeric["id"] = json!(12345);
    cases.push(("an event id that is a number", request(&numeric), Expect::Nothing));
    // strfry refuses answer lines over 8192 bytes (and then kills the plugin): an id that cannot
    // be echoed within that is not answered.
    let mut huge_id = serde_json::to_value(event(1621, vec![alpha_tag()], "huge id")).unwrap();
    huge_id["id"] = json!("a".repeat(10_000));
    cases.push(("an event id of 10 000 characters", request(&huge_id), Expect::Nothing));
    cases.push(("JSON nested 100 000 deep", "[".repeat(100_000).into_bytes(), Expect::Nothing));

    for (i, (what, line, expect)) in cases.into_iter().enumerate() {
        // Unanswerable lines are followed at once by a valid request: its answer must be the next
        // line, which shows that nothing was answered in between.
        plugin.send(&line);
        match expect {
            Expect::Nothing => {}
            Expect::Reject(id, prefix) => {
                let a = plugin.answer();
                assert_eq!(a["id"], id.as_str(), "{what}: {a}");
                assert_eq!(a["action"], "reject", "{what}: {a}");
                assert!(a["msg"].as_str().unwrap().starts_with(prefix), "{what}: {a}");
            }
            Expect::Accept(id) => {
                let a = plugin.answer();
                assert_eq!((a["id"].as_str(), a["action"].as_str()), (Some(id.as_str()), Some("accept")), "{what}");
            }
        }
        let good = event(1621, vec![alpha_tag()], &format!("good request after case {i}"));
        let a = plugin.ask(&request(&good));
        assert_eq!(
            (a["id"].as_str(), a["action"].as_str()),
            (Some(good.id.as_str()), Some("accept")),
            "after {what}: {a}"
        );
    }

    // The last request has no newline before end of input: still answered, then a clean exit.
    let last = event(1621, vec![alpha_tag()], "no newline at the end");
    plugin.send_raw(&request(&last));
    plugin.close_input();
    let a = plugin.answer();
    assert_eq!((a["id"].as_str(), a["action"].as_str()), (Some(last.id.as_str()), Some("accept")));
    assert_eq!(plugin.finish().code(), Some(0));
}
