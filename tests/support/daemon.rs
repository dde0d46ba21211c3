//! Running the daemon in a test and watching what it does: signed events, start/stop, polls of
//! the host's holdings and of `/status` (with deadlines, never fixed sleeps).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grasp_sync::config::Config;
use grasp_sync::metrics::{fetch_status, Status};
use grasp_sync::policy::Note;
use grasp_sync::remote::dial::NetDialer;
use grasp_sync::remote::Dialer;
use nostr_relay_builder::prelude::Keys;
use tokio::sync::oneshot;

use super::strfry::query_all;

pub fn signed(keys: &Keys, kind: u16, tags: Vec<Vec<String>>, content: &str, at: u64) -> Note {
    serde_json::from_value(super::strfry::event(keys, kind, tags, content, at)).unwrap()
}

pub fn t(a: &str, b: &str) -> Vec<String> {
    vec![a.into(), b.into()]
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn json(n: &Note) -> serde_json::Value {
    serde_json::to_value(n).unwrap()
}

pub struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), grasp_sync::daemon::StartError>>,
}

/// Starts `grasp_sync::daemon::run` with this configuration (dialling loopback allowed).
pub fn start_daemon(config: &str) -> Running {
    start_daemon_with(config, Arc::new(NetDialer::new(true)))
}

/// Starts the daemon with its remote relays dialled through `dialer` (e.g. a recording double).
pub fn start_daemon_with(config: &str, dialer: Arc<dyn Dialer>) -> Running {
    let cfg = Config::from_toml(config).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let ran = grasp_sync::daemon::run(cfg, dialer, async move {
            let _ = stopped.await;
        })
        .await;
        // A daemon that could not start would otherwise show only as a later timeout.
        if let Err(e) = &ran {
            eprintln!("daemon stopped with an error: {e}");
        }
        ran
    });
    Running { stop, task }
}

/// Asks the daemon to stop, as SIGTERM does, and checks it stopped cleanly within 5 s.
pub async fn stop_daemon(d: Running) {
    d.stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(6), d.task).await.expect("daemon stops within 5 s");
    result.unwrap().expect("clean shutdown");
}

pub async fn host_ids(url: &str) -> HashSet<String> {
    query_all(url, serde_json::json!({})).await.into_iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

/// Polls the host until it holds every event in `want`.
pub async fn until_host_holds(url: &str, want: &[&Note], secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let have = host_ids(url).await;
        let missing = want.iter().filter(|n| !have.contains(&n.id)).count();
        if missing == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "host still misses {missing} of {} events", want.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/status` until `cond` holds.
pub async fn status_until(addr: SocketAddr, what: &str, cond: impl Fn(&Status) -> bool) -> Status {
    status_within(addr, what, 30, cond).await
}

/// [`status_until`] with a deadline of `secs` seconds, for steps whose work grows with the data
/// (an index build over a large database in a debug build).
pub async fn status_within(addr: SocketAddr, what: &str, secs: u64, cond: impl Fn(&Status) -> bool) -> Status {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        if let Ok(s) = fetch_status(addr).await {
            if cond(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(tokio::time::Instant::now() < deadline, "status never showed {what}; last: {last:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A daemon configuration on loopback.
pub fn config(
    service: &str,
    host_url: &str,
    strfry_db: Option<&std::path::Path>,
    state: &std::path::Path,
    metrics: SocketAddr,
) -> String {
    let db = strfry_db.map(|d| format!("strfry_db = \"{}\"\n", d.display())).unwrap_or_default();
    format!(
        "service_url = \"{service}\"\n[host]\nurl = \"{host_url}\"\n{db}[sync]\nallow_private_addresses = true\nbase_backoff_secs = 1\n\
         [state]\ndir = \"{}\"\n[metrics]\nlisten = \"{metrics}\"\n",
        state.display()
    )
}
