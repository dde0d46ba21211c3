//! Giving back the database pages a walk mapped in.
//!
//! LMDB reads through a shared memory map of `data.mdb`: every page a walk touches stays mapped
//! into this process and counts towards its RSS, although the memory is the kernel's page cache
//! (shared with strfry, reclaimable). On recent kernels a fault maps a whole large folio (up to
//! 2 MiB), so a full index build over a big database maps most of the file. After the build,
//! [`MapRange::release`] drops those mappings with `madvise(MADV_DONTNEED)`: the pages stay in
//! the page cache and fault back in, unchanged, when touched again (LMDB never rewrites a page
//! that a reader can still see), so a long-running process does not carry them.
//!
//! A running daemon reads the database all the time (local sets for every negentropy job, the
//! hot set's ranking, the follow of new events): [`Releaser`] drops the mappings again when a read
//! ends, at most once per [`RELEASE_EVERY`], so what the process maps of the file stays about what
//! its reads touch within that time instead of growing towards the whole database.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Least time between two releases of the mapped pages by [`Releaser`].
pub const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// The address range of the `data.mdb` map, found in `/proc/self/maps`.
#[derive(Debug, Clone, Copy)]
pub struct MapRange {
    start: usize,
    len: usize,
}

impl MapRange {
    /// Finds this process's map of `data_mdb` (Linux only; `None` elsewhere or if ambiguous).
    pub fn find(data_mdb: &Path) -> Option<MapRange> {
        let want = std::fs::canonicalize(data_mdb).ok()?;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let mut found = None;
        for line in maps.lines() {
            // "start-end perms offset dev inode   path"
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let path = fields.nth(4).map(str::trim_start).unwrap_or("");
            if Path::new(path) != want {
                continue;
            }
            let (a, b) = range.split_once('-')?;
            let (start, end) = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
            if found.is_some() {
                return None;
            }
            found = Some(MapRange { start, len: end.checked_sub(start)? });
        }
        found
    }

    /// Drops the process's mappings of the range (the page cache keeps the pages).
    pub fn release(&self) {
        // SAFETY: the range is LMDB's read-only shared file map, which stays mapped while the
        // environment is open. MADV_DONTNEED only removes page-table entries; the next access
        // maps the same file page again.
        unsafe {
            libc::madvise(self.start as *mut libc::c_void, self.len, libc::MADV_DONTNEED);
        }
    }
}

/// Releases the map's pages when a read ends, at most once per [`RELEASE_EVERY`].
#[derive(Debug)]
pub struct Releaser {
    range: Option<MapRange>,
    base: Instant,
    /// Milliseconds since `base` of the last release.
    last: AtomicU64,
}

impl Releaser {
    pub fn new(range: Option<MapRange>) -> Self {
        Releaser { range, base: Instant::now(), last: AtomicU64::new(0) }
    }

    /// Releases the pages unless that was done less than [`RELEASE_EVERY`] ago. Readers still
    /// in progress on other threads fault their pages back in; nothing they hold changes.
    pub fn read_ended(&self) {
        let Some(range) = &self.range else { return };
        let now = self.base.elapsed().as_millis() as u64;
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RELEASE_EVERY.as_millis() as u64 {
            return;
        }
        // One of the readers ending at the same time releases.
        if self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            range.release();
        }
    }
}
