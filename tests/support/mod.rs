//! Shared helpers for integration tests: fixtures, the plugin process, strfry.
#![allow(dead_code)]

pub mod daemon;
pub mod host;
pub mod strfry;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
pub const SERVICE: &str = "wss://grasp.example.com";
/// Longest a test waits for one answer before failing.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

pub fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/manifest.json")).unwrap()).unwrap()
}

/// `(name, event JSON)` in publication order.
pub fn fixture_events() -> Vec<(String, Value)> {
    std::fs::read_to_string(format!("{FIXTURES}/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["name"].as_str().unwrap().to_string(), v["event"].clone())
        })
        .collect()
}

/// Name of a fixture event id according to the manifest.
pub fn name_of(manifest: &Value, id: &str) -> String {
    manifest["ids"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| *v == id)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| id.into())
}

/// A config file in a temp dir. Unless `extra` names its own `host.strfry_db`, it points at an
/// empty strfry database made in `dir` (the plugin requires one).
pub fn write_config(dir: &std::path::Path, extra: &str) -> PathBuf {
    let path = dir.join("grasp-sync.toml");
    let db = if extra.contains("strfry_db") {
        String::new()
    } else {
        format!("[host]\nstrfry_db = \"{}\"\n", empty_strfry_db(dir).display())
    };
    std::fs::write(&path, format!("service_url = \"{SERVICE}\"\n{db}{extra}")).unwrap();
    path
}

/// An empty strfry database (LMDB in strfry's layout) in `dir/strfry-db`.
pub fn empty_strfry_db(dir: &std::path::Path) -> PathBuf {
    let db = dir.join("strfry-db");
    std::fs::create_dir_all(&db).unwrap();
    let g = grasp_sync::testkit::generate::Generator::create(&db, 1 << 24).unwrap();
    g.finish().unwrap();
    db
}

/// The real `grasp-sync plugin` process, driven one request at a time as strfry does.
pub struct PluginProc {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
}

impl PluginProc {
    pub fn start(config: &std::path::Path) -> PluginProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_grasp-sync"))
            .args(["plugin", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start grasp-sync plugin");
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        PluginProc { child, stdin, answers }
    }

    /// Sends raw bytes followed by a newline.
    pub fn send(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends raw bytes as they are (no newline added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (end of input) without waiting for the exit.
    pub fn close_input(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits for the next answer line, parsed.
    pub fn answer(&mut self) -> Value {
        let line = self.answers.recv_timeout(ANSWER_DEADLINE).expect("plugin answered within the deadline");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {line}"))
    }

    /// Sends one line and returns its answer.
    pub fn ask(&mut self, line: &[u8]) -> Value {
        self.send(line);
        self.answer()
    }

    /// No answer arrives within `wait` (used after lines that carry no readable id).
    pub fn no_answer_within(&mut self, wait: Duration) -> bool {
        self.answers.recv_timeout(wait).is_err()
    }

    /// Closes stdin and waits for a clean exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + ANSWER_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "plugin did not exit after stdin closed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PluginProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
