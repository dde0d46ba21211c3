//! NIP-77 client side: one reconciliation session over the `negentropy` crate (protocol V1).
//!
//! The local set is given as `(created_at, id)` pairs. Each relay answer yields the ids we need
//! (the relay has them, we do not) and the next message, until reconciliation is complete. Ids
//! only we have are ignored: we never upload.

use negentropy::{Negentropy, NegentropyStorageVector};

use crate::policy::Id;

/// Largest binary frame handed to the negentropy crate. Messages travel as hex (twice the size)
/// inside a JSON array, so this keeps every NIP-77 frame we send under 60 kB.
pub const NEG_FRAME_LIMIT: u64 = 29_000;
/// Smallest frame limit the crate accepts.
const MIN_FRAME_LIMIT: u64 = 4_096;

/// Binary frame limit for a session whose NEG-OPEN also carries `overhead` bytes (filter JSON,
/// subscription id, brackets): the hex message plus the overhead stays within `max_frame`.
pub fn frame_limit_for(max_frame: usize, overhead: usize) -> u64 {
    let room = max_frame.saturating_sub(overhead) as u64 / 2;
    room.clamp(MIN_FRAME_LIMIT, NEG_FRAME_LIMIT)
}

/// A reconciliation failure (bad relay message or local set).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("negentropy: {0}")]
pub struct NegError(pub String);

fn err(e: impl std::fmt::Display) -> NegError {
    NegError(e.to_string())
}

/// One reconciliation in progress.
pub struct NegSession {
    neg: Negentropy<'static, NegentropyStorageVector>,
    /// Rounds of relay messages handled so far.
    pub rounds: u32,
}

impl std::fmt::Debug for NegSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NegSession").field("rounds", &self.rounds).finish()
    }
}

/// Result of one relay message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NegStep {
    /// Ids the relay has that we lack.
    pub need: Vec<Id>,
    /// The next message to send (hex), or `None` when reconciliation is complete.
    pub next: Option<String>,
}

impl NegSession {
    /// Builds the local set and the opening message (hex) with the default frame limit.
    pub fn open(items: impl IntoIterator<Item = (u64, Id)>) -> Result<(NegSession, String), NegError> {
        Self::open_with_limit(items, NEG_FRAME_LIMIT)
    }

    /// Builds the local set and the opening message (hex); binary frames stay within `frame_limit`.
    pub fn open_with_limit(
        items: impl IntoIterator<Item = (u64, Id)>,
        frame_limit: u64,
    ) -> Result<(NegSession, String), NegError> {
        let mut storage = NegentropyStorageVector::new();
        for (created_at, id) in items {
            storage.insert(created_at, negentropy::Id::from_byte_array(id)).map_err(err)?;
        }
        storage.seal().map_err(err)?;
        let mut neg = Negentropy::owned(storage, frame_limit.max(MIN_FRAME_LIMIT)).map_err(err)?;
        let first = neg.initiate().map_err(err)?;
        Ok((NegSession { neg, rounds: 0 }, hex::encode(first)))
    }

    /// Handles a NEG-MSG payload from the relay.
    pub fn step(&mut self, msg_hex: &str) -> Result<NegStep, NegError> {
        let bytes = hex::decode(msg_hex).map_err(err)?;
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let next = self.neg.reconcile_with_ids(&bytes, &mut have, &mut need).map_err(err)?;
        self.rounds += 1;
        Ok(NegStep { need: need.into_iter().map(|id| id.to_bytes()).collect(), next: next.map(hex::encode) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        b
    }

    /// Plays the relay side with the crate's server method.
    fn serve(items: &[(u64, Id)]) -> Negentropy<'static, NegentropyStorageVector> {
        let mut s = NegentropyStorageVector::new();
        for (t, i) in items {
            s.insert(*t, negentropy::Id::from_byte_array(*i)).unwrap();
        }
        s.seal().unwrap();
        Negentropy::owned(s, 0).unwrap()
    }

    #[test]
    fn reconciliation_yields_exactly_the_missing_ids_in_small_frames() {
        let remote: Vec<(u64, Id)> = (0..20_000).map(|n| (1_000 + u64::from(n / 7), id(n))).collect();
        let local: Vec<(u64, Id)> = remote.iter().copied().filter(|(_, i)| i[3] % 10 != 0).collect();
        let mut server = serve(&remote);
        let (mut client, mut msg) = NegSession::open(local.clone()).unwrap();
        let mut need = Vec::new();
        loop {
            assert!(msg.len() + 40 < crate::wire::conn::MAX_NEG_FRAME, "frame of {} hex chars", msg.len());
            let answer = server.reconcile(&hex::decode(&msg).unwrap()).unwrap();
            let step = client.step(&hex::encode(answer)).unwrap();
            need.extend(step.need);
            match step.next {
                Some(next) => msg = next,
                None => break,
            }
        }
        need.sort();
        let mut expected: Vec<Id> = remote.iter().map(|(_, i)| *i).filter(|i| i[3] % 10 == 0).collect();
        expected.sort();
        assert_eq!(need, expected);
    }

    #[test]
    fn a_large_filter_shrinks_the_frame_budget() {
        assert_eq!(frame_limit_for(60_000, 100), NEG_FRAME_LIMIT);
        assert_eq!(frame_limit_for(60_000, 26_000), 17_000);
        assert_eq!(frame_limit_for(60_000, 59_000), 4_096);
        let local: Vec<(u64, Id)> = (0..50_000).map(|n| (u64::from(n), id(n))).collect();
        let (_, first) = NegSession::open_with_limit(local, frame_limit_for(60_000, 26_000)).unwrap();
        assert!(first.len() + 26_000 <= 60_000, "opening message of {} hex chars", first.len());
    }

    #[test]
    fn garbage_from_the_relay_is_an_error() {
        let (mut client, _) = NegSession::open([]).unwrap();
        assert!(client.step("zz").is_err());
        assert!(client.step("62").is_err(), "wrong protocol version");
    }
}
