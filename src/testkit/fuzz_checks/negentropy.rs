//! The client side of NIP-77: a [`NegSession`] fed whatever a relay may send, and NEG-ERR frames.
//!
//! Input layout: byte 0 sizes the local set, byte 1 and 2 shape an honest relay's set; the rest is
//! a list of chunks, each a 2-byte little-endian length and that many bytes. A chunk starting with
//! `[` is a whole relay frame (parsed; its NEG-MSG payload is stepped, its NEG-ERR reason
//! classified); one starting with `!` is handed to `step` as text as is; any other is hex-encoded
//! and stepped, so the fuzzer mutates the binary protocol directly.
//!
//! Invariants: no panic on any relay message; every outgoing message is lower-case hex of a V1
//! frame within the frame limit; a step yields at most one needed id per 32 bytes received;
//! rounds count successful steps. Against an honest relay (the `negentropy` crate's server side
//! over a set derived from the input) reconciliation ends within a bounded number of rounds and
//! yields exactly the ids the relay has and we lack.

use std::collections::BTreeSet;

use negentropy::{Negentropy, NegentropyStorageVector};

use crate::policy::Id;
use crate::remote::classify::Source;
use crate::remote::negentropy::{NegSession, NEG_FRAME_LIMIT};
use crate::wire::RelayMsg;

/// NIP-77 protocol version byte (V1).
const PROTOCOL_V1: u8 = 0x61;
/// Smallest frame limit; small frames force multi-round reconciliations.
const SMALL_FRAME: u64 = 4_096;
/// Rounds after which an honest reconciliation counts as not terminating.
const MAX_HONEST_ROUNDS: u32 = 64;

/// A deterministic, well-spread item: `(created_at, id)`.
fn item(n: u32, spread: u8) -> (u64, Id) {
    let mut x = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    let mut id = [0u8; 32];
    for chunk in id.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    // Few distinct timestamps make ranges split on ids too.
    (1_700_000_000 + u64::from(n) / u64::from(spread.max(1)), id)
}

fn check_outgoing(hex_msg: &str, frame_limit: u64) {
    let bytes = hex::decode(hex_msg).expect("outgoing message is hex");
    assert_eq!(hex_msg, hex::encode(&bytes), "outgoing hex is lower-case");
    assert_eq!(bytes.first(), Some(&PROTOCOL_V1), "outgoing frame starts with the V1 byte");
    assert!(bytes.len() as u64 <= frame_limit.max(SMALL_FRAME), "frame of {} bytes over {frame_limit}", bytes.len());
}

fn chunks(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if rest.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let chunk = &rest[2..2 + len];
        rest = &rest[2 + len..];
        Some(chunk)
    })
}

/// Steps the session with one payload and checks the outcome.
fn step(session: &mut NegSession, payload: &str, frame_limit: u64) {
    let rounds = session.rounds;
    match session.step(payload) {
        Ok(step) => {
            assert_eq!(session.rounds, rounds + 1);
            assert!(
                step.need.len() * 32 <= payload.len() / 2,
                "{} ids needed from {} hex chars",
                step.need.len(),
                payload.len()
            );
            if let Some(next) = &step.next {
                check_outgoing(next, frame_limit);
            }
        }
        Err(e) => {
            assert_eq!(session.rounds, rounds, "a failed step is not a round");
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Reconciles `local` against an honest relay holding `remote`; checks the result.
fn honest(local: &[(u64, Id)], remote: &[(u64, Id)], frame_limit: u64) {
    let mut storage = NegentropyStorageVector::new();
    for (t, id) in remote {
        storage.insert(*t, negentropy::Id::from_byte_array(*id)).expect("insert");
    }
    storage.seal().expect("seal");
    let mut server = Negentropy::owned(storage, 0).expect("server");
    let (mut client, mut msg) = NegSession::open_with_limit(local.iter().copied(), frame_limit).expect("open");
    check_outgoing(&msg, frame_limit);
    let mut need = BTreeSet::new();
    loop {
        let answer = server.reconcile(&hex::decode(&msg).expect("hex")).expect("honest relay answers");
        let step = client.step(&hex::encode(answer)).expect("honest answer is understood");
        need.extend(step.need);
        match step.next {
            Some(next) => {
                check_outgoing(&next, frame_limit);
                msg = next;
            }
            None => break,
        }
        assert!(client.rounds <= MAX_HONEST_ROUNDS, "reconciliation does not end");
    }
    let have: BTreeSet<Id> = local.iter().map(|(_, id)| *id).collect();
    let expected: BTreeSet<Id> = remote.iter().map(|(_, id)| *id).filter(|id| !have.contains(id)).collect();
    assert_eq!(need, expected, "honest reconciliation yields exactly the missing ids");
}

/// Fuzz entry point (see the module docs).
pub fn check(data: &[u8]) {
    let [n_local, shape, spread, rest @ ..] = data else { return };
    let local: Vec<(u64, Id)> = (0..u32::from(*n_local)).map(|n| item(n, *spread)).collect();
    let frame_limit = if shape & 0x80 != 0 { SMALL_FRAME } else { NEG_FRAME_LIMIT };

    // Honest relay: drops every k-th local item, adds extra ones.
    let keep_every = u32::from(shape & 0x07) + 1;
    let extra = u32::from(shape & 0x78) * 2;
    let remote: Vec<(u64, Id)> = local
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as u32) % keep_every != 0)
        .map(|(_, it)| *it)
        .chain((0..extra).map(|n| item(10_000 + n, *spread)))
        .collect();
    honest(&local, &remote, frame_limit);

    // Hostile relay.
    let (mut session, first) = NegSession::open_with_limit(local.iter().copied(), frame_limit).expect("open");
    check_outgoing(&first, frame_limit);
    for chunk in chunks(rest) {
        match chunk.first() {
            Some(b'[') => {
                let Ok(frame) = std::str::from_utf8(chunk) else { continue };
                match RelayMsg::parse(frame) {
                    Ok(RelayMsg::NegMsg { msg, .. }) => step(&mut session, &msg, frame_limit),
                    Ok(RelayMsg::NegErr { reason, .. }) => super::relay::check_reason(Source::NegErr, &reason),
                    _ => {}
                }
            }
            Some(b'!') => step(&mut session, &String::from_utf8_lossy(&chunk[1..]), frame_limit),
            _ => step(&mut session, &hex::encode(chunk), frame_limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_reconciliation_over_many_rounds_finds_the_missing_ids() {
        let local: Vec<_> = (0..3_000).map(|n| item(n, 3)).collect();
        let remote: Vec<_> = (0..3_000).filter(|n| n % 5 != 0).chain(5_000..6_000).map(|n| item(n, 3)).collect();
        honest(&local, &remote, SMALL_FRAME);
    }

    #[test]
    fn hostile_payloads_are_errors_not_panics() {
        let mut input = vec![10, 0x83, 2];
        for chunk in [&b"!zz"[..], b"!", &[0x61, 0xff, 0xff, 0xff], br#"["NEG-ERR","n","closed"]"#, &[0x61]] {
            input.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            input.extend_from_slice(chunk);
        }
        check(&input);
    }
}
