//! A remote relay's lifecycle status and the state kept about it across connections and
//! daemon restarts. Plain data: times are unix seconds passed in by the caller.

use serde::{Deserialize, Serialize};

pub use crate::status::RelayStatus;

/// What a relay's task keeps about the relay across connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayState {
    /// When the last connection was established.
    pub last_connected: Option<u64>,
    /// When data was last received on the last established connection (failed dials do not
    /// move it).
    pub disconnected_at: Option<u64>,
    /// Layer 1 (announcements) historic sync finished since the last fresh start.
    pub announcements_synced: bool,
    /// When the next daily fresh start is due.
    pub fresh_start_due: Option<u64>,
    /// NIP-77 support: `None` unknown (probe), `Some(false)` fall back to REQ until the next
    /// fresh start re-probes.
    pub negentropy: Option<bool>,
}

/// The part of [`RelayState`] kept across daemon restarts (state dir), with the items confirmed
/// on the relay in compact form (sorted 64-bit digests, 16 hex digits each), so a clean restart
/// within the quick-reconnect window resumes every layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedRelay {
    pub last_connected: Option<u64>,
    pub disconnected_at: Option<u64>,
    pub announcements_synced: bool,
    pub fresh_start_due: Option<u64>,
    pub negentropy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<String>,
}

impl RelayState {
    /// The fields to persist (the caller adds the confirmed items).
    pub fn persisted(&self) -> PersistedRelay {
        PersistedRelay {
            last_connected: self.last_connected,
            disconnected_at: self.disconnected_at,
            announcements_synced: self.announcements_synced,
            fresh_start_due: self.fresh_start_due,
            negentropy: self.negentropy,
            confirmed: None,
        }
    }

    /// State read back from the state dir.
    pub fn restore(saved: &PersistedRelay) -> Self {
        RelayState {
            last_connected: saved.last_connected,
            disconnected_at: saved.disconnected_at,
            announcements_synced: saved.announcements_synced,
            fresh_start_due: saved.fresh_start_due,
            negentropy: saved.negentropy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_fields_round_trip() {
        let s = RelayState {
            last_connected: Some(1),
            disconnected_at: Some(2),
            announcements_synced: true,
            fresh_start_due: Some(9),
            negentropy: Some(true),
        };
        let mut saved = s.persisted();
        saved.confirmed = Some("00000000000000ff".into());
        let json = serde_json::to_string(&saved).unwrap();
        let back: PersistedRelay = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);
        assert_eq!(RelayState::restore(&back), s);
        let old: PersistedRelay = serde_json::from_str(r#"{"last_connected":1,"disconnected_at":2,"announcements_synced":true,"fresh_start_due":null,"negentropy":null}"#).unwrap();
        assert_eq!(old.confirmed, None, "state files without confirmed items still read");
    }
}
