//! `grasp-sync index` and the plugin's LMDB seeding, run as the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap()
}

/// A copy of a fixture database and a config file pointing at it.
fn setup(db: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!("service_url = \"{}\"\n", manifest()["service_url"].as_str().unwrap());
    if let Some(name) = db {
        let db_dir = dir.path().join("db");
        std::fs::create_dir(&db_dir).unwrap();
        let to = db_dir.join("data.mdb");
        std::fs::copy(fixtures().join(name).join("data.mdb"), &to).unwrap();
        let mut perms = std::fs::metadata(&to).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&to, perms).unwrap();
        cfg.push_str(&format!("[host]\nstrfry_db = \"{}\"\n", db_dir.display()));
    }
    let path = dir.path().join("grasp-sync.toml");
    std::fs::write(&path, cfg).unwrap();
    (dir, path)
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_grasp-sync"));
    c.env_remove("GRASP_SYNC_CONFIG").env("RUST_LOG", "warn");
    c
}

#[test]
fn index_command_prints_the_repo_index_as_json() {
    let (_dir, cfg) = setup(Some("strfry-db-compressed"));
    let out = bin().args(["index", "--json", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted_events"], manifest()["accept"].as_array().unwrap().len());
    let repos = v["repos"].as_array().unwrap();
    let coords: Vec<&str> = repos.iter().map(|r| r["coordinate"].as_str().unwrap()).collect();
    for listing in manifest()["repos_listing_service"].as_array().unwrap() {
        assert!(coords.contains(&listing.as_str().unwrap()), "{listing} is indexed");
    }
    assert_eq!(repos.len(), 3, "the two listing repos and the maintainer's announcement");
    let issue_alpha = manifest()["ids"]["issue_alpha"].clone();
    assert!(repos.iter().any(|r| r["root_events"].as_array().unwrap().contains(&issue_alpha)));
    assert!(repos.iter().all(|r| !r["relays"].as_array().unwrap().contains(&Value::from("wss://grasp.example.com"))));
}

#[test]
fn index_command_prints_a_readable_table() {
    let (_dir, cfg) = setup(Some("strfry-db-mixed"));
    let out = bin().args(["index", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("3 repositories, 5 root events, 14 accepted events"), "{text}");
    assert!(text.contains("relay wss://r1.example.com"));
}

#[test]
fn index_command_without_a_database_fails_clearly() {
    let (_dir, cfg) = setup(None);
    let out = bin().args(["index", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host.strfry_db is not set"));
}

/// Runs the plugin on the given request lines; returns its answers.
fn run_plugin(cfg: &Path, lines: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut child = bin()
        .args(["plugin", "--config"])
        .arg(cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        let _ = writeln!(stdin, "{l}");
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let answers = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.status.code(), answers)
}

#[test]
fn plugin_seeded_from_lmdb_accepts_replies_to_events_it_never_saw() {
    // The comment on issue_alpha is acceptable only because issue_alpha is in strfry already.
    let input = std::fs::read_to_string(fixtures().join("plugin-input.jsonl")).unwrap();
    let comment_id = manifest()["ids"]["comment_issue_alpha"].as_str().unwrap().to_string();
    let line = input.lines().find(|l| l.contains(&format!("\"id\":\"{comment_id}\""))).unwrap();

    let (_dir, seeded) = setup(Some("strfry-db-mixed"));
    let (code, answers) = run_plugin(&seeded, &[line]);
    assert_eq!(code, Some(0));
    assert_eq!(answers[0]["action"], "accept");

    // Without the database the parent would be unknown: the plugin refuses to start instead.
    let (_dir2, unseeded) = setup(None);
    let (code, answers) = run_plugin(&unseeded, &[line]);
    assert_eq!(code, Some(2));
    assert!(answers.is_empty());
}

#[test]
fn plugin_with_an_unreadable_database_exits_with_an_error() {
    let (dir, cfg) = setup(Some("strfry-db-mixed"));
    std::fs::write(dir.path().join("db/data.mdb"), b"not lmdb").unwrap();
    let (code, answers) = run_plugin(&cfg, &[]);
    assert_eq!(code, Some(1));
    assert!(answers.is_empty());
}
