//! The configuration turned into the plain settings of the parts the daemon runs: only the
//! daemon (and the CLI) read [`Config`]; the engine, the host and the remote side take these.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Config;
use crate::engine::{EngineConfig, SyncSettings};

/// The sync engine's settings from the `[sync]` section (durations from their `_secs` keys,
/// everything not configurable at its default).
pub fn engine_config(cfg: &Config) -> EngineConfig {
    let s = &cfg.sync;
    let base = Duration::from_secs(s.base_backoff_secs);
    EngineConfig {
        service_url: cfg.service_url.clone(),
        bootstrap: s.bootstrap_relays.clone(),
        allow_private: s.allow_private_addresses,
        max_relays: s.max_relays,
        settings: SyncSettings {
            negentropy: s.negentropy,
            base_backoff: base,
            connect_timeout: base,
            max_backoff: Duration::from_secs(s.max_backoff_secs),
            quick_reconnect: Duration::from_secs(s.quick_reconnect_secs),
            max_subscriptions: s.max_subscriptions_per_relay,
            sweep_interval: Duration::from_secs(s.sweep_interval_secs),
            ..SyncSettings::default()
        },
        persisted: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_keys_reach_the_engine() {
        let mut cfg = Config::from_toml("service_url = \"wss://git.example.com\"\n").unwrap();
        cfg.sync.base_backoff_secs = 7;
        cfg.sync.max_subscriptions_per_relay = 9;
        cfg.sync.max_relays = 12;
        cfg.sync.sweep_interval_secs = 60;
        let e = engine_config(&cfg);
        assert_eq!(e.settings.base_backoff, Duration::from_secs(7));
        assert_eq!(e.settings.connect_timeout, Duration::from_secs(7));
        assert_eq!(e.settings.max_subscriptions, 9);
        assert_eq!(e.max_relays, 12);
        assert_eq!(e.settings.sweep_interval, Duration::from_secs(60));
        assert_eq!(e.service_url.as_str(), "wss://git.example.com");
    }
}
