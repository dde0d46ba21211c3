//! The strfry-shaped database generator: checked against databases written by real strfry,
//! and used to probe the reader's seeks at key boundaries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use grasp_sync::host::lmdb::layout::{self, table};
use grasp_sync::host::lmdb::StrfryDb;
use grasp_sync::policy::Note;
use grasp_sync::testkit::generate::Generator;
use grasp_sync::wire::filter::Filter;
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture_notes() -> Vec<Note> {
    let text = std::fs::read_to_string(fixtures().join("events.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_value(serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone()).unwrap()
        })
        .collect()
}

fn copy_db(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("data.mdb");
    std::fs::copy(fixtures().join(name).join("data.mdb"), &to).unwrap();
    let mut perms = std::fs::metadata(&to).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&to, perms).unwrap();
    dir
}

/// Tables whose content depends only on the events (not on strfry's bookkeeping).
const EVENT_TABLES: &[&str] = &[
    table::EVENT,
    table::IDX_CREATED_AT,
    table::IDX_ID,
    table::IDX_PUBKEY,
    table::IDX_KIND,
    table::IDX_PUBKEY_KIND,
    table::IDX_TAG,
    table::IDX_DELETION,
    table::IDX_EXPIRATION,
    table::IDX_REPLACE,
    table::IDX_REPLACE_DELETION,
];

fn assert_same_events(generated: &StrfryDb, real: &StrfryDb) {
    let (g, r) = (generated.snapshot().unwrap(), real.snapshot().unwrap());
    for t in EVENT_TABLES {
        let (ge, re) = (g.raw_entries(t).unwrap().unwrap(), r.raw_entries(t).unwrap().unwrap());
        assert_eq!(ge.len(), re.len(), "{t}: entry count");
        assert!(ge == re, "{t}: entries differ");
    }
    assert_eq!(g.last_lev_id().unwrap(), r.last_lev_id().unwrap());
    for lev in 1..=r.last_lev_id().unwrap() {
        assert_eq!(g.json(lev).unwrap(), r.json(lev).unwrap(), "payload of levId {lev}");
    }
}

#[test]
fn generated_database_reads_back_like_the_one_strfry_wrote() {
    let real_dir = copy_db("strfry-db-mixed");
    let real = StrfryDb::open(real_dir.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = Generator::create(dir.path(), 64 << 20).unwrap();
    g.write(&fixture_notes()).unwrap();
    g.finish().unwrap();
    let generated = StrfryDb::open(dir.path()).unwrap();
    assert_same_events(&generated, &real);
    // Uncompressed payloads are byte-identical too (strfry's normalised JSON).
    let (g, r) = (generated.snapshot().unwrap(), real.snapshot().unwrap());
    assert!(g.raw_entries(table::EVENT_PAYLOAD).unwrap() == r.raw_entries(table::EVENT_PAYLOAD).unwrap());
}

#[test]
fn generated_compressed_database_reads_back_like_the_one_strfry_compressed() {
    let real_dir = copy_db("strfry-db-compressed");
    let real = StrfryDb::open(real_dir.path()).unwrap();
    let dict_rec = real.snapshot().unwrap().raw_entries(table::COMPRESSION_DICTIONARY).unwrap().unwrap();
    let (key, rec) = &dict_rec[0];
    let dict_id = layout::u64_at(key, 0) as u32;
    let dict = layout::fb_bytes(rec, 0).unwrap().to_vec();
    let dir = tempfile::tempdir().unwrap();
    let mut g = Generator::create(dir.path(), 64 << 20).unwrap();
    g.compress_with(dict_id, &dict, 3).unwrap();
    g.write(&fixture_notes()).unwrap();
    g.finish().unwrap();
    let generated = StrfryDb::open(dir.path()).unwrap();
    assert_same_events(&generated, &real);
    let payloads = generated.snapshot().unwrap().raw_entries(table::EVENT_PAYLOAD).unwrap().unwrap();
    assert!(payloads.iter().all(|(_, v)| v[0] == 1), "every payload is zstd (type 1)");
}

fn note(n: u64, kind: u64, created_at: u64, tags: &[(&str, &str)]) -> Note {
    Note {
        id: format!("{n:064x}"),
        pubkey: "11".repeat(32),
        created_at,
        kind,
        tags: tags.iter().map(|(a, b)| vec![a.to_string(), b.to_string()]).collect(),
        content: String::new(),
        sig: "22".repeat(64),
    }
}

fn generated(notes: &[Note]) -> (tempfile::TempDir, StrfryDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Generator::create(dir.path(), 16 << 20).unwrap();
    g.write(notes).unwrap();
    g.finish().unwrap();
    let db = StrfryDb::open(dir.path()).unwrap();
    (dir, db)
}

#[test]
fn seeks_are_exact_at_key_boundaries() {
    // Numbers whose native-endian bytes sort differently from their values (255 vs 256), equal
    // timestamps, the first and last possible keys, neighbouring kinds, and tag values that
    // are prefixes of each other.
    let notes = vec![
        note(1, 255, 256, &[("a", "x")]),
        note(2, 256, 255, &[("a", "xy")]),
        note(3, 255, 255, &[("a", "x")]),
        note(4, 255, 255, &[("a", "x"), ("E", &"ab".repeat(32))]),
        note(5, 0, 0, &[("a", "")]),
        note(6, u64::MAX, u64::MAX, &[("a", "x")]),
        note(7, 254, 65_536, &[]),
    ];
    let (_dir, db) = generated(&notes);
    let snap = db.snapshot().unwrap();
    let ns = |v: Vec<grasp_sync::host::lmdb::Stored<'_>>| -> Vec<u8> { v.iter().map(|e| e.packed.id()[31]).collect() };
    assert_eq!(ns(snap.by_kind(255, 0, u64::MAX).unwrap()), [3, 4, 1], "created_at order, ties by levId");
    assert_eq!(ns(snap.by_kind(255, 255, 255).unwrap()), [3, 4], "same created_at, inclusive bounds");
    assert_eq!(ns(snap.by_kind(255, 256, 256).unwrap()), [1]);
    assert_eq!(ns(snap.by_kind(256, 0, u64::MAX).unwrap()), [2]);
    assert_eq!(ns(snap.by_kind(254, 0, u64::MAX).unwrap()), [7]);
    assert_eq!(ns(snap.by_kind(0, 0, 0).unwrap()), [5], "first key");
    assert_eq!(ns(snap.by_kind(u64::MAX, u64::MAX, u64::MAX).unwrap()), [6], "last key");
    assert_eq!(ns(snap.by_tag('a', "x", 0, u64::MAX).unwrap()), [3, 4, 1, 6], "a value is not a prefix match");
    assert_eq!(ns(snap.by_tag('a', "xy", 0, u64::MAX).unwrap()), [2]);
    assert_eq!(ns(snap.by_tag('a', "", 0, u64::MAX).unwrap()), [5]);
    assert_eq!(ns(snap.by_tag('a', "x", 256, u64::MAX).unwrap()), [1, 6]);
    let f = Filter::kinds([255]).tag('a', ["x".to_string()]).until(255);
    let ids: Vec<u8> = snap.local_set(&f).unwrap().iter().map(|(_, id)| id[31]).collect();
    assert_eq!(ids, [3, 4]);
    let f = Filter::default().tag('E', ["ab".repeat(32)]).tag('a', ["x".to_string()]);
    assert_eq!(snap.local_set(&f).unwrap().len(), 1, "several tags must all match");
}

fn brute_force(notes: &[Note], f: &Filter) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> =
        notes.iter().filter(|n| f.matches(n)).map(|n| (n.created_at, n.id.clone())).collect();
    v.sort();
    v
}

const TIMES: [u64; 6] = [0, 1, 255, 256, 65_535, 65_536];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn local_sets_equal_brute_force_matching(
        events in proptest::collection::vec((0..4u64, 0..6usize, 0..3usize), 1..40),
        kinds in proptest::collection::btree_set(0..4u64, 0..3),
        tag in proptest::option::of(0..3usize),
        since in proptest::option::of(0..6usize),
        until in proptest::option::of(0..6usize),
    ) {
        let values = ["v", "vv", "w"];
        let notes: Vec<Note> = events.iter().enumerate()
            .map(|(i, (k, t, v))| note(i as u64 + 1, 255 + k, TIMES[*t], &[("a", values[*v])]))
            .collect();
        let (_dir, db) = generated(&notes);
        let snap = db.snapshot().unwrap();
        let mut f = Filter::kinds(kinds.iter().map(|k| 255 + k));
        if let Some(t) = tag { f = f.tag('a', [values[t].to_string()]); }
        f.since = since.map(|i| TIMES[i]);
        f.until = until.map(|i| TIMES[i]);
        let got: Vec<(u64, String)> = snap.local_set(&f).unwrap().into_iter().map(|(at, id)| (at, hex::encode(id))).collect();
        prop_assert_eq!(got, brute_force(&notes, &f));
        let all: BTreeSet<u64> = snap.after(0, usize::MAX).unwrap().iter().map(|e| e.lev_id).collect();
        prop_assert_eq!(all.len(), notes.len());
    }
}

#[test]
fn large_layers_take_the_batch_scan_path_and_agree_with_the_in_memory_build() {
    use grasp_sync::accepted::build::{build, MemorySource};
    use grasp_sync::host::lmdb::source::SCAN_BATCH;
    use grasp_sync::policy::{Facts, Policy, RelayUrl};
    let owner = "33".repeat(32);
    let coord = format!("30617:{owner}:big");
    let mut notes = vec![Note {
        pubkey: owner.clone(),
        kind: 30617,
        tags: vec![vec!["d".into(), "big".into()], vec!["relays".into(), "wss://grasp.example.com".into()]],
        ..note(1, 30617, 10, &[])
    }];
    let n = SCAN_BATCH as u64 + 100;
    for i in 0..n {
        notes.push(note(10 + i, 1621, 20 + i, &[("a", &coord)]));
        let root = format!("{:064x}", 10 + i);
        notes.push(note(100_000 + i, 1111, 30 + i, &[("E", &root), ("e", &root)]));
        notes.push(note(200_000 + i, 1, 40 + i, &[("e", &format!("{:064x}", 300_000 + i))]));
        // unrelated
    }
    let (_dir, db) = generated(&notes);
    let policy = Policy::new(RelayUrl::parse("wss://grasp.example.com").unwrap(), false);
    let (built, _, _) = grasp_sync::host::lmdb::load_index(&db, &policy).unwrap();
    let mut mem = MemorySource::default();
    for note in &notes {
        let id = grasp_sync::policy::event::parse_hex32(&note.id).unwrap();
        let pk = grasp_sync::policy::event::parse_hex32(&note.pubkey).unwrap();
        mem.push(Facts::from_parts(id, pk, note.kind, note.created_at, &note.tags), &note.tags);
    }
    let reference = build(&policy, &mut mem).unwrap();
    assert_eq!(built.stats.accepted_events, 1 + 2 * n as usize);
    assert_eq!(built.stats.accepted_events, reference.stats.accepted_events);
    assert_eq!(built.index, reference.index);
    assert_eq!(built.index.root_count(), n as usize);
}

#[test]
fn another_database_version_is_refused_naming_the_expected_one() {
    let dir = tempfile::tempdir().unwrap();
    Generator::create(dir.path(), 16 << 20).unwrap().finish().unwrap();
    {
        use lmdb::Transaction;
        let env = lmdb::Environment::new().set_max_dbs(64).open(dir.path()).unwrap();
        let meta = env.open_db(Some(&layout::db_name(table::META))).unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(meta, &1u64.to_ne_bytes(), &layout::fb_write_u64s(&[2, 1, 1]), lmdb::WriteFlags::empty()).unwrap();
        txn.commit().unwrap();
    }
    let err = StrfryDb::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("strfry database version 2, expected version 3"), "{err}");
}
