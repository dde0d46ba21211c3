//! In-process remote relays (nostr-relay-builder, NIP-01 + NIP-77) fed with our own events as JSON.

use std::sync::Arc;

use grasp_sync::policy::Note;
use nostr_relay_builder::prelude::{
    Event, JsonUtil, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase, RateLimit, RelayBuilder,
};

pub struct TestRelay {
    pub relay: LocalRelay,
    pub db: Arc<MemoryDatabase>,
    pub url: String,
}

fn to_event(note: &Note) -> Event {
    Event::from_json(serde_json::to_string(note).unwrap()).expect("test event parses")
}

impl TestRelay {
    /// Starts a relay on 127.0.0.1 with an optional cap on filter `limit`.
    pub async fn start(max_filter_limit: Option<usize>) -> TestRelay {
        let db = Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions { events: true, max_events: Some(500_000) }));
        let mut builder = RelayBuilder::default()
            .database(db.clone())
            .rate_limit(RateLimit { max_reqs: 1_000, notes_per_minute: 1_000_000 });
        if let Some(max) = max_filter_limit {
            builder = builder.max_filter_limit(max);
        }
        let relay = LocalRelay::new(builder);
        relay.run().await.expect("relay runs");
        let url = relay.url().await.to_string().trim_end_matches('/').to_string();
        TestRelay { relay, db, url }
    }

    /// Stores events without telling subscribers (history).
    pub async fn insert_all(&self, notes: &[Note]) {
        for n in notes {
            let status = self.db.save_event(&to_event(n)).await.expect("save");
            assert!(status.is_success(), "relay refused a test event: {status:?}");
        }
    }

    /// Stores an event and delivers it to live subscribers.
    pub async fn publish(&self, note: &Note) {
        let ev = to_event(note);
        self.db.save_event(&ev).await.expect("save");
        self.relay.notify_event(ev);
    }
}
