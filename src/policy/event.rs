//! Nostr events as the policy sees them: a wire form with its id check, and the facts
//! extracted from tags that the acceptance rules need.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// 32 raw bytes: an event id or a public key.
pub type Id = [u8; 32];

/// Kinds with rules of their own (NIP-34, NIP-09).
pub const KIND_DELETION: u64 = 5;
/// NIP-25 reaction.
pub const KIND_REACTION: u64 = 7;
pub const KIND_ANNOUNCEMENT: u64 = 30617;
pub const KIND_STATE: u64 = 30618;
pub const KIND_PATCH: u64 = 1617;
pub const KIND_PR: u64 = 1618;
pub const KIND_ISSUE: u64 = 1621;
/// A user's list of GRASP servers (NIP-34): `g` tags name the services.
pub const KIND_GRASP_LIST: u64 = 10317;

/// Kinds that open a thread about a repository ("root events").
pub fn is_root_kind(kind: u64) -> bool {
    matches!(kind, KIND_PATCH | KIND_PR | KIND_ISSUE)
}

/// A nostr event in its JSON wire form. Parsing checks shape only; [`Note::check`] checks the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub id: String,
    pub pubkey: String,
    pub created_at: u64,
    pub kind: u64,
    pub tags: Vec<Vec<String>>,
    pub content: String,
    pub sig: String,
}

/// Why an event is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{0} is not 64 lower-case hex characters")]
    BadHex(&'static str),
    #[error("sig is not 128 lower-case hex characters")]
    BadSig,
    #[error("id does not match the event's content")]
    IdMismatch,
}

impl Note {
    /// The NIP-01 id: sha256 of `[0,pubkey,created_at,kind,tags,content]`.
    pub fn compute_id(&self) -> Id {
        let canonical = serde_json::to_vec(&(0u8, &self.pubkey, self.created_at, self.kind, &self.tags, &self.content))
            .expect("serialising strings and integers cannot fail");
        Sha256::digest(&canonical).into()
    }

    /// Checks the hex fields and that the id is the hash of the content. Signatures are not
    /// checked here (see [`crate::policy::verify_signature`]).
    pub fn check(&self) -> Result<Id, EventError> {
        let id = parse_hex32(&self.id).ok_or(EventError::BadHex("id"))?;
        parse_hex32(&self.pubkey).ok_or(EventError::BadHex("pubkey"))?;
        if self.sig.len() != 128 || !is_lower_hex(&self.sig) {
            return Err(EventError::BadSig);
        }
        if self.compute_id() != id {
            return Err(EventError::IdMismatch);
        }
        Ok(id)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses 64 lower-case hex characters.
pub fn parse_hex32(s: &str) -> Option<Id> {
    if s.len() != 64 || !is_lower_hex(s) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A repository coordinate `30617:<pubkey>:<d>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoCoord {
    pub pubkey: Id,
    pub d: String,
}

impl RepoCoord {
    /// Parses `30617:<hex pubkey>:<d>`; other kinds or shapes give `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.strip_prefix("30617:")?;
        let (pk, d) = rest.split_once(':')?;
        Some(RepoCoord { pubkey: parse_hex32(&pk.to_ascii_lowercase())?, d: d.to_string() })
    }
}

impl std::fmt::Display for RepoCoord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "30617:{}:{}", hex::encode(self.pubkey), self.d)
    }
}

/// The tags of a repository announcement that the rules look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnouncementTags {
    /// Values of every `relays` tag, as written.
    pub relays: Vec<String>,
    /// Values of every `clone` tag, as written.
    pub clone: Vec<String>,
    /// Valid maintainer public keys (invalid entries are ignored).
    pub maintainers: Vec<Id>,
}

/// Everything the acceptance rules need to know about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub id: Id,
    pub pubkey: Id,
    pub kind: u64,
    pub created_at: u64,
    /// First `d` tag value.
    pub d: Option<String>,
    /// Repository coordinates in `a`, `A` and `q` tags.
    pub repo_refs: Vec<RepoCoord>,
    /// Event ids in `e`, `E` and `q` tags.
    pub id_refs: Vec<Id>,
    /// Present for kind 30617 only.
    pub announcement: Option<AnnouncementTags>,
    /// For kind 10317 only: the `g` tag values (GRASP service URLs), as written, at most
    /// [`MAX_REFS_PER_EVENT`].
    pub grasp_servers: Vec<String>,
}

/// Upper bound on references kept per event: a hostile event with 10k tags must not
/// make every later decision slow.
pub const MAX_REFS_PER_EVENT: usize = 256;

impl Facts {
    /// Extracts facts from an event whose id and pubkey are already parsed.
    pub fn from_parts<T: AsRef<str>>(id: Id, pubkey: Id, kind: u64, created_at: u64, tags: &[Vec<T>]) -> Facts {
        let mut f = Facts {
            id,
            pubkey,
            kind,
            created_at,
            d: None,
            repo_refs: Vec::new(),
            id_refs: Vec::new(),
            announcement: None,
            grasp_servers: Vec::new(),
        };
        let mut ann = (kind == KIND_ANNOUNCEMENT).then(AnnouncementTags::default);
        for tag in tags {
            let (Some(name), Some(value)) = (tag.first(), tag.get(1)) else { continue };
            let (name, value) = (name.as_ref(), value.as_ref());
            match name {
                "d" if f.d.is_none() => f.d = Some(value.to_string()),
                "a" | "A" => push_bounded(&mut f.repo_refs, RepoCoord::parse(value)),
                "e" | "E" => push_bounded(&mut f.id_refs, parse_hex32(value)),
                "q" => {
                    if value.contains(':') {
                        push_bounded(&mut f.repo_refs, RepoCoord::parse(value));
                    } else {
                        push_bounded(&mut f.id_refs, parse_hex32(value));
                    }
                }
                _ => {}
            }
            if kind == KIND_GRASP_LIST && name == "g" && f.grasp_servers.len() < MAX_REFS_PER_EVENT {
                f.grasp_servers.push(value.to_string());
            }
            if let Some(ann) = ann.as_mut() {
                let values = tag[1..].iter().map(|v| v.as_ref());
                match name {
                    "relays" => ann.relays.extend(values.take(MAX_REFS_PER_EVENT).map(str::to_string)),
                    "clone" => ann.clone.extend(values.take(MAX_REFS_PER_EVENT).map(str::to_string)),
                    "maintainers" => ann
                        .maintainers
                        .extend(values.take(MAX_REFS_PER_EVENT).filter_map(|v| parse_hex32(&v.to_ascii_lowercase()))),
                    _ => {}
                }
            }
        }
        f.announcement = ann;
        f
    }

    /// Extracts facts from a wire event, checking its id first.
    pub fn from_note(note: &Note) -> Result<Facts, EventError> {
        let id = note.check()?;
        let pubkey = parse_hex32(&note.pubkey).ok_or(EventError::BadHex("pubkey"))?;
        Ok(Facts::from_parts(id, pubkey, note.kind, note.created_at, &note.tags))
    }

    /// The coordinate this announcement or state event is about.
    pub fn own_coord(&self) -> Option<RepoCoord> {
        Some(RepoCoord { pubkey: self.pubkey, d: self.d.clone()? })
    }
}

fn push_bounded<T: PartialEq>(v: &mut Vec<T>, item: Option<T>) {
    if let Some(item) = item {
        if v.len() < MAX_REFS_PER_EVENT && !v.contains(&item) {
            v.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture_notes() -> Vec<(String, Note)> {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["name"].as_str().unwrap().to_string(), serde_json::from_value(v["event"].clone()).unwrap())
            })
            .collect()
    }

    #[test]
    fn fixture_ids_verify() {
        for (name, note) in fixture_notes() {
            assert!(note.check().is_ok(), "{name}");
        }
    }

    #[test]
    fn tampered_content_fails_id_check() {
        let (_, mut note) = fixture_notes().remove(0);
        note.content.push('x');
        assert_eq!(note.check(), Err(EventError::IdMismatch));
        let (_, mut note) = fixture_notes().remove(0);
        note.id = note.id.to_uppercase();
        assert_eq!(note.check(), Err(EventError::BadHex("id")));
    }

    #[test]
    fn extracts_refs_from_a_upper_a_q_e_upper_e() {
        let pk = "9997a497d964fc1a62885b05a51166a65a90df00492c8d7cf61d6accf54803be";
        let id = "81f260ee203847626f386c42e476daf16df38b20cc0ac493c4d11a3e34c597c0";
        let tags: Vec<Vec<String>> = [
            vec!["a".to_string(), format!("30617:{pk}:alpha")],
            vec!["A".to_string(), format!("30617:{pk}:beta")],
            vec!["q".to_string(), format!("30617:{pk}:gamma")],
            vec!["q".to_string(), id.to_string()],
            vec!["E".to_string(), id.to_string(), String::new()],
            vec!["a".to_string(), format!("30618:{pk}:alpha")],
            vec!["e".to_string(), "nothex".to_string()],
            vec!["e".to_string()],
            vec![],
        ]
        .into();
        let f = Facts::from_parts([0; 32], [1; 32], 1, 0, &tags);
        let ds: Vec<_> = f.repo_refs.iter().map(|c| c.d.as_str()).collect();
        assert_eq!(ds, ["alpha", "beta", "gamma"]);
        assert_eq!(f.id_refs.len(), 1, "q and E name the same id once");
        assert!(f.announcement.is_none());
    }

    #[test]
    fn refs_are_bounded_for_huge_tag_lists() {
        let tags: Vec<Vec<String>> = (0..10_000).map(|i| vec!["e".to_string(), format!("{i:064x}")]).collect();
        let f = Facts::from_parts([0; 32], [1; 32], 1, 0, &tags);
        assert_eq!(f.id_refs.len(), MAX_REFS_PER_EVENT);
    }
}

/// Verifies the event's id (the hash of its content) and its Schnorr signature over that id.
/// CPU only, about 40 µs per event, nearly all of it the signature check: the fields are read
/// straight from the note (no JSON round trip into another event type).
pub fn verify_signature(note: &Note) -> bool {
    use secp256k1::{schnorr::Signature, Secp256k1, VerifyOnly, XOnlyPublicKey};
    static VERIFIER: std::sync::LazyLock<Secp256k1<VerifyOnly>> =
        std::sync::LazyLock::new(Secp256k1::verification_only);
    let Ok(id) = note.check() else { return false };
    let Some(pubkey) = parse_hex32(&note.pubkey) else { return false };
    let mut sig = [0u8; 64];
    if hex::decode_to_slice(&note.sig, &mut sig).is_err() {
        return false;
    }
    let Ok(pubkey) = XOnlyPublicKey::from_byte_array(&pubkey) else { return false };
    VERIFIER.verify_schnorr(&Signature::from_byte_array(sig), &id, &pubkey).is_ok()
}

#[cfg(test)]
mod signature_tests {
    use super::*;

    #[test]
    fn fixture_signatures_verify_and_tampering_is_caught() {
        let line =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        let note: Note = serde_json::from_value(v["event"].clone()).unwrap();
        assert!(verify_signature(&note));
        let mut bad = note.clone();
        bad.sig = format!("{}00", &note.sig[..126]);
        assert!(!verify_signature(&bad));
        let mut garbage = note.clone();
        garbage.pubkey = "zz".into();
        assert!(!verify_signature(&garbage));
        let mut other_content = note.clone();
        other_content.content.push('!');
        assert!(!verify_signature(&other_content), "the id must be the hash of what is signed");
        let mut upper = note;
        upper.sig = upper.sig.to_uppercase();
        assert!(!verify_signature(&upper), "signatures are lower-case hex");
    }
}
