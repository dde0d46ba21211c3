//! Configuration: a TOML file, overridden by `GRASP_SYNC__SECTION__KEY` environment variables and
//! `--set section.key=value` arguments. Every key is validated at load; errors name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::RelayUrl;

/// Environment variable that may name the config file.
pub const CONFIG_ENV: &str = "GRASP_SYNC_CONFIG";
/// Prefix of per-key environment overrides: `GRASP_SYNC__SYNC__NEGENTROPY=false`.
pub const OVERRIDE_ENV_PREFIX: &str = "GRASP_SYNC__";

/// Every key that exists, with its default as written in TOML. `docs/configuration.md` lists
/// exactly these (a test keeps them in step).
pub const KEYS: &[(&str, &str)] = &[
    ("service_url", "(required)"),
    ("host.url", "\"ws://127.0.0.1:7777\""),
    ("host.strfry_db", "(unset)"),
    ("host.ingest_queue", "10000"),
    ("sync.bootstrap_relays", "[]"),
    ("sync.allow_private_addresses", "false"),
    ("sync.negentropy", "true"),
    ("sync.base_backoff_secs", "5"),
    ("sync.max_backoff_secs", "3600"),
    ("sync.quick_reconnect_secs", "900"),
    ("sync.max_subscriptions_per_relay", "15"),
    ("sync.max_relays", "1000"),
    ("sync.sweep_interval_secs", "3600"),
    ("policy.require_clone", "false"),
    ("rejected.hold_secs", "900"),
    ("rejected.max_held", "10000"),
    ("rejected.max_held_bytes", "67108864"),
    ("state.dir", "\"/var/lib/grasp-sync\""),
    ("metrics.listen", "\"127.0.0.1:9464\""),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This relay's URL as announcements list it.
    pub service_url: RelayUrl,
    #[serde(default)]
    pub host: HostConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub rejected: RejectedConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Where the daemon reaches strfry.
    pub url: RelayUrl,
    /// strfry's LMDB directory (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strfry_db: Option<PathBuf>,
    /// Accepted events held in memory while they wait to be written to the host. When full, the
    /// daemon stops reading from remote relays until the host takes more.
    pub ingest_queue: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            url: RelayUrl::parse("ws://127.0.0.1:7777").expect("valid default"),
            strfry_db: None,
            ingest_queue: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub bootstrap_relays: Vec<RelayUrl>,
    pub allow_private_addresses: bool,
    pub negentropy: bool,
    pub base_backoff_secs: u64,
    pub max_backoff_secs: u64,
    pub quick_reconnect_secs: u64,
    pub max_subscriptions_per_relay: usize,
    pub max_relays: usize,
    pub sweep_interval_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            bootstrap_relays: Vec::new(),
            allow_private_addresses: false,
            negentropy: true,
            base_backoff_secs: 5,
            max_backoff_secs: 3600,
            quick_reconnect_secs: 900,
            max_subscriptions_per_relay: 15,
            max_relays: 1000,
            sweep_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub require_clone: bool,
}

/// How long and how many policy-rejected events the daemon holds for re-offering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RejectedConfig {
    pub hold_secs: u64,
    pub max_held: usize,
    pub max_held_bytes: usize,
}

impl Default for RejectedConfig {
    fn default() -> Self {
        RejectedConfig { hold_secs: 900, max_held: 10_000, max_held_bytes: 64 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig { dir: PathBuf::from("/var/lib/grasp-sync") }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9464".parse().expect("valid default") }
    }
}

/// A configuration error. The message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration file: pass --config FILE or set {CONFIG_ENV}")]
    NoFile,
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration file {path} is not valid TOML: {msg}")]
    Syntax { path: PathBuf, msg: String },
    #[error("unknown configuration key `{key}`")]
    UnknownKey { key: String },
    #[error("configuration key `{key}` is required")]
    Missing { key: String },
    #[error("configuration key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
    #[error("override `{arg}`: expected KEY=VALUE")]
    BadOverride { arg: String },
}

fn invalid(key: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), msg: msg.into() }
}

impl Config {
    /// Loads from `path` (or `$GRASP_SYNC_CONFIG`), then applies environment and CLI overrides.
    pub fn load(path: Option<&Path>, cli_overrides: &[String]) -> Result<Config, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os(CONFIG_ENV).map(PathBuf::from).ok_or(ConfigError::NoFile)?,
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(OVERRIDE_ENV_PREFIX)).collect();
        Config::from_toml_with(&text, &env, cli_overrides).map_err(|e| match e {
            ConfigError::Syntax { msg, .. } => ConfigError::Syntax { path, msg },
            e => e,
        })
    }

    /// Parses TOML text with no overrides.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, &[], &[])
    }

    /// Parses TOML text, then applies env-style `(GRASP_SYNC__A__B, value)` pairs and
    /// `a.b=value` CLI overrides (CLI last, so it wins).
    pub fn from_toml_with(text: &str, env: &[(String, String)], cli: &[String]) -> Result<Config, ConfigError> {
        let syntax = |msg: String| ConfigError::Syntax { path: PathBuf::new(), msg };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| syntax(e.message().to_string()))?;
        for (name, value) in env {
            let key = name[OVERRIDE_ENV_PREFIX.len()..].to_ascii_lowercase().replace("__", ".");
            set_key(&mut table, &key, value)?;
        }
        for arg in cli {
            let (key, value) = arg.split_once('=').ok_or_else(|| ConfigError::BadOverride { arg: arg.clone() })?;
            set_key(&mut table, key.trim(), value.trim())?;
        }
        check_keys(&table, "")?;
        if !table.contains_key("service_url") {
            return Err(ConfigError::Missing { key: "service_url".into() });
        }
        let config = Config::deserialize_keyed(&table)?;
        config.validate()?;
        Ok(config)
    }

    /// Deserialises section by section and key by key so that a type error names its key.
    fn deserialize_keyed(table: &toml::Table) -> Result<Config, ConfigError> {
        for (section, value) in table {
            if let toml::Value::Table(inner) = value {
                for (key, v) in inner {
                    let full = format!("{section}.{key}");
                    check_value(&full, v.clone())?;
                }
            } else {
                check_value(section, value.clone())?;
            }
        }
        toml::Value::Table(table.clone()).try_into().map_err(|e: toml::de::Error| invalid("?", e.message()))
    }

    /// Checks cross-key rules and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.sync;
        if s.base_backoff_secs == 0 {
            return Err(invalid("sync.base_backoff_secs", "must be at least 1"));
        }
        if s.max_backoff_secs < s.base_backoff_secs {
            return Err(invalid(
                "sync.max_backoff_secs",
                format!("must be at least sync.base_backoff_secs ({})", s.base_backoff_secs),
            ));
        }
        if s.max_subscriptions_per_relay < 2 {
            return Err(invalid("sync.max_subscriptions_per_relay", "must be at least 2 (one live, one historic)"));
        }
        if s.max_relays == 0 {
            return Err(invalid("sync.max_relays", "must be at least 1"));
        }
        if s.sweep_interval_secs == 0 {
            return Err(invalid("sync.sweep_interval_secs", "must be at least 1"));
        }
        if self.rejected.max_held == 0 {
            return Err(invalid("rejected.max_held", "must be at least 1"));
        }
        if self.rejected.max_held_bytes < 65_536 {
            return Err(invalid(
                "rejected.max_held_bytes",
                "must be at least 65536 (one event of strfry's maxEventSize)",
            ));
        }
        if self.host.ingest_queue == 0 {
            return Err(invalid("host.ingest_queue", "must be at least 1"));
        }
        if self.state.dir.as_os_str().is_empty() {
            return Err(invalid("state.dir", "must not be empty"));
        }
        if let Some(db) = &self.host.strfry_db {
            if db.as_os_str().is_empty() {
                return Err(invalid("host.strfry_db", "must not be empty (leave the key out instead)"));
            }
        }
        Ok(())
    }
}

/// Checks one key's value by deserialising it into its field type through a one-key table.
fn check_value(key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let msg = |e: toml::de::Error| invalid(key, e.message().trim().to_string());
    match key {
        "service_url" | "host.url" => RelayUrl::deserialize(value).map(drop).map_err(msg),
        "host.strfry_db" | "state.dir" => PathBuf::deserialize(value).map(drop).map_err(msg),
        "sync.bootstrap_relays" => Vec::<RelayUrl>::deserialize(value).map(drop).map_err(msg),
        "sync.allow_private_addresses" | "sync.negentropy" | "policy.require_clone" => {
            bool::deserialize(value).map(drop).map_err(msg)
        }
        "sync.base_backoff_secs"
        | "sync.max_backoff_secs"
        | "sync.quick_reconnect_secs"
        | "sync.sweep_interval_secs"
        | "rejected.hold_secs" => u64::deserialize(value).map(drop).map_err(msg),
        "sync.max_subscriptions_per_relay"
        | "sync.max_relays"
        | "host.ingest_queue"
        | "rejected.max_held"
        | "rejected.max_held_bytes" => usize::deserialize(value).map(drop).map_err(msg),
        "metrics.listen" => SocketAddr::deserialize(value).map(drop).map_err(msg),
        _ => Err(ConfigError::UnknownKey { key: key.to_string() }),
    }
}

fn is_section(name: &str) -> bool {
    KEYS.iter().any(|(k, _)| k.split_once('.').is_some_and(|(s, _)| s == name))
}

fn check_keys(table: &toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (k, v) in table {
        let full = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(inner) if prefix.is_empty() && is_section(k) => check_keys(inner, &full)?,
            _ if prefix.is_empty() && is_section(k) => return Err(invalid(k, "must be a table")),
            _ if KEYS.iter().any(|(known, _)| *known == full) => {}
            _ => return Err(ConfigError::UnknownKey { key: full }),
        }
    }
    Ok(())
}

/// Sets `a.b` in the table from an override string: TOML syntax if it parses (numbers, booleans,
/// arrays), else a plain string.
fn set_key(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), ConfigError> {
    if !KEYS.iter().any(|(k, _)| *k == key) {
        return Err(ConfigError::UnknownKey { key: key.to_string() });
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut cur = table;
    for p in parts {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(invalid(p, "must be a table")),
        };
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests;
