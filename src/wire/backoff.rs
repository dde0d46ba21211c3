//! Reconnect backoff: the one doubling-and-capped delay every reconnecting task waits (remote
//! relay tasks, the host stream, host ingest, the index build over the host's websocket).

use std::time::Duration;

/// `base · 2^(failures−1)`, capped at `max`; 0 failures → no wait.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(31);
    base.saturating_mul(1u32 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(failures: u32, base: u64, max: u64) -> u64 {
        backoff(failures, Duration::from_secs(base), Duration::from_secs(max)).as_secs()
    }

    #[test]
    fn backoff_doubles_from_base_and_is_capped() {
        let got: Vec<u64> = (0..=12).map(|f| secs(f, 5, 3600)).collect();
        assert_eq!(got, [0, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(secs(u32::MAX, 5, 3600), 3600);
        assert_eq!(secs(1000, 5, 3600), 3600);
    }

    proptest! {
        #[test]
        fn backoff_is_monotone_and_bounded(base in 1u64..100, max in 100u64..100_000, f in 1u32..200) {
            let a = secs(f, base, max);
            let b = secs(f + 1, base, max);
            prop_assert!(a <= b && b <= max && a >= base.min(max));
        }
    }
}
