//! An in-process host relay that can be stopped and started again on the same port with its data,
//! as strfry is when it restarts. The events live in a nostr-relay-builder relay that never stops;
//! writes are decided by the plugin's own decision function (as strfry asks `grasp-sync plugin`).
//! Clients reach it through a TCP front on a fixed port: stopping the front closes the port (new
//! connections are refused) and cuts every open connection; starting it binds the same port again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grasp_sync::host::plugin::{Action, Plugin};
use grasp_sync::policy::{AcceptedSet, Policy, RelayUrl};
use nostr_relay_builder::prelude::{
    BoxedFuture, Event, Filter, JsonUtil, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase,
    PolicyResult, RateLimit, RelayBuilder, WritePolicy,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The plugin's decision, asked through the same request line strfry sends.
#[derive(Debug)]
struct PluginPolicy(Mutex<Plugin>);

impl WritePolicy for PluginPolicy {
    fn admit_event<'a>(&'a self, event: &'a Event, _addr: &'a SocketAddr) -> BoxedFuture<'a, PolicyResult> {
        Box::pin(async move {
            let event: serde_json::Value = serde_json::from_str(&event.as_json()).unwrap();
            let line = serde_json::json!({"type": "new", "event": event, "receivedAt": 0, "sourceType": "IP4"});
            let answer = self.0.lock().unwrap().handle_line(line.to_string().as_bytes());
            match answer {
                Some(a) if a.action == Action::Accept => PolicyResult::Accept,
                Some(a) => PolicyResult::Reject(a.msg),
                None => PolicyResult::Reject("error: no answer from the policy".into()),
            }
        })
    }
}

pub struct Host {
    pub url: String,
    pub port: u16,
    pub db: Arc<MemoryDatabase>,
    _relay: LocalRelay,
    backend: SocketAddr,
    front: Option<JoinHandle<()>>,
}

impl Host {
    /// A host for the GRASP relay `service`, listening on a free loopback port.
    pub async fn start(service: &str) -> Host {
        let db = Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions { events: true, max_events: Some(500_000) }));
        let policy = Policy::new(RelayUrl::parse(service).unwrap(), false);
        let builder = RelayBuilder::default()
            .database(db.clone())
            .rate_limit(RateLimit { max_reqs: 1_000, notes_per_minute: 10_000_000 })
            .write_policy(PluginPolicy(Mutex::new(Plugin::new(policy, AcceptedSet::new()))));
        let relay = LocalRelay::new(builder);
        relay.run().await.expect("host relay runs");
        let backend: SocketAddr =
            relay.url().await.as_str().trim_start_matches("ws://").trim_end_matches('/').parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut host = Host { url: format!("ws://127.0.0.1:{port}"), port, db, _relay: relay, backend, front: None };
        host.front = Some(tokio::spawn(front(listener, backend)));
        host
    }

    /// Stops answering: the port is closed and every open connection is cut. The events stay.
    pub async fn stop(&mut self) {
        if let Some(front) = self.front.take() {
            front.abort();
            let _ = front.await;
        }
    }

    /// Listens on the same port again (retrying the bind until a deadline).
    pub async fn start_again(&mut self) {
        assert!(self.front.is_none(), "host already running");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "cannot bind port {} again: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.front = Some(tokio::spawn(front(listener, self.backend)));
    }

    /// Ids of every event the host holds, read from its database.
    pub async fn ids(&self) -> HashSet<String> {
        self.db.query(Filter::new()).await.unwrap().into_iter().map(|e| e.id.to_hex()).collect()
    }
}

/// Accepts connections and pipes each to the relay. Aborting this task drops the listener and,
/// with the join set, every piped connection.
async fn front(listener: TcpListener, backend: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                conns.spawn(async move {
                    let _ = client.set_nodelay(true);
                    let Ok(mut upstream) = TcpStream::connect(backend).await else { return };
                    let _ = upstream.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
