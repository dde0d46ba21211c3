//! `(created_at, id)` lists for NIP-01 filters: the negentropy local set.
//!
//! One index drives each query, chosen as strfry does (ids, then tags, then authors, then
//! kinds, else created_at); every other condition is checked on the packed event.

use std::collections::{BTreeMap, HashSet};

use super::layout::{self, PackedEvent};
use super::{tag_prefix, LmdbError, Snapshot};
use crate::policy::event::parse_hex32;
use crate::policy::Id;
use crate::wire::filter::Filter;

/// A filter with its values in stored form.
struct Compiled {
    ids: Option<HashSet<Id>>,
    authors: Option<HashSet<Id>>,
    kinds: Option<HashSet<u64>>,
    /// letter → stored values (without the letter).
    tags: BTreeMap<u8, HashSet<Vec<u8>>>,
    since: u64,
    until: u64,
}

fn raw_ids(values: &std::collections::BTreeSet<String>) -> Option<HashSet<Id>> {
    (!values.is_empty()).then(|| values.iter().filter_map(|v| parse_hex32(v)).collect())
}

impl Compiled {
    fn new(f: &Filter) -> Compiled {
        let mut tags = BTreeMap::new();
        for (letter, values) in &f.tags {
            // Letters that are not single ASCII characters cannot be stored: nothing matches.
            let key = u8::try_from(*letter).ok().filter(u8::is_ascii).unwrap_or(0);
            let set: HashSet<Vec<u8>> =
                values.iter().filter_map(|v| tag_prefix(*letter, v)).map(|mut p| p.split_off(1)).collect();
            tags.insert(key, set);
        }
        Compiled {
            ids: raw_ids(&f.ids),
            authors: raw_ids(&f.authors),
            kinds: (!f.kinds.is_empty()).then(|| f.kinds.iter().copied().collect()),
            tags,
            since: f.since.unwrap_or(0),
            until: f.until.unwrap_or(u64::MAX),
        }
    }

    fn matches(&self, p: &PackedEvent<'_>) -> bool {
        let at = p.created_at();
        if at < self.since || at > self.until {
            return false;
        }
        if self.ids.as_ref().is_some_and(|s| !s.contains(&p.id()))
            || self.authors.as_ref().is_some_and(|s| !s.contains(&p.pubkey()))
            || self.kinds.as_ref().is_some_and(|s| !s.contains(&p.kind()))
        {
            return false;
        }
        self.tags.iter().all(|(letter, values)| p.tags().any(|(l, v)| l == *letter && values.contains(v)))
    }
}

impl Snapshot<'_> {
    /// The sorted, deduplicated `(created_at, id)` of every stored event matching the filter
    /// (`limit` is ignored: a negentropy set is complete).
    pub fn local_set(&self, filter: &Filter) -> Result<Vec<(u64, Id)>, LmdbError> {
        let c = Compiled::new(filter);
        if c.since > c.until {
            return Ok(Vec::new());
        }
        if let (Some(ids), None, None, true) = (&c.ids, &c.authors, &c.kinds, c.tags.is_empty()) {
            // Ids alone (the hot set's ranking asks for tens of thousands): the id index holds
            // each stored event's `created_at`, so no event is read and no event page is mapped.
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                self.scan_prefix(self.t.id, id, c.since, c.until, |at, _| out.push((at, *id)))?;
            }
            out.sort_unstable();
            out.dedup();
            return Ok(out);
        }
        let mut levs: Vec<u64> = Vec::new();
        let mut push = |_: u64, lev: u64| levs.push(lev);
        if let Some(ids) = &c.ids {
            for id in ids {
                self.scan_prefix(self.t.id, id, c.since, c.until, &mut push)?;
            }
        } else if let Some((letter, values)) = c.tags.iter().min_by_key(|(_, v)| v.len()) {
            for v in values {
                let mut prefix = Vec::with_capacity(v.len() + 1);
                prefix.push(*letter);
                prefix.extend_from_slice(v);
                self.scan_prefix(self.t.tag, &prefix, c.since, c.until, &mut push)?;
            }
        } else if let Some(authors) = &c.authors {
            for a in authors {
                self.scan_prefix(self.t.pubkey, a, c.since, c.until, &mut push)?;
            }
        } else if let Some(kinds) = &c.kinds {
            for k in kinds {
                self.scan_kind(*k, c.since, c.until, &mut push)?;
            }
        } else {
            self.scan(self.t.created_at, &c.since.to_ne_bytes(), |k, v| {
                if k.len() != 8 || layout::u64_at(k, 0) > c.until {
                    return false;
                }
                push(layout::u64_at(k, 0), super::lev_of(v));
                true
            })?;
        }
        levs.sort_unstable();
        levs.dedup();
        let mut out = Vec::with_capacity(levs.len());
        for lev in levs {
            if let Some(ev) = self.event(lev)? {
                if c.matches(&ev.packed) {
                    out.push((ev.packed.created_at(), ev.packed.id()));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}
