//! Writes a strfry-shaped database: a test and benchmark tool, not for production stores.
//!
//! The result has strfry's table names, flags and key orders, its packed-event and payload
//! formats and every index strfry maintains, so both this crate's reader and strfry itself can
//! open it. It does not apply strfry's write rules: no signature or timestamp checks, no
//! replacement or deletion of older events (give it the set you want stored), and no
//! negentropy trees (strfry builds none for a database whose `Meta` record already exists).

use std::collections::HashMap;
use std::path::Path;

use lmdb::{Database, Environment, EnvironmentFlags, RwTransaction, Transaction, WriteFlags};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::host::lmdb::layout::{self, table, KeyOrder};
use crate::host::lmdb::payload;
use crate::host::lmdb::MAX_READERS;
use crate::policy::event::parse_hex32;
use crate::policy::Note;

/// Why an event or the database could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("LMDB: {0}")]
    Lmdb(#[from] lmdb::Error),
    #[error("event {id}: {what}")]
    Event { id: String, what: String },
    #[error("{0}")]
    Other(String),
}

/// strfry's kind classes.
pub fn is_replaceable(kind: u64) -> bool {
    matches!(kind, 0 | 3 | 41 | 10_000..=19_999)
}
pub fn is_param_replaceable(kind: u64) -> bool {
    (30_000..40_000).contains(&kind)
}
pub fn is_ephemeral(kind: u64) -> bool {
    (20_000..30_000).contains(&kind)
}

/// The JSON form strfry stores: keys in this order, nothing else.
#[derive(Serialize)]
struct StoredJson<'a> {
    content: &'a str,
    created_at: u64,
    id: &'a str,
    kind: u64,
    pubkey: &'a str,
    sig: &'a str,
    tags: &'a [Vec<String>],
}

/// strfry's normalised JSON text of an event.
pub fn stored_json(n: &Note) -> Vec<u8> {
    let j = StoredJson {
        content: &n.content,
        created_at: n.created_at,
        id: &n.id,
        kind: n.kind,
        pubkey: &n.pubkey,
        sig: &n.sig,
        tags: &n.tags,
    };
    serde_json::to_vec(&j).expect("strings and integers serialise")
}

/// The packed form of an event as strfry builds it (see [`layout::PackedEvent`]).
pub fn pack(n: &Note) -> Result<Vec<u8>, String> {
    let id = parse_hex32(&n.id).ok_or("id is not 64 lower-case hex")?;
    let pubkey = parse_hex32(&n.pubkey).ok_or("pubkey is not 64 lower-case hex")?;
    let mut tags: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut expiration = 0u64;
    if is_replaceable(n.kind) {
        tags.push((b'd', Vec::new()));
    }
    for tag in &n.tags {
        let name = tag.first().ok_or("a tag has no name")?;
        let value = tag.get(1).map(String::as_str).unwrap_or("");
        if name.len() == 1 {
            let letter = name.as_bytes()[0];
            let stored = match letter {
                b'e' | b'p' => {
                    let mut raw = [0u8; 32];
                    hex::decode_to_slice(value, &mut raw).map_err(|_| format!("{name} tag is not 64 hex"))?;
                    raw.to_vec()
                }
                _ => value.as_bytes().to_vec(),
            };
            if stored.len() <= layout::MAX_INDEXED_TAG_VALUE {
                tags.push((letter, stored));
            }
        } else if name == "expiration" && expiration == 0 {
            expiration = value.parse().map_err(|_| "bad expiration")?;
            if expiration < 100 {
                return Err("invalid expiration".into());
            }
        }
    }
    if is_param_replaceable(n.kind) {
        tags.push((b'd', Vec::new()));
    }
    if is_ephemeral(n.kind) {
        expiration = 1;
    }
    Ok(layout::pack_event(&id, &pubkey, n.created_at, n.kind, expiration, &tags))
}

/// `kind:pubkey:d` of an `a` tag (strfry's parse: decimal kind, 64 hex pubkey).
fn parse_a_tag(v: &[u8]) -> Option<(u64, [u8; 32], &[u8])> {
    let mut parts = v.splitn(3, |&b| b == b':');
    let kind = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let mut pk = [0u8; 32];
    hex::decode_to_slice(parts.next()?, &mut pk).ok()?;
    Some((kind, pk, parts.next()?))
}

/// A database being written.
pub struct Generator {
    env: Environment,
    dbs: HashMap<&'static str, Database>,
    next_lev: u64,
    compressor: Option<(u32, zstd::bulk::Compressor<'static>)>,
}

impl Generator {
    /// Creates a new database in `dir` (created if needed; must not hold one already).
    /// `map_size` bounds the file size.
    pub fn create(dir: &Path, map_size: usize) -> Result<Generator, GenerateError> {
        std::fs::create_dir_all(dir).map_err(|e| GenerateError::Other(format!("{}: {e}", dir.display())))?;
        if dir.join("data.mdb").exists() {
            return Err(GenerateError::Other(format!("{}: a database exists already", dir.display())));
        }
        let env = Environment::new()
            .set_flags(EnvironmentFlags::NO_SYNC | EnvironmentFlags::NO_META_SYNC)
            .set_max_dbs(64)
            .set_max_readers(MAX_READERS)
            .set_map_size(map_size)
            .open_with_permissions(dir, 0o664)?;
        let mut dbs = HashMap::new();
        {
            let txn = env.begin_rw_txn()?;
            for (name, flags, order) in layout::tables() {
                // SAFETY: the handle is used only within this environment.
                let db = unsafe { txn.create_db(Some(&layout::db_name(name)), flags)? };
                if order != KeyOrder::Default {
                    // SAFETY: set before any data access, as LMDB requires; 'static function.
                    let rc = unsafe { lmdb_sys::mdb_set_compare(txn.txn(), db.dbi(), layout::comparator(order)) };
                    if rc != 0 {
                        return Err(lmdb::Error::from_err_code(rc).into());
                    }
                }
                dbs.insert(name, db);
            }
            txn.commit()?;
        }
        let g = Generator { env, dbs, next_lev: 1, compressor: None };
        let mut txn = g.env.begin_rw_txn()?;
        let meta = layout::fb_write_u64s(&[layout::DB_VERSION, layout::ENDIANNESS_NATIVE, 1]);
        txn.put(g.dbs[table::META], &1u64.to_ne_bytes(), &meta, WriteFlags::empty())?;
        txn.commit()?;
        Ok(g)
    }

    /// Stores a compression dictionary under `dict_id`; events written afterwards get zstd
    /// payloads (type 1) compressed with it, as after `strfry dict compress`.
    pub fn compress_with(&mut self, dict_id: u32, dict: &[u8], level: i32) -> Result<(), GenerateError> {
        let c =
            zstd::bulk::Compressor::with_dictionary(level, dict).map_err(|e| GenerateError::Other(e.to_string()))?;
        let mut txn = self.env.begin_rw_txn()?;
        let rec = layout::fb_write_bytes(dict);
        txn.put(self.dbs[table::COMPRESSION_DICTIONARY], &(dict_id as u64).to_ne_bytes(), &rec, WriteFlags::empty())?;
        txn.commit()?;
        self.compressor = Some((dict_id, c));
        Ok(())
    }

    /// Writes events in one transaction, in order; returns their levIds.
    pub fn write<'n>(&mut self, notes: impl IntoIterator<Item = &'n Note>) -> Result<Vec<u64>, GenerateError> {
        let mut txn = self.env.begin_rw_txn()?;
        let mut levs = Vec::new();
        for n in notes {
            let ev = |what: String| GenerateError::Event { id: n.id.clone(), what };
            let packed = pack(n).map_err(ev)?;
            let json = stored_json(n);
            let rec = payload::encode(&json, self.compressor.as_mut().map(|(id, c)| (*id, c))).map_err(ev)?;
            let lev = self.next_lev;
            self.put_event(&mut txn, lev, &packed, &rec)?;
            self.next_lev += 1;
            levs.push(lev);
        }
        txn.commit()?;
        Ok(levs)
    }

    fn put_event(&self, txn: &mut RwTransaction<'_>, lev: u64, packed: &[u8], rec: &[u8]) -> Result<(), GenerateError> {
        let p = layout::PackedEvent::parse(packed).expect("pack() writes the header");
        let levb = lev.to_ne_bytes();
        let db = |name: &str| self.dbs[name];
        txn.put(db(table::EVENT), &levb, &packed, WriteFlags::APPEND)?;
        txn.put(db(table::EVENT_PAYLOAD), &levb, &rec, WriteFlags::APPEND)?;
        let (id, pk, at, kind) = (p.id(), p.pubkey(), p.created_at(), p.kind());
        let mut put = |name: &str, key: &[u8]| txn.put(db(name), &key, &levb, WriteFlags::empty());
        put(table::IDX_CREATED_AT, &at.to_ne_bytes())?;
        put(table::IDX_ID, &layout::key_string_u64(&id, at))?;
        put(table::IDX_PUBKEY, &layout::key_string_u64(&pk, at))?;
        put(table::IDX_KIND, &layout::key_u64_u64(kind, at))?;
        put(table::IDX_PUBKEY_KIND, &layout::key_string_u64_u64(&pk, kind, at))?;
        let mut replace_done = false;
        for (letter, value) in p.tags() {
            let mut k = Vec::with_capacity(value.len() + 9);
            k.push(letter);
            k.extend_from_slice(value);
            put(table::IDX_TAG, &layout::key_string_u64(&k, at))?;
            match letter {
                b'd' if !replace_done => {
                    replace_done = true;
                    let mut s = pk.to_vec();
                    s.extend_from_slice(value);
                    put(table::IDX_REPLACE, &layout::key_string_u64(&s, kind))?;
                }
                b'e' if kind == 5 => {
                    let mut s = value.to_vec();
                    s.extend_from_slice(&pk);
                    put(table::IDX_DELETION, &s)?;
                }
                b'a' if kind == 5 => {
                    if let Some((k, apk, _)) = parse_a_tag(value) {
                        if is_param_replaceable(k) && apk == pk {
                            let h: [u8; 32] = Sha256::digest(value).into();
                            put(table::IDX_REPLACE_DELETION, &layout::key_string_u64(&h, at))?;
                        }
                    }
                }
                _ => {}
            }
        }
        if p.expiration() != 0 {
            put(table::IDX_EXPIRATION, &p.expiration().to_ne_bytes())?;
        }
        Ok(())
    }

    /// Flushes everything to disk.
    pub fn finish(self) -> Result<(), GenerateError> {
        self.env.sync(true)?;
        Ok(())
    }
}
