use super::*;

const MIN: &str = "service_url = \"wss://git.example.com\"\n";

#[test]
fn minimal_file_gets_every_default() {
    let c = Config::from_toml(MIN).unwrap();
    assert_eq!(c.service_url.as_str(), "wss://git.example.com");
    assert_eq!(c.host, HostConfig::default());
    assert_eq!(c.sync, SyncConfig::default());
    assert_eq!(c.sync.max_subscriptions_per_relay, 15);
    assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
}

#[test]
fn missing_service_url_names_the_key() {
    let e = Config::from_toml("[sync]\nnegentropy = false\n").unwrap_err();
    assert!(matches!(&e, ConfigError::Missing { key } if key == "service_url"), "{e}");
}

#[test]
fn unknown_keys_are_named() {
    for (text, key) in [
        (format!("{MIN}colour = 1\n"), "colour"),
        (format!("{MIN}[sync]\nnegentropi = true\n"), "sync.negentropi"),
        (format!("{MIN}[nope]\nx = 1\n"), "nope"),
    ] {
        let e = Config::from_toml(&text).unwrap_err();
        assert!(matches!(&e, ConfigError::UnknownKey { key: k } if k == key), "{e}");
        assert!(e.to_string().contains(key));
    }
}

#[test]
fn bad_values_name_the_key_and_why() {
    for (text, key) in [
        ("service_url = \"https://git.example.com\"\n".to_string(), "service_url"),
        ("service_url = \"not a url\"\n".to_string(), "service_url"),
        (format!("{MIN}[host]\nurl = \"http://127.0.0.1:7777\"\n"), "host.url"),
        (format!("{MIN}[sync]\nbase_backoff_secs = \"five\"\n"), "sync.base_backoff_secs"),
        (format!("{MIN}[sync]\nbase_backoff_secs = 0\n"), "sync.base_backoff_secs"),
        (format!("{MIN}[sync]\nbase_backoff_secs = 10\nmax_backoff_secs = 5\n"), "sync.max_backoff_secs"),
        (format!("{MIN}[sync]\nbootstrap_relays = [\"wss://ok.example\", \"ftp://bad\"]\n"), "sync.bootstrap_relays"),
        (format!("{MIN}[sync]\nmax_subscriptions_per_relay = 1\n"), "sync.max_subscriptions_per_relay"),
        (format!("{MIN}[metrics]\nlisten = \"nowhere\"\n"), "metrics.listen"),
        (format!("{MIN}sync = 3\n"), "sync"),
    ] {
        let e = Config::from_toml(&text).unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { key: k, .. } if k == key), "{text}: {e}");
    }
}

#[test]
fn syntax_errors_are_reported() {
    assert!(matches!(Config::from_toml("service_url = "), Err(ConfigError::Syntax { .. })));
}

#[test]
fn env_and_cli_overrides_apply_in_order() {
    let env = vec![
        ("GRASP_SYNC__SYNC__NEGENTROPY".to_string(), "false".to_string()),
        ("GRASP_SYNC__STATE__DIR".to_string(), "/tmp/state".to_string()),
        ("GRASP_SYNC__SYNC__MAX_RELAYS".to_string(), "7".to_string()),
    ];
    let cli = vec!["sync.max_relays=9".to_string(), "host.strfry_db=/var/lib/strfry/db".to_string()];
    let c = Config::from_toml_with(MIN, &env, &cli).unwrap();
    assert!(!c.sync.negentropy);
    assert_eq!(c.state.dir, PathBuf::from("/tmp/state"));
    assert_eq!(c.sync.max_relays, 9);
    assert_eq!(c.host.strfry_db, Some(PathBuf::from("/var/lib/strfry/db")));
    let e = Config::from_toml_with(MIN, &[("GRASP_SYNC__SYNC__NOPE".into(), "1".into())], &[]).unwrap_err();
    assert!(matches!(e, ConfigError::UnknownKey { key } if key == "sync.nope"));
    assert!(matches!(Config::from_toml_with(MIN, &[], &["novalue".into()]), Err(ConfigError::BadOverride { .. })));
    let c = Config::from_toml_with("", &[], &["service_url=wss://cli.example".into()]).unwrap();
    assert_eq!(c.service_url.as_str(), "wss://cli.example");
}

fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let full = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => leaf_keys(t, &full, out),
            _ => out.push(full),
        }
    }
}

#[test]
fn key_registry_matches_the_config_structs() {
    let mut c = Config::from_toml(MIN).unwrap();
    c.host.strfry_db = Some("/x".into());
    let table: toml::Table = toml::to_string(&c).unwrap().parse().unwrap();
    let mut keys = Vec::new();
    leaf_keys(&table, "", &mut keys);
    keys.sort();
    let mut registry: Vec<String> = KEYS.iter().map(|(k, _)| k.to_string()).collect();
    registry.sort();
    assert_eq!(keys, registry);
}

#[test]
fn registry_defaults_are_the_real_defaults() {
    let c = Config::from_toml(MIN).unwrap();
    let table: toml::Table = toml::to_string(&c).unwrap().parse().unwrap();
    for (key, default) in KEYS {
        if default.starts_with('(') {
            continue;
        }
        let (section, name) = key.split_once('.').unwrap();
        let v = &table[section][name];
        assert_eq!(v.to_string(), *default, "{key}");
    }
}

#[test]
fn docs_list_every_key_with_its_default_and_no_other() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    // Rows of the key table look like: | `sync.negentropy` | `true` | ... |
    let mut documented = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_string();
        let default = cells[2].trim_matches('`').to_string();
        let known = KEYS.iter().find(|(k, _)| *k == key);
        let (_, expected) = known.unwrap_or_else(|| panic!("docs list `{key}`, which does not exist"));
        assert_eq!(default, *expected, "default of {key} in docs");
        documented.push(key);
    }
    for (key, _) in KEYS {
        assert!(documented.iter().any(|d| d == key), "docs/configuration.md does not list {key}");
    }
}
