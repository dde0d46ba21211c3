//! strfry's on-disk layout (database version 3): table names and flags, index key encodings,
//! the key comparators strfry registers, the packed-event format and the two small
//! FlatBuffers records (`Meta`, `CompressionDictionary`) that strfry keeps beside the events.
//!
//! Everything here is plain byte manipulation; the LMDB calls live in the parent module.

use std::cmp::Ordering;
use std::os::raw::c_int;

use lmdb::DatabaseFlags;
use lmdb_sys::MDB_val;

use crate::policy::Id;

/// The database version strfry writes in `Meta.dbVersion` and that this reader understands.
pub const DB_VERSION: u64 = 3;
/// `Meta.endianness` of a database written on a little-endian machine (the only kind we read).
pub const ENDIANNESS_NATIVE: u64 = 1;

const PREFIX: &str = "rasgueadb_defaultDb__";

/// strfry's tables (LMDB sub-databases) without the `rasgueadb_defaultDb__` prefix.
pub mod table {
    pub const META: &str = "Meta";
    pub const EVENT: &str = "Event";
    pub const EVENT_PAYLOAD: &str = "EventPayload";
    pub const COMPRESSION_DICTIONARY: &str = "CompressionDictionary";
    pub const NEGENTROPY_FILTER: &str = "NegentropyFilter";
    pub const IDX_CREATED_AT: &str = "Event__created_at";
    pub const IDX_ID: &str = "Event__id";
    pub const IDX_PUBKEY: &str = "Event__pubkey";
    pub const IDX_KIND: &str = "Event__kind";
    pub const IDX_PUBKEY_KIND: &str = "Event__pubkeyKind";
    pub const IDX_TAG: &str = "Event__tag";
    pub const IDX_DELETION: &str = "Event__deletion";
    pub const IDX_EXPIRATION: &str = "Event__expiration";
    pub const IDX_REPLACE: &str = "Event__replace";
    pub const IDX_REPLACE_DELETION: &str = "Event__replaceDeletion";
}

/// The full LMDB name of a strfry table.
pub fn db_name(table: &str) -> String {
    format!("{PREFIX}{table}")
}

/// How strfry orders the keys of a table (LMDB does not store this: every process must
/// register the same function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// LMDB's default for the table's flags.
    Default,
    /// Bytes, then a trailing native-endian u64.
    StringUint64,
    /// Two native-endian u64s.
    Uint64Uint64,
    /// Bytes, then two trailing native-endian u64s.
    StringUint64Uint64,
}

/// Every table strfry creates, with its flags and key order.
pub fn tables() -> Vec<(&'static str, DatabaseFlags, KeyOrder)> {
    use table::*;
    let int = DatabaseFlags::INTEGER_KEY;
    let idx = DatabaseFlags::DUP_SORT | DatabaseFlags::INTEGER_DUP | DatabaseFlags::DUP_FIXED;
    vec![
        (META, int, KeyOrder::Default),
        (EVENT, int, KeyOrder::Default),
        (IDX_CREATED_AT, idx | int, KeyOrder::Default),
        (IDX_ID, idx, KeyOrder::StringUint64),
        (IDX_PUBKEY, idx, KeyOrder::StringUint64),
        (IDX_KIND, idx, KeyOrder::Uint64Uint64),
        (IDX_PUBKEY_KIND, idx, KeyOrder::StringUint64Uint64),
        (IDX_TAG, idx, KeyOrder::StringUint64),
        (IDX_DELETION, idx, KeyOrder::Default),
        (IDX_EXPIRATION, idx | int, KeyOrder::Default),
        (IDX_REPLACE, idx, KeyOrder::Default),
        (IDX_REPLACE_DELETION, idx, KeyOrder::Default),
        (COMPRESSION_DICTIONARY, int, KeyOrder::Default),
        (NEGENTROPY_FILTER, int, KeyOrder::Default),
        (EVENT_PAYLOAD, int, KeyOrder::Default),
    ]
}

// ---------------------------------------------------------------------------------------------
// Keys and comparators

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// `bytes ‖ n` (Event__id, Event__pubkey, Event__tag).
pub fn key_string_u64(s: &[u8], n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(s.len() + 8);
    k.extend_from_slice(s);
    k.extend_from_slice(&n.to_ne_bytes());
    k
}

/// `a ‖ b` (Event__kind).
pub fn key_u64_u64(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_ne_bytes());
    k[8..].copy_from_slice(&b.to_ne_bytes());
    k
}

/// `bytes ‖ a ‖ b` (Event__pubkeyKind).
pub fn key_string_u64_u64(s: &[u8], a: u64, b: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(s.len() + 16);
    k.extend_from_slice(s);
    k.extend_from_slice(&a.to_ne_bytes());
    k.extend_from_slice(&b.to_ne_bytes());
    k
}

/// Splits a `bytes ‖ u64` key; `None` when shorter than 8 bytes.
pub fn split_string_u64(k: &[u8]) -> Option<(&[u8], u64)> {
    let n = k.len().checked_sub(8)?;
    Some((&k[..n], u64_at(k, n)))
}

/// The tag-index key prefix for a tag letter and value as strfry stores it: `e` and `p`
/// values are 32 raw bytes (hex decoded), every other letter keeps its text.
/// `None` for values strfry cannot hold (bad e/p hex, over 255 bytes).
pub fn tag_key_prefix(letter: u8, value: &str) -> Option<Vec<u8>> {
    let mut k = Vec::with_capacity(1 + value.len());
    k.push(letter);
    if letter == b'e' || letter == b'p' {
        let mut raw = [0u8; 32];
        if value.len() != 64 || hex::decode_to_slice(value, &mut raw).is_err() {
            return None;
        }
        k.extend_from_slice(&raw);
    } else {
        if value.len() > MAX_INDEXED_TAG_VALUE {
            return None;
        }
        k.extend_from_slice(value.as_bytes());
    }
    Some(k)
}

/// strfry indexes single-letter tag values up to this many bytes.
pub const MAX_INDEXED_TAG_VALUE: usize = 255;

fn cmp_u64(a: &[u8], b: &[u8]) -> Ordering {
    u64_at(a, 0).cmp(&u64_at(b, 0))
}

/// Orders two keys the way strfry's comparator of that name does. Keys too short for the
/// encoding (which strfry never writes) fall back to plain byte order instead of failing.
pub fn compare(order: KeyOrder, a: &[u8], b: &[u8]) -> Ordering {
    match order {
        KeyOrder::Default => a.cmp(b),
        KeyOrder::StringUint64 if a.len() >= 8 && b.len() >= 8 => {
            let (sa, sb) = (a.len() - 8, b.len() - 8);
            a[..sa].cmp(&b[..sb]).then_with(|| cmp_u64(&a[sa..], &b[sb..]))
        }
        KeyOrder::Uint64Uint64 if a.len() == 16 && b.len() == 16 => {
            cmp_u64(a, b).then_with(|| cmp_u64(&a[8..], &b[8..]))
        }
        KeyOrder::StringUint64Uint64 if a.len() >= 16 && b.len() >= 16 => {
            let (sa, sb) = (a.len() - 16, b.len() - 16);
            a[..sa]
                .cmp(&b[..sb])
                .then_with(|| cmp_u64(&a[sa..], &b[sb..]))
                .then_with(|| cmp_u64(&a[sa + 8..], &b[sb + 8..]))
        }
        _ => a.cmp(b),
    }
}

/// # Safety
/// LMDB passes two valid values.
unsafe fn vals<'a>(a: *const MDB_val, b: *const MDB_val) -> (&'a [u8], &'a [u8]) {
    let slice = |v: *const MDB_val| {
        let v = &*v;
        if v.mv_size == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(v.mv_data as *const u8, v.mv_size)
        }
    };
    (slice(a), slice(b))
}

fn to_c(o: Ordering) -> c_int {
    o as c_int
}

unsafe extern "C" fn cmp_string_u64(a: *const MDB_val, b: *const MDB_val) -> c_int {
    // SAFETY: called by LMDB with two valid values.
    let (a, b) = unsafe { vals(a, b) };
    to_c(compare(KeyOrder::StringUint64, a, b))
}

unsafe extern "C" fn cmp_u64_u64(a: *const MDB_val, b: *const MDB_val) -> c_int {
    // SAFETY: called by LMDB with two valid values.
    let (a, b) = unsafe { vals(a, b) };
    to_c(compare(KeyOrder::Uint64Uint64, a, b))
}

unsafe extern "C" fn cmp_string_u64_u64(a: *const MDB_val, b: *const MDB_val) -> c_int {
    // SAFETY: called by LMDB with two valid values.
    let (a, b) = unsafe { vals(a, b) };
    to_c(compare(KeyOrder::StringUint64Uint64, a, b))
}

/// The C comparator for a key order (`None`: keep LMDB's default).
pub fn comparator(order: KeyOrder) -> lmdb_sys::MDB_cmp_func {
    match order {
        KeyOrder::Default => None,
        KeyOrder::StringUint64 => Some(cmp_string_u64),
        KeyOrder::Uint64Uint64 => Some(cmp_u64_u64),
        KeyOrder::StringUint64Uint64 => Some(cmp_string_u64_u64),
    }
}

// ---------------------------------------------------------------------------------------------
// Packed events

/// Size of the fixed part of a packed event.
pub const PACKED_HEADER: usize = 88;

/// A borrowed packed event: `id 32 ‖ pubkey 32 ‖ created_at u64 ‖ kind u64 ‖ expiration u64 ‖
/// tags`, each tag `letter u8 ‖ len u8 ‖ value`. Only indexed tags are there: single-letter
/// names, values of at most 255 bytes, `e`/`p` as 32 raw bytes; replaceable kinds carry an
/// extra empty `d`.
#[derive(Debug, Clone, Copy)]
pub struct PackedEvent<'a> {
    buf: &'a [u8],
}

impl<'a> PackedEvent<'a> {
    pub fn parse(buf: &'a [u8]) -> Option<Self> {
        (buf.len() >= PACKED_HEADER).then_some(PackedEvent { buf })
    }
    pub fn id(&self) -> Id {
        self.buf[..32].try_into().expect("32 bytes")
    }
    pub fn pubkey(&self) -> Id {
        self.buf[32..64].try_into().expect("32 bytes")
    }
    pub fn created_at(&self) -> u64 {
        u64_at(self.buf, 64)
    }
    pub fn kind(&self) -> u64 {
        u64_at(self.buf, 72)
    }
    pub fn expiration(&self) -> u64 {
        u64_at(self.buf, 80)
    }
    /// The packed tags in order; a truncated last tag ends the list (as strfry reads it).
    pub fn tags(&self) -> PackedTags<'a> {
        PackedTags { rest: &self.buf[PACKED_HEADER..] }
    }
}

/// Iterator over `(letter, value)` of a packed event.
#[derive(Debug, Clone)]
pub struct PackedTags<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PackedTags<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 2 {
            return None;
        }
        let (letter, len) = (self.rest[0], self.rest[1] as usize);
        let value = self.rest.get(2..2 + len)?;
        self.rest = &self.rest[2 + len..];
        Some((letter, value))
    }
}

/// Builds a packed event.
pub fn pack_event(
    id: &Id,
    pubkey: &Id,
    created_at: u64,
    kind: u64,
    expiration: u64,
    tags: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(PACKED_HEADER + tags.iter().map(|(_, v)| v.len() + 2).sum::<usize>());
    b.extend_from_slice(id);
    b.extend_from_slice(pubkey);
    for n in [created_at, kind, expiration] {
        b.extend_from_slice(&n.to_ne_bytes());
    }
    for (letter, value) in tags {
        b.push(*letter);
        b.push(value.len() as u8);
        b.extend_from_slice(value);
    }
    b
}

// ---------------------------------------------------------------------------------------------
// FlatBuffers records (a minimal reader and writer for tables of u64 and byte-vector fields)

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Absolute position of field `index` of the root table, `Ok(None)` when absent (default).
fn fb_field_pos(buf: &[u8], index: usize) -> Option<Option<usize>> {
    let table = le_u32(buf, 0)? as usize;
    let soffset = le_u32(buf, table)? as i32 as i64;
    let vtable = usize::try_from(table as i64 - soffset).ok()?;
    let vt_len = le_u16(buf, vtable)? as usize;
    let slot = 4 + 2 * index;
    if slot + 2 > vt_len {
        return Some(None);
    }
    let off = le_u16(buf, vtable + slot)? as usize;
    Some((off != 0).then_some(table + off))
}

/// Field `index` of a FlatBuffers root table as a u64 (absent = 0). `None` if malformed.
pub fn fb_u64(buf: &[u8], index: usize) -> Option<u64> {
    match fb_field_pos(buf, index)? {
        None => Some(0),
        Some(at) => Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?)),
    }
}

/// Field `index` of a FlatBuffers root table as a byte vector (absent = empty).
pub fn fb_bytes(buf: &[u8], index: usize) -> Option<&[u8]> {
    match fb_field_pos(buf, index)? {
        None => Some(&[]),
        Some(at) => {
            let vec = at + le_u32(buf, at)? as usize;
            let len = le_u32(buf, vec)? as usize;
            buf.get(vec + 4..vec + 4 + len)
        }
    }
}

/// Writes a FlatBuffers root table whose fields are all u64.
pub fn fb_write_u64s(fields: &[u64]) -> Vec<u8> {
    // [root u32][pad u32][vtable][pad to 8][table: soffset i32, pad u32, u64 fields]
    let vt_len = 4 + 2 * fields.len();
    let vtable = 8;
    let table = (vtable + vt_len).next_multiple_of(8);
    let tbl_len = 8 + 8 * fields.len();
    let mut b = vec![0u8; table + tbl_len];
    b[0..4].copy_from_slice(&(table as u32).to_le_bytes());
    b[vtable..vtable + 2].copy_from_slice(&(vt_len as u16).to_le_bytes());
    b[vtable + 2..vtable + 4].copy_from_slice(&(tbl_len as u16).to_le_bytes());
    for (i, v) in fields.iter().enumerate() {
        let off = 8 + 8 * i;
        b[vtable + 4 + 2 * i..vtable + 6 + 2 * i].copy_from_slice(&(off as u16).to_le_bytes());
        b[table + off..table + off + 8].copy_from_slice(&v.to_le_bytes());
    }
    b[table..table + 4].copy_from_slice(&((table - vtable) as i32).to_le_bytes());
    b
}

/// Writes a FlatBuffers root table with one byte-vector field.
pub fn fb_write_bytes(data: &[u8]) -> Vec<u8> {
    // [root u32][vtable 6 bytes][pad][table: soffset i32, uoffset u32][vector: len u32, bytes]
    let vtable = 4;
    let table = 12;
    let mut b = vec![0u8; table + 8];
    b[0..4].copy_from_slice(&(table as u32).to_le_bytes());
    b[vtable..vtable + 2].copy_from_slice(&6u16.to_le_bytes());
    b[vtable + 2..vtable + 4].copy_from_slice(&8u16.to_le_bytes());
    b[vtable + 4..vtable + 6].copy_from_slice(&4u16.to_le_bytes());
    b[table..table + 4].copy_from_slice(&((table - vtable) as i32).to_le_bytes());
    b[table + 4..table + 8].copy_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn su(s: &[u8], n: u64) -> Vec<u8> {
        key_string_u64(s, n)
    }

    #[test]
    fn string_u64_orders_bytes_then_number() {
        let o = KeyOrder::StringUint64;
        assert_eq!(compare(o, &su(b"ab", 9), &su(b"abc", 1)), Ordering::Less, "shorter prefix first");
        assert_eq!(compare(o, &su(b"ab", 256), &su(b"ab", 1)), Ordering::Greater, "number, not bytes");
        assert_eq!(compare(o, &su(b"ab", 5), &su(b"ab", 5)), Ordering::Equal);
        assert_eq!(compare(o, &su(b"b", 0), &su(b"ab", 9)), Ordering::Greater);
    }

    #[test]
    fn u64_pairs_order_numerically() {
        let o = KeyOrder::Uint64Uint64;
        assert_eq!(compare(o, &key_u64_u64(1, 300), &key_u64_u64(2, 0)), Ordering::Less);
        assert_eq!(compare(o, &key_u64_u64(256, 0), &key_u64_u64(1, 9)), Ordering::Greater);
        let o = KeyOrder::StringUint64Uint64;
        assert_eq!(compare(o, &key_string_u64_u64(b"p", 1, 256), &key_string_u64_u64(b"p", 1, 2)), Ordering::Greater);
    }

    proptest! {
        #[test]
        fn string_u64_matches_tuple_order(a in proptest::collection::vec(any::<u8>(), 0..6), n in any::<u64>(),
                                          b in proptest::collection::vec(any::<u8>(), 0..6), m in any::<u64>()) {
            prop_assert_eq!(compare(KeyOrder::StringUint64, &su(&a, n), &su(&b, m)), (&a, n).cmp(&(&b, m)));
        }

        #[test]
        fn packed_events_round_trip(tags in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
                                    at in any::<u64>(), kind in any::<u64>()) {
            let buf = pack_event(&[1; 32], &[2; 32], at, kind, 7, &tags);
            let p = PackedEvent::parse(&buf).unwrap();
            prop_assert_eq!((p.id(), p.pubkey(), p.created_at(), p.kind(), p.expiration()), ([1; 32], [2; 32], at, kind, 7));
            let back: Vec<(u8, Vec<u8>)> = p.tags().map(|(l, v)| (l, v.to_vec())).collect();
            prop_assert_eq!(back, tags);
        }
    }

    #[test]
    fn flatbuffers_round_trip() {
        let meta = fb_write_u64s(&[3, 1, 42]);
        assert_eq!(
            (fb_u64(&meta, 0), fb_u64(&meta, 1), fb_u64(&meta, 2), fb_u64(&meta, 3)),
            (Some(3), Some(1), Some(42), Some(0))
        );
        let dict = fb_write_bytes(b"hello");
        assert_eq!(fb_bytes(&dict, 0), Some(&b"hello"[..]));
        assert_eq!(fb_u64(b"\xff\xff", 0), None, "truncated input is an error, not a panic");
    }

    #[test]
    fn tag_keys_decode_e_and_p_only() {
        let hexid = "ab".repeat(32);
        assert_eq!(tag_key_prefix(b'e', &hexid).unwrap().len(), 33);
        assert_eq!(tag_key_prefix(b'E', &hexid).unwrap().len(), 65);
        assert!(tag_key_prefix(b'p', "xyz").is_none());
        assert!(tag_key_prefix(b'a', &"x".repeat(256)).is_none());
    }
}
