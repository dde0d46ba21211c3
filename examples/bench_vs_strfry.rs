//! grasp-sync against `strfry sync`, with real strfry processes on loopback (needs a strfry binary:
//! `$STRFRY_BIN` or `strfry` on PATH). Run through `scripts/bench-vs-strfry [EVENTS]` (one repository,
//! 100 issues, comments up to EVENTS in all) or `scripts/bench-vs-strfry REPOS ISSUES COMMENTS`
//! (REPOS repositories, ISSUES issues each, COMMENTS comments on every issue); `--no-live` skips step 5,
//! `--no-plugin` runs the host without the writePolicy plugin.
//!
//! 1. A remote strfry holds the repositories' history: announcements, issues (kind 1621) and NIP-22
//!    comments on them (`E` + `K` tags).
//! 2. `strfry sync <remote> --dir down` with the filters grasp-sync would use (L1, L2 `#a`, L3 `#E`
//!    in chunks of at most 1,000 ids so each NEG-OPEN fits strfry's 131,072-byte frames) into an
//!    empty strfry: wall time, added up over the invocations.
//! 3. `grasp-sync run` beside another empty strfry (running `grasp-sync plugin`) that holds only the
//!    announcements: wall time from start until the host holds every event, until `/status` shows
//!    history complete, bytes on the wire and `events_received`; also the CPU time every process
//!    used until the copy was complete (daemon, host strfry, its plugin, the remote) against that of
//!    `strfry sync` and the remote in step 2. `BENCH_TRACE=1` prints the progress every 50 ms (events
//!    on the host, ingest queue, events received and stored, root events known).
//! 4. Re-sync with nothing changed: the daemon is stopped, its state removed (a fresh start, not a
//!    quick reconnect) and started again; time until `/status` shows history complete and bytes,
//!    against `strfry sync` run again into its already complete copy.
//! 5. Live: events published to the remote one by one; latency until each is on the host.

#[path = "../tests/support/strfry.rs"]
mod strfry;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nostr_relay_builder::prelude::{Keys, Timestamp};
use serde_json::{json, Value};
use strfry::{count, event, find_strfry, free_port, terminate, Strfry};
use tokio_tungstenite::tungstenite::Message;

const SERVICE: &str = "wss://git.example.test";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The data shape: `repos` repositories with `issues` issues each and `comments` comments in all,
/// spread over the issues round robin.
struct Shape {
    repos: usize,
    issues: usize,
    comments: usize,
}

fn shape_from_args(args: &[usize]) -> Shape {
    match *args {
        [repos, issues, per_issue, ..] => Shape { repos, issues, comments: repos * issues * per_issue },
        [events] => Shape { repos: 1, issues: 100, comments: events.saturating_sub(101) },
        _ => Shape { repos: 1, issues: 100, comments: 20_000 - 101 },
    }
}

/// Sum of bytes in and out and of `events_received` over the relays in `/status`.
fn totals(s: &grasp_sync::metrics::Status) -> (u64, u64, u64) {
    s.relays.iter().fold((0, 0, 0), |(i, o, e), r| (i + r.bytes_in, o + r.bytes_out, e + r.events_received))
}

fn history_complete(s: &grasp_sync::metrics::Status) -> bool {
    !s.relays.is_empty() && s.relays.iter().all(|r| r.status == "connected" && r.historic_done == r.historic_total)
}

/// Starts `grasp-sync run`; `RUST_LOG` (default `warn`) is passed on, and `BENCH_DAEMON_LOG` names a
/// file its log is appended to (otherwise it goes to this process's standard error).
fn start_daemon(grasp: &std::path::Path, config: &std::path::Path) -> std::io::Result<std::process::Child> {
    let mut cmd = Command::new(grasp);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null());
    if let Some(path) = std::env::var_os("BENCH_DAEMON_LOG") {
        cmd.stderr(std::fs::OpenOptions::new().create(true).append(true).open(path)?);
    }
    cmd.spawn()
}

/// Seconds from `t` until `/status` shows history complete, and that status; `None` after 600 s.
async fn until_history_complete(addr: std::net::SocketAddr, t: Instant) -> Option<(f64, grasp_sync::metrics::Status)> {
    while t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Ok(s) = grasp_sync::metrics::fetch_status(addr).await {
            if history_complete(&s) {
                return Some((t.elapsed().as_secs_f64(), s));
            }
        }
    }
    None
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let live = !std::env::args().any(|a| a == "--no-live");
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let shape = shape_from_args(&numbers);
    let Some(strfry) = find_strfry() else {
        println!("needs a strfry binary: set STRFRY_BIN");
        return Ok(());
    };
    let grasp = std::env::current_exe()?.parent().unwrap().parent().unwrap().join("grasp-sync");
    let dir = tempfile::tempdir()?;
    let (alice, bob) = (Keys::generate(), Keys::generate());

    let remote = Strfry::start_in(&strfry, dir.path(), "remote", "");
    let remote_url = format!("ws://127.0.0.1:{}", remote.port);
    let strfry::RepoShape { coords, anns, issues, comments } =
        strfry::repo_shape(&alice, &bob, &[SERVICE, &remote_url], shape.repos, shape.issues, shape.comments);
    let mut all = anns.clone();
    all.extend(issues.iter().cloned());
    all.extend(comments.iter().cloned());
    remote.import(&all);
    println!(
        "remote holds {} events ({} repos, {} issues, {} comments)",
        count(remote.port).await,
        anns.len(),
        issues.len(),
        comments.len()
    );

    // strfry sync with the equivalent filters.
    let host_a = Strfry::start_in(&strfry, dir.path(), "host-strfry-sync", "");
    let roots: Vec<&str> = issues.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // NIP-77 takes one filter per NEG-OPEN: one `strfry sync` per filter, times added up.
    let mut filters = vec![json!({"kinds": [30617]}), json!({"#a": coords})];
    filters.extend(roots.chunks(1_000).map(|c| json!({ "#E": c })));
    let strfry_sync = |label: &str| -> Result<f64, Box<dyn std::error::Error>> {
        let mut secs = 0.0;
        for filter in &filters {
            let t = Instant::now();
            let status = Command::new(&strfry)
                .arg(format!("--config={}", host_a.conf.display()))
                .args(["sync", &remote_url, "--dir", "down", "--filter", &filter.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            secs += t.elapsed().as_secs_f64();
            if !status.success() {
                return Err(format!("strfry sync ({label}) failed for a filter: {status}").into());
            }
        }
        Ok(secs)
    };
    let cpu_before = tree_cpu();
    let strfry_secs = strfry_sync("first")?;
    let strfry_cpu = tree_cpu() - &cpu_before;
    let strfry_got = count(host_a.port).await;
    println!("strfry sync --dir down ({} filters): {strfry_got} events in {strfry_secs:.2} s", filters.len());

    // grasp-sync into a strfry host with the plugin.
    let config = dir.path().join("grasp-sync.toml");
    let metrics = free_port();
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], metrics).into();
    let plugin = format!("{} plugin --config {}", grasp.display(), config.display());
    // `--no-plugin`: the host runs without the writePolicy plugin (to see what the plugin's round
    // trip per event costs strfry's write path).
    let policy = if std::env::args().any(|a| a == "--no-plugin") {
        String::new()
    } else {
        format!("  writePolicy {{\n    plugin = \"{plugin}\"\n  }}")
    };
    let host_b = Strfry::start_in(&strfry, dir.path(), "host-grasp-sync", &policy);
    let state_dir = dir.path().join("state");
    std::fs::write(
        &config,
        format!(
            "service_url = \"{SERVICE}\"\n[host]\nurl = \"ws://127.0.0.1:{}\"\nstrfry_db = \"{}\"\n[sync]\nallow_private_addresses = true\n[state]\ndir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            host_b.port,
            host_b.db.display(),
            state_dir.display()
        ),
    )?;
    host_b.import(&anns);
    let cpu_before = tree_cpu();
    let t = Instant::now();
    let mut daemon = start_daemon(&grasp, &config)?;
    let target = all.len() as u64;
    let mut grasp_cpu = None;
    let mut got = 0;
    let mut status_secs = None;
    while (got < target || status_secs.is_none()) && t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if got < target {
            got = count(host_b.port).await;
            if got >= target {
                grasp_cpu = Some(tree_cpu() - &cpu_before);
                println!("  host holds every event at {:.2} s", t.elapsed().as_secs_f64());
            }
        }
        if std::env::var_os("BENCH_TRACE").is_some() {
            if let Ok(s) = grasp_sync::metrics::fetch_status(metrics_addr).await {
                let r = s.relays.first();
                eprintln!(
                    "TRACE {:.2} host {} queue {} received {} rejected {} stored {} held {} root_events {}",
                    t.elapsed().as_secs_f64(),
                    got,
                    s.ingest_queue,
                    r.map_or(0, |r| r.events_received),
                    r.map_or(0, |r| r.events_rejected),
                    r.map_or(0, |r| r.events_stored),
                    s.events_pending_retry,
                    s.root_events
                );
            }
        }
        if status_secs.is_none() {
            if let Ok(s) = grasp_sync::metrics::fetch_status(metrics_addr).await {
                if history_complete(&s) {
                    status_secs = Some(t.elapsed().as_secs_f64());
                    println!("  /status shows history complete at {:.2} s", t.elapsed().as_secs_f64());
                }
            }
        }
    }
    let grasp_secs = t.elapsed().as_secs_f64();
    let s = grasp_sync::metrics::fetch_status(metrics_addr).await?;
    let (bytes_in, bytes_out, received) = totals(&s);
    println!(
        "grasp-sync run:         {got} events in {grasp_secs:.2} s (start to last event stored and history complete), {bytes_in} bytes in, {bytes_out} bytes out, events_received {received} (to fetch: {})",
        all.len() - anns.len()
    );
    println!("time ratio grasp-sync / strfry sync: {:.2}", grasp_secs / strfry_secs);
    if let Some(grasp_cpu) = grasp_cpu {
        println!("CPU time until the copy is complete: strfry sync {strfry_cpu}; grasp-sync {grasp_cpu}");
        println!("CPU time ratio grasp-sync / strfry sync: {:.2}", grasp_cpu.total() / strfry_cpu.total());
    }

    // Re-sync with nothing changed: a fresh start of the daemon, everything already on the host.
    terminate(&mut daemon);
    std::fs::remove_dir_all(&state_dir)?;
    let t = Instant::now();
    let mut daemon = start_daemon(&grasp, &config)?;
    let resync = until_history_complete(metrics_addr, t).await;
    let strfry_resync = strfry_sync("re-sync")?;
    let report_resync = |what: &str, resync: Option<(f64, grasp_sync::metrics::Status)>| {
        if let Some((secs, s)) = resync {
            let (i, o, r) = totals(&s);
            println!(
                "{what}, nothing changed: /status history complete in {secs:.3} s (strfry sync: {strfry_resync:.3} s, ratio {:.2}); {i} bytes in + {o} bytes out = {:.2} % of the first sync's {}; events_received {r}",
                secs / strfry_resync,
                100.0 * (i + o) as f64 / (bytes_in + bytes_out) as f64,
                bytes_in + bytes_out
            );
        } else {
            println!("{what}, nothing changed: history never complete within 600 s");
        }
    };
    report_resync("re-sync (fresh start, state removed)", resync);
    // A clean restart keeps the state: every relay resumes as a quick reconnect.
    terminate(&mut daemon);
    let t = Instant::now();
    let mut daemon = start_daemon(&grasp, &config)?;
    let resync = until_history_complete(metrics_addr, t).await;
    report_resync("clean restart (state kept)", resync);
    if !live {
        terminate(&mut daemon);
        return Ok(());
    }

    // Live propagation, once the history is written and the daemon is idle.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(60) {
        let s = grasp_sync::metrics::fetch_status(metrics_addr).await?;
        if s.ingest_queue == 0 && s.relays.iter().all(|r| r.status == "connected") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut sub, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://127.0.0.1:{}", host_b.port), None, true).await?;
    sub.send(Message::text(r#"["REQ","live",{"kinds":[1111],"limit":0}]"#)).await?;
    // Baseline: the same events as seen by a subscriber of the remote itself (strfry's own delay).
    let (mut base_sub, _) = tokio_tungstenite::connect_async_with_config(&remote_url, None, true).await?;
    base_sub.send(Message::text(r#"["REQ","live",{"kinds":[1111],"limit":0}]"#)).await?;
    let (mut publ, _) = tokio_tungstenite::connect_async_with_config(&remote_url, None, true).await?;
    let m = 300;
    let mut sent_at = std::collections::HashMap::new();
    let receiver = receive_ids(&mut sub, m);
    let base_receiver = receive_ids(&mut base_sub, m);
    let sender = async {
        for i in 0..m {
            let root = roots[i % roots.len()].to_string();
            let ev = event(
                &bob,
                1111,
                vec![vec!["E".into(), root], vec!["K".into(), "1621".into()]],
                &format!("live {i}"),
                Timestamp::now().as_secs(),
            );
            sent_at.insert(ev["id"].as_str().unwrap().to_string(), Instant::now());
            publ.send(Message::text(json!(["EVENT", ev]).to_string())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (received, base_received, ()) = tokio::join!(receiver, base_receiver, sender);
    report_latency("remote -> host via grasp-sync", &received, &sent_at, m);
    report_latency("remote -> its own subscriber (baseline)", &base_received, &sent_at, m);
    terminate(&mut daemon);
    Ok(())
}

async fn receive_ids(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    m: usize,
) -> Vec<(String, Instant)> {
    let mut out = Vec::new();
    while out.len() < m {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v[0] == "EVENT" {
                    out.push((v[2]["id"].as_str().unwrap().to_string(), Instant::now()));
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    out
}

fn report_latency(
    label: &str,
    received: &[(String, Instant)],
    sent_at: &std::collections::HashMap<String, Instant>,
    m: usize,
) {
    let mut latencies: Vec<f64> = received
        .iter()
        .filter_map(|(id, at)| Some(at.duration_since(*sent_at.get(id)?).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if latencies.is_empty() {
        println!("live {label}: no event arrived");
        return;
    }
    println!(
        "live {label}: {} of {m} events, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
}

/// CPU seconds (user + system) used so far by the processes this benchmark started, by role: each
/// strfry by its directory (`remote`, `host-strfry-sync`, `host-grasp-sync`), `daemon`, `plugin`,
/// and `finished` (`strfry sync` invocations and stopped daemons, from this process's children
/// total). Read from Linux's `/proc` (empty elsewhere).
fn tree_cpu() -> Cpu {
    let ticks = 100.0; // USER_HZ
    let stat_of = |dir: std::path::PathBuf| -> Option<(u32, u32, [u64; 4], String)> {
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let pid = head.split_once(" (")?.0.trim().parse().ok()?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        Some((pid, f.get(1)?.parse().ok()?, [n(11), n(12), n(13), n(14)], cmd))
    };
    let role = |cmd: &str| -> String {
        if cmd.contains(" plugin ") {
            "plugin".into()
        } else if cmd.contains(" run ") {
            "daemon".into()
        } else if let Some(conf) = cmd.split_whitespace().find_map(|a| a.strip_prefix("--config=")) {
            let dir = std::path::Path::new(conf).parent().and_then(|d| d.file_name());
            dir.map_or("strfry".into(), |d| d.to_string_lossy().into_owned())
        } else {
            "other".into()
        }
    };
    let me = std::process::id();
    let procs: Vec<_> =
        std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| stat_of(e.path())).collect();
    let mut out = Cpu::default();
    if let Some(p) = procs.iter().find(|p| p.0 == me) {
        *out.0.entry("finished".into()).or_default() += (p.2[2] + p.2[3]) as f64 / ticks;
    }
    let mut parents = vec![me];
    while let Some(parent) = parents.pop() {
        for (pid, ppid, t, cmd) in &procs {
            if *ppid == parent {
                // Its own time and that of its finished children (a plugin strfry restarted).
                *out.0.entry(role(cmd)).or_default() += t.iter().sum::<u64>() as f64 / ticks;
                parents.push(*pid);
            }
        }
    }
    out
}

/// CPU seconds by role (see [`tree_cpu`]).
#[derive(Default)]
struct Cpu(std::collections::BTreeMap<String, f64>);

impl Cpu {
    fn total(&self) -> f64 {
        self.0.values().sum()
    }
}

impl std::ops::Sub<&Cpu> for Cpu {
    type Output = Cpu;
    fn sub(mut self, before: &Cpu) -> Cpu {
        for (k, v) in &before.0 {
            *self.0.entry(k.clone()).or_default() -= v;
        }
        self.0.retain(|_, v| *v >= 0.005);
        self
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s (", self.total())?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            write!(f, "{}{k} {v:.2}", if i > 0 { ", " } else { "" })?;
        }
        write!(f, ")")
    }
}
