//! Wall-clock time as nostr counts it: unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch (0 on a clock set before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_reads_unix_seconds_after_2020() {
        assert!(unix_now() > 1_577_836_800);
    }
}
