//! Soak run: `grasp-sync run` beside a strfry host (running `grasp-sync plugin`) for a long time,
//! with three remote strfry relays receiving a steady stream of events and being killed and
//! restarted in turn. Needs a strfry binary (`$STRFRY_BIN` or `strfry` on PATH). Run it through
//! `scripts/soak [MINUTES] [EVENTS_PER_SEC_PER_REMOTE] [RESTART_EVERY_SECS]`.
//!
//! Three repositories each list the service and two of the remotes. Each remote gets, per tick, an
//! issue for one of its repositories, comments on recent issues (also issues published on the
//! other remote of that repository), a status event, and an unrelated note that must never reach
//! the host. Every `RESTART_EVERY_SECS` one remote (round robin) is killed and comes back after a
//! pause of 5–60 s; events published meanwhile wait and are sent when it is back.
//!
//! Every 30 s a line goes to `samples.csv` in the output directory (daemon RSS, events published and
//! held, reconnect counters, ingest queue); at the end the host's database is compared with what
//! the remotes acknowledged: every relevant event must be there and no unrelated one.

#[path = "../tests/support/strfry.rs"]
mod strfry;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nostr_relay_builder::prelude::{Keys, Timestamp};
use serde_json::{json, Value};
use strfry::{event, find_strfry, free_port, terminate, Strfry};
use tokio_tungstenite::tungstenite::Message;

const SERVICE: &str = "wss://git.example.test";
const REMOTES: usize = 3;

/// What the publishers got acknowledged (`OK true`) by the remotes.
#[derive(Default)]
struct Ledger {
    relevant: HashSet<String>,
    unrelated: HashSet<String>,
    /// Issues per repository, newest last (comments pick among the recent ones).
    issues: HashMap<usize, Vec<String>>,
    resends: u64,
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn now() -> u64 {
    Timestamp::now().as_secs()
}

/// Resident memory of a process in KiB: (total, anonymous, file-backed). The file-backed part is
/// mostly strfry's database pages mapped by the LMDB reader (shared with strfry's page cache).
fn rss_kib(pid: u32) -> (u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one event and waits for its `OK`; `None` when the relay is unreachable or silent.
async fn publish(ws: &mut Option<Ws>, url: &str, ev: &Value) -> Option<bool> {
    if ws.is_none() {
        *ws = Some(tokio_tungstenite::connect_async_with_config(url, None, true).await.ok()?.0);
    }
    let conn = ws.as_mut()?;
    let id = ev["id"].as_str()?.to_string();
    let answer = async {
        conn.send(Message::text(json!(["EVENT", ev]).to_string())).await.ok()?;
        while let Some(Ok(m)) = conn.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).ok()?;
                if v[0] == "OK" && v[1] == id.as_str() {
                    return v[2].as_bool();
                }
            }
        }
        None
    };
    let got = tokio::time::timeout(Duration::from_secs(5), answer).await.ok().flatten();
    if got.is_none() {
        *ws = None;
    }
    got
}

/// One remote's publisher: a steady rate of events, each retried until the remote takes it.
async fn publisher(
    r: usize,
    url: String,
    repos: Vec<(usize, String)>,
    rate: u64,
    until: Instant,
    ledger: Arc<Mutex<Ledger>>,
) {
    let (author, stranger) = (Keys::generate(), Keys::generate());
    let mut ws = None;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let (repo, coord) = &repos[(n as usize) % repos.len()];
        let recent: Vec<String> = {
            let l = ledger.lock().unwrap();
            l.issues.get(repo).map(|v| v.iter().rev().take(20).cloned().collect()).unwrap_or_default()
        };
        let (ev, kind) = match n % 10 {
            0 | 5 => (event(&author, 1621, vec![vec!["a".into(), coord.clone()]], &format!("issue {r}/{n}"), now()), 0),
            9 => (event(&stranger, 1, vec![], &format!("unrelated {r}/{n}"), now()), 2),
            7 if !recent.is_empty() => {
                let root = recent[(n as usize) % recent.len()].clone();
                (event(&author, 1632, vec![vec!["e".into(), root, String::new(), "root".into()]], "closed", now()), 1)
            }
            _ if !recent.is_empty() => {
                let root = recent[(n as usize) % recent.len()].clone();
                let tags = vec![vec!["E".into(), root], vec!["K".into(), "1621".into()]];
                (event(&stranger, 1111, tags, &format!("comment {r}/{n}"), now()), 1)
            }
            _ => (event(&stranger, 1, vec![], &format!("unrelated {r}/{n}"), now()), 2),
        };
        let id = ev["id"].as_str().unwrap().to_string();
        let mut tries = 0;
        loop {
            match publish(&mut ws, &url, &ev).await {
                Some(true) => break,
                Some(false) => {
                    eprintln!("remote {r} refused {id}");
                    break;
                }
                None if Instant::now() > until + Duration::from_secs(120) => break,
                None => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        let mut l = ledger.lock().unwrap();
        l.resends += tries;
        match kind {
            0 => {
                l.relevant.insert(id.clone());
                l.issues.entry(*repo).or_default().push(id);
            }
            1 => {
                l.relevant.insert(id);
            }
            _ => {
                l.unrelated.insert(id);
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let minutes = arg(1, 60);
    let rate = arg(2, 2);
    let restart_every = arg(3, 300);
    let Some(bin) = find_strfry() else {
        println!("needs a strfry binary: set STRFRY_BIN");
        return Ok(());
    };
    let grasp = std::env::current_exe()?.parent().unwrap().parent().unwrap().join("grasp-sync");
    let out = PathBuf::from(std::env::var("SOAK_OUT").unwrap_or_else(|_| "target/soak".into()));
    std::fs::create_dir_all(&out)?;
    let work = tempfile::tempdir()?;
    let dir = work.path();

    let mut remotes: Vec<Strfry> =
        (0..REMOTES).map(|i| Strfry::start_in(&bin, dir, &format!("remote{i}"), "")).collect();
    let config = dir.join("grasp-sync.toml");
    let metrics = free_port();
    let plugin = format!("{} plugin --config {}", grasp.display(), config.display());
    let host = Strfry::start_in(&bin, dir, "host", &format!("  writePolicy {{\n    plugin = \"{plugin}\"\n  }}"));
    std::fs::write(
        &config,
        format!(
            "service_url = \"{SERVICE}\"\n[host]\nurl = \"{}\"\nstrfry_db = \"{}\"\n[sync]\nallow_private_addresses = true\n[state]\ndir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            host.url(),
            host.db.display(),
            dir.join("state").display()
        ),
    )?;

    // Repository i is announced with the service and remotes i and i+1; the host has the
    // announcements, each remote has those that list it plus a little history.
    let owner = Keys::generate();
    let mut anns = Vec::new();
    let mut repos_of: Vec<Vec<(usize, String)>> = vec![Vec::new(); REMOTES];
    for i in 0..REMOTES {
        let d = format!("soak-{i}");
        let (a, b) = (i, (i + 1) % REMOTES);
        let tags = vec![
            vec!["d".into(), d.clone()],
            vec!["relays".into(), SERVICE.into(), remotes[a].url(), remotes[b].url()],
        ];
        anns.push(event(&owner, 30617, tags, "", now() - 3600));
        let coord = format!("30617:{}:{d}", owner.public_key().to_hex());
        repos_of[a].push((i, coord.clone()));
        repos_of[b].push((i, coord));
    }
    host.import(&anns);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for (r, remote) in remotes.iter().enumerate() {
        let mut history: Vec<Value> = anns.iter().filter(|a| a.to_string().contains(&remote.url())).cloned().collect();
        let mut l = ledger.lock().unwrap();
        for (repo, coord) in &repos_of[r] {
            for k in 0..50 {
                let ev = event(
                    &owner,
                    1621,
                    vec![vec!["a".into(), coord.clone()]],
                    &format!("old {r}/{k}"),
                    now() - 3000 + k,
                );
                let id = ev["id"].as_str().unwrap().to_string();
                l.relevant.insert(id.clone());
                l.issues.entry(*repo).or_default().push(id);
                history.push(ev);
            }
        }
        for a in &anns {
            l.relevant.insert(a["id"].as_str().unwrap().to_string());
        }
        drop(l);
        remote.import(&history);
    }

    let log = std::fs::File::create(out.join("daemon.log"))?;
    let mut daemon = Command::new(&grasp)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = daemon.id();
    let started = Instant::now();
    let until = started + Duration::from_secs(minutes * 60);
    println!(
        "soak: {minutes} min, {rate} events/s per remote, a remote restart every {restart_every} s; output in {}",
        out.display()
    );

    let publishers: Vec<_> = (0..REMOTES)
        .map(|r| tokio::spawn(publisher(r, remotes[r].url(), repos_of[r].clone(), rate, until, ledger.clone())))
        .collect();

    let mut csv = std::fs::File::create(out.join("samples.csv"))?;
    writeln!(csv, "secs,rss_kib,rss_anon_kib,rss_file_kib,published,host_events,connection_attempts,fresh_starts,quick_reconnects,ingest_queue,pending_retry,remote_restarts")?;
    let mut restarts = 0u64;
    let mut next_restart = started + Duration::from_secs(restart_every);
    let mut down: Option<(usize, Instant)> = None;
    let mut next_sample = started;
    let (mut rss_max, mut anon_max) = (0, 0);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if daemon.try_wait()?.is_some() {
            return Err("the daemon exited during the soak".into());
        }
        let now_i = Instant::now();
        if let Some((r, back_at)) = down {
            if now_i >= back_at {
                remotes[r].start_again();
                down = None;
            }
        } else if now_i >= next_restart {
            let r = (restarts as usize) % REMOTES;
            remotes[r].kill();
            restarts += 1;
            let pause = 5 + (restarts * 17) % 56;
            down = Some((r, now_i + Duration::from_secs(pause)));
            next_restart = now_i + Duration::from_secs(restart_every);
            println!("[{:>5} s] remote{r} killed, back in {pause} s", started.elapsed().as_secs());
        }
        if now_i >= next_sample {
            next_sample += Duration::from_secs(30);
            let (rss, anon, file) = rss_kib(pid);
            rss_max = rss_max.max(rss);
            anon_max = anon_max.max(anon);
            let published = { ledger.lock().unwrap().relevant.len() };
            let held = strfry::count(host.port).await;
            let s = grasp_sync::metrics::fetch_status(([127, 0, 0, 1], metrics).into()).await.ok();
            let (attempts, fresh, quick) = s.as_ref().map_or((0, 0, 0), |s| {
                s.relays.iter().fold((0, 0, 0), |(a, f, q), r| {
                    (a + r.connection_attempts, f + r.fresh_starts, q + r.quick_reconnects)
                })
            });
            let (queue, retry) = s.as_ref().map_or((0, 0), |s| (s.ingest_queue, s.events_pending_retry));
            let secs = started.elapsed().as_secs();
            writeln!(
                csv,
                "{secs},{rss},{anon},{file},{published},{held},{attempts},{fresh},{quick},{queue},{retry},{restarts}"
            )?;
            println!(
                "[{secs:>5} s] rss {:.1} MiB (anon {:.1}), relevant published {published}, host holds {held}, connects {attempts} (fresh {fresh}, quick {quick}), ingest queue {queue}",
                rss as f64 / 1024.0,
                anon as f64 / 1024.0
            );
        }
    }
    if let Some((r, _)) = down {
        remotes[r].start_again();
    }
    for p in publishers {
        p.await?;
    }

    // Drain: everything acknowledged must reach the host; nothing unrelated may.
    let (relevant, unrelated, resends) = {
        let l = ledger.lock().unwrap();
        (l.relevant.clone(), l.unrelated.clone(), l.resends)
    };
    let drain = Instant::now();
    let mut missing: Vec<String>;
    loop {
        let held = host.export_ids();
        missing = relevant.iter().filter(|id| !held.contains(*id)).cloned().collect();
        if missing.is_empty() || drain.elapsed() > Duration::from_secs(180) {
            let leaked = unrelated.iter().filter(|id| held.contains(*id)).count();
            let s = grasp_sync::metrics::fetch_status(([127, 0, 0, 1], metrics).into()).await?;
            println!("\n== soak result after {:.1} min ==", started.elapsed().as_secs_f64() / 60.0);
            println!("relevant events acknowledged by the remotes: {}", relevant.len());
            println!("unrelated events acknowledged by the remotes: {}", unrelated.len());
            println!(
                "events lost (relevant, not on the host after a {} s drain): {}",
                drain.elapsed().as_secs(),
                missing.len()
            );
            println!("unrelated events on the host: {leaked}");
            println!("remote restarts: {restarts}; publisher resends while a remote was down: {resends}");
            println!(
                "daemon peak sampled RSS: {:.1} MiB, of it anonymous at most {:.1} MiB",
                rss_max as f64 / 1024.0,
                anon_max as f64 / 1024.0
            );
            for r in &s.relays {
                println!(
                    "  {}: status {}, health {}, connects {}, fresh starts {}, quick reconnects {}, stored {}, duplicates {}",
                    r.url, r.status, r.health, r.connection_attempts, r.fresh_starts, r.quick_reconnects, r.events_stored, r.events_duplicate
                );
            }
            for id in missing.iter().take(20) {
                println!("  missing {id}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    terminate(&mut daemon);
    drop(host);
    drop(remotes);
    if !missing.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
