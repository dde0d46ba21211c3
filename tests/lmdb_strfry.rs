//! The reader beside a running strfry: events published over a websocket while the reader's
//! environment is open are visible to the next snapshot. Needs a strfry binary ($STRFRY_BIN or
//! `strfry` on PATH); without one the test prints `skipped: no strfry` and passes.

mod support;

use std::time::{Duration, Instant};

use grasp_sync::host::lmdb::{load_index, StrfryDb};
use grasp_sync::policy::event::parse_hex32;
use grasp_sync::policy::{Policy, RelayUrl};
use nostr::prelude::*;
use support::strfry::{binary_or_skip, Strfry};

const SERVICE: &str = "wss://grasp.example.com";

fn sign(keys: &Keys, kind: u16, tags: Vec<Vec<String>>) -> Event {
    let tags: Vec<Tag> = tags.into_iter().map(|t| Tag::parse(t).unwrap()).collect();
    EventBuilder::new(Kind::Custom(kind), "").tags(tags).finalize(keys).unwrap()
}

/// Publishes events to the running strfry and checks that it stored each one.
async fn publish(url: &str, events: &[Event]) {
    let json: Vec<serde_json::Value> = events.iter().map(|e| serde_json::from_str(&e.as_json()).unwrap()).collect();
    for (id, stored, msg) in support::strfry::publish(url, &json).await {
        assert!(stored, "strfry stored {id}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_sees_events_published_to_a_running_strfry() {
    let Some(bin) = binary_or_skip("reader_sees_events_published_to_a_running_strfry") else { return };
    let strfry = Strfry::start(&bin, "  auth {\n    enabled = false\n  }");
    // strfry creates its database at start; open the reader now and keep it open throughout.
    let db_dir = strfry.db.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match StrfryDb::open(&db_dir) {
            Ok(db) => break db,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot open strfry's database: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let before = db.snapshot().unwrap();
    assert_eq!(before.event_count().unwrap(), 0);

    let owner = Keys::parse(&"01".repeat(32)).unwrap();
    let other = Keys::parse(&"02".repeat(32)).unwrap();
    let ann = sign(&owner, 30617, vec![vec!["d".into(), "repo".into()], vec!["relays".into(), SERVICE.into()]]);
    let coord = format!("30617:{}:repo", owner.public_key().to_hex());
    let issue = sign(&other, 1621, vec![vec!["a".into(), coord.clone()]]);
    let comment = sign(&owner, 1111, vec![vec!["E".into(), issue.id.to_hex()]]);
    let junk = sign(&other, 1, vec![]);
    publish(&strfry.url(), &[ann.clone(), issue.clone(), comment.clone(), junk]).await;

    // A snapshot taken before the writes keeps its view; a new one sees them.
    assert_eq!(before.event_count().unwrap(), 0);
    drop(before);
    let snap = db.snapshot().unwrap();
    assert_eq!(snap.event_count().unwrap(), 4);
    let found = snap.by_id(&parse_hex32(&issue.id.to_hex()).unwrap()).unwrap().expect("issue stored");
    assert_eq!(snap.note(found.lev_id).unwrap().id, issue.id.to_hex());
    assert_eq!(snap.by_tag('a', &coord, 0, u64::MAX).unwrap().len(), 1);
    assert_eq!(snap.by_tag('E', &issue.id.to_hex(), 0, u64::MAX).unwrap().len(), 1);
    drop(snap);

    let policy = Policy::new(RelayUrl::parse(SERVICE).unwrap(), false);
    let (built, last, _) = load_index(&db, &policy).unwrap();
    assert_eq!(last, 4);
    assert_eq!(built.stats.accepted_events, 3, "announcement, issue and comment; not the unrelated note");
    let entry = built.index.repos().next().unwrap().1;
    assert_eq!(entry.root_events.len(), 1);

    // Events written after the build are found after its last levId.
    let late = sign(&other, 1621, vec![vec!["a".into(), coord], vec!["subject".into(), "late".into()]]);
    publish(&strfry.url(), std::slice::from_ref(&late)).await;
    let snap = db.snapshot().unwrap();
    let newer = snap.after(last, 100).unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(hex::encode(newer[0].packed.id()), late.id.to_hex());
}
