//! Reconnect backoff. (The relay task decides when to
//! dial: `engine::relay_task::after_failure` / `after_session`.)

/// `base · 2^(failures−1)`, capped at `max`; 0 failures → 0.
pub fn backoff_secs(failures: u32, base: u64, max: u64) -> u64 {
    if failures == 0 {
        return 0;
    }
    let shift = (failures - 1).min(63);
    base.saturating_mul(1u64 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_from_base_and_is_capped() {
        let got: Vec<u64> = (0..=12).map(|f| backoff_secs(f, 5, 3600)).collect();
        assert_eq!(got, [0, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(backoff_secs(u32::MAX, 5, 3600), 3600);
    }

    proptest! {
        #[test]
        fn backoff_is_monotone_and_bounded(base in 1u64..100, max in 100u64..100_000, f in 1u32..200) {
            let a = backoff_secs(f, base, max);
            let b = backoff_secs(f + 1, base, max);
            prop_assert!(a <= b && b <= max && a >= base.min(max));
        }
    }
}
