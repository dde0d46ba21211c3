//! A real strfry on loopback for tests: found via `$STRFRY_BIN`, then `PATH`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The strfry binary, or `None` after printing the skip line.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("STRFRY_BIN").map(PathBuf::from).filter(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("strfry")).find(|p| p.is_file())
    });
    if found.is_none() {
        println!("skipped: no strfry ({test}: set STRFRY_BIN to run it)");
    }
    found
}

/// A free loopback port (bound and released; strfry binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running strfry with its own database in a temp dir; killed on drop.
pub struct Strfry {
    child: Child,
    bin: PathBuf,
    conf: PathBuf,
    pub port: u16,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Strfry {
    /// Starts strfry on 127.0.0.1. `relay_extra` is inserted inside `relay { }` (e.g. a
    /// `writePolicy { plugin = "..." }` block or `negentropy { enabled = false }`).
    pub fn start(bin: &Path, relay_extra: &str) -> Strfry {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        let port = free_port();
        let conf = dir.path().join("strfry.conf");
        std::fs::write(
            &conf,
            format!(
                "db = \"{}/\"\nrelay {{\n  bind = \"127.0.0.1\"\n  port = {port}\n  nofiles = 0\n{relay_extra}\n}}\n",
                db.display()
            ),
        )
        .unwrap();
        let child = spawn(bin, &conf, dir.path());
        let s = Strfry { child, bin: bin.to_path_buf(), conf, port, db, dir };
        s.wait_listening();
        s
    }

    /// Kills strfry (SIGKILL: no clean shutdown) and starts it again on the same port and database.
    pub fn restart_after(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        self.start_again();
    }

    /// Kills the relay process (SIGKILL); the database stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the relay again on the same port and database.
    pub fn start_again(&mut self) {
        self.child = spawn(&self.bin, &self.conf, self.dir.path());
        self.wait_listening();
    }

    /// Writes events straight into the database with `strfry import` (works while stopped).
    pub fn import(&self, events: &[Value]) {
        use std::io::Write;
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

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("strfry.log")).unwrap_or_default()
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "strfry did not listen on {}: {}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Strfry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A strfry host whose writePolicy is `grasp-sync plugin` for the service `S`, with the plugin reading
/// strfry's own database.
pub fn host_with_plugin(bin: &Path, work: &Path, service: &str) -> Strfry {
    // The plugin reads the host's LMDB at start; the path is only known once strfry made it, and
    // strfry starts the plugin on the first write, so its config file is completed afterwards.
    let config = super::write_config(work, "");
    let plugin = format!("{} plugin --config {}", env!("CARGO_BIN_EXE_grasp-sync"), config.display());
    let host = Strfry::start(bin, &format!("  writePolicy {{\n    plugin = \"{plugin}\"\n  }}"));
    std::fs::write(&config, format!("service_url = \"{service}\"\n[host]\nstrfry_db = \"{}\"\n", host.db.display()))
        .unwrap();
    host
}

fn spawn(bin: &Path, conf: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("strfry.log")).unwrap();
    Command::new(bin)
        .arg(format!("--config={}", conf.display()))
        .arg("relay")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start strfry")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.expect("connect to strfry").0
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
    let mut seen = std::collections::HashSet::new();
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
