//! grasp-sync against `strfry sync`, with real strfry processes on loopback (needs a strfry binary:
//! `$STRFRY_BIN` or `strfry` on PATH). Run through `scripts/bench-vs-strfry [EVENTS]`.
//!
//! 1. A remote strfry holds one repository's history: its announcement, 100 issues and comments on
//!    them (EVENTS in all).
//! 2. `strfry sync <remote> --dir down` with the filters grasp-sync would use (L1, L2 `#a`, L3 `#E`)
//!    into an empty strfry: wall time.
//! 3. `grasp-sync run` beside another empty strfry (running `grasp-sync plugin`) that holds only the
//!    announcement: wall time from start until the host holds every event, and bytes on the wire.
//! 4. Live: events published to the remote one by one; latency until each is on the host.

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let Some(strfry) = find_strfry() else {
        println!("needs a strfry binary: set STRFRY_BIN");
        return Ok(());
    };
    let grasp = std::env::current_exe()?.parent().unwrap().parent().unwrap().join("grasp-sync");
    let dir = tempfile::tempdir()?;
    let now = Timestamp::now().as_secs();
    let (alice, bob) = (Keys::generate(), Keys::generate());

    let remote = Strfry::start_in(&strfry, dir.path(), "remote", "");
    let remote_url = format!("ws://127.0.0.1:{}", remote.port);
    let coord = format!("30617:{}:bench", alice.public_key().to_hex());
    let ann = event(
        &alice,
        30617,
        vec![vec!["d".into(), "bench".into()], vec!["relays".into(), SERVICE.into(), remote_url.clone()]],
        "",
        now - 90_000,
    );
    let issues: Vec<Value> = (0..100)
        .map(|i| event(&bob, 1621, vec![vec!["a".into(), coord.clone()]], &format!("issue {i}"), now - 80_000 + i))
        .collect();
    let comments: Vec<Value> = (0..n.saturating_sub(101))
        .map(|i| {
            let root = issues[i % 100]["id"].as_str().unwrap().to_string();
            event(
                &bob,
                1111,
                vec![vec!["E".into(), root], vec!["K".into(), "1621".into()]],
                &format!("comment {i}"),
                now - 70_000 + (i as u64) / 3,
            )
        })
        .collect();
    let mut all = vec![ann.clone()];
    all.extend(issues.iter().cloned());
    all.extend(comments.iter().cloned());
    remote.import(&all);
    println!("remote holds {} events ({} issues, {} comments)", count(remote.port).await, issues.len(), comments.len());

    // strfry sync with the equivalent filters.
    let host_a = Strfry::start_in(&strfry, dir.path(), "host-strfry-sync", "");
    let roots: Vec<&str> = issues.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // NIP-77 takes one filter per NEG-OPEN: one `strfry sync` per filter, times added up.
    let filters = [json!({"kinds": [30617]}), json!({"#a": [coord]}), json!({"#E": roots})];
    let mut strfry_secs = 0.0;
    for filter in &filters {
        let t = Instant::now();
        let status = Command::new(&strfry)
            .arg(format!("--config={}", host_a.conf.display()))
            .args(["sync", &remote_url, "--dir", "down", "--filter", &filter.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        strfry_secs += t.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!("strfry sync failed for {filter}: {status}").into());
        }
    }
    let strfry_got = count(host_a.port).await;
    println!("strfry sync --dir down (3 filters): {strfry_got} events in {strfry_secs:.2} s");

    // grasp-sync into a strfry host with the plugin.
    let config = dir.path().join("grasp-sync.toml");
    let metrics = free_port();
    let plugin = format!("{} plugin --config {}", grasp.display(), config.display());
    let host_b = Strfry::start_in(
        &strfry,
        dir.path(),
        "host-grasp-sync",
        &format!("  writePolicy {{\n    plugin = \"{plugin}\"\n  }}"),
    );
    std::fs::write(
        &config,
        format!(
            "service_url = \"{SERVICE}\"\n[host]\nurl = \"ws://127.0.0.1:{}\"\nstrfry_db = \"{}\"\n[sync]\nallow_private_addresses = true\n[state]\ndir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            host_b.port,
            host_b.db.display(),
            dir.path().join("state").display()
        ),
    )?;
    host_b.import(std::slice::from_ref(&ann));
    let t = Instant::now();
    let mut daemon = Command::new(&grasp)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let target = all.len() as u64;
    let mut got = 0;
    while got < target && t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = count(host_b.port).await;
    }
    let grasp_secs = t.elapsed().as_secs_f64();
    let s = grasp_sync::metrics::fetch_status(([127, 0, 0, 1], metrics).into()).await?;
    let (bytes_in, bytes_out) = s.relays.iter().fold((0, 0), |(i, o), r| (i + r.bytes_in, o + r.bytes_out));
    println!("grasp-sync run:         {got} events in {grasp_secs:.2} s (start to last event stored), {bytes_in} bytes in, {bytes_out} bytes out");
    println!("time ratio grasp-sync / strfry sync: {:.2}", grasp_secs / strfry_secs);

    // Live propagation, once the history is written and the daemon is idle.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(60) {
        let s = grasp_sync::metrics::fetch_status(([127, 0, 0, 1], metrics).into()).await?;
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
            let root = roots[i % 100].to_string();
            let ev = event(&bob, 1111, vec![vec!["E".into(), root]], &format!("live {i}"), Timestamp::now().as_secs());
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
