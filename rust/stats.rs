//! Walk totals, overall and per root.
//!
//! Walker threads count into a private `StatsDelta` and merge it when they hand a batch over, so
//! the shared counters see one update per batch instead of one per file. `bytes_total` counts each
//! `(device_id, inode)` once: only files with more than one link can repeat, so only those are
//! remembered (memory grows with hard-linked files, not with the tree).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A snapshot of totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes_total: u64,
    pub distinct_inodes: u64,
    pub multi_link_files: u64,
    pub errors: u64,
    pub skipped_mounts: u64,
    /// Files left out of the totals because their relative path is not valid UTF-8
    /// (`WalkOptions::utf8_totals`); they are still delivered.
    pub non_utf8_files: u64,
}

impl WalkStats {
    fn is_zero(&self) -> bool {
        *self == WalkStats::default()
    }
}

#[derive(Default)]
struct AtomicStats {
    files: AtomicU64,
    dirs: AtomicU64,
    bytes_total: AtomicU64,
    distinct_inodes: AtomicU64,
    multi_link_files: AtomicU64,
    errors: AtomicU64,
    skipped_mounts: AtomicU64,
    non_utf8_files: AtomicU64,
}

impl AtomicStats {
    fn add(&self, d: &WalkStats) {
        let add = |counter: &AtomicU64, value: u64| {
            if value != 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        };
        add(&self.files, d.files);
        add(&self.dirs, d.dirs);
        add(&self.bytes_total, d.bytes_total);
        add(&self.distinct_inodes, d.distinct_inodes);
        add(&self.multi_link_files, d.multi_link_files);
        add(&self.errors, d.errors);
        add(&self.skipped_mounts, d.skipped_mounts);
        add(&self.non_utf8_files, d.non_utf8_files);
    }

    fn load(&self) -> WalkStats {
        WalkStats {
            files: self.files.load(Ordering::Relaxed),
            dirs: self.dirs.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            distinct_inodes: self.distinct_inodes.load(Ordering::Relaxed),
            multi_link_files: self.multi_link_files.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            skipped_mounts: self.skipped_mounts.load(Ordering::Relaxed),
            non_utf8_files: self.non_utf8_files.load(Ordering::Relaxed),
        }
    }
}

const SHARDS: usize = 64;

/// `(scope, device, inode)` seen so far, where scope is a root index or `u32::MAX` for overall.
struct InodeSet {
    shards: Vec<Mutex<HashSet<(u32, u64, u64)>>>,
}

impl InodeSet {
    fn new() -> Self {
        InodeSet {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
        }
    }

    /// True when the key was not there yet.
    fn insert(&self, key: (u32, u64, u64)) -> bool {
        let shard = (key.2 ^ key.1.rotate_left(17) ^ u64::from(key.0)) as usize % SHARDS;
        self.shards[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
    }
}

const OVERALL: u32 = u32::MAX;

/// The shared totals of one walk.
pub struct StatsTable {
    overall: AtomicStats,
    per_root: Vec<AtomicStats>,
    linked: InodeSet,
}

/// A walker thread's uncommitted counts: overall plus the roots it touched.
#[derive(Default)]
pub struct StatsDelta {
    overall: WalkStats,
    per_root: Vec<(u32, WalkStats)>,
}

impl StatsDelta {
    fn root(&mut self, root: u32) -> &mut WalkStats {
        // A thread usually works in one root at a time: a short linear search is enough.
        let index = match self.per_root.iter().position(|(r, _)| *r == root) {
            Some(i) => i,
            None => {
                self.per_root.push((root, WalkStats::default()));
                self.per_root.len() - 1
            }
        };
        &mut self.per_root[index].1
    }

    pub fn is_empty(&self) -> bool {
        self.overall.is_zero() && self.per_root.is_empty()
    }

    /// Adds one to the `field` count, overall and in `root`.
    #[inline]
    fn count(&mut self, root: u32, field: impl Fn(&mut WalkStats) -> &mut u64) {
        *field(&mut self.overall) += 1;
        *field(self.root(root)) += 1;
    }

    pub fn dir(&mut self, root: u32) {
        self.count(root, |stats| &mut stats.dirs);
    }

    pub fn error(&mut self, root: u32) {
        self.count(root, |stats| &mut stats.errors);
    }

    pub fn skipped_mount(&mut self, root: u32) {
        self.count(root, |stats| &mut stats.skipped_mounts);
    }

    pub fn non_utf8_file(&mut self, root: u32) {
        self.count(root, |stats| &mut stats.non_utf8_files);
    }
}

impl StatsTable {
    pub fn new(roots: usize) -> Self {
        StatsTable {
            overall: AtomicStats::default(),
            per_root: (0..roots).map(|_| AtomicStats::default()).collect(),
            linked: InodeSet::new(),
        }
    }

    /// Counts a reported file into `delta`, consulting the shared set for hard-linked inodes.
    pub fn file(
        &self,
        delta: &mut StatsDelta,
        root: u32,
        dev: u64,
        ino: u64,
        nlink: u64,
        size: u64,
    ) {
        let (new_overall, new_in_root) = if nlink > 1 {
            (
                self.linked.insert((OVERALL, dev, ino)),
                self.linked.insert((root, dev, ino)),
            )
        } else {
            (true, true)
        };
        let multi = u64::from(nlink > 1);
        let o = &mut delta.overall;
        o.files += 1;
        o.multi_link_files += multi;
        if new_overall {
            o.distinct_inodes += 1;
            o.bytes_total += size;
        }
        let r = delta.root(root);
        r.files += 1;
        r.multi_link_files += multi;
        if new_in_root {
            r.distinct_inodes += 1;
            r.bytes_total += size;
        }
    }

    /// Publishes and clears a thread's counts.
    pub fn commit(&self, delta: &mut StatsDelta) {
        self.overall.add(&delta.overall);
        for (root, counts) in delta.per_root.drain(..) {
            self.per_root[root as usize].add(&counts);
        }
        delta.overall = WalkStats::default();
    }

    pub fn overall(&self) -> WalkStats {
        self.overall.load()
    }

    pub fn root(&self, root: usize) -> Option<WalkStats> {
        self.per_root.get(root).map(AtomicStats::load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_count_once_overall_and_per_root() {
        let table = StatsTable::new(2);
        let mut delta = StatsDelta::default();
        table.file(&mut delta, 0, 1, 10, 1, 100);
        table.file(&mut delta, 0, 1, 11, 2, 50);
        table.file(&mut delta, 0, 1, 11, 2, 50);
        table.file(&mut delta, 1, 1, 11, 2, 50);
        table.file(&mut delta, 1, 2, 11, 1, 7);
        delta.dir(0);
        delta.error(1);
        delta.skipped_mount(1);
        table.commit(&mut delta);
        assert!(delta.is_empty());
        let overall = table.overall();
        assert_eq!(overall.files, 5);
        assert_eq!(overall.distinct_inodes, 3);
        assert_eq!(overall.bytes_total, 157);
        assert_eq!(overall.multi_link_files, 3);
        assert_eq!(
            (overall.dirs, overall.errors, overall.skipped_mounts),
            (1, 1, 1)
        );
        let root0 = table.root(0).unwrap();
        assert_eq!(
            (root0.files, root0.distinct_inodes, root0.bytes_total),
            (3, 2, 150)
        );
        let root1 = table.root(1).unwrap();
        assert_eq!(
            (root1.files, root1.distinct_inodes, root1.bytes_total),
            (2, 2, 57)
        );
        assert_eq!((root1.errors, root1.skipped_mounts, root1.dirs), (1, 1, 0));
        assert!(table.root(2).is_none());
    }
}
