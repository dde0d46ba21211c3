//! What operators load into their tools, checked against a running daemon: its `/metrics` answer
//! passes `promtool check metrics` (when promtool is installed), every metric the Grafana
//! dashboard and the alert rules name is one it exports, `/healthz` follows the host, and the
//! endpoint keeps answering while 1,000 idle connections are held and megabyte request lines come in.

mod support;
mod sync_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use grasp_sync::metrics::{get, serve_with, Limits, Metrics};
use grasp_sync::status::{RelayReport, RelayStatus};
use hyper::StatusCode;
use nostr_relay_builder::prelude::Keys;
use support::daemon::*;
use support::strfry::free_port;
use sync_support::TestRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const S: &str = "wss://grasp.example.com";
const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib");

/// Every `grasp_sync_*` name in a text (a query, a rules file).
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("grasp_sync_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Names of the samples in a Prometheus text answer.
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Every query in a Grafana dashboard: panel targets (rows included) and template variables.
fn dashboard_queries(dash: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_string();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if p["type"] != "row" {
                assert!(!targets.is_empty(), "panel {title:?} has no query");
            }
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
                out.push((title.clone(), expr.to_string()));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        out.push((format!("variable {}", v["name"]), v["definition"].as_str().unwrap_or("").to_string()));
    }
    out
}

async fn text(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let (code, body) = get(addr, path).await.unwrap();
    (code, String::from_utf8(body.to_vec()).unwrap())
}

/// `promtool check metrics` on `text`, or `None` without promtool.
fn promtool_check_metrics(text: &str) -> Option<std::process::Output> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    Some(child.wait_with_output().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_metrics_pass_promtool_and_name_everything_the_dashboard_and_alert_rules_query() {
    let host = TestRelay::start(None).await;
    let r1 = TestRelay::start(None).await;
    let alice = Keys::generate();
    let base = now() - 5000;
    let ann = signed(&alice, 30617, vec![t("d", "alpha"), vec!["relays".into(), S.into(), r1.url.clone()]], "", base);
    let coord = format!("30617:{}:alpha", alice.public_key().to_hex());
    let issue = signed(&alice, 1621, vec![t("a", &coord), t("subject", "bug")], "it breaks", base + 10);
    host.publish(&ann).await;
    r1.insert_all(&[ann.clone(), issue.clone()]).await;

    let state = tempfile::tempdir().unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let daemon = start_daemon(&config(S, &host.url, None, state.path(), metrics));
    until_host_holds(&host.url, &[&ann, &issue], 60).await;
    status_until(metrics, "host and relay connected", |s| {
        s.host_connected && s.relays.len() == 1 && s.relays[0].status == "connected"
    })
    .await;

    let (code, body) = text(metrics, "/healthz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, scraped) = text(metrics, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-metrics.prom");
    std::fs::write(&path, &scraped).unwrap();
    println!("scraped /metrics written to {}", path.display());

    match promtool_check_metrics(&scraped) {
        Some(out) => {
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "promtool check metrics failed: {said}\n{scraped}");
            println!("promtool check metrics: ok {said}");
        }
        None => println!("skipped: no promtool (promtool check metrics not run)"),
    }

    let exported = exported(&scraped);
    assert!(exported.contains("grasp_sync_events_stored_total"), "{scraped}");

    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{CONTRIB}/grafana/grasp-sync.json")).unwrap())
            .expect("the Grafana dashboard is valid JSON");
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 10, "{queries:?}");
    for (panel, expr) in &queries {
        let names = metric_names_in(expr);
        assert!(!names.is_empty(), "{panel}: {expr:?} queries no grasp-sync metric");
        for name in names {
            assert!(exported.contains(&name), "{panel}: {name} is not exported by the daemon");
        }
    }

    let rules = std::fs::read_to_string(format!("{CONTRIB}/prometheus/grasp-sync.rules.yml")).unwrap();
    let named = metric_names_in(&rules);
    assert!(named.len() >= 8, "{named:?}");
    for name in named {
        assert!(exported.contains(&name), "the alert rules query {name}, which the daemon does not export");
    }
    stop_daemon(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_unavailable_while_the_host_cannot_be_reached() {
    let state = tempfile::tempdir().unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let nobody = format!("ws://127.0.0.1:{}", free_port());
    let daemon = start_daemon(&config(S, &nobody, None, state.path(), metrics));
    let status = status_until(metrics, "the endpoint answering", |s| !s.host_connected).await;
    assert_eq!(status.service_url, S);
    let (code, body) = text(metrics, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.starts_with("unhealthy: "), "{body}");
    stop_daemon(daemon).await;
}

/// Room for at least `n` open files (both ends of every test connection live in this process).
fn raise_open_files(n: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < n {
            lim.rlim_cur = lim.rlim_max.min(n);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    assert!(lim.rlim_cur >= n, "this test needs {n} open files; the hard limit is {}", lim.rlim_max);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `GET /aaaa…` with a 1 MB path and returns what came back before the server closed.
async fn megabyte_request_line(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
    let exchange = async {
        let _ = s.write_all(line.as_bytes()).await; // the server may close before all is sent
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await; // or reset the connection
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("the server answers or closes a 1 MB line");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_answers_while_a_thousand_idle_connections_are_held_and_refuses_megabyte_request_lines() {
    raise_open_files(4096);
    let m = Metrics::new(S);
    m.update(|s| {
        s.relays = (0..200)
            .map(|i| RelayReport {
                status: RelayStatus::Connected,
                events_received: i,
                ..RelayReport::new(&format!("wss://relay{i}.example.com"))
            })
            .collect()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Idle clients are never timed out during the test: what is measured is holding them.
    let limits = Limits { header_read_timeout: Duration::from_secs(3600), ..Limits::default() };
    assert!(limits.max_connections > 1000);
    let server = tokio::spawn(serve_with(listener, m, limits));
    assert_eq!(text(addr, "/metrics").await.0, StatusCode::OK);
    let before = rss_kib();

    // Half send nothing, half the start of a request head and then nothing.
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        }
        idle.push(s);
    }
    // Accepted after all of them (one listen queue), so answered while they are held.
    let (code, scraped) = text(addr, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(scraped.contains("grasp_sync_events_received_total{relay=\"wss://relay199.example.com\"} 199"));
    let mut probe = [0u8; 1];
    let open = idle
        .iter()
        .filter(|s| matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count();
    assert_eq!(open, 1000, "the server closed idle connections it had room for");
    let held = rss_kib();

    let mut lines = Vec::new();
    for _ in 0..20 {
        lines.push(tokio::spawn(megabyte_request_line(addr)));
    }
    let mut refused = 0;
    for l in lines {
        let answer = l.await.unwrap();
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
        refused += usize::from(!answer.is_empty());
    }
    println!("1 MB request lines: {refused} of 20 answered 431, the others closed before the answer was read");
    assert_eq!(text(addr, "/metrics").await.0, StatusCode::OK, "/metrics answers after the long lines");
    let after = rss_kib();
    println!(
        "RSS: {before} KiB before, {held} KiB with 1000 idle connections (+{} KiB), {after} KiB after 20 × 1 MB request lines (+{} KiB)",
        held.saturating_sub(before),
        after.saturating_sub(before)
    );
    // Generous: about 8 KiB of read buffer per held connection plus the test's own 20 MB of lines.
    assert!(after.saturating_sub(before) < 96 * 1024, "RSS grew from {before} KiB to {after} KiB");
    drop(idle);
    server.abort();
}
