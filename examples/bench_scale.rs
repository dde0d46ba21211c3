//! The daemon at scale: `grasp-sync run` (the release binary, a child process) against many
//! in-process remote relays on loopback. Run through `scripts/bench-scale [REPOS] [ROOTS] [RELAYS]`
//! (default 10,000 repositories, 100,000 root events, 50 relays; then LIVE events per case and the
//! SETTLE seconds between the two live phases, default 100 and 61).
//!
//! - Relay 0 carries a tenth of the repositories and half of the root events; the other relays share
//!   the rest. Every tenth root has a NIP-22 comment. Each announcement lists the service and one
//!   relay.
//! - The host is an in-process relay that accepts every write and starts with the announcements
//!   only: the daemon builds its index by querying it (no strfry database), so everything else —
//!   roots, then the comments of the roots it learns — is what history brings.
//! - Each remote sits behind a counting websocket proxy: the subscriptions open at the relay side
//!   (REQ and NEG-OPEN until CLOSE, CLOSED, NEG-CLOSE or NEG-ERR), the peak per relay, and the
//!   largest frame the daemon sent.
//! - Reported: time from start until `/status` shows every relay `connected` (history complete),
//!   the host's count, peak subscriptions, largest frame, the daemon's peak RSS (VmHWM), and live
//!   latency remote → host for comments and reactions on the newest (hot) and oldest (cold) root of
//!   relay 0.

#[path = "../tests/support/strfry.rs"]
mod strfry;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nostr_relay_builder::prelude::{
    Event, EventBuilder, Filter, JsonUtil, Keys, Kind, LocalRelay, MemoryDatabase, MemoryDatabaseOptions,
    NostrDatabase, RateLimit, RelayBuilder, Tag, Timestamp,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const SERVICE: &str = "wss://git.example.test";
/// History starts 60 days ago (strfry refuses events older than its `rejectEventsOlderThanSeconds`).
fn t0() -> u64 {
    Timestamp::now().as_secs() - 60 * 86_400
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(16 << 20)).max_frame_size(Some(16 << 20))
}

/// What one relay's proxy saw.
#[derive(Default)]
struct Counter {
    open: AtomicI64,
    peak: AtomicI64,
    largest_frame: AtomicUsize,
    frames: AtomicUsize,
    connections: AtomicUsize,
}

impl Counter {
    fn add(&self, delta: i64) {
        let now = self.open.fetch_add(delta, Ordering::SeqCst) + delta;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
}

/// Open subscription ids of one connection, as the relay sees them.
struct Subs {
    ids: Mutex<HashSet<String>>,
    counter: Arc<Counter>,
}

impl Subs {
    fn open(&self, id: String) {
        if self.ids.lock().unwrap().insert(id) {
            self.counter.add(1);
        }
    }
    fn close(&self, id: &str) {
        if self.ids.lock().unwrap().remove(id) {
            self.counter.add(-1);
        }
    }
}

impl Drop for Subs {
    fn drop(&mut self) {
        let n = self.ids.lock().unwrap().len() as i64;
        self.counter.add(-n);
    }
}

fn head(text: &str) -> Option<(String, String)> {
    // Only the first two array elements are needed: ["TYPE","sub id",...].
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((v.get(0)?.as_str()?.to_string(), v.get(1)?.as_str().unwrap_or_default().to_string()))
}

async fn proxy(listener: TcpListener, backend: String, counter: Arc<Counter>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (backend, counter) = (backend.clone(), counter.clone());
        tokio::spawn(async move {
            let _ = proxy_conn(tcp, backend, counter).await;
        });
    }
}

async fn proxy_conn(tcp: TcpStream, backend: String, counter: Arc<Counter>) -> Result<(), Box<dyn std::error::Error>> {
    tcp.set_nodelay(true)?;
    let client = tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config())).await?;
    let (upstream, _) = tokio_tungstenite::connect_async_with_config(&backend, Some(ws_config()), true).await?;
    counter.connections.fetch_add(1, Ordering::SeqCst);
    let subs = Arc::new(Subs { ids: Mutex::default(), counter: counter.clone() });
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    let s = subs.clone();
    let up = async move {
        while let Some(Ok(m)) = c_rx.next().await {
            if let Message::Text(t) = &m {
                s.counter.largest_frame.fetch_max(t.len(), Ordering::SeqCst);
                s.counter.frames.fetch_add(1, Ordering::SeqCst);
                match head(t) {
                    Some((k, id)) if k == "REQ" => s.open(format!("r:{id}")),
                    Some((k, id)) if k == "CLOSE" => s.close(&format!("r:{id}")),
                    Some((k, id)) if k == "NEG-OPEN" => s.open(format!("n:{id}")),
                    Some((k, id)) if k == "NEG-CLOSE" => s.close(&format!("n:{id}")),
                    _ => {}
                }
            }
            if matches!(m, Message::Close(_)) || u_tx.send(m).await.is_err() {
                break;
            }
        }
    };
    let s = subs.clone();
    let down = async move {
        while let Some(Ok(m)) = u_rx.next().await {
            if let Message::Text(t) = &m {
                // Cheap prefix test: only CLOSED and NEG-ERR end a subscription from the relay side.
                if t.starts_with("[\"CLOSED\"") {
                    if let Some((_, id)) = head(t) {
                        s.close(&format!("r:{id}"));
                    }
                } else if t.starts_with("[\"NEG-ERR\"") {
                    if let Some((_, id)) = head(t) {
                        s.close(&format!("n:{id}"));
                    }
                }
            }
            if c_tx.send(m).await.is_err() {
                break;
            }
        }
    };
    tokio::select! { _ = up => {}, _ = down => {} }
    Ok(())
}

struct Remote {
    db: Arc<MemoryDatabase>,
    relay: LocalRelay,
    url: String,
    counter: Arc<Counter>,
}

async fn start_relay(db: Arc<MemoryDatabase>) -> (LocalRelay, String) {
    let builder =
        RelayBuilder::default().database(db).rate_limit(RateLimit { max_reqs: 1_000, notes_per_minute: 100_000_000 });
    let relay = LocalRelay::new(builder);
    relay.run().await.expect("relay runs");
    let url = relay.url().await.to_string().trim_end_matches('/').to_string();
    (relay, url)
}

fn memory_db() -> Arc<MemoryDatabase> {
    Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions { events: true, max_events: Some(1_000_000) }))
}

fn sign(keys: &Keys, kind: u16, tags: Vec<Vec<String>>, content: &str, at: u64) -> Event {
    let tags: Vec<Tag> = tags.into_iter().map(|t| Tag::parse(t).unwrap()).collect();
    EventBuilder::new(Kind::from(kind), content)
        .tags(tags)
        .custom_created_at(Timestamp::from(at))
        .sign_with_keys(keys)
        .unwrap()
}

fn t(a: &str, b: &str) -> Vec<String> {
    vec![a.into(), b.into()]
}

/// Signs `n` events on both cores.
fn sign_all(n: usize, make: impl Fn(usize) -> Event + Sync) -> Vec<Event> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let make = &make;
                s.spawn(move || (k * chunk..((k + 1) * chunk).min(n)).map(make).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`, `RssAnon`).
fn proc_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

enum Host {
    Strfry(strfry::Strfry),
    Memory { _relay: LocalRelay, db: Arc<MemoryDatabase>, url: String },
}

impl Host {
    fn url(&self) -> String {
        match self {
            Host::Strfry(s) => s.url(),
            Host::Memory { url, .. } => url.clone(),
        }
    }

    async fn count(&self) -> usize {
        match self {
            Host::Strfry(s) => strfry::count(s.port).await as usize,
            Host::Memory { db, .. } => db.count(Filter::new()).await.unwrap_or(0),
        }
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n_repos, n_roots, n_relays) = (arg(1, 10_000), arg(2, 100_000), arg(3, 50).max(2));
    let live_m = arg(4, 100);
    let grasp = std::env::current_exe()?.parent().unwrap().parent().unwrap().join("grasp-sync");
    let dir = tempfile::tempdir()?;

    // Relay 0: a tenth of the repos, half of the roots. The rest round-robin over the others.
    let big_repos = (n_repos / 10).max(1);
    let relay_of = |repo: usize| if repo < big_repos { 0 } else { 1 + (repo - big_repos) % (n_relays - 1) };
    let big_roots = n_roots / 2;
    let root_repo = |i: usize| {
        if i < big_roots {
            i % big_repos
        } else {
            big_repos + (i - big_roots) % (n_repos - big_repos).max(1)
        }
    };

    // Remotes (behind their proxies) first: announcements name the proxies' URLs.
    let mut remotes = Vec::new();
    for _ in 0..n_relays {
        let db = memory_db();
        let (relay, backend) = start_relay(db.clone()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://127.0.0.1:{}", listener.local_addr()?.port());
        let counter = Arc::new(Counter::default());
        tokio::spawn(proxy(listener, backend, counter.clone()));
        remotes.push(Remote { db, relay, url, counter });
    }

    let t_gen = Instant::now();
    let t0 = t0();
    let maintainers: Vec<Keys> = (0..100).map(|_| Keys::generate()).collect();
    let authors: Vec<Keys> = (0..50).map(|_| Keys::generate()).collect();
    let coord = |repo: usize| format!("30617:{}:repo-{repo}", maintainers[repo % 100].public_key().to_hex());
    let urls: Vec<String> = remotes.iter().map(|r| r.url.clone()).collect();
    let announcements = sign_all(n_repos, |r| {
        let relays = vec!["relays".into(), SERVICE.into(), urls[relay_of(r)].clone()];
        // Distinct timestamps, as real announcements have (the host is queried page by page).
        sign(&maintainers[r % 100], 30617, vec![t("d", &format!("repo-{r}")), relays], "", t0 - 100_000 + r as u64)
    });
    // Roots: created one per second per relay-0 index, so relay 0's newest root is the last one.
    let roots = sign_all(n_roots, |i| {
        let at = t0 + 100 + i as u64;
        sign(&authors[i % 50], 1621, vec![t("a", &coord(root_repo(i))), t("subject", &format!("issue {i}"))], "", at)
    });
    let n_comments = n_roots / 10;
    let comments = sign_all(n_comments, |j| {
        let root = &roots[j * 10];
        let at = root.created_at.as_secs() + 50;
        sign(&authors[(j + 7) % 50], 1111, vec![t("E", &root.id.to_hex()), t("K", "1621")], "a comment", at)
    });
    println!(
        "generated {} announcements, {} roots, {} comments in {:.1} s",
        announcements.len(),
        roots.len(),
        comments.len(),
        t_gen.elapsed().as_secs_f64()
    );
    let mut per_relay = vec![0usize; n_relays];
    for (r, ann) in announcements.iter().enumerate() {
        remotes[relay_of(r)].db.save_event(ann).await?;
        per_relay[relay_of(r)] += 1;
    }
    for (i, root) in roots.iter().enumerate() {
        remotes[relay_of(root_repo(i))].db.save_event(root).await?;
        per_relay[relay_of(root_repo(i))] += 1;
    }
    for (j, c) in comments.iter().enumerate() {
        remotes[relay_of(root_repo(j * 10))].db.save_event(c).await?;
        per_relay[relay_of(root_repo(j * 10))] += 1;
    }
    println!(
        "{n_relays} relays: relay 0 holds {} events ({big_repos} repos, {big_roots} roots); the others between {} and {}",
        per_relay[0],
        per_relay[1..].iter().min().unwrap(),
        per_relay[1..].iter().max().unwrap()
    );

    // The host: accepts every write; holds the announcements. With `--strfry-host`, a strfry
    // process whose database the daemon reads (the production path: index and local sets from
    // LMDB); otherwise an in-process relay the daemon queries (it then keeps what the host holds in
    // memory, so its RSS grows with the events).
    let total = announcements.len() + roots.len() + comments.len();
    let host = if std::env::args().any(|a| a == "--strfry-host") {
        let bin = strfry::find_strfry().ok_or("--strfry-host needs a strfry binary (STRFRY_BIN or PATH)")?;
        let s = strfry::Strfry::start_in(&bin, dir.path(), "host", "");
        let json: Vec<serde_json::Value> =
            announcements.iter().map(|e| serde_json::from_str(&e.as_json()).unwrap()).collect();
        s.import(&json);
        Host::Strfry(s)
    } else {
        let host_db = memory_db();
        let (relay, url) = start_relay(host_db.clone()).await;
        for ann in &announcements {
            host_db.save_event(ann).await?;
        }
        Host::Memory { _relay: relay, db: host_db, url }
    };
    let host_url = host.url();

    let metrics = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let config = dir.path().join("grasp-sync.toml");
    let db_line = match &host {
        Host::Strfry(s) => format!("strfry_db = \"{}\"\n", s.db.display()),
        Host::Memory { .. } => String::new(),
    };
    std::fs::write(
        &config,
        format!(
            "service_url = \"{SERVICE}\"\n[host]\nurl = \"{host_url}\"\n{db_line}[sync]\nallow_private_addresses = true\n\
             [state]\ndir = \"{}\"\n[metrics]\nlisten = \"{metrics}\"\n",
            dir.path().join("state").display()
        ),
    )?;
    let t_start = Instant::now();
    // BENCH_DAEMON_WRAPPER (e.g. "heaptrack -o /tmp/daemon") runs the daemon under a profiler; the
    // RSS figures are then the wrapper's.
    let wrapper = std::env::var("BENCH_DAEMON_WRAPPER").unwrap_or_default();
    let mut words: Vec<String> = wrapper.split_whitespace().map(String::from).collect();
    words.push(grasp.display().to_string());
    let child = Command::new(&words[0])
        .args(&words[1..])
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let daemon = Daemon(child);

    // History: every relay connected (and the host holding everything).
    let mut first_connected = None;
    let mut history_secs = None;
    let mut last_print = Instant::now();
    let mut rss_peak_sampled = 0;
    let mut anon_peak_sampled = 0;
    let mut index_built = None;
    let status = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak_sampled = rss_peak_sampled.max(proc_kb(pid, "VmRSS").unwrap_or(0));
        anon_peak_sampled = anon_peak_sampled.max(proc_kb(pid, "RssAnon").unwrap_or(0));
        let Ok(s) = grasp_sync::metrics::fetch_status(metrics).await else { continue };
        let connected = s.relays.iter().filter(|r| r.status == "connected").count();
        if index_built.is_none() && s.repos > 0 {
            index_built = Some(t_start.elapsed().as_secs_f64());
        }
        if first_connected.is_none() && connected > 0 {
            first_connected = Some(t_start.elapsed().as_secs_f64());
        }
        if history_secs.is_none() && s.relays.len() == n_relays && connected == n_relays {
            history_secs = Some(t_start.elapsed().as_secs_f64());
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
            let held = host.count().await;
            let big = s.relays.iter().find(|r| r.url.starts_with(&urls[0]));
            println!(
                "  {:.0} s: {connected}/{} relays connected, host holds {held}/{total}, index {} roots; relay 0: {} {}/{} batches, {} jobs queued",
                t_start.elapsed().as_secs_f64(),
                s.relays.len(),
                s.root_events,
                big.map(|r| r.status.as_str()).unwrap_or("-"),
                big.map(|r| r.historic_done).unwrap_or(0),
                big.map(|r| r.historic_total).unwrap_or(0),
                big.map(|r| r.jobs_queued).unwrap_or(0),
            );
        }
        if history_secs.is_some() && s.ingest_queue == 0 {
            let held = host.count().await;
            if held >= total {
                break s;
            }
        }
        if t_start.elapsed() > Duration::from_secs(1800) {
            println!("gave up after 30 minutes");
            break s;
        }
    };
    let stored_secs = t_start.elapsed().as_secs_f64();
    let held = host.count().await;
    let hwm_history = proc_kb(pid, "VmHWM").unwrap_or(0);
    let sum = |f: fn(&grasp_sync::metrics::RelayReport) -> u64| status.relays.iter().map(f).sum::<u64>();
    println!("history complete (every relay connected in /status): {:.2} s", history_secs.unwrap_or(f64::NAN));
    println!(
        "  first relay connected at {:.2} s; host held all {held}/{total} events at {stored_secs:.2} s",
        first_connected.unwrap_or(f64::NAN)
    );
    println!(
        "  events_received {}, bytes in {}, bytes out {}, historic_failed {}, truncated {}",
        sum(|r| r.events_received),
        sum(|r| r.bytes_in),
        sum(|r| r.bytes_out),
        status.relays.iter().map(|r| r.historic_failed as u64).sum::<u64>(),
        sum(|r| r.truncated),
    );
    let peaks: Vec<i64> = remotes.iter().map(|r| r.counter.peak.load(Ordering::SeqCst)).collect();
    let frames = remotes.iter().map(|r| r.counter.largest_frame.load(Ordering::SeqCst)).max().unwrap_or(0);
    println!(
        "  peak open subscriptions per relay (relay side): relay 0 {}, others max {}; largest frame sent {frames} bytes; connections relay 0 {}",
        peaks[0],
        peaks[1..].iter().max().unwrap(),
        remotes[0].counter.connections.load(Ordering::SeqCst)
    );
    println!(
        "  daemon RSS: VmHWM {:.1} MB at history complete (sampled peaks: VmRSS {:.1} MB, RssAnon {:.1} MB); index built at {:.1} s",
        hwm_history as f64 / 1024.0,
        rss_peak_sampled as f64 / 1024.0,
        anon_peak_sampled as f64 / 1024.0,
        index_built.unwrap_or(f64::NAN)
    );

    // Live: comments and reactions on relay 0's newest (hot) and oldest (cold) root, right after
    // the history and again once a consolidation interval (60 s) has passed, when the hot set has
    // been repacked newest first.
    let hot = &roots[big_roots - 1];
    let cold = &roots[0];
    let settle = arg(5, 61) as u64;
    live_phase("right after history", &host_url, &remotes[0], hot, cold, live_m).await?;
    if settle > 0 {
        tokio::time::sleep(Duration::from_secs(settle)).await;
        live_phase(&format!("{settle} s later"), &host_url, &remotes[0], hot, cold, live_m).await?;
    }
    println!("daemon peak RSS (VmHWM) at the end: {:.1} MB", proc_kb(pid, "VmHWM").unwrap_or(0) as f64 / 1024.0);
    drop(daemon);
    Ok(())
}

async fn live_phase(
    phase: &str,
    host_url: &str,
    remote: &Remote,
    hot: &Event,
    cold: &Event,
    live_m: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut sub, _) = tokio_tungstenite::connect_async_with_config(host_url, None, true).await?;
    let now = Timestamp::now().as_secs();
    sub.send(Message::text(format!(r#"["REQ","live",{{"kinds":[1111,7],"since":{}}}]"#, now - 5))).await?;
    let mut sent_at: HashMap<String, (&'static str, Instant)> = HashMap::new();
    let cases: [(&str, &Event, u16); 4] = [
        ("comment, hot root", hot, 1111),
        ("comment, cold root", cold, 1111),
        ("reaction, hot root", hot, 7),
        ("reaction, cold root", cold, 7),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = sub.next().await {
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if v[0] == "EVENT" {
                    let _ = tx.send((v[2]["id"].as_str().unwrap_or_default().to_string(), Instant::now()));
                }
            }
        }
    });
    let author = Keys::generate();
    for i in 0..live_m {
        for (label, root, kind) in cases {
            let at = Timestamp::now().as_secs();
            let tags = if kind == 1111 {
                vec![t("E", &root.id.to_hex()), t("K", "1621")]
            } else {
                vec![t("e", &root.id.to_hex()), t("k", "1621")]
            };
            let ev = sign(&author, kind, tags, &format!("live {phase} {i}"), at);
            sent_at.insert(ev.id.to_hex(), (label, Instant::now()));
            remote.db.save_event(&ev).await?;
            remote.relay.notify_event(ev);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut latencies: HashMap<&str, Vec<f64>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some((id, at))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let Some((label, sent)) = sent_at.get(&id) {
            latencies.entry(label).or_default().push(at.duration_since(*sent).as_secs_f64() * 1000.0);
        }
        if latencies.values().map(Vec::len).sum::<usize>() == sent_at.len() {
            break;
        }
    }
    reader.abort();
    for (label, _, _) in cases {
        let mut l = latencies.remove(label).unwrap_or_default();
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if l.is_empty() {
            println!("live ({phase}) {label}: 0 of {live_m} arrived within 10 s");
        } else {
            println!(
                "live ({phase}) {label}: {} of {live_m}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.len(),
                percentile(&l, 0.5),
                percentile(&l, 0.99),
                l.last().unwrap()
            );
        }
    }
    Ok(())
}
