//! Relay frames: [`RelayMsg::parse`], the filters they may carry and the classification of the
//! free-text reasons relays send.
//!
//! Input: one frame (bytes that are not UTF-8 cannot arrive as a websocket text frame and are
//! skipped). Invariants: a frame is a JSON error exactly when it is not JSON; a parsed message,
//! written back out as a relay would, parses to the same message; `Other` only names types we do
//! not use; every reason text classifies the same regardless of ASCII case, a NEG-ERR never
//! classifies as `Other`, and a rate-limit verdict always mentions a rate limit; any JSON object in
//! the frame that reads as a filter survives `to_json`/`from_json` unchanged and matches the
//! frame's event exactly when NIP-01 says so.

use serde_json::{json, Value};

use crate::policy::{Facts, Note};
use crate::remote::classify::{classify, Signal, Source};
use crate::wire::message::MsgError;
use crate::wire::reason::mentions_rate_limit;
use crate::wire::{ClientMsg, Filter, RelayMsg};

/// Message types [`RelayMsg::parse`] reads into their own variants.
const KNOWN: &[&str] = &["EVENT", "EOSE", "CLOSED", "NOTICE", "OK", "NEG-MSG", "NEG-ERR", "AUTH"];

/// The frame a relay would send for `msg`.
pub fn encode(msg: &RelayMsg) -> String {
    let v = match msg {
        RelayMsg::Event { sub, note } => json!(["EVENT", sub, note]),
        RelayMsg::Eose(sub) => json!(["EOSE", sub]),
        RelayMsg::Closed { sub, reason } => json!(["CLOSED", sub, reason]),
        RelayMsg::Notice(text) => json!(["NOTICE", text]),
        RelayMsg::Ok { id, accepted, reason } => json!(["OK", id, accepted, reason]),
        RelayMsg::NegMsg { sub, msg } => json!(["NEG-MSG", sub, msg]),
        RelayMsg::NegErr { sub, reason } => json!(["NEG-ERR", sub, reason]),
        RelayMsg::Auth(challenge) => json!(["AUTH", challenge]),
        RelayMsg::Other(kind) => json!([kind]),
    };
    v.to_string()
}

/// Checks [`classify`] on one reason text from `source`.
pub fn check_reason(source: Source, text: &str) {
    let signal = classify(source, text);
    assert_eq!(signal, classify(source, &text.to_ascii_uppercase()), "case-insensitive: {text:?}");
    assert_eq!(signal, classify(source, &text.to_ascii_lowercase()), "case-insensitive: {text:?}");
    if source == Source::NegErr {
        assert_ne!(signal, Signal::Other, "a NEG-ERR always tells us something");
    }
    if signal == Signal::RateLimited {
        assert!(mentions_rate_limit(text), "rate-limit verdict without a rate-limit mention: {text:?}");
    }
}

/// Reason texts carried by `msg`, with where they came from.
fn reasons(msg: &RelayMsg) -> Option<(Source, &str)> {
    match msg {
        RelayMsg::Closed { reason, .. } => Some((Source::Closed, reason)),
        RelayMsg::Notice(text) => Some((Source::Notice, text)),
        RelayMsg::Ok { accepted: false, reason, .. } => Some((Source::OkFalse, reason)),
        RelayMsg::NegErr { reason, .. } => Some((Source::NegErr, reason)),
        _ => None,
    }
}

fn check_filter(v: &Value, note: Option<&Note>) {
    let Ok(f) = Filter::from_json(v) else { return };
    let back = Filter::from_json(&f.to_json()).expect("a filter we wrote reads back");
    assert_eq!(back, f, "filter JSON round trip");
    assert_eq!(f.json_len(), f.to_json().to_string().len());
    let req = ClientMsg::Req { sub: "s".into(), filters: vec![f.clone()] }.encode();
    let sent: Value = serde_json::from_str(&req).expect("REQ is JSON");
    assert_eq!(Filter::from_json(&sent[2]).as_ref(), Ok(&f), "the REQ carries the filter");
    if let Some(note) = note {
        // A tag condition needs a tag named by exactly that letter with one of the values.
        let tags_ok = f.tags.iter().all(|(letter, values)| {
            note.tags
                .iter()
                .any(|t| t.len() >= 2 && t[0].chars().eq(std::iter::once(*letter)) && values.contains(&t[1]))
        });
        let expected = (f.ids.is_empty() || f.ids.contains(&note.id))
            && (f.authors.is_empty() || f.authors.contains(&note.pubkey))
            && (f.kinds.is_empty() || f.kinds.contains(&note.kind))
            && f.since.is_none_or(|s| note.created_at >= s)
            && f.until.is_none_or(|u| note.created_at <= u)
            && tags_ok;
        assert_eq!(f.matches(note), expected, "NIP-01 matching of {v} against {note:?}");
    }
}

/// Fuzz entry point (see the module docs).
pub fn check(data: &[u8]) {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    let parsed = RelayMsg::parse(frame);
    let value = serde_json::from_str::<Value>(frame);
    assert_eq!(
        matches!(parsed, Err(MsgError::Json(_))),
        value.is_err(),
        "JSON error exactly for frames that are not JSON: {parsed:?}"
    );
    let note = match &parsed {
        Ok(RelayMsg::Event { note, .. }) => Some(note.as_ref().clone()),
        _ => None,
    };
    if let Ok(v) = &value {
        let items = v.as_array().map(Vec::as_slice).unwrap_or(std::slice::from_ref(v));
        for item in items.iter().filter(|i| i.is_object()) {
            check_filter(item, note.as_ref());
        }
    }
    let Ok(msg) = parsed else { return };
    if let RelayMsg::Other(kind) = &msg {
        assert!(!KNOWN.contains(&kind.as_str()), "{kind} has its own variant");
    }
    if let Some((source, text)) = reasons(&msg) {
        check_reason(source, text);
    }
    if let Some(note) = &note {
        // Facts extraction must take any event shape; a matching id is all it needs.
        if let Ok(facts) = Facts::from_note(note) {
            assert_eq!(hex::encode(facts.id), note.id);
        }
    }
    let again = RelayMsg::parse(&encode(&msg)).expect("a frame we wrote parses");
    assert_eq!(again, msg, "relay frame round trip");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_type_round_trips() {
        let frames = [
            r#"["EVENT","s",{"id":"aa","pubkey":"bb","created_at":5,"kind":1,"tags":[["e","x"]],"content":"c","sig":"dd"}]"#,
            r#"["EOSE","s"]"#,
            r#"["CLOSED","s","rate-limited: slow"]"#,
            r#"["NOTICE","ERROR: bad msg: negentropy disabled"]"#,
            r#"["OK","id",false,"blocked: no"]"#,
            r#"["NEG-MSG","n","61"]"#,
            r#"["NEG-ERR","n","blocked: too many query results"]"#,
            r#"["AUTH","challenge"]"#,
            r#"["COUNT","s",{"count":1}]"#,
            r##"["REQ","s",{"kinds":[1],"#e":["x"],"since":1}]"##,
        ];
        for f in frames {
            check(f.as_bytes());
        }
    }
}
