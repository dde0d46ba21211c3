//! Read-only access to strfry's LMDB database (layout version 3).
//!
//! [`StrfryDb::open`] opens the environment read-only beside a running strfry, checks the layout
//! and version, and registers strfry's key comparators on the index tables before anything
//! seeks. [`StrfryDb::snapshot`] starts a read transaction: a consistent view that sees every
//! write committed before it began. Keep snapshots short-lived: an open read transaction stops
//! LMDB from reusing pages that strfry frees meanwhile.
//!
//! Only `lmdb-rkv` (LMDB 0.9, lock format 1, as strfry) may touch the files: LMDB builds with
//! another lock format cannot share an environment with strfry.

pub mod follow;
pub mod layout;
mod mapping;
pub(crate) mod payload;
mod query;
pub mod source;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use lmdb::{Cursor, Database, Environment, EnvironmentFlags, RoTransaction, Transaction};

use self::layout::{table, KeyOrder, PackedEvent};
use crate::policy::event::{parse_hex32, MAX_REFS_PER_EVENT};
use crate::policy::event::{KIND_ANNOUNCEMENT, KIND_STATE};
use crate::policy::{Facts, Id, Note, RepoCoord};

pub use self::source::load_index;

/// strfry's default `dbParams.maxreaders`. The first process to create `lock.mdb` sizes its
/// reader table, so we ask for the same number strfry would.
pub const MAX_READERS: u32 = 256;

/// Why the database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LmdbError {
    #[error("{0}: no strfry database here (expected a directory holding data.mdb)")]
    NotFound(PathBuf),
    #[error("{path}: cannot open LMDB environment: {source} (the reader needs write access to lock.mdb)")]
    Open { path: PathBuf, source: lmdb::Error },
    #[error("{path}: not a strfry database of the expected layout: {what}")]
    Layout { path: PathBuf, what: String },
    #[error("{path}: strfry database version {found}, expected version {expected}")]
    Version { path: PathBuf, found: u64, expected: u64 },
    #[error("LMDB: {0}")]
    Lmdb(#[from] lmdb::Error),
    #[error("event {lev_id}: {what}")]
    Corrupt { lev_id: u64, what: String },
}

/// Handles of the tables the reader uses.
#[derive(Debug, Clone, Copy)]
struct Tables {
    meta: Database,
    event: Database,
    payload: Database,
    dictionary: Option<Database>,
    created_at: Database,
    id: Database,
    pubkey: Database,
    kind: Database,
    tag: Database,
}

/// An open strfry database.
pub struct StrfryDb {
    env: Environment,
    t: Tables,
    all: HashMap<&'static str, Database>,
    dir: PathBuf,
    db_version: u64,
    map: Option<mapping::MapRange>,
    releaser: mapping::Releaser,
}

impl std::fmt::Debug for StrfryDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrfryDb").field("dir", &self.dir).field("db_version", &self.db_version).finish()
    }
}

impl StrfryDb {
    /// Opens strfry's database directory read-only and checks its layout and version.
    pub fn open(dir: &Path) -> Result<StrfryDb, LmdbError> {
        if !dir.join("data.mdb").is_file() {
            return Err(LmdbError::NotFound(dir.to_path_buf()));
        }
        let env = Environment::new()
            .set_flags(EnvironmentFlags::READ_ONLY | EnvironmentFlags::NO_TLS | EnvironmentFlags::NO_READAHEAD)
            .set_max_dbs(64)
            .set_max_readers(MAX_READERS)
            // If we create lock.mdb, strfry (same group) must still be able to write it.
            .open_with_permissions(dir, 0o664)
            .map_err(|source| LmdbError::Open { path: dir.to_path_buf(), source })?;
        let layout = |what: String| LmdbError::Layout { path: dir.to_path_buf(), what };
        let mut handles = HashMap::new();
        for (name, flags, order) in layout::tables() {
            let full = layout::db_name(name);
            let db = match env.open_db(Some(&full)) {
                Ok(db) => db,
                Err(lmdb::Error::NotFound) => {
                    // Tables strfry creates lazily or that we never read may be absent.
                    if [table::NEGENTROPY_FILTER, table::COMPRESSION_DICTIONARY].contains(&name) {
                        continue;
                    }
                    return Err(layout(format!("table {full} is missing")));
                }
                Err(lmdb::Error::Incompatible) => {
                    return Err(layout(format!("table {full} has different flags")));
                }
                Err(e) => return Err(LmdbError::Open { path: dir.to_path_buf(), source: e }),
            };
            let txn = env.begin_ro_txn()?;
            let found = txn.db_flags(db)?;
            if found != flags {
                return Err(layout(format!("table {full} has flags {found:?}, expected {flags:?}")));
            }
            if order != KeyOrder::Default {
                // SAFETY: the dbi is open in this environment and nothing has used it yet; the
                // function pointer is 'static. LMDB keeps it for the environment's lifetime.
                let rc = unsafe { lmdb_sys::mdb_set_compare(txn.txn(), db.dbi(), layout::comparator(order)) };
                if rc != 0 {
                    return Err(LmdbError::Lmdb(lmdb::Error::from_err_code(rc)));
                }
            }
            txn.commit()?;
            handles.insert(name, db);
        }
        let get = |name: &str| handles[name];
        let t = Tables {
            meta: get(table::META),
            event: get(table::EVENT),
            payload: get(table::EVENT_PAYLOAD),
            dictionary: handles.get(table::COMPRESSION_DICTIONARY).copied(),
            created_at: get(table::IDX_CREATED_AT),
            id: get(table::IDX_ID),
            pubkey: get(table::IDX_PUBKEY),
            kind: get(table::IDX_KIND),
            tag: get(table::IDX_TAG),
        };
        let map = mapping::MapRange::find(&dir.join("data.mdb"));
        let releaser = mapping::Releaser::new(map);
        let mut db = StrfryDb { env, t, all: handles, dir: dir.to_path_buf(), db_version: 0, map, releaser };
        db.db_version = db.check_meta()?;
        Ok(db)
    }

    fn check_meta(&self) -> Result<u64, LmdbError> {
        let layout = |what: &str| LmdbError::Layout { path: self.dir.clone(), what: what.to_string() };
        let txn = self.env.begin_ro_txn()?;
        let rec = match txn.get(self.t.meta, &1u64.to_ne_bytes()) {
            Ok(r) => r,
            Err(lmdb::Error::NotFound) => return Err(layout("no Meta record (strfry never opened it?)")),
            Err(e) => return Err(e.into()),
        };
        let version = layout::fb_u64(rec, 0).ok_or_else(|| layout("Meta record is not readable"))?;
        let endianness = layout::fb_u64(rec, 1).ok_or_else(|| layout("Meta record is not readable"))?;
        if version != layout::DB_VERSION {
            return Err(LmdbError::Version { path: self.dir.clone(), found: version, expected: layout::DB_VERSION });
        }
        if endianness != layout::ENDIANNESS_NATIVE || cfg!(target_endian = "big") {
            return Err(layout("written on a machine of another byte order"));
        }
        Ok(version)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `Meta.dbVersion` (always [`layout::DB_VERSION`] once opened).
    pub fn db_version(&self) -> u64 {
        self.db_version
    }

    /// Starts a read transaction. When it ends, the database pages mapped in meanwhile are given
    /// back (at most once per [`mapping::RELEASE_EVERY`]).
    pub fn snapshot(&self) -> Result<Snapshot<'_>, LmdbError> {
        Ok(Snapshot {
            t: self.t,
            all: &self.all,
            txn: self.env.begin_ro_txn()?,
            dicts: RefCell::new(HashMap::new()),
            map: self.map,
            releaser: &self.releaser,
        })
    }
}

/// One `(key, value)` of a table.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// An event as stored: its local id (`levId`) and packed form.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'txn> {
    pub lev_id: u64,
    pub packed: PackedEvent<'txn>,
}

/// A consistent read-only view of the database (one LMDB read transaction).
pub struct Snapshot<'db> {
    t: Tables,
    all: &'db HashMap<&'static str, Database>,
    txn: RoTransaction<'db>,
    dicts: RefCell<HashMap<u32, zstd::bulk::Decompressor<'static>>>,
    map: Option<mapping::MapRange>,
    releaser: &'db mapping::Releaser,
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        self.releaser.read_ended();
    }
}

fn lev_of(v: &[u8]) -> u64 {
    if v.len() == 8 {
        layout::u64_at(v, 0)
    } else {
        u64::MAX
    }
}

impl<'db> Snapshot<'db> {
    /// Walks `db` from the first key ≥ `start`; `f` returns whether to go on.
    fn scan(&self, db: Database, start: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<(), LmdbError> {
        let cursor = self.txn.open_ro_cursor(db)?;
        let mut op = lmdb_sys::MDB_SET_RANGE;
        let mut key = Some(start);
        loop {
            match cursor.get(key, None, op) {
                Ok((Some(k), v)) => {
                    if !f(k, v) {
                        return Ok(());
                    }
                }
                Ok((None, _)) => return Ok(()),
                Err(lmdb::Error::NotFound) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            op = lmdb_sys::MDB_NEXT;
            key = None;
        }
    }

    /// Calls `f(created_at, lev_id)` for index entries `prefix ‖ created_at` with created_at in
    /// `since..=until`, in index order (created_at ascending). Works for `bytes ‖ u64` indices.
    fn scan_prefix(
        &self,
        db: Database,
        prefix: &[u8],
        since: u64,
        until: u64,
        mut f: impl FnMut(u64, u64),
    ) -> Result<(), LmdbError> {
        let start = layout::key_string_u64(prefix, since);
        self.scan(db, &start, |k, v| match layout::split_string_u64(k) {
            Some((s, at)) if s == prefix && at <= until => {
                f(at, lev_of(v));
                true
            }
            _ => false,
        })
    }

    /// Every `(key, value)` of a table (names as in [`layout::table`]), in key order; `None`
    /// when the database lacks that table. For checks and diagnostics: it copies everything.
    pub fn raw_entries(&self, table: &str) -> Result<Option<Vec<RawEntry>>, LmdbError> {
        let Some(db) = self.all.get(table) else { return Ok(None) };
        let mut out = Vec::new();
        let cursor = self.txn.open_ro_cursor(*db)?;
        let mut op = lmdb_sys::MDB_FIRST;
        loop {
            match cursor.get(None, None, op) {
                Ok((Some(k), v)) => out.push((k.to_vec(), v.to_vec())),
                Ok((None, _)) | Err(lmdb::Error::NotFound) => return Ok(Some(out)),
                Err(e) => return Err(e.into()),
            }
            op = lmdb_sys::MDB_NEXT;
        }
    }

    /// The packed event with this levId.
    pub fn event(&self, lev_id: u64) -> Result<Option<Stored<'_>>, LmdbError> {
        match self.txn.get(self.t.event, &lev_id.to_ne_bytes()) {
            Ok(buf) => {
                let packed = PackedEvent::parse(buf)
                    .ok_or_else(|| LmdbError::Corrupt { lev_id, what: "packed event shorter than 88 bytes".into() })?;
                Ok(Some(Stored { lev_id, packed }))
            }
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn events_of(&self, levs: Vec<u64>) -> Result<Vec<Stored<'_>>, LmdbError> {
        let mut out = Vec::with_capacity(levs.len());
        for lev in levs {
            // An index entry without its event would be a strfry bug; skip rather than fail.
            if let Some(s) = self.event(lev)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The event with this id.
    pub fn by_id(&self, id: &Id) -> Result<Option<Stored<'_>>, LmdbError> {
        let mut lev = None;
        self.scan_prefix(self.t.id, id, 0, u64::MAX, |_, l| lev = lev.or(Some(l)))?;
        match lev {
            Some(l) => self.event(l),
            None => Ok(None),
        }
    }

    /// Events of a kind with created_at in `since..=until`, oldest first (kind index).
    pub fn by_kind(&self, kind: u64, since: u64, until: u64) -> Result<Vec<Stored<'_>>, LmdbError> {
        let mut levs = Vec::new();
        self.scan_kind(kind, since, until, |_, l| levs.push(l))?;
        self.events_of(levs)
    }

    fn scan_kind(&self, kind: u64, since: u64, until: u64, mut f: impl FnMut(u64, u64)) -> Result<(), LmdbError> {
        let start = layout::key_u64_u64(kind, since);
        self.scan(self.t.kind, &start, |k, v| {
            if k.len() != 16 || layout::u64_at(k, 0) != kind || layout::u64_at(k, 8) > until {
                return false;
            }
            f(layout::u64_at(k, 8), lev_of(v));
            true
        })
    }

    /// Events with a tag `letter` whose value is `value`, with created_at in `since..=until`,
    /// oldest first (tag index). Values strfry does not index (over 255 bytes, bad `e`/`p` hex)
    /// match nothing.
    pub fn by_tag(&self, letter: char, value: &str, since: u64, until: u64) -> Result<Vec<Stored<'_>>, LmdbError> {
        let mut levs = Vec::new();
        if let Some(prefix) = tag_prefix(letter, value) {
            self.scan_prefix(self.t.tag, &prefix, since, until, |_, l| levs.push(l))?;
        }
        self.events_of(levs)
    }

    /// Events with a tag `letter` (`e`, `E` or `q`) naming one of `ids`: one walk over every
    /// entry of that letter in the tag index.
    pub fn referencing_scan(&self, letter: char, ids: &HashSet<Id>) -> Result<Vec<Stored<'_>>, LmdbError> {
        let Some(l) = u8::try_from(letter).ok().filter(u8::is_ascii) else { return Ok(Vec::new()) };
        let mut levs = Vec::new();
        self.scan(self.t.tag, &[l], |k, v| {
            if k.first() != Some(&l) {
                return false;
            }
            let Some((s, _)) = layout::split_string_u64(k) else { return true };
            let value = &s[1..];
            let id: Option<Id> = match value.len() {
                32 if l == b'e' || l == b'p' => value.try_into().ok(),
                64 => std::str::from_utf8(value).ok().and_then(parse_hex32),
                _ => None,
            };
            if id.is_some_and(|id| ids.contains(&id)) {
                levs.push(lev_of(v));
            }
            true
        })?;
        levs.sort_unstable();
        levs.dedup();
        self.events_of(levs)
    }

    /// Drops this process's mappings of the database pages read so far (they stay in the
    /// kernel's page cache). Slices handed out earlier stay valid: their pages fault back in.
    pub fn release_mapped_pages(&self) {
        if let Some(m) = &self.map {
            m.release();
        }
    }

    /// The highest levId in the database (0 when empty).
    pub fn last_lev_id(&self) -> Result<u64, LmdbError> {
        let cursor = self.txn.open_ro_cursor(self.t.event)?;
        match cursor.get(None, None, lmdb_sys::MDB_LAST) {
            Ok((Some(k), _)) if k.len() == 8 => Ok(layout::u64_at(k, 0)),
            Ok(_) | Err(lmdb::Error::NotFound) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `limit` events stored after `lev_id`, in storage order.
    pub fn after(&self, lev_id: u64, limit: usize) -> Result<Vec<Stored<'_>>, LmdbError> {
        let mut levs = Vec::new();
        let start = lev_id.saturating_add(1).to_ne_bytes();
        if lev_id < u64::MAX {
            self.scan(self.t.event, &start, |k, _| {
                levs.push(lev_of(k));
                levs.len() < limit
            })?;
        }
        self.events_of(levs)
    }

    /// Number of events.
    pub fn event_count(&self) -> Result<usize, LmdbError> {
        Ok(self.txn.stat(self.t.event)?.entries())
    }

    /// The event's JSON text as strfry stored it.
    pub fn json(&self, lev_id: u64) -> Result<Vec<u8>, LmdbError> {
        let raw = match self.txn.get(self.t.payload, &lev_id.to_ne_bytes()) {
            Ok(r) => r,
            Err(lmdb::Error::NotFound) => return Err(LmdbError::Corrupt { lev_id, what: "no payload".into() }),
            Err(e) => return Err(e.into()),
        };
        payload::decode(raw, |dict_id| self.dictionary(dict_id), &mut self.dicts.borrow_mut())
            .map_err(|what| LmdbError::Corrupt { lev_id, what })
    }

    fn dictionary(&self, dict_id: u32) -> Result<Vec<u8>, String> {
        let Some(table) = self.t.dictionary else {
            return Err(format!("compression dictionary {dict_id} is missing (no dictionary table)"));
        };
        match self.txn.get(table, &(dict_id as u64).to_ne_bytes()) {
            Ok(rec) => {
                layout::fb_bytes(rec, 0).map(<[u8]>::to_vec).ok_or_else(|| "unreadable dictionary record".into())
            }
            Err(lmdb::Error::NotFound) => Err(format!("compression dictionary {dict_id} is missing")),
            Err(e) => Err(format!("reading compression dictionary {dict_id}: {e}")),
        }
    }

    /// The event as a wire note (payload decoded and parsed).
    pub fn note(&self, lev_id: u64) -> Result<Note, LmdbError> {
        let json = self.json(lev_id)?;
        serde_json::from_slice(&json)
            .map_err(|e| LmdbError::Corrupt { lev_id, what: format!("payload is not an event: {e}") })
    }

    /// The policy facts of a stored event. Announcements and state events are read from their
    /// JSON (the packed form lacks `relays`, `maintainers`, `clone` and tells a missing `d`
    /// from an empty one only there); every other kind from the packed tags.
    pub fn facts(&self, ev: &Stored<'_>) -> Result<Facts, LmdbError> {
        let p = &ev.packed;
        if matches!(p.kind(), KIND_ANNOUNCEMENT | KIND_STATE) {
            let note = self.note(ev.lev_id)?;
            return Ok(Facts::from_parts(p.id(), p.pubkey(), note.kind, note.created_at, &note.tags));
        }
        Ok(facts_from_packed(p))
    }
}

/// Tag-index prefix for a filter letter (`None`: nothing can match).
fn tag_prefix(letter: char, value: &str) -> Option<Vec<u8>> {
    let letter = u8::try_from(letter).ok().filter(u8::is_ascii)?;
    layout::tag_key_prefix(letter, value)
}

/// Facts from the packed tags (enough for every rule except announcements and state), built
/// the way [`Facts::from_parts`] reads the same tags, without a detour through text.
pub fn facts_from_packed(p: &PackedEvent<'_>) -> Facts {
    let mut f = Facts {
        id: p.id(),
        pubkey: p.pubkey(),
        kind: p.kind(),
        created_at: p.created_at(),
        d: None,
        repo_refs: Vec::new(),
        id_refs: Vec::new(),
        announcement: None,
        grasp_servers: Vec::new(),
    };
    fn push<T: PartialEq>(v: &mut Vec<T>, item: Option<T>) {
        if let Some(item) = item {
            if v.len() < MAX_REFS_PER_EVENT && !v.contains(&item) {
                v.push(item);
            }
        }
    }
    fn text(v: &[u8]) -> Option<&str> {
        std::str::from_utf8(v).ok()
    }
    for (letter, value) in p.tags() {
        match letter {
            b'd' if f.d.is_none() => f.d = Some(String::from_utf8_lossy(value).into_owned()),
            b'a' | b'A' => push(&mut f.repo_refs, text(value).and_then(RepoCoord::parse)),
            b'e' => push(&mut f.id_refs, value.try_into().ok()),
            b'E' => push(&mut f.id_refs, text(value).and_then(parse_hex32)),
            b'q' => match text(value) {
                Some(v) if v.contains(':') => push(&mut f.repo_refs, RepoCoord::parse(v)),
                Some(v) => push(&mut f.id_refs, parse_hex32(v)),
                None => {}
            },
            _ => {}
        }
    }
    f
}
