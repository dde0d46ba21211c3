//! The LMDB reader and index build against databases written by a real strfry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use grasp_sync::accepted::build::Built;
use grasp_sync::host::lmdb::{load_index, StrfryDb};
use grasp_sync::policy::{Policy, RelayUrl};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap()
}

/// LMDB writes lock.mdb beside data.mdb: work on a copy.
fn copy_db(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join(name).join("data.mdb"), dir.path().join("data.mdb")).unwrap();
    let mut perms = std::fs::metadata(dir.path().join("data.mdb")).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(dir.path().join("data.mdb"), perms).unwrap();
    dir
}

fn policy() -> Policy {
    Policy::new(RelayUrl::parse(manifest()["service_url"].as_str().unwrap()).unwrap(), false)
}

fn id_of(name: &str) -> String {
    manifest()["ids"][name].as_str().unwrap().to_string()
}

fn build(name: &str) -> Built {
    let dir = copy_db(name);
    let db = StrfryDb::open(dir.path()).unwrap();
    load_index(&db, &policy()).unwrap().0
}

fn coord(pubkey_of: &str, d: &str) -> String {
    // The author of the named event.
    format!("30617:{}:{d}", fixture_event(pubkey_of)["pubkey"].as_str().unwrap())
}

fn fixture_event(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("events.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == name)
        .map(|v| v["event"].clone())
        .unwrap()
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| id_of(n)).collect()
}

/// The index as `coordinate → (relays, root event ids)`.
fn index_view(b: &Built) -> Vec<(String, Vec<String>, BTreeSet<String>)> {
    b.index
        .repos()
        .map(|(c, e)| {
            (
                c.to_string(),
                e.relays.iter().map(|r| r.to_string()).collect(),
                e.root_events.iter().map(hex::encode).collect(),
            )
        })
        .collect()
}

fn accepted_ids(b: &Built) -> BTreeSet<String> {
    let all: Vec<String> =
        manifest()["ids"].as_object().unwrap().values().map(|v| v.as_str().unwrap().to_string()).collect();
    all.into_iter()
        .filter(|id| {
            use grasp_sync::policy::AcceptedView;
            b.accepted.has_event(&grasp_sync::policy::event::parse_hex32(id).unwrap())
        })
        .collect()
}

fn expected_index() -> Vec<(String, Vec<String>, BTreeSet<String>)> {
    let relays = vec!["wss://r1.example.com".to_string(), "wss://r2.example.com".to_string()];
    let mut v = vec![
        (coord("ann_alpha", "alpha"), relays, ids(&["issue_alpha", "patch_alpha", "issue_alpha_A", "issue_alpha_q"])),
        (coord("ann_gamma", "gamma"), relays_of("ann_gamma"), ids(&["issue_gamma"])),
        (coord("ann_alpha_bob", "alpha"), relays_of("ann_alpha_bob"), BTreeSet::new()),
    ];
    v.sort();
    v
}

/// What the announcement's relays tag lists, minus the service itself (normalised form).
fn relays_of(name: &str) -> Vec<String> {
    let service = RelayUrl::parse(manifest()["service_url"].as_str().unwrap()).unwrap();
    let ev = fixture_event(name);
    let mut out: BTreeSet<String> = BTreeSet::new();
    for t in ev["tags"].as_array().unwrap() {
        let t: Vec<&str> = t.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        if t[0] == "relays" {
            for r in &t[1..] {
                let u = RelayUrl::parse(r).unwrap();
                if !u.same_endpoint(&service) {
                    out.insert(u.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn index_of_mixed_database_is_what_the_manifest_implies() {
    let built = build("strfry-db-mixed");
    assert_eq!(index_view(&built), expected_index());
    let m = manifest();
    let accept: Vec<&str> = m["accept"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(accepted_ids(&built), ids(&accept), "accepted ids equal the manifest's accept list");
    assert_eq!(built.stats.accepted_events, accept.len(), "nothing outside the fixture is accepted either");
    let reject: Vec<&str> = m["reject"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(accepted_ids(&built).is_disjoint(&ids(&reject)));
}

#[test]
fn compressed_database_gives_the_same_index_and_accepted_set() {
    let plain = build("strfry-db-mixed");
    let packed = build("strfry-db-compressed");
    assert_eq!(index_view(&packed), index_view(&plain));
    assert_eq!(accepted_ids(&packed), accepted_ids(&plain));
    assert_eq!(packed.stats, plain.stats);
}

#[test]
fn compressed_payloads_decode_to_the_published_events() {
    for db_name in ["strfry-db-mixed", "strfry-db-compressed"] {
        let dir = copy_db(db_name);
        let db = StrfryDb::open(dir.path()).unwrap();
        let snap = db.snapshot().unwrap();
        let text = std::fs::read_to_string(fixtures().join("events.jsonl")).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let id = grasp_sync::policy::event::parse_hex32(v["event"]["id"].as_str().unwrap()).unwrap();
            let ev = snap.by_id(&id).unwrap().expect("every fixture event is stored");
            let note = snap.note(ev.lev_id).unwrap();
            assert_eq!(serde_json::to_value(&note).unwrap(), v["event"], "{db_name}: {}", v["name"]);
        }
    }
}

#[test]
fn lookups_by_kind_tag_id_and_lev_id_return_exactly_the_stored_events() {
    let dir = copy_db("strfry-db-mixed");
    let db = StrfryDb::open(dir.path()).unwrap();
    let snap = db.snapshot().unwrap();
    let names = |evs: Vec<grasp_sync::host::lmdb::Stored<'_>>| -> BTreeSet<String> {
        evs.iter().map(|e| hex::encode(e.packed.id())).collect()
    };
    // Kinds next to each other (30617, 30618) do not bleed into each other.
    assert_eq!(
        names(snap.by_kind(30617, 0, u64::MAX).unwrap()),
        ids(&["ann_alpha", "ann_beta", "ann_gamma", "ann_alpha_bob"])
    );
    assert_eq!(
        names(snap.by_kind(30618, 0, u64::MAX).unwrap()),
        ids(&["state_alpha", "state_alpha_bob", "state_alpha_mallory", "state_beta"])
    );
    assert!(snap.by_kind(30616, 0, u64::MAX).unwrap().is_empty());
    assert!(snap.by_kind(30619, 0, u64::MAX).unwrap().is_empty());
    // since/until are inclusive at both ends.
    let at = fixture_event("ann_gamma")["created_at"].as_u64().unwrap();
    assert_eq!(names(snap.by_kind(30617, at, at).unwrap()), ids(&["ann_gamma"]));
    assert_eq!(names(snap.by_kind(30617, at + 1, u64::MAX).unwrap()), ids(&["ann_alpha_bob"]));
    // Tags: e is stored as raw bytes, E and q as text.
    let issue = id_of("issue_alpha");
    assert_eq!(names(snap.by_tag('e', &issue, 0, u64::MAX).unwrap()), ids(&["comment_issue_alpha"]));
    assert_eq!(names(snap.by_tag('E', &issue, 0, u64::MAX).unwrap()), ids(&["comment_issue_alpha"]));
    assert_eq!(names(snap.by_tag('q', &issue, 0, u64::MAX).unwrap()), ids(&["reply_q_issue_alpha"]));
    let alpha = coord("ann_alpha", "alpha");
    assert_eq!(
        names(snap.by_tag('a', &alpha, 0, u64::MAX).unwrap()),
        ids(&["issue_alpha", "patch_alpha", "status_patch_alpha"])
    );
    assert_eq!(names(snap.by_tag('A', &alpha, 0, u64::MAX).unwrap()), ids(&["issue_alpha_A"]));
    assert_eq!(names(snap.by_tag('d', "alpha", 0, u64::MAX).unwrap()).len(), 5, "3 states and 2 announcements");
    assert!(snap.by_tag('e', "not hex", 0, u64::MAX).unwrap().is_empty());
    // By id; first and last levId; after a levId.
    assert_eq!(snap.by_id(&[0; 32]).unwrap().map(|e| e.lev_id), None);
    let first = snap.by_id(&grasp_sync::policy::event::parse_hex32(&id_of("ann_alpha")).unwrap()).unwrap().unwrap();
    assert_eq!(first.lev_id, 1);
    assert_eq!(snap.last_lev_id().unwrap(), 20);
    let tail: Vec<u64> = snap.after(18, 10).unwrap().iter().map(|e| e.lev_id).collect();
    assert_eq!(tail, [19, 20]);
    assert!(snap.after(20, 10).unwrap().is_empty());
    assert_eq!(snap.after(0, 3).unwrap().len(), 3);
}

#[test]
fn local_sets_follow_the_sync_filter_shapes() {
    use grasp_sync::wire::filter::Filter;
    let dir = copy_db("strfry-db-compressed");
    let db = StrfryDb::open(dir.path()).unwrap();
    let snap = db.snapshot().unwrap();
    let set =
        |f: &Filter| -> BTreeSet<String> { snap.local_set(f).unwrap().iter().map(|(_, id)| hex::encode(id)).collect() };
    let alpha = coord("ann_alpha", "alpha");
    assert_eq!(
        set(&Filter::kinds([30618]).tag('d', ["alpha".to_string()])),
        ids(&["state_alpha", "state_alpha_bob", "state_alpha_mallory"])
    );
    assert_eq!(
        set(&Filter::default().tag('a', [alpha.clone()])),
        ids(&["issue_alpha", "patch_alpha", "status_patch_alpha"])
    );
    assert_eq!(set(&Filter::kinds([1621]).tag('a', [alpha.clone()])), ids(&["issue_alpha"]));
    assert_eq!(
        set(&Filter::default().tag('q', [alpha, id_of("issue_alpha")])),
        ids(&["issue_alpha_q", "reply_q_issue_alpha"])
    );
    assert_eq!(
        set(&Filter::default().tag('E', [id_of("issue_alpha"), id_of("issue_gamma")])),
        ids(&["comment_issue_alpha", "comment_issue_gamma"])
    );
    let at = fixture_event("issue_gamma")["created_at"].as_u64().unwrap();
    assert_eq!(set(&Filter::kinds([1621]).since(at).until(at)), ids(&["issue_gamma"]));
    assert_eq!(set(&Filter::kinds([1621, 1617]).since(at)).len(), 2, "issue_gamma and issue_beta");
    let f = Filter { ids: ids(&["note_unrelated", "ann_beta"]), ..Default::default() };
    assert_eq!(set(&f), ids(&["note_unrelated", "ann_beta"]));
    // Ids alone are answered from the id index alone: the same `(created_at, id)` pairs as a walk
    // over every event, within `since`/`until` too.
    let walked = |f: &Filter| -> Vec<(u64, [u8; 32])> {
        let all = snap.local_set(&Filter::default()).unwrap();
        let (lo, hi) = (f.since.unwrap_or(0), f.until.unwrap_or(u64::MAX));
        all.into_iter().filter(|(at, id)| f.ids.contains(&hex::encode(id)) && (lo..=hi).contains(at)).collect()
    };
    assert_eq!(snap.local_set(&f).unwrap(), walked(&f));
    let newer = snap.local_set(&f).unwrap().iter().map(|(at, _)| *at).max().unwrap();
    let bounded = Filter { since: Some(newer), ..f.clone() };
    assert_eq!(snap.local_set(&bounded).unwrap(), walked(&bounded));
    assert_eq!(set(&Filter::default()).len(), 20);
    let list = snap.local_set(&Filter::default()).unwrap();
    assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted by (created_at, id), no duplicates");
}

#[test]
fn missing_directory_or_foreign_database_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let err = StrfryDb::open(empty.path()).unwrap_err().to_string();
    assert!(err.contains("no strfry database"), "{err}");
    // An LMDB environment that is not strfry's.
    let env = lmdb::Environment::new().set_max_dbs(4).open(empty.path()).unwrap();
    env.create_db(Some("other"), lmdb::DatabaseFlags::empty()).unwrap();
    drop(env);
    let err = StrfryDb::open(empty.path()).unwrap_err().to_string();
    assert!(err.contains("rasgueadb_defaultDb__Meta is missing"), "{err}");
}

#[test]
fn batch_reference_scan_finds_what_per_id_seeks_find() {
    let dir = copy_db("strfry-db-mixed");
    let db = StrfryDb::open(dir.path()).unwrap();
    let snap = db.snapshot().unwrap();
    let all: Vec<String> =
        manifest()["ids"].as_object().unwrap().values().map(|v| v.as_str().unwrap().to_string()).collect();
    let set: std::collections::HashSet<[u8; 32]> =
        all.iter().map(|h| grasp_sync::policy::event::parse_hex32(h).unwrap()).collect();
    for letter in ['e', 'E', 'q'] {
        let scanned: BTreeSet<u64> = snap.referencing_scan(letter, &set).unwrap().iter().map(|e| e.lev_id).collect();
        let mut sought = BTreeSet::new();
        for id in &all {
            sought.extend(snap.by_tag(letter, id, 0, u64::MAX).unwrap().iter().map(|e| e.lev_id));
        }
        assert_eq!(scanned, sought, "letter {letter}");
        assert!(!scanned.is_empty());
    }
}

#[test]
fn facts_from_packed_events_equal_facts_from_their_json() {
    let dir = copy_db("strfry-db-mixed");
    let db = StrfryDb::open(dir.path()).unwrap();
    let snap = db.snapshot().unwrap();
    for ev in snap.after(0, 100).unwrap() {
        let note = snap.note(ev.lev_id).unwrap();
        let from_json = grasp_sync::policy::Facts::from_note(&note).unwrap();
        let mut from_packed = grasp_sync::host::lmdb::facts_from_packed(&ev.packed);
        if matches!(note.kind, 30617 | 30618) {
            // Only the JSON has the announcement tags; d differs only when the tag is missing.
            from_packed.announcement = from_json.announcement.clone();
        }
        assert_eq!(from_packed, from_json, "{}", note.id);
    }
}

#[test]
fn reads_after_releasing_mapped_pages_see_the_same_data() {
    let dir = copy_db("strfry-db-compressed");
    let db = StrfryDb::open(dir.path()).unwrap();
    let snap = db.snapshot().unwrap();
    let before = snap.after(0, 100).unwrap().iter().map(|e| (e.lev_id, e.packed.id())).collect::<Vec<_>>();
    let json = snap.json(3).unwrap();
    snap.release_mapped_pages();
    let after = snap.after(0, 100).unwrap().iter().map(|e| (e.lev_id, e.packed.id())).collect::<Vec<_>>();
    assert_eq!(before, after);
    assert_eq!(snap.json(3).unwrap(), json);
}
