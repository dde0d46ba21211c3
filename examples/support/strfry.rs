//! Real strfry processes on loopback for the examples that measure against strfry
//! (`bench_vs_strfry`, `soak`): start/stop on a fixed port and database, import, count, export.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nostr_relay_builder::prelude::{EventBuilder, JsonUtil, Keys, Kind, Tag, Timestamp};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The strfry binary: `$STRFRY_BIN`, else `strfry` on `PATH`.
pub fn find_strfry() -> Option<PathBuf> {
    std::env::var_os("STRFRY_BIN").map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("strfry")).find(|p| p.is_file())
    })
}

/// One strfry relay process; killed on drop. `stop`/`start_again` keep its port and database.
pub struct Relay {
    bin: PathBuf,
    child: Option<Child>,
    pub name: String,
    pub conf: PathBuf,
    pub port: u16,
    pub db: PathBuf,
    log: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts a strfry relay under `dir/name`; `extra` goes inside the `relay { }` block.
pub fn start(bin: &Path, dir: &Path, name: &str, extra: &str) -> Relay {
    let db = dir.join(name).join("db");
    std::fs::create_dir_all(&db).unwrap();
    let port = free_port();
    let conf = dir.join(name).join("strfry.conf");
    std::fs::write(
        &conf,
        format!(
            "db = \"{}/\"\nrelay {{\n  bind = \"127.0.0.1\"\n  port = {port}\n  nofiles = 0\n{extra}\n}}\n",
            db.display()
        ),
    )
    .unwrap();
    let mut relay = Relay {
        bin: bin.to_path_buf(),
        child: None,
        name: name.to_string(),
        conf,
        port,
        db,
        log: dir.join(name).join("strfry.log"),
    };
    relay.start_again();
    relay
}

impl Relay {
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (as a crash or `systemctl kill` would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again on the same port and database; waits until it accepts connections.
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
                .spawn()
                .unwrap();
            // The port may still be held by the previous process for a moment: retry until it binds.
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
            assert!(Instant::now() < deadline, "strfry {} did not start (see {})", self.name, self.log.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `strfry import` (no plugin, straight into the database).
    pub fn import(&self, events: &[Value]) {
        let mut child = Command::new(&self.bin)
            .arg(format!("--config={}", self.conf.display()))
            .arg("import")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for e in events {
            writeln!(stdin, "{e}").unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success());
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

/// Stops a child with SIGTERM (as a service manager would) and waits for it.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}
