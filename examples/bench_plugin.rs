//! Plugin benchmark: decisions per second and latency per decision.
//!
//! Two measurements on the same generated workload (announcements, issues, comments, unrelated
//! notes; ids valid, signatures not checked as in the plugin):
//! 1. in-process: `Plugin::handle_line` over request lines (parse, id check, rules, answer);
//! 2. the real binary over pipes, one request at a time as strfry's writer thread sends them.
//!
//! Run: `scripts/bench-plugin` (or `cargo run --release --example bench_plugin -- [N]`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use grasp_sync::host::plugin::Plugin;
use grasp_sync::policy::{AcceptedSet, Note, Policy, RelayUrl};
use serde_json::json;

const SERVICE: &str = "wss://grasp.example.com";

fn note(pk: u64, kind: u64, at: u64, tags: Vec<Vec<String>>, content: String) -> Note {
    let mut n = Note {
        id: String::new(),
        pubkey: format!("{pk:064x}"),
        created_at: at,
        kind,
        tags,
        content,
        sig: "ab".repeat(64),
    };
    n.id = hex::encode(n.compute_id());
    n
}

/// Request lines: 1 in 20 an announcement (half listing us), the rest issues, comments on
/// earlier issues, and unrelated notes.
fn workload(n: usize) -> Vec<String> {
    let mut lines = Vec::with_capacity(n);
    let mut repos: Vec<String> = Vec::new();
    let mut issues: Vec<String> = Vec::new();
    for i in 0..n {
        let at = 1_700_000_000 + i as u64;
        let ev = match i % 20 {
            0 => {
                let d = format!("repo{i}");
                let relays = if i % 40 == 0 { SERVICE } else { "wss://elsewhere.example" };
                repos.push(format!("30617:{:064x}:{d}", i + 1));
                note(
                    i as u64 + 1,
                    30617,
                    at,
                    vec![
                        vec!["d".into(), d],
                        vec!["relays".into(), relays.into(), "wss://r1.example".into()],
                        vec!["clone".into(), "https://grasp.example.com/x.git".into()],
                    ],
                    "announcement".into(),
                )
            }
            1..=9 if !repos.is_empty() => {
                let repo = repos[i % repos.len()].clone();
                let ev = note(
                    7,
                    1621,
                    at,
                    vec![vec!["a".into(), repo], vec!["subject".into(), format!("issue {i}")]],
                    "an issue body ".repeat(20),
                );
                issues.push(ev.id.clone());
                ev
            }
            10..=16 if !issues.is_empty() => {
                let parent = issues[i % issues.len()].clone();
                note(
                    8,
                    1111,
                    at,
                    vec![
                        vec!["E".into(), parent.clone(), String::new()],
                        vec!["e".into(), parent, String::new()],
                        vec!["K".into(), "1621".into()],
                    ],
                    "a comment".into(),
                )
            }
            _ => note(9, 1, at, vec![vec!["t".into(), "chatter".into()]], "unrelated note".into()),
        };
        lines.push(
            json!({"type": "new", "event": ev, "receivedAt": at, "sourceType": "IP4", "sourceInfo": "127.0.0.1"})
                .to_string(),
        );
    }
    lines
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(label: &str, total_secs: f64, mut lat_ns: Vec<u64>) {
    lat_ns.sort_unstable();
    println!(
        "{label:<22} {:>9.0} decisions/s   p50 {:>6.1} µs   p99 {:>6.1} µs   max {:>7.1} µs",
        lat_ns.len() as f64 / total_secs,
        percentile(&lat_ns, 0.50) as f64 / 1000.0,
        percentile(&lat_ns, 0.99) as f64 / 1000.0,
        *lat_ns.last().unwrap() as f64 / 1000.0
    );
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let lines = workload(n);
    let avg = lines.iter().map(String::len).sum::<usize>() / lines.len();
    println!("workload: {n} requests, average line {avg} bytes");

    let policy = Policy::new(RelayUrl::parse(SERVICE).unwrap(), false);
    let mut plugin = Plugin::new(policy, AcceptedSet::new());
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for line in &lines {
        let t = Instant::now();
        let answer = plugin.handle_line(line.as_bytes()).expect("answered");
        std::hint::black_box(serde_json::to_string(&answer).unwrap());
        lat.push(t.elapsed().as_nanos() as u64);
    }
    report("in-process", start.elapsed().as_secs_f64(), lat);
    println!("  accepted {} rejected {}", plugin.stats.accepted, plugin.stats.rejected);

    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("grasp-sync");
    let dir = std::env::temp_dir().join(format!("grasp-sync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    // The plugin requires strfry's database: an empty one.
    let db = dir.join("strfry-db");
    std::fs::create_dir_all(&db).unwrap();
    grasp_sync::testkit::generate::Generator::create(&db, 1 << 24).unwrap().finish().unwrap();
    std::fs::write(&config, format!("service_url = \"{SERVICE}\"\n[host]\nstrfry_db = \"{}\"\n", db.display()))
        .unwrap();
    let mut child = Command::new(&bin)
        .args(["plugin", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} (build it with --release first): {e}", bin.display()));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut answer = String::new();
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for line in &lines {
        let t = Instant::now();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        answer.clear();
        stdout.read_line(&mut answer).unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
    }
    report("binary, round trip", start.elapsed().as_secs_f64(), lat);
    drop(stdin);
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
