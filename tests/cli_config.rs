//! The binary's configuration handling: exit code 2 and a message naming the key.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grasp-sync"));
    cmd.args(args).env_remove("GRASP_SYNC_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

#[test]
fn valid_config_is_printed_with_defaults() {
    let (_d, path) = config("service_url = \"wss://git.example.com/\"\n");
    let (code, out, _) = run(&["check-config", "--config", &path], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("service_url = \"wss://git.example.com\""), "{out}");
    assert!(out.contains("max_subscriptions_per_relay = 15"), "{out}");
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    for (text, key) in [
        ("[sync]\nnegentropy = true\n", "service_url"),
        ("service_url = \"wss://a.example\"\nbogus = 1\n", "bogus"),
        ("service_url = \"wss://a.example\"\n[sync]\nmax_relays = \"many\"\n", "sync.max_relays"),
        ("service_url = \"http://a.example\"\n", "service_url"),
    ] {
        let (_d, path) = config(text);
        for command in ["check-config", "plugin"] {
            let (code, _, err) = run(&[command, "--config", &path], &[]);
            assert_eq!(code, 2, "{command} {text}: {err}");
            assert!(err.contains(key), "{command}: message names {key}: {err}");
        }
    }
}

#[test]
fn config_file_comes_from_the_environment_and_overrides_apply() {
    let (_d, path) = config("service_url = \"wss://git.example.com\"\n");
    let (code, out, err) = run(
        &["check-config", "--set", "sync.max_relays=7"],
        &[("GRASP_SYNC_CONFIG", &path), ("GRASP_SYNC__SYNC__NEGENTROPY", "false")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_relays = 7") && out.contains("negentropy = false"), "{out}");
}

#[test]
fn missing_or_unreadable_config_exits_2() {
    let (code, _, err) = run(&["check-config"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("GRASP_SYNC_CONFIG"), "{err}");
    let (code, _, err) = run(&["check-config", "--config", "/nonexistent/grasp-sync.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/grasp-sync.toml"), "{err}");
}

#[test]
fn the_plugin_requires_strfrys_database_and_check_config_says_so() {
    let (_d, path) = config("service_url = \"wss://a.example\"\n");
    let (code, out, err) = run(&["plugin", "--config", &path], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("host.strfry_db") && err.contains("plugin"), "{err}");
    assert!(out.is_empty(), "nothing on the protocol channel: {out}");
    // Checked for the plugin: the same error. Checked for the daemon: fine. By default: a warning.
    let (code, _, err) = run(&["check-config", "--for", "plugin", "--config", &path], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("host.strfry_db"), "{err}");
    let (code, _, err) = run(&["check-config", "--for", "run", "--config", &path], &[]);
    assert_eq!((code, err.contains("host.strfry_db")), (0, false), "{err}");
    let (code, out, err) = run(&["check-config", "--config", &path], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning") && err.contains("host.strfry_db"), "{err}");
    assert!(out.contains("service_url"), "{out}");
}
