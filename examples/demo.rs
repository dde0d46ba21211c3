//! grasp-sync on loopback, no strfry needed: `cargo run --release --example demo`.
//!
//! Three relays start in this process on 127.0.0.1: the GRASP host (which admits events through
//! grasp-sync's real plugin code, as strfry would through `grasp-sync plugin`) and two remotes
//! that a repository announcement lists. The real daemon (`grasp_sync::daemon::run`) then finds
//! the repository, pulls its history from both remotes, follows them live and writes what is
//! relevant into the host. The status table is printed as it goes.
//!
//! With `--host URL --remote URL --remote URL --metrics ADDR` it starts nothing itself: it seeds and
//! watches relays and a `grasp-sync run` started elsewhere (`scripts/demo-strfry` does that with
//! real strfry processes).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use grasp_sync::config::Config;
use grasp_sync::host::plugin::{Action, Plugin};
use grasp_sync::metrics::{fetch_status, render_table};
use grasp_sync::policy::{AcceptedSet, Policy, RelayUrl};
use grasp_sync::remote::dial::NetDialer;
use nostr_relay_builder::prelude::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SERVICE: &str = "wss://git.example.test";

/// The host's write policy: every event goes through grasp-sync's plugin request handler.
#[derive(Debug)]
struct GraspPolicy(Mutex<Plugin>);

impl WritePolicy for GraspPolicy {
    fn admit_event<'a>(&'a self, event: &'a Event, addr: &'a SocketAddr) -> BoxedFuture<'a, PolicyResult> {
        Box::pin(async move {
            let line = json!({"type": "new", "event": serde_json::from_str::<Value>(&event.as_json()).unwrap_or_default(),
                "receivedAt": Timestamp::now().as_secs(), "sourceType": "IP4", "sourceInfo": addr.ip().to_string()});
            let answer = self.0.lock().unwrap().handle_line(line.to_string().as_bytes());
            match answer {
                Some(a) if a.action == Action::Accept => PolicyResult::Accept,
                Some(a) => PolicyResult::Reject(a.msg),
                None => PolicyResult::Reject("blocked: unreadable".into()),
            }
        })
    }
}

async fn relay(policy: Option<GraspPolicy>) -> (LocalRelay, String) {
    let mut builder = RelayBuilder::default()
        .addr("127.0.0.1".parse().unwrap())
        .rate_limit(RateLimit { max_reqs: 1_000, notes_per_minute: 1_000_000 });
    if let Some(p) = policy {
        builder = builder.write_policy(p);
    }
    let relay = LocalRelay::new(builder);
    relay.run().await.expect("relay starts");
    let url = relay.url().await.to_string().trim_end_matches('/').to_string();
    (relay, url)
}

fn event(keys: &Keys, kind: u16, tags: &[&[&str]], content: &str, ago: u64) -> Event {
    let tags: Vec<Tag> = tags.iter().map(|t| Tag::parse(t.iter().map(|s| s.to_string())).unwrap()).collect();
    EventBuilder::new(Kind::from(kind), content)
        .tags(tags)
        .custom_created_at(Timestamp::from(Timestamp::now().as_secs() - ago))
        .sign_with_keys(keys)
        .unwrap()
}

/// Publishes over a websocket and returns the relay's OK verdicts.
async fn publish(url: &str, events: &[&Event]) -> Vec<(bool, String)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    let mut out = Vec::new();
    for ev in events {
        ws.send(Message::text(format!("[\"EVENT\",{}]", ev.as_json()))).await.unwrap();
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v[0] == "OK" {
                out.push((v[2].as_bool().unwrap_or(false), v[3].as_str().unwrap_or("").to_string()));
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    out
}

/// Ids the relay holds.
async fn holdings(url: &str) -> HashSet<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    ws.send(Message::text(r#"["REQ","all",{"limit":5000}]"#)).await.unwrap();
    let mut ids = HashSet::new();
    while let Some(Ok(Message::Text(t))) = ws.next().await {
        let v: Value = serde_json::from_str(&t).unwrap();
        match v[0].as_str() {
            Some("EVENT") => {
                ids.insert(v[2]["id"].as_str().unwrap_or_default().to_string());
            }
            _ => break,
        }
    }
    let _ = ws.close(None).await;
    ids
}

/// Where the relays and the daemon's status endpoint are, when they run outside this process.
struct External {
    host: String,
    remotes: Vec<String>,
    metrics: SocketAddr,
}

fn external_args() -> Result<Option<External>, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        return Ok(None);
    }
    let (mut host, mut remotes, mut metrics) = (None, Vec::new(), None);
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host" => host = Some(value),
            "--remote" => remotes.push(value),
            "--metrics" => metrics = Some(value.parse()?),
            _ => return Err(format!("unknown argument {flag}").into()),
        }
    }
    match (host, metrics) {
        (Some(host), Some(metrics)) if remotes.len() == 2 => Ok(Some(External { host, remotes, metrics })),
        _ => Err("usage: demo [--host URL --remote URL --remote URL --metrics ADDR]".into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,nostr_relay_builder=off".into()))
        .init();
    let external = external_args()?;
    let mut relays = Vec::new();
    let (host_url, a, b) = match &external {
        Some(e) => (e.host.clone(), e.remotes[0].clone(), e.remotes[1].clone()),
        None => {
            let plugin = Plugin::new(Policy::new(RelayUrl::parse(SERVICE)?, false), AcceptedSet::new());
            let (host, host_url) = relay(Some(GraspPolicy(Mutex::new(plugin)))).await;
            let (remote_a, a) = relay(None).await;
            let (remote_b, b) = relay(None).await;
            relays.extend([host, remote_a, remote_b]);
            (host_url, a, b)
        }
    };
    println!("GRASP host {host_url} (service URL {SERVICE}), remotes {a} and {b}\n");

    let (alice, bob, carol, mallory) = (Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate());
    let coord = format!("30617:{}:demo", alice.public_key().to_hex());
    let ann = event(
        &alice,
        30617,
        &[
            &["d", "demo"],
            &["name", "demo"],
            &["relays", SERVICE, &a, &b],
            &["maintainers", &bob.public_key().to_hex()],
        ],
        "",
        3600,
    );
    let state = event(
        &bob,
        30618,
        &[&["d", "demo"], &["refs/heads/main", "0123456789abcdef0123456789abcdef01234567"]],
        "",
        3500,
    );
    let issue = event(&carol, 1621, &[&["a", &coord], &["subject", "crash on start"]], "It crashes.", 3000);
    let patch = event(&bob, 1617, &[&["a", &coord], &["t", "root"]], "diff --git …", 2500);
    let comment = event(&alice, 1111, &[&["E", &issue.id.to_hex()], &["K", "1621"]], "Fixed by the patch.", 2000);
    let status = event(&alice, 1631, &[&["e", &patch.id.to_hex()], &["a", &coord]], "applied", 1500);
    let elsewhere = event(&mallory, 30617, &[&["d", "other"], &["relays", &a]], "", 1400);
    let spam = event(&mallory, 1, &[], "buy now", 1300);
    let spam_issue =
        event(&mallory, 1621, &[&["a", &format!("30617:{}:other", mallory.public_key().to_hex())]], "x", 1200);

    // Users published the announcement to the GRASP relay; everything else went elsewhere.
    println!("host's plugin on the announcement: {:?}", publish(&host_url, &[&ann]).await[0]);
    publish(&a, &[&ann, &state, &issue, &comment, &spam]).await;
    publish(&b, &[&patch, &status, &elsewhere, &spam_issue]).await;
    let relevant = [&ann, &state, &issue, &patch, &comment, &status];

    let dir = tempfile::tempdir()?;
    let (metrics, daemon) = match &external {
        Some(e) => (e.metrics, None),
        None => {
            let metrics: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let config = Config::from_toml(&format!(
                "service_url = \"{SERVICE}\"\n[host]\nurl = \"{host_url}\"\n[sync]\nallow_private_addresses = true\nbase_backoff_secs = 1\n\
                 [state]\ndir = \"{}\"\n[metrics]\nlisten = \"{metrics}\"\n",
                dir.path().display()
            ))?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(grasp_sync::daemon::run(config, Arc::new(NetDialer::new(true)), async move {
                let _ = stopped.await;
            }));
            (metrics, Some((stop, task)))
        }
    };

    let started = Instant::now();
    let want: HashSet<String> = relevant.iter().map(|e| e.id.to_hex()).collect();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let have = holdings(&host_url).await;
        if let Ok(s) = fetch_status(metrics).await {
            println!(
                "after {:.0?}: host holds {} of {} relevant events",
                started.elapsed(),
                want.intersection(&have).count(),
                want.len()
            );
            println!("{}", render_table(&s));
        }
        if want.is_subset(&have) {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("history did not arrive within 60 s".into());
        }
    }

    let live = event(&carol, 1111, &[&["E", &issue.id.to_hex()], &["K", "1621"]], "Confirmed fixed, thanks!", 0);
    let sent = Instant::now();
    publish(&b, &[&live]).await;
    while !holdings(&host_url).await.contains(&live.id.to_hex()) {
        if sent.elapsed() > Duration::from_secs(30) {
            return Err("live event did not arrive".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("live reply published on {b} reached the host in {:.0?}", sent.elapsed());

    let have = holdings(&host_url).await;
    let leaked = [&elsewhere, &spam, &spam_issue].iter().filter(|e| have.contains(&e.id.to_hex())).count();
    println!("irrelevant events on the host: {leaked}");
    if let Ok(s) = fetch_status(metrics).await {
        println!("\n{}", render_table(&s));
    }
    if let Some((stop, task)) = daemon {
        stop.send(()).ok();
        task.await??;
        println!("daemon stopped cleanly");
    }
    drop(relays);
    if leaked > 0 {
        return Err("irrelevant events reached the host".into());
    }
    Ok(())
}
