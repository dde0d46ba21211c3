//! Generated announcement floods, for tests and benchmarks of the relay limits.
//!
//! Anyone may publish repository announcements (kind 30617) that list this service, each with a
//! long `relays` tag of whatever they like. [`flood`] makes such a set deterministically from a
//! seed: every value is a public relay (spelled in one of several equivalent ways), a private,
//! loopback, link-local, multicast or reserved address, our own URL, or something that is not a
//! relay URL at all. Each value comes with what it is meant to be ([`Value`]), written without
//! the URL parser, so tests can check the parser's normalisation against an independent answer.

use crate::policy::Note;

/// What a generated `relays` value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// This service, spelled in some equivalent way.
    Service,
    /// A public relay.
    Public,
    /// A non-public address; the label is the refusal reason (`loopback`, `private`,
    /// `link_local`, `multicast`, `reserved`).
    NotPublic(&'static str),
    /// Not a relay URL (other scheme, no host, credentials, too long, garbage).
    Invalid,
}

/// One generated value of a `relays` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// As written in the tag.
    pub raw: String,
    /// The relay URL it names in normal form (`None` when invalid).
    pub canonical: Option<String>,
    pub class: Class,
}

/// Shape of a flood.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    pub announcements: usize,
    pub relays_per_announcement: usize,
    /// Distinct public relays the values are drawn from (skewed: low numbers are popular).
    pub public_pool: u64,
    pub seed: u64,
    /// This service's URL in normal form (e.g. `wss://grasp.example.com`).
    pub service: String,
    /// Author of every announcement (hex x-only key); announcements differ by `d`.
    pub pubkey: String,
    pub created_at: u64,
}

impl FloodSpec {
    /// 10,000 announcements of 100 relays each, drawn from 5,000 public relays.
    pub fn large(service: &str, pubkey: &str) -> Self {
        FloodSpec {
            announcements: 10_000,
            relays_per_announcement: 100,
            public_pool: 5_000,
            seed: 0xab05e,
            service: service.to_string(),
            pubkey: pubkey.to_string(),
            created_at: 1_700_000_000,
        }
    }
}

/// A generated announcement and its values.
#[derive(Debug, Clone)]
pub struct FloodAnnouncement {
    pub note: Note,
    pub d: String,
    pub values: Vec<Value>,
}

/// xorshift64*: deterministic, no dependency. Shared by the generators of tests and benchmarks.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// 32 random bytes as 64 hex digits.
    pub fn hex32(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next_u64())).collect()
    }
}

fn public(rng: &mut Rng, pool: u64) -> Value {
    // Skewed: the minimum of two draws makes low numbers more popular.
    let k = rng.below(pool).min(rng.below(pool));
    let host = format!("relay{k}.example.net");
    let (raw, canonical) = match rng.below(9) {
        0 => (format!("wss://{host}"), format!("wss://{host}")),
        1 => (format!("WSS://Relay{k}.Example.NET"), format!("wss://{host}")),
        2 => (format!("wss://{host}:443"), format!("wss://{host}")),
        3 => (format!("wss://{host}/"), format!("wss://{host}")),
        4 => (format!("wss://{host}."), format!("wss://{host}")),
        5 => (format!("  wss://{host}:443/  "), format!("wss://{host}")),
        6 => (format!("wss://{host}#frag"), format!("wss://{host}")),
        7 => (format!("ws://{host}:7777/"), format!("ws://{host}:7777")),
        _ => (format!("WS://{}:7777", host.to_uppercase()), format!("ws://{host}:7777")),
    };
    Value { raw, canonical: Some(canonical), class: Class::Public }
}

fn not_public(rng: &mut Rng) -> Value {
    let (a, b) = (rng.below(250) + 1, rng.below(250) + 1);
    let (raw, canonical, label) = match rng.below(12) {
        0 => (format!("ws://10.{a}.{b}.7"), format!("ws://10.{a}.{b}.7"), "private"),
        1 => (format!("ws://192.168.{a}.{b}:7777/"), format!("ws://192.168.{a}.{b}:7777"), "private"),
        2 => (format!("wss://box{a}.local"), format!("wss://box{a}.local"), "private"),
        3 => (format!("ws://[fd00::{a:x}]"), format!("ws://[fd00::{a:x}]"), "private"),
        4 => (format!("ws://127.0.0.{a}:{}", 7000 + b), format!("ws://127.0.0.{a}:{}", 7000 + b), "loopback"),
        5 => (format!("WS://LOCALHOST:{}/", 8000 + a), format!("ws://localhost:{}", 8000 + a), "loopback"),
        6 => (format!("ws://[::1]:{}", 9000 + a), format!("ws://[::1]:{}", 9000 + a), "loopback"),
        7 => (format!("ws://[fe80::{a:x}]"), format!("ws://[fe80::{a:x}]"), "link_local"),
        8 => (format!("ws://169.254.{a}.{b}"), format!("ws://169.254.{a}.{b}"), "link_local"),
        9 => (format!("ws://224.0.0.{a}"), format!("ws://224.0.0.{a}"), "multicast"),
        10 => ("ws://0.0.0.0:7777".to_string(), "ws://0.0.0.0:7777".to_string(), "reserved"),
        _ => (format!("wss://192.0.2.{a}"), format!("wss://192.0.2.{a}"), "reserved"),
    };
    Value { raw, canonical: Some(canonical), class: Class::NotPublic(label) }
}

fn invalid(rng: &mut Rng, pool: u64) -> Value {
    let k = rng.below(pool);
    let raw = match rng.below(11) {
        0 => format!("https://relay{k}.example.net"),
        1 => format!("http://relay{k}.example.net"),
        2 => format!("git://relay{k}.example.net/repo.git"),
        3 => format!("relay{k}.example.net"),
        4 => "not a url".to_string(),
        5 => String::new(),
        6 => "wss://".to_string(),
        7 => format!("wss://user:secret@relay{k}.example.net"),
        8 => format!("wss://{}.example.net", "a".repeat(600)),
        9 => "wss://[::1".to_string(),
        _ => format!("mailto:relay{k}@example.net"),
    };
    Value { raw, canonical: None, class: Class::Invalid }
}

fn service(rng: &mut Rng, service: &str) -> Value {
    let raw = match rng.below(3) {
        0 => service.to_string(),
        1 => format!("{}/", service.to_uppercase()),
        _ => format!("{service}:443"),
    };
    Value { raw, canonical: Some(service.to_string()), class: Class::Service }
}

/// Generates the flood: announcement `i` has `d = "flood-<i>"`, lists the service once at a
/// random position, and otherwise about half public relays, a quarter non-public addresses and
/// a quarter invalid values.
pub fn flood(spec: &FloodSpec) -> Vec<FloodAnnouncement> {
    let mut rng = Rng(spec.seed | 1);
    let per = spec.relays_per_announcement.max(1);
    (0..spec.announcements)
        .map(|i| {
            let at_service = rng.below(per as u64) as usize;
            let values: Vec<Value> = (0..per)
                .map(|j| {
                    if j == at_service {
                        return service(&mut rng, &spec.service);
                    }
                    match rng.below(4) {
                        0 | 1 => public(&mut rng, spec.public_pool),
                        2 => not_public(&mut rng),
                        _ => invalid(&mut rng, spec.public_pool),
                    }
                })
                .collect();
            let d = format!("flood-{i}");
            let mut relays = vec!["relays".to_string()];
            relays.extend(values.iter().map(|v| v.raw.clone()));
            let mut note = Note {
                id: String::new(),
                pubkey: spec.pubkey.clone(),
                created_at: spec.created_at,
                kind: 30617,
                tags: vec![vec!["d".to_string(), d.clone()], relays],
                content: String::new(),
                sig: "00".repeat(64),
            };
            note.id = hex::encode(note.compute_id());
            FloodAnnouncement { note, d, values }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RelayUrl;

    #[test]
    fn every_value_parses_to_what_it_is_meant_to_be() {
        let mut spec = FloodSpec::large("wss://grasp.example.com", &"ab".repeat(32));
        spec.announcements = 50;
        for ann in flood(&spec) {
            assert_eq!(ann.values.len(), 100);
            for v in &ann.values {
                let parsed = RelayUrl::parse(&v.raw).ok().map(String::from);
                assert_eq!(parsed, v.canonical, "{:?}", v.raw);
                if let Ok(u) = RelayUrl::parse(&v.raw) {
                    let public = u.address_class().is_public();
                    assert_eq!(public, matches!(v.class, Class::Public | Class::Service), "{:?}", v.raw);
                }
            }
        }
        // Deterministic.
        assert_eq!(flood(&spec)[7].note.id, flood(&spec)[7].note.id);
    }
}
