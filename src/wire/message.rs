//! NIP-01 and NIP-77 messages as we send and receive them.
//!
//! Client messages are encoded to text; relay messages are parsed from text with a clear error for
//! anything malformed (the caller counts and drops those).

use serde_json::Value;

use crate::policy::Note;
use crate::wire::Filter;

/// A message we send to a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// NIP-01: publish an event.
    Event(Box<Note>),
    Req {
        sub: String,
        filters: Vec<Filter>,
    },
    Close(String),
    /// NIP-77: open a reconciliation for one filter with the first message (hex).
    NegOpen {
        sub: String,
        filter: Filter,
        msg: String,
    },
    NegMsg {
        sub: String,
        msg: String,
    },
    NegClose(String),
}

impl ClientMsg {
    /// The text frame sent on the wire.
    pub fn encode(&self) -> String {
        let v = match self {
            ClientMsg::Event(note) => {
                // Straight from the event's fields, in their order (no detour through a map).
                return serde_json::to_string(&("EVENT", note)).expect("serialising strings and integers cannot fail");
            }
            ClientMsg::Req { sub, filters } => {
                let mut a = vec![Value::from("REQ"), Value::from(sub.as_str())];
                a.extend(filters.iter().map(Filter::to_json));
                Value::Array(a)
            }
            ClientMsg::Close(sub) => serde_json::json!(["CLOSE", sub]),
            ClientMsg::NegOpen { sub, filter, msg } => serde_json::json!(["NEG-OPEN", sub, filter.to_json(), msg]),
            ClientMsg::NegMsg { sub, msg } => serde_json::json!(["NEG-MSG", sub, msg]),
            ClientMsg::NegClose(sub) => serde_json::json!(["NEG-CLOSE", sub]),
        };
        v.to_string()
    }

    /// Whether this is a NIP-77 message (these have a tighter frame limit).
    pub fn is_negentropy(&self) -> bool {
        matches!(self, ClientMsg::NegOpen { .. } | ClientMsg::NegMsg { .. } | ClientMsg::NegClose(_))
    }
}

/// A message a relay sent us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMsg {
    Event {
        sub: String,
        note: Box<Note>,
    },
    Eose(String),
    Closed {
        sub: String,
        reason: String,
    },
    Notice(String),
    Ok {
        id: String,
        accepted: bool,
        reason: String,
    },
    NegMsg {
        sub: String,
        msg: String,
    },
    NegErr {
        sub: String,
        reason: String,
    },
    Auth(String),
    /// A message type we do not use (COUNT, …): ignored.
    Other(String),
}

/// Why a relay frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    #[error("frame is not JSON: {0}")]
    Json(String),
    #[error("frame is not an array with a string type")]
    Shape,
    #[error("{0} message has a missing or malformed field")]
    Field(&'static str),
    #[error("EVENT carries a malformed event: {0}")]
    Event(String),
}

fn text(a: &[Value], i: usize, what: &'static str) -> Result<String, MsgError> {
    a.get(i).and_then(Value::as_str).map(str::to_string).ok_or(MsgError::Field(what))
}

/// Text or an empty string when absent (some relays omit reasons).
fn text_or_empty(a: &[Value], i: usize) -> String {
    a.get(i).and_then(Value::as_str).unwrap_or_default().to_string()
}

impl RelayMsg {
    pub fn parse(frame: &str) -> Result<RelayMsg, MsgError> {
        let v: Value = serde_json::from_str(frame).map_err(|e| MsgError::Json(e.to_string()))?;
        let Value::Array(mut a) = v else { return Err(MsgError::Shape) };
        let kind = a.first().and_then(Value::as_str).ok_or(MsgError::Shape)?.to_string();
        Ok(match kind.as_str() {
            "EVENT" => {
                let sub = text(&a, 1, "EVENT")?;
                let raw = a.get_mut(2).map(Value::take).ok_or(MsgError::Field("EVENT"))?;
                let note: Note = serde_json::from_value(raw).map_err(|e| MsgError::Event(e.to_string()))?;
                RelayMsg::Event { sub, note: Box::new(note) }
            }
            "EOSE" => RelayMsg::Eose(text(&a, 1, "EOSE")?),
            "CLOSED" => RelayMsg::Closed { sub: text(&a, 1, "CLOSED")?, reason: text_or_empty(&a, 2) },
            "NOTICE" => RelayMsg::Notice(text_or_empty(&a, 1)),
            "OK" => RelayMsg::Ok {
                id: text(&a, 1, "OK")?,
                accepted: a.get(2).and_then(Value::as_bool).ok_or(MsgError::Field("OK"))?,
                reason: text_or_empty(&a, 3),
            },
            "NEG-MSG" => RelayMsg::NegMsg { sub: text(&a, 1, "NEG-MSG")?, msg: text(&a, 2, "NEG-MSG")? },
            "NEG-ERR" => RelayMsg::NegErr { sub: text(&a, 1, "NEG-ERR")?, reason: text_or_empty(&a, 2) },
            "AUTH" => RelayMsg::Auth(text_or_empty(&a, 1)),
            _ => RelayMsg::Other(kind),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_encode_as_nip01_and_nip77_arrays() {
        let f = Filter::kinds([30617]).limit(0);
        let req = ClientMsg::Req { sub: "s1".into(), filters: vec![f.clone(), Filter::kinds([1])] };
        assert_eq!(req.encode(), r#"["REQ","s1",{"kinds":[30617],"limit":0},{"kinds":[1]}]"#);
        assert_eq!(ClientMsg::Close("s1".into()).encode(), r#"["CLOSE","s1"]"#);
        let open = ClientMsg::NegOpen { sub: "n".into(), filter: f, msg: "61".into() };
        assert_eq!(open.encode(), r#"["NEG-OPEN","n",{"kinds":[30617],"limit":0},"61"]"#);
        assert!(open.is_negentropy());
        assert_eq!(ClientMsg::NegMsg { sub: "n".into(), msg: "ab".into() }.encode(), r#"["NEG-MSG","n","ab"]"#);
        assert_eq!(ClientMsg::NegClose("n".into()).encode(), r#"["NEG-CLOSE","n"]"#);
        let note = Note {
            id: "aa".into(),
            pubkey: "bb".into(),
            created_at: 5,
            kind: 1,
            tags: vec![vec!["e".into(), "x".into()]],
            content: "c".into(),
            sig: "dd".into(),
        };
        let event = ClientMsg::Event(Box::new(note));
        assert_eq!(
            event.encode(),
            r#"["EVENT",{"id":"aa","pubkey":"bb","created_at":5,"kind":1,"tags":[["e","x"]],"content":"c","sig":"dd"}]"#
        );
        assert!(!event.is_negentropy());
    }

    #[test]
    fn relay_messages_parse_every_type_we_use() {
        let ev = r#"["EVENT","s",{"id":"aa","pubkey":"bb","created_at":5,"kind":1,"tags":[["e","x"]],"content":"c","sig":"dd"}]"#;
        match RelayMsg::parse(ev).unwrap() {
            RelayMsg::Event { sub, note } => {
                assert_eq!(sub, "s");
                assert_eq!(note.created_at, 5);
                assert_eq!(note.tags[0][1], "x");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(RelayMsg::parse(r#"["EOSE","s"]"#).unwrap(), RelayMsg::Eose("s".into()));
        assert_eq!(
            RelayMsg::parse(r#"["CLOSED","s","rate-limited: slow"]"#).unwrap(),
            RelayMsg::Closed { sub: "s".into(), reason: "rate-limited: slow".into() }
        );
        assert_eq!(RelayMsg::parse(r#"["NOTICE","hi"]"#).unwrap(), RelayMsg::Notice("hi".into()));
        assert_eq!(
            RelayMsg::parse(r#"["OK","id",false,"blocked: no"]"#).unwrap(),
            RelayMsg::Ok { id: "id".into(), accepted: false, reason: "blocked: no".into() }
        );
        assert_eq!(
            RelayMsg::parse(r#"["NEG-MSG","n","61"]"#).unwrap(),
            RelayMsg::NegMsg { sub: "n".into(), msg: "61".into() }
        );
        assert_eq!(
            RelayMsg::parse(r#"["NEG-ERR","n","blocked: too many query results"]"#).unwrap(),
            RelayMsg::NegErr { sub: "n".into(), reason: "blocked: too many query results".into() }
        );
        assert_eq!(RelayMsg::parse(r#"["COUNT","s",{"count":1}]"#).unwrap(), RelayMsg::Other("COUNT".into()));
    }

    #[test]
    fn malformed_relay_frames_are_errors() {
        assert!(matches!(RelayMsg::parse("nope"), Err(MsgError::Json(_))));
        assert_eq!(RelayMsg::parse(r#"{"a":1}"#), Err(MsgError::Shape));
        assert_eq!(RelayMsg::parse(r#"[1]"#), Err(MsgError::Shape));
        assert_eq!(RelayMsg::parse(r#"["EOSE"]"#), Err(MsgError::Field("EOSE")));
        assert!(matches!(RelayMsg::parse(r#"["EVENT","s",{"id":1}]"#), Err(MsgError::Event(_))));
        assert_eq!(RelayMsg::parse(r#"["OK","id","yes"]"#), Err(MsgError::Field("OK")));
    }
}
