//! The host write path alone: events handed to the ingest (`host::ingest`) until a real strfry
//! host has answered every one, with or without the writePolicy plugin (needs a strfry binary:
//! `$STRFRY_BIN` or `strfry` on PATH).
//!
//! The host holds REPOS announcements listing the service (imported, as a daemon's host would
//! after the first layer); then REPOS × ISSUES issues and COMMENTS NIP-22 comments on every issue
//! are submitted at once, as by a daemon that fetched them faster than the host writes. Prints
//! the time until every event is answered, events per second, the outcomes, and the CPU time
//! the host used (strfry, and the plugin it runs), so the host's cost per event can be compared
//! with the daemon's.
//!
//! Run: `scripts/bench-ingest [REPOS ISSUES COMMENTS] [--no-plugin] [--window N]`
//! (default 50 120 2: 18,000 events, the shape of `scripts/bench-vs-strfry 50 120 2`).

#[path = "../tests/support/strfry.rs"]
mod strfry;

use std::time::{Duration, Instant};

use grasp_sync::host::ingest::{self, IngestConfig, Outcome};
use grasp_sync::policy::{Note, RelayUrl};
use nostr_relay_builder::prelude::Keys;
use strfry::{find_strfry, Strfry};
use tokio::sync::{mpsc, watch};

const SERVICE: &str = "wss://git.example.test";

fn flag_value(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut numbers = Vec::new();
    let mut skip_next = false;
    for a in &args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if a == "--window" {
            skip_next = true;
            continue;
        }
        if let Ok(n) = a.parse::<usize>() {
            numbers.push(n);
        }
    }
    let (repos, issues, per_issue) = match numbers[..] {
        [r, i, c, ..] => (r, i, c),
        _ => (50, 120, 2),
    };
    let plugin = !args.iter().any(|a| a == "--no-plugin");
    let Some(bin) = find_strfry() else {
        println!("needs a strfry binary: set STRFRY_BIN");
        return Ok(());
    };
    let grasp = std::env::current_exe()?.parent().unwrap().parent().unwrap().join("grasp-sync");
    let dir = tempfile::tempdir()?;
    let host = if plugin {
        strfry::host_with_plugin_binary(&bin, &grasp, dir.path(), SERVICE)
    } else {
        Strfry::start_in(&bin, dir.path(), "host", "")
    };
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let strfry::RepoShape { anns, issues: issue_events, comments, .. } =
        strfry::repo_shape(&alice, &bob, &[SERVICE], repos, issues, repos * issues * per_issue);
    let n_issues = issue_events.len();
    host.import(&anns);
    let notes: Vec<Note> =
        issue_events.iter().chain(&comments).map(|v| serde_json::from_value(v.clone())).collect::<Result<_, _>>()?;

    let mut cfg = IngestConfig::new(RelayUrl::parse(&host.url())?);
    if let Some(w) = flag_value("--window") {
        cfg.window = w;
    }
    let window = cfg.window;
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = watch::channel(false);
    let (handle, _task) = ingest::spawn(cfg, reports_tx, stop, Duration::from_secs(5));
    let total = notes.len();
    let t = Instant::now();
    let (mut stored, mut duplicate, mut rejected) = (0, 0, 0);
    let mut first_reject = None;
    tokio::spawn(async move {
        for n in notes {
            if handle.submit(n, None).await.is_err() {
                return;
            }
        }
    });
    while stored + duplicate + rejected < total {
        match tokio::time::timeout(Duration::from_secs(120), reports.recv()).await {
            Ok(Some(r)) => match r.outcome {
                Outcome::Stored => stored += 1,
                Outcome::Duplicate => duplicate += 1,
                Outcome::Rejected(why) => {
                    rejected += 1;
                    first_reject.get_or_insert(why);
                }
            },
            _ => break,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = descendants_cpu(std::process::id());
    for (comm, secs) in &cpu {
        println!("  cpu {comm}: {secs:.2} s");
    }
    println!(
        "{total} events ({n_issues} issues, {} comments), plugin {plugin}, window {window}: {secs:.2} s, {:.0} events/s; stored {stored}, duplicate {duplicate}, rejected {rejected}{}",
        comments.len(),
        total as f64 / secs,
        first_reject.map(|w| format!(" (first: {w})")).unwrap_or_default()
    );
    Ok(())
}

/// CPU seconds (user + system) of every process below `pid`, by command name (Linux `/proc`).
fn descendants_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let Some((pid_s, comm)) = head.split_once(" (") else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Ok(p), Some(Ok(ppid)), Some(Ok(ut)), Some(Ok(st))) = (
            pid_s.trim().parse::<u32>(),
            f.get(1).map(|x| x.parse::<u32>()),
            f.get(11).map(|x| x.parse::<u64>()),
            f.get(12).map(|x| x.parse::<u64>()),
        ) else {
            continue;
        };
        procs.push((p, ppid, comm.to_string(), (ut + st) as f64 / 100.0));
    }
    let mut out = std::collections::BTreeMap::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for (p, ppid, comm, cpu) in &procs {
            if *ppid == parent {
                *out.entry(comm.clone()).or_insert(0.0) += cpu;
                parents.push(*p);
            }
        }
    }
    out
}
