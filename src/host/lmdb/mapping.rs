//! Giving back the database pages a walk mapped in.
//!
//! LMDB reads through a shared memory map of `data.mdb`: every page a walk touches stays mapped
//! into this process and counts towards its RSS, although the memory is the kernel's page cache
//! (shared with strfry, reclaimable). On recent kernels a fault maps a whole large folio (up to
//! 2 MiB), so a full index build over a big database maps most of the file. After the build,
//! [`MapRange::release`] drops those mappings with `madvise(MADV_DONTNEED)`: the pages stay in
//! the page cache and fault back in, unchanged, when touched again (LMDB never rewrites a page
//! that a reader can still see), so a long-running process does not carry them.

use std::path::Path;

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
