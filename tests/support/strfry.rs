//! Real strfry processes on loopback, for the tests and for the examples that measure against
//! strfry (the examples include this file with `#[path]`). The binary is found through
//! `$STRFRY_BIN`, then `PATH`. Each relay has its own port and database; it is killed on drop, and
//! `kill`/`start_again` keep its port and database.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nostr_relay_builder::prelude::{EventBuilder, JsonUtil, Keys, Kind, Tag, Timestamp};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The strfry binary: `$STRFRY_BIN`, else `strfry` on `PATH`.
pub fn find_strfry() -> Option<PathBuf> {
    let from_env = std::env::var_os("STRFRY_BIN").filter(|p| !p.is_empty()).map(PathBuf::from);
    from_env.filter(|p| p.is_file()).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|d| d.join("strfry")).find(|p| p.is_file())
    })
}

/// The strfry binary, or `None` after printing the skip line.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_strfry();
    if found.is_none() {
        println!("skipped: no strfry ({test}: set STRFRY_BIN to run it)");
    }
    found
}

/// A free loopback port (bound and released; strfry binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One strfry relay process.
pub struct Strfry {
    bin: PathBuf,
    child: Option<Child>,
    pub name: String,
    pub conf: PathBuf,
    pub port: u16,
    pub db: PathBuf,
    log: PathBuf,
    /// The temporary directory of a relay started with [`Strfry::start`], removed on drop.
    _tmp: Option<tempfile::TempDir>,
}

impl Strfry {
    /// Starts strfry on 127.0.0.1 in a temporary directory of its own. `relay_extra` is inserted
    /// inside `relay { }` (e.g. a `writePolicy { plugin = "..." }` block or
    /// `negentropy { enabled = false }`).
    pub fn start(bin: &Path, relay_extra: &str) -> Strfry {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Strfry::start_in(bin, tmp.path(), "relay", relay_extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts strfry under `dir/name` (kept after the relay is dropped, for long runs).
    pub fn start_in(bin: &Path, dir: &Path, name: &str, relay_extra: &str) -> Strfry {
        let db = dir.join(name).join("db");
        std::fs::create_dir_all(&db).unwrap();
        let port = free_port();
        let conf = dir.join(name).join("strfry.conf");
        std::fs::write(
            &conf,
            format!(
                "db = \"{}/\"\nrelay {{\n  bind = \"127.0.0.1\"\n  port = {port}\n  nofiles = 0\n{relay_extra}\n}}\n",
                db.display()
            ),
        )
        .unwrap();
        let mut s = Strfry {
            bin: bin.to_path_buf(),
            child: None,
            name: name.to_string(),
            conf,
            port,
            db,
            log: dir.join(name).join("strfry.log"),
            _tmp: None,
        };
        s.start_again();
        s
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// What strfry wrote to its standard output and error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the relay process (SIGKILL, as a crash would); the database stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills strfry and starts it again on the same port and database after `down_for`.
    pub fn restart_after(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        self.start_again();
    }

    /// Starts the process again on the same port and database; returns once it accepts
    /// connections. The port may still be held by the previous process for a moment, so a start
    /// that exits is retried until a deadline.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "strfry {} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(&self.bin)
                .arg(format!("--config={}", self.conf.display()))
                .arg("relay")
                .stdout(log.try_clone().unwrap())
                .stderr(log.try_clone().unwrap())
                .stdin(Stdio::null())
                .spawn()
                .expect("start strfry");
            let up = loop {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    break true;
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "strfry {} did not start:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes events straight into the database with `strfry import` (no plugin; works while the
    /// relay runs or is stopped).
    pub fn import(&self, events: &[Value]) {
        let mut child = Command::new(&self.bin)
            .arg(format!("--config={}", self.conf.display()))
            .arg("import")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run strfry import");
        let mut stdin = child.stdin.take().unwrap();
        for ev in events {
            writeln!(stdin, "{ev}").unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success(), "strfry import failed");
    }

    /// Every event id in the database (`strfry export`, which reads LMDB beside the running relay).
    pub fn export_ids(&self) -> HashSet<String> {
        let out = Command::new(&self.bin)
            .arg(format!("--config={}", self.conf.display()))
            .arg("export")
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["id"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Strfry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A strfry host whose writePolicy is `grasp-sync plugin` (the binary at `grasp_sync`) for
/// `service`, with the plugin reading strfry's own database. The plugin's configuration is written
/// to `work/grasp-sync.toml`.
pub fn host_with_plugin_binary(bin: &Path, grasp_sync: &Path, work: &Path, service: &str) -> Strfry {
    // strfry starts the plugin on its first write, after it made its database: the plugin's
    // configuration names that database and is complete by then.
    let config = work.join("grasp-sync.toml");
    let plugin = format!("{} plugin --config {}", grasp_sync.display(), config.display());
    let host = Strfry::start_in(bin, work, "host", &format!("  writePolicy {{\n    plugin = \"{plugin}\"\n  }}"));
    std::fs::write(&config, format!("service_url = \"{service}\"\n[host]\nstrfry_db = \"{}\"\n", host.db.display()))
        .unwrap();
    host
}

/// [`host_with_plugin_binary`] with the `grasp-sync` binary of this build (tests only).
#[cfg(test)]
pub fn host_with_plugin(bin: &Path, work: &Path, service: &str) -> Strfry {
    host_with_plugin_binary(bin, Path::new(env!("CARGO_BIN_EXE_grasp-sync")), work, service)
}

/// A signed event as JSON.
pub fn event(keys: &Keys, kind: u16, tags: Vec<Vec<String>>, content: &str, at: u64) -> Value {
    let tags: Vec<Tag> = tags.into_iter().map(|t| Tag::parse(t).unwrap()).collect();
    let ev = EventBuilder::new(Kind::from(kind), content)
        .tags(tags)
        .custom_created_at(Timestamp::from(at))
        .sign_with_keys(keys)
        .unwrap();
    serde_json::from_str(&ev.as_json()).unwrap()
}

/// The benchmarks' data: `repos` announcements by `owner` listing `relays`, `issues` issues per
/// repository and `comments` NIP-22 comments (`E` + `K`) spread over the issues, both by `author`,
/// a few per second from a day ago.
pub fn repo_shape(
    owner: &Keys,
    author: &Keys,
    relays: &[&str],
    repos: usize,
    issues: usize,
    comments: usize,
) -> RepoShape {
    let now = Timestamp::now().as_secs();
    let coords: Vec<String> = (0..repos).map(|r| format!("30617:{}:bench-{r}", owner.public_key().to_hex())).collect();
    let relays_tag: Vec<String> = std::iter::once("relays").chain(relays.iter().copied()).map(String::from).collect();
    let anns: Vec<Value> = (0..repos)
        .map(|r| {
            event(owner, 30617, vec![vec!["d".into(), format!("bench-{r}")], relays_tag.clone()], "", now - 90_000)
        })
        .collect();
    let n_issues = repos * issues;
    let issue_events: Vec<Value> = (0..n_issues)
        .map(|i| {
            let a = vec!["a".into(), coords[i % repos].clone()];
            event(author, 1621, vec![a], &format!("issue {i}"), now - 80_000 + (i as u64) / 3)
        })
        .collect();
    let comment_events: Vec<Value> = (0..comments)
        .map(|i| {
            let root = issue_events[i % n_issues]["id"].as_str().unwrap().to_string();
            let tags = vec![vec!["E".into(), root], vec!["K".into(), "1621".into()]];
            event(author, 1111, tags, &format!("comment {i}"), now - 70_000 + (i as u64) / 3)
        })
        .collect();
    RepoShape { coords, anns, issues: issue_events, comments: comment_events }
}

/// What [`repo_shape`] made: the repositories' coordinates and the events.
pub struct RepoShape {
    pub coords: Vec<String>,
    pub anns: Vec<Value>,
    pub issues: Vec<Value>,
    pub comments: Vec<Value>,
}

/// Stops a child with SIGTERM (as a service manager would) and waits for it.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.expect("connect to the relay").0
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("relay answered within the deadline")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Publishes events one by one; returns `(id, accepted, message)` from each OK.
pub async fn publish(url: &str, events: &[Value]) -> Vec<(String, bool, String)> {
    let mut ws = connect(url).await;
    let mut out = Vec::new();
    for ev in events {
        ws.send(Message::text(json!(["EVENT", ev]).to_string())).await.unwrap();
        loop {
            let v = next_json(&mut ws).await;
            if v[0] == "OK" && v[1] == ev["id"] {
                out.push((v[1].as_str().unwrap().into(), v[2].as_bool().unwrap(), v[3].as_str().unwrap_or("").into()));
                break;
            }
        }
    }
    out
}

/// Every stored event matching `filter` (REQ until EOSE).
pub async fn query(url: &str, filter: Value) -> Vec<Value> {
    let mut ws = connect(url).await;
    ws.send(Message::text(json!(["REQ", "q", filter]).to_string())).await.unwrap();
    let mut out = Vec::new();
    loop {
        let v = next_json(&mut ws).await;
        match v[0].as_str() {
            Some("EVENT") => out.push(v[2].clone()),
            Some("EOSE") => return out,
            Some("CLOSED") | Some("NOTICE") => panic!("query refused: {v}"),
            _ => {}
        }
    }
}

/// Every stored event matching `filter`, paging with `until` past the relay's result limit.
pub async fn query_all(url: &str, filter: Value) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut until: Option<u64> = None;
    loop {
        let mut f = filter.clone();
        f["limit"] = json!(500);
        if let Some(u) = until {
            f["until"] = json!(u);
        }
        let page = query(url, f).await;
        let fresh: Vec<Value> =
            page.iter().filter(|e| seen.insert(e["id"].as_str().unwrap().to_string())).cloned().collect();
        if fresh.is_empty() {
            return out;
        }
        until = page.iter().filter_map(|e| e["created_at"].as_u64()).min();
        out.extend(fresh);
    }
}

/// The relay's answer to `COUNT` for all events (0 if it cannot be asked).
pub async fn count(port: u16) -> u64 {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}")).await else {
        return 0;
    };
    if ws.send(Message::text(r#"["COUNT","c",{}]"#)).await.is_err() {
        return 0;
    }
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap_or_default();
            if v[0] == "COUNT" {
                let _ = ws.close(None).await;
                return v[2]["count"].as_u64().unwrap_or(0);
            }
        }
    }
    0
}
