//! NIP-01 filters as plain data: built by the engine, sent by the client, matched locally.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::policy::Note;

/// A NIP-01 filter. Empty sets mean "field absent" (builders never send empty lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filter {
    /// Lower-case hex event ids.
    pub ids: BTreeSet<String>,
    /// Lower-case hex public keys.
    pub authors: BTreeSet<String>,
    pub kinds: BTreeSet<u64>,
    /// Single-letter tag filters: `'e'` → values, sent as `"#e"`.
    pub tags: BTreeMap<char, BTreeSet<String>>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub limit: Option<u64>,
}

/// Why a filter could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad filter: {0}")]
pub struct FilterError(pub String);

impl Filter {
    pub fn kinds(kinds: impl IntoIterator<Item = u64>) -> Self {
        Filter { kinds: kinds.into_iter().collect(), ..Default::default() }
    }

    pub fn tag(mut self, letter: char, values: impl IntoIterator<Item = String>) -> Self {
        self.tags.entry(letter).or_default().extend(values);
        self
    }

    pub fn since(mut self, t: u64) -> Self {
        self.since = Some(t);
        self
    }

    pub fn until(mut self, t: u64) -> Self {
        self.until = Some(t);
        self
    }

    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// The JSON object sent on the wire.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.ids.is_empty() {
            m.insert("ids".into(), self.ids.iter().cloned().collect());
        }
        if !self.authors.is_empty() {
            m.insert("authors".into(), self.authors.iter().cloned().collect());
        }
        if !self.kinds.is_empty() {
            m.insert("kinds".into(), self.kinds.iter().copied().collect());
        }
        for (letter, values) in &self.tags {
            m.insert(format!("#{letter}"), values.iter().cloned().collect());
        }
        for (key, v) in [("since", self.since), ("until", self.until), ("limit", self.limit)] {
            if let Some(v) = v {
                m.insert(key.into(), v.into());
            }
        }
        Value::Object(m)
    }

    /// Size of the serialised filter in bytes.
    pub fn json_len(&self) -> usize {
        self.to_json().to_string().len()
    }

    /// Reads a filter from JSON (used by test relays and for round trips).
    pub fn from_json(v: &Value) -> Result<Filter, FilterError> {
        let obj = v.as_object().ok_or_else(|| FilterError("not an object".into()))?;
        let mut f = Filter::default();
        let strings = |k: &str, v: &Value| -> Result<BTreeSet<String>, FilterError> {
            v.as_array()
                .ok_or_else(|| FilterError(format!("{k} is not an array")))?
                .iter()
                .map(|s| s.as_str().map(str::to_string).ok_or_else(|| FilterError(format!("{k} holds a non-string"))))
                .collect()
        };
        let number = |k: &str, v: &Value| v.as_u64().ok_or_else(|| FilterError(format!("{k} is not a number")));
        for (k, v) in obj {
            match k.as_str() {
                "ids" => f.ids = strings(k, v)?,
                "authors" => f.authors = strings(k, v)?,
                "kinds" => {
                    f.kinds = v
                        .as_array()
                        .ok_or_else(|| FilterError("kinds is not an array".into()))?
                        .iter()
                        .map(|n| number(k, n))
                        .collect::<Result<_, _>>()?
                }
                "since" => f.since = Some(number(k, v)?),
                "until" => f.until = Some(number(k, v)?),
                "limit" => f.limit = Some(number(k, v)?),
                _ => {
                    let mut chars = k.chars();
                    match (chars.next(), chars.next(), chars.next()) {
                        (Some('#'), Some(letter), None) => {
                            f.tags.insert(letter, strings(k, v)?);
                        }
                        _ => return Err(FilterError(format!("unknown field {k}"))),
                    }
                }
            }
        }
        Ok(f)
    }

    /// NIP-01 matching (`limit` is not a matching condition).
    pub fn matches(&self, ev: &Note) -> bool {
        if !self.ids.is_empty() && !self.ids.contains(&ev.id) {
            return false;
        }
        if !self.authors.is_empty() && !self.authors.contains(&ev.pubkey) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&ev.kind) {
            return false;
        }
        if self.since.is_some_and(|s| ev.created_at < s) || self.until.is_some_and(|u| ev.created_at > u) {
            return false;
        }
        self.tags.iter().all(|(letter, values)| {
            ev.tags.iter().any(|t| {
                t.len() >= 2 && t[0].len() == letter.len_utf8() && t[0].starts_with(*letter) && values.contains(&t[1])
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: u64, at: u64, tags: &[(&str, &str)]) -> Note {
        Note {
            id: "00".repeat(32),
            pubkey: "11".repeat(32),
            created_at: at,
            kind,
            tags: tags.iter().map(|(a, b)| vec![a.to_string(), b.to_string()]).collect(),
            content: String::new(),
            sig: "22".repeat(64),
        }
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let f = Filter::kinds([30617, 1621])
            .tag('a', ["30617:x:y".to_string()])
            .tag('E', ["ab".to_string()])
            .since(5)
            .until(9)
            .limit(100);
        let json = f.to_json();
        assert_eq!(json["#a"][0], "30617:x:y");
        assert_eq!(json["#E"][0], "ab");
        assert_eq!(Filter::from_json(&json).unwrap(), f);
        assert!(Filter::from_json(&serde_json::json!({"#ab": []})).is_err());
        assert!(Filter::from_json(&serde_json::json!({"kinds": ["x"]})).is_err());
    }

    #[test]
    fn matching_follows_nip01() {
        let f = Filter::kinds([1621]).tag('a', ["c".to_string()]).since(10).until(20);
        assert!(f.matches(&note(1621, 15, &[("a", "c")])));
        assert!(!f.matches(&note(1621, 15, &[("A", "c")])), "tag letters are case-sensitive");
        assert!(!f.matches(&note(1621, 21, &[("a", "c")])));
        assert!(!f.matches(&note(1617, 15, &[("a", "c")])));
        assert!(Filter::default().matches(&note(1, 0, &[])));
    }
}
