//! The live watcher's index of its watched volumes: directories (with their inotify watch
//! descriptors) and media files (with inode and stamp), the `(device, inode)` → links index for
//! hard-link propagation, the wd → directory table, retired watches, and per volume the watch
//! count and the directories left unwatched.
//!
//! Everything lives in flat arenas of small fixed-size records: a directory or a media file costs
//! about 40 bytes, its name (in one shared byte arena, compacted when half of it is garbage) and
//! a few bytes of open-addressing tables. Paths are never stored: they are the chain of parents,
//! so moving a directory is one re-parenting.
//!
//! A directory is named by an [`Id`]: its slot and the slot's generation, which changes when the
//! slot is freed, so a handle kept past its directory's removal is detectably stale.
//!
//! `merge` turns a [`Listing`] of a new directory into directories, watches and files in one
//! call (the caller runs it with the interpreter detached). Nothing here needs Python.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::fanotify::MixState;
use crate::livelist::{Listing, Watch, NO_PARENT};
use crate::sys::Errno;

const NONE: u32 = u32::MAX;
const FILE_TAG: u32 = 1 << 31;

/// A directory: slot in the low 32 bits, generation in the high ones.
pub type Id = u64;

/// What is left of a media file's size, mtime and link count: what "changed" is judged on.
pub fn stamp(size: u64, mtime_ns: i64, nlink: u64) -> u64 {
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&size.to_le_bytes());
    bytes[8..16].copy_from_slice(&mtime_ns.to_le_bytes());
    bytes[16..].copy_from_slice(&nlink.to_le_bytes());
    xxh3_64_with_seed(&bytes, 0) & ((1 << 60) - 1)
}

#[derive(Clone, Copy, Default, Debug)]
struct NameRef {
    start: u32,
    len: u32,
}

#[derive(Debug)]
struct Dir {
    parent: u32,
    name: NameRef,
    wd: i32,
    gen: u32,
    /// NONE: a free slot (`next` is then the next free one).
    volume: u32,
    first_dir: u32,
    first_file: u32,
    next: u32,
    prev: u32,
}

#[derive(Debug)]
struct File {
    /// NONE: a free slot (`next` is then the next free one).
    dir: u32,
    name: NameRef,
    inode: u64,
    stamp: u64,
    next: u32,
    prev: u32,
    /// Next link of the same (device, inode): a ring.
    link: u32,
}

struct Volume {
    device: u64,
    root: u32,
    watches: u32,
    unwatched: HashSet<u32>,
}

/// An open-addressing hash set of slot numbers (linear probing, backward-shift deletion):
/// 4 bytes a bucket, the key being whatever the caller's `eq` and `hash` make of a slot.
#[derive(Default)]
struct Table {
    buckets: Vec<u32>,
    len: usize,
}

impl Table {
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn find(&self, hash: u64, eq: impl Fn(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let value = self.buckets[at];
            if value == NONE {
                return None;
            }
            if eq(value) {
                return Some(value);
            }
            at = (at + 1) & mask;
        }
    }

    fn insert(&mut self, hash: u64, value: u32, rehash: impl Fn(u32) -> u64) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            let size = (self.buckets.len() * 2).max(16);
            let old = std::mem::replace(&mut self.buckets, vec![NONE; size]);
            for value in old.into_iter().filter(|&value| value != NONE) {
                self.place(rehash(value), value);
            }
        }
        self.place(hash, value);
        self.len += 1;
    }

    /// Room for `additional` more values, in one growth.
    fn reserve(&mut self, additional: usize, rehash: impl Fn(u32) -> u64) {
        let wanted = self.len + additional;
        if wanted * 4 <= self.buckets.len() * 3 {
            return;
        }
        let size = (wanted * 4).div_ceil(3).next_power_of_two().max(16);
        let old = std::mem::replace(&mut self.buckets, vec![NONE; size]);
        for value in old.into_iter().filter(|&value| value != NONE) {
            self.place(rehash(value), value);
        }
    }

    fn place(&mut self, hash: u64, value: u32) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while self.buckets[at] != NONE {
            at = (at + 1) & mask;
        }
        self.buckets[at] = value;
    }

    fn remove(&mut self, hash: u64, value: u32, rehash: impl Fn(u32) -> u64) -> bool {
        if self.buckets.is_empty() {
            return false;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let here = self.buckets[at];
            if here == NONE {
                return false;
            }
            if here == value {
                break;
            }
            at = (at + 1) & mask;
        }
        // Backward shift: move later entries of the run up into the hole when their home
        // bucket allows it.
        let mut hole = at;
        let mut next = (hole + 1) & mask;
        loop {
            let moved = self.buckets[next];
            if moved == NONE {
                break;
            }
            let home = rehash(moved) as usize & mask;
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.buckets[hole] = moved;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.buckets[hole] = NONE;
        self.len -= 1;
        if self.len == 0 {
            self.buckets = Vec::new();
        }
        true
    }
}

fn child_hash(parent: u32, file: bool, name: &[u8]) -> u64 {
    xxh3_64_with_seed(name, (u64::from(parent) << 1) | u64::from(file))
}

fn inode_hash(device: u64, inode: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&device.to_le_bytes());
    bytes[8..].copy_from_slice(&inode.to_le_bytes());
    xxh3_64_with_seed(&bytes, 1)
}

fn wd_hash(wd: i32) -> u64 {
    xxh3_64_with_seed(&wd.to_le_bytes(), 2)
}

/// What became of a listed directory worth telling the caller.
#[derive(Debug, Default)]
pub struct Merged {
    /// Directories listed (read without error).
    pub directories: usize,
    /// Directories left unwatched (watch limit or watch error).
    pub unwatched: usize,
    /// (directory, errno) of directories that could not be watched (`-errno` of the watch) or
    /// read (errno of the read): (errno, is_watch_error, directory).
    pub errors: Vec<(Errno, bool, Id)>,
    /// (parent, name, holder): the listed directory `name` of `parent` is already watched as
    /// `holder` elsewhere (moved, its move not read yet): it was left out.
    pub collisions: Vec<(Id, Vec<u8>, Id)>,
    /// (directory, index in the listing's files) of media files added, when reporting.
    pub added: Vec<(Id, u32)>,
    /// The top directory is gone (nothing was merged; it was removed).
    pub gone: bool,
}

/// Entries (listed directories and media files, directories removed) one step of a merge or
/// of a volume's removal handles: what a thread holding the index for that step makes another
/// one wait at most (about 4 ms on a small NAS CPU).
pub const SLICE: usize = 4096;

/// In `MergeJob::ids`: a listed directory not merged (nor anything below it).
const LEFT_OUT: Id = u64::MAX;

/// A merge in progress (`LiveIndex::merge_start`, `merge_step`).
pub struct MergeJob {
    top: Id,
    report: bool,
    /// The index's id of each listed directory merged so far (`LEFT_OUT`: left out); ids,
    /// not slots, so that one removed between two steps is seen stale.
    ids: Vec<Id>,
    /// Beside `ids`: the directory was created by this merge. From `fresh_from` on, such a
    /// directory has no child but those the merge gave it: its names need no lookup (a
    /// listing names an entry of a directory once).
    created: Vec<bool>,
    fresh_from: usize,
    /// `LiveIndex::child_links` after the last step.
    links_seen: u64,
    next_file: usize,
    done: bool,
    pub merged: Merged,
}

impl MergeJob {
    pub fn done(&self) -> bool {
        self.done
    }

    /// Whether listed directory `at` was created by this merge and nothing else linked a child
    /// since the merge began: a name listed in it is not there yet.
    fn fresh(&self, at: usize) -> bool {
        at >= self.fresh_from && self.created.get(at).copied().unwrap_or(false)
    }

    /// The next listed directory's id (`LEFT_OUT`: left out), and whether the merge made it.
    fn push(&mut self, id: Id, created: bool) {
        self.ids.push(id);
        self.created.push(created);
    }
}

/// A volume's removal in progress (`LiveIndex::drop_start`, `drop_step`).
pub struct DropJob {
    number: u32,
    /// Directories detached from their parent, to free (with what is below them).
    stack: Vec<Id>,
}

impl DropJob {
    pub fn done(&self) -> bool {
        self.stack.is_empty()
    }
}

/// The merge was cancelled (the watcher is shutting down).
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

#[derive(Default)]
pub struct LiveIndex {
    dirs: Vec<Dir>,
    files: Vec<File>,
    names: Vec<u8>,
    garbage: usize,
    free_dir: u32,
    free_file: u32,
    dir_count: usize,
    file_count: usize,
    volumes: Vec<Option<Volume>>,
    children: Table,
    inodes: Table,
    wds: Table,
    /// Watches removed by us, until their IN_IGNORED arrives.
    retired: HashSet<i32, MixState>,
    /// Every watch of the inotify instance (added by us or by the lister, not removed yet).
    owned: HashSet<i32, MixState>,
    /// Children linked into a directory so far (by merges and events alike): a merge that sees
    /// it move by more than its own links knows a directory it created may have other children.
    child_links: u64,
    /// The inotify instance, for removing watches of removed directories (-1: none).
    inotify_fd: RawFd,
    /// The fanotify group when `inotify_fd` is one: its keys stand for watches, and a removed
    /// directory's key is removed from its handle map instead.
    fanotify: Option<std::sync::Arc<crate::fanotify::Fanotify>>,
    /// Watches of dropped volumes, removed by `release_dropped` unless taken over by then.
    dropped_wds: Vec<i32>,
}

impl LiveIndex {
    pub fn new(inotify_fd: RawFd) -> LiveIndex {
        LiveIndex {
            free_dir: NONE,
            free_file: NONE,
            inotify_fd,
            fanotify: crate::fanotify::instance_for_fd(inotify_fd),
            ..LiveIndex::default()
        }
    }

    // --- names ------------------------------------------------------------------------

    fn name_of(&self, name: NameRef) -> &[u8] {
        &self.names[name.start as usize..(name.start + name.len) as usize]
    }

    fn store_name(&mut self, name: &[u8]) -> NameRef {
        let start = self.names.len() as u32;
        self.names.extend_from_slice(name);
        NameRef {
            start,
            len: name.len() as u32,
        }
    }

    fn free_name(&mut self, name: NameRef) {
        self.garbage += name.len as usize;
    }

    /// Copies the live names into a fresh arena once half of it is garbage.
    fn maybe_compact(&mut self) {
        if self.garbage < (1 << 16) || self.garbage * 2 < self.names.len() {
            return;
        }
        let mut names = Vec::with_capacity(self.names.len() - self.garbage);
        let old = std::mem::take(&mut self.names);
        let mut copy = |name: &mut NameRef| {
            let start = names.len() as u32;
            names.extend_from_slice(&old[name.start as usize..(name.start + name.len) as usize]);
            name.start = start;
        };
        for dir in self.dirs.iter_mut().filter(|dir| dir.volume != NONE) {
            copy(&mut dir.name);
        }
        for file in self.files.iter_mut().filter(|file| file.dir != NONE) {
            copy(&mut file.name);
        }
        self.names = names;
        self.garbage = 0;
    }

    // --- ids --------------------------------------------------------------------------

    fn id_of(&self, slot: u32) -> Id {
        (u64::from(self.dirs[slot as usize].gen) << 32) | u64::from(slot)
    }

    /// The slot of a directory still in the index, None when `id` is stale.
    pub fn slot(&self, id: Id) -> Option<u32> {
        let slot = id as u32;
        let dir = self.dirs.get(slot as usize)?;
        (dir.volume != NONE && u64::from(dir.gen) == id >> 32).then_some(slot)
    }

    pub fn is_live(&self, id: Id) -> bool {
        self.slot(id).is_some()
    }

    fn dir(&self, id: Id) -> Option<&Dir> {
        self.slot(id).map(|slot| &self.dirs[slot as usize])
    }

    // --- volumes ----------------------------------------------------------------------

    /// A new volume on `device`; returns its number and its root directory.
    pub fn add_volume(&mut self, device: u64) -> (u32, Id) {
        let number = self.volumes.len() as u32;
        let root = self.alloc_dir(number, NONE, NameRef::default());
        self.volumes.push(Some(Volume {
            device,
            root,
            watches: 0,
            unwatched: HashSet::new(),
        }));
        (number, self.id_of(root))
    }

    fn volume(&self, number: u32) -> Option<&Volume> {
        self.volumes.get(number as usize).and_then(Option::as_ref)
    }

    pub fn device(&self, number: u32) -> Option<u64> {
        self.volume(number).map(|volume| volume.device)
    }

    pub fn root(&self, number: u32) -> Option<Id> {
        self.volume(number).map(|volume| self.id_of(volume.root))
    }

    pub fn watches(&self, number: u32) -> u32 {
        self.volume(number).map_or(0, |volume| volume.watches)
    }

    pub fn unwatched_count(&self, number: u32) -> usize {
        self.volume(number)
            .map_or(0, |volume| volume.unwatched.len())
    }

    /// Unwatched directories whose parent is watched: syncing these covers every unwatched one.
    pub fn unwatched_tops(&self, number: u32) -> Vec<Id> {
        let Some(volume) = self.volume(number) else {
            return Vec::new();
        };
        let mut tops: Vec<Id> = volume
            .unwatched
            .iter()
            .filter(|&&slot| {
                let parent = self.dirs[slot as usize].parent;
                parent == NONE || self.dirs[parent as usize].wd != 0
            })
            .map(|&slot| self.id_of(slot))
            .collect();
        tops.sort_unstable();
        tops
    }

    /// Forgets a volume and everything in it. Its watches are kept in a list: another volume
    /// listed meanwhile may take them over (same directory, same wd); `release_dropped` removes
    /// the others. In one call: see `drop_start` and `drop_step` for a slice at a time.
    pub fn drop_volume(&mut self, number: u32, cancel: &AtomicBool) -> Result<(), Cancelled> {
        let mut job = self.drop_start(number);
        while !job.done() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Cancelled);
            }
            self.drop_step(&mut job, SLICE);
        }
        Ok(())
    }

    /// The removal of a volume, to be carried out by `drop_step`. Until it is done the volume
    /// and the directories not freed yet stay (detached from their parents: no path reaches
    /// them, their watches still name them).
    pub fn drop_start(&mut self, number: u32) -> DropJob {
        let stack = self
            .volume(number)
            .map(|volume| vec![self.id_of(volume.root)])
            .unwrap_or_default();
        DropJob { number, stack }
    }

    /// Frees up to `budget` more directories and media files of the job's volume; returns the
    /// entries handled. The last step forgets the volume.
    pub fn drop_step(&mut self, job: &mut DropJob, budget: usize) -> usize {
        let mut handled = 0;
        while handled < budget {
            let Some(id) = job.stack.pop() else { break };
            let Some(slot) = self.slot(id) else { continue };
            handled += 1;
            let mut child = self.dirs[slot as usize].first_dir;
            while child != NONE {
                let dir = &self.dirs[child as usize];
                let next = dir.next;
                let hash = child_hash(slot, false, self.name_of(dir.name));
                let mut children = std::mem::take(&mut self.children);
                children.remove(hash, child, self.child_rehash());
                self.children = children;
                self.dirs[child as usize].parent = NONE;
                job.stack.push(self.id_of(child));
                child = next;
            }
            self.dirs[slot as usize].first_dir = NONE;
            let wd = self.clear_wd(slot);
            if wd != 0 {
                self.dropped_wds.push(wd);
            }
            while self.dirs[slot as usize].first_file != NONE && handled < budget {
                handled += 1;
                let file = self.dirs[slot as usize].first_file;
                self.remove_file(file);
            }
            if self.dirs[slot as usize].first_file != NONE {
                job.stack.push(id); // a directory of many files: the rest in the next step
                break;
            }
            self.free_dir(slot);
        }
        if job.stack.is_empty() {
            if let Some(volume) = self.volumes.get_mut(job.number as usize) {
                *volume = None;
            }
            self.maybe_compact();
            self.trim();
        }
        handled
    }

    /// Removes the watches of dropped volumes that no directory took over.
    pub fn release_dropped(&mut self) {
        while self.release_dropped_step(usize::MAX) > 0 {}
    }

    /// `release_dropped` for up to `budget` watches (one syscall each); returns how many.
    pub fn release_dropped_step(&mut self, budget: usize) -> usize {
        let mut handled = 0;
        while handled < budget {
            let Some(wd) = self.dropped_wds.pop() else {
                break;
            };
            handled += 1;
            if self.dir_of_wd_slot(wd).is_none() {
                self.retired.insert(wd);
                self.rm_watch(wd);
            }
        }
        if self.dropped_wds.is_empty() {
            self.dropped_wds = Vec::new();
        }
        handled
    }

    // --- arenas -----------------------------------------------------------------------

    fn alloc_dir(&mut self, volume: u32, parent: u32, name: NameRef) -> u32 {
        let dir = Dir {
            parent,
            name,
            wd: 0,
            gen: 0,
            volume,
            first_dir: NONE,
            first_file: NONE,
            next: NONE,
            prev: NONE,
        };
        self.dir_count += 1;
        if self.free_dir != NONE {
            let slot = self.free_dir;
            let old = &mut self.dirs[slot as usize];
            self.free_dir = old.next;
            let gen = old.gen;
            *old = dir;
            old.gen = gen;
            slot
        } else {
            self.dirs.push(dir);
            (self.dirs.len() - 1) as u32
        }
    }

    /// Frees an unlinked, empty directory slot; its generation changes.
    fn free_dir(&mut self, slot: u32) {
        let name = self.dirs[slot as usize].name;
        let volume = self.dirs[slot as usize].volume;
        if let Some(Some(volume)) = self.volumes.get_mut(volume as usize) {
            volume.unwatched.remove(&slot);
        }
        self.free_name(name);
        let dir = &mut self.dirs[slot as usize];
        dir.volume = NONE;
        dir.gen = dir.gen.wrapping_add(1);
        dir.next = self.free_dir;
        dir.first_dir = NONE;
        dir.first_file = NONE;
        self.free_dir = slot;
        self.dir_count -= 1;
    }

    fn child_rehash(&self) -> impl Fn(u32) -> u64 + '_ {
        move |value| {
            if value & FILE_TAG != 0 {
                let file = &self.files[(value & !FILE_TAG) as usize];
                child_hash(file.dir, true, self.name_of(file.name))
            } else {
                let dir = &self.dirs[value as usize];
                child_hash(dir.parent, false, self.name_of(dir.name))
            }
        }
    }

    fn find_subdir(&self, parent: u32, name: &[u8]) -> Option<u32> {
        self.children
            .find(child_hash(parent, false, name), |value| {
                value & FILE_TAG == 0 && {
                    let dir = &self.dirs[value as usize];
                    dir.parent == parent && self.name_of(dir.name) == name
                }
            })
    }

    fn find_file(&self, dir: u32, name: &[u8]) -> Option<u32> {
        self.children
            .find(child_hash(dir, true, name), |value| {
                value & FILE_TAG != 0 && {
                    let file = &self.files[(value & !FILE_TAG) as usize];
                    file.dir == dir && self.name_of(file.name) == name
                }
            })
            .map(|value| value & !FILE_TAG)
    }

    /// Links `slot` as a subdirectory of its `parent` (set already).
    fn link_dir(&mut self, slot: u32) {
        let parent = self.dirs[slot as usize].parent;
        let first = self.dirs[parent as usize].first_dir;
        self.dirs[slot as usize].next = first;
        self.dirs[slot as usize].prev = NONE;
        if first != NONE {
            self.dirs[first as usize].prev = slot;
        }
        self.dirs[parent as usize].first_dir = slot;
        self.child_links += 1;
        let hash = child_hash(parent, false, self.name_of(self.dirs[slot as usize].name));
        let mut children = std::mem::take(&mut self.children);
        children.insert(hash, slot, self.child_rehash());
        self.children = children;
    }

    fn unlink_dir(&mut self, slot: u32) {
        let Dir {
            parent, next, prev, ..
        } = self.dirs[slot as usize];
        if parent == NONE {
            return;
        }
        if prev != NONE {
            self.dirs[prev as usize].next = next;
        } else {
            self.dirs[parent as usize].first_dir = next;
        }
        if next != NONE {
            self.dirs[next as usize].prev = prev;
        }
        let hash = child_hash(parent, false, self.name_of(self.dirs[slot as usize].name));
        let mut children = std::mem::take(&mut self.children);
        children.remove(hash, slot, self.child_rehash());
        self.children = children;
        self.dirs[slot as usize].next = NONE;
        self.dirs[slot as usize].prev = NONE;
    }

    // --- directories ------------------------------------------------------------------

    pub fn parent(&self, id: Id) -> Option<Id> {
        let dir = self.dir(id)?;
        (dir.parent != NONE).then(|| self.id_of(dir.parent))
    }

    pub fn name(&self, id: Id) -> Option<&[u8]> {
        self.dir(id).map(|dir| self.name_of(dir.name))
    }

    pub fn volume_of(&self, id: Id) -> Option<u32> {
        self.dir(id).map(|dir| dir.volume)
    }

    /// The watch descriptor of a directory, 0 when not watched.
    pub fn wd(&self, id: Id) -> i32 {
        self.dir(id).map_or(0, |dir| dir.wd)
    }

    pub fn subdir(&self, id: Id, name: &[u8]) -> Option<Id> {
        let slot = self.slot(id)?;
        self.find_subdir(slot, name).map(|child| self.id_of(child))
    }

    pub fn subdirs(&self, id: Id) -> Vec<(&[u8], Id)> {
        let mut out = Vec::new();
        if let Some(slot) = self.slot(id) {
            let mut child = self.dirs[slot as usize].first_dir;
            while child != NONE {
                let dir = &self.dirs[child as usize];
                out.push((self.name_of(dir.name), self.id_of(child)));
                child = dir.next;
            }
        }
        out
    }

    pub fn has_subdirs(&self, id: Id) -> bool {
        self.dir(id).is_some_and(|dir| dir.first_dir != NONE)
    }

    /// Relative path of a directory in its volume ("" for the root).
    pub fn path(&self, id: Id) -> Option<Vec<u8>> {
        let mut slot = self.slot(id)?;
        let mut parts: Vec<&[u8]> = Vec::new();
        while self.dirs[slot as usize].parent != NONE {
            parts.push(self.name_of(self.dirs[slot as usize].name));
            slot = self.dirs[slot as usize].parent;
        }
        parts.reverse();
        Some(parts.join(&b'/'))
    }

    /// Whether `ancestor` is `id` or above it.
    pub fn is_within(&self, id: Id, ancestor: Id) -> bool {
        let (Some(mut slot), Some(top)) = (self.slot(id), self.slot(ancestor)) else {
            return false;
        };
        loop {
            if slot == top {
                return true;
            }
            slot = self.dirs[slot as usize].parent;
            if slot == NONE {
                return false;
            }
        }
    }

    /// A new subdirectory `name` of `parent`; None when `parent` is stale or already has one.
    pub fn new_subdir(&mut self, parent: Id, name: &[u8]) -> Option<Id> {
        let parent = self.slot(parent)?;
        if self.find_subdir(parent, name).is_some() {
            return None;
        }
        let volume = self.dirs[parent as usize].volume;
        let name = self.store_name(name);
        let slot = self.alloc_dir(volume, parent, name);
        self.link_dir(slot);
        Some(self.id_of(slot))
    }

    /// Moves `id` to be `name` in `parent` (same volume, no directory of that name there, not
    /// below itself). Returns whether it moved.
    pub fn move_dir(&mut self, id: Id, parent: Id, name: &[u8]) -> bool {
        let (Some(slot), Some(new_parent)) = (self.slot(id), self.slot(parent)) else {
            return false;
        };
        if self.dirs[slot as usize].parent == NONE
            || self.dirs[slot as usize].volume != self.dirs[new_parent as usize].volume
            || self.is_within(parent, id)
            || self.find_subdir(new_parent, name).is_some()
        {
            return false;
        }
        self.unlink_dir(slot);
        let old_name = self.dirs[slot as usize].name;
        self.free_name(old_name);
        let name = self.store_name(name);
        let dir = &mut self.dirs[slot as usize];
        dir.parent = new_parent;
        dir.name = name;
        self.link_dir(slot);
        self.maybe_compact();
        true
    }

    /// Removes `id` and everything below it: unwatched (the watches removed), files unlinked.
    /// Returns the media files that were under it as (path below `id`, inode) when `collect`.
    pub fn remove_subtree(&mut self, id: Id, collect: bool) -> Vec<(Vec<u8>, u64)> {
        let mut removed = Vec::new();
        let Some(top) = self.slot(id) else {
            return removed;
        };
        self.unlink_dir(top);
        let mut stack: Vec<(u32, Vec<u8>)> = vec![(top, Vec::new())];
        while let Some((slot, below)) = stack.pop() {
            let mut child = self.dirs[slot as usize].first_dir;
            while child != NONE {
                let dir = &self.dirs[child as usize];
                let next = dir.next;
                let path = if collect {
                    join(&below, self.name_of(dir.name))
                } else {
                    Vec::new()
                };
                // Detached from its parent now: freed when popped.
                let hash = child_hash(slot, false, self.name_of(dir.name));
                let mut children = std::mem::take(&mut self.children);
                children.remove(hash, child, self.child_rehash());
                self.children = children;
                self.dirs[child as usize].parent = NONE;
                stack.push((child, path));
                child = next;
            }
            self.dirs[slot as usize].first_dir = NONE;
            self.unwatch_slot(slot);
            while self.dirs[slot as usize].first_file != NONE {
                let file = self.dirs[slot as usize].first_file;
                if collect {
                    let record = &self.files[file as usize];
                    removed.push((join(&below, self.name_of(record.name)), record.inode));
                }
                self.remove_file(file);
            }
            self.free_dir(slot);
        }
        self.maybe_compact();
        removed
    }

    // --- watches ----------------------------------------------------------------------

    fn dir_of_wd_slot(&self, wd: i32) -> Option<u32> {
        self.wds
            .find(wd_hash(wd), |slot| self.dirs[slot as usize].wd == wd)
    }

    pub fn dir_of_wd(&self, wd: i32) -> Option<Id> {
        self.dir_of_wd_slot(wd).map(|slot| self.id_of(slot))
    }

    fn set_wd_slot(&mut self, slot: u32, wd: i32) {
        if let Some(holder) = self.dir_of_wd_slot(wd) {
            if holder == slot {
                return;
            }
            self.clear_wd(holder);
        }
        if self.dirs[slot as usize].wd != 0 {
            self.clear_wd(slot);
        }
        let volume = self.dirs[slot as usize].volume;
        if let Some(Some(volume)) = self.volumes.get_mut(volume as usize) {
            volume.watches += 1;
            volume.unwatched.remove(&slot);
        }
        self.dirs[slot as usize].wd = wd;
        let mut wds = std::mem::take(&mut self.wds);
        wds.insert(wd_hash(wd), slot, |s| wd_hash(self.dirs[s as usize].wd));
        self.wds = wds;
        self.retired.remove(&wd);
        self.owned.insert(wd);
    }

    /// Forgets the watch of `slot` (no syscall); returns it.
    fn clear_wd(&mut self, slot: u32) -> i32 {
        let wd = self.dirs[slot as usize].wd;
        if wd == 0 {
            return 0;
        }
        let mut wds = std::mem::take(&mut self.wds);
        wds.remove(wd_hash(wd), slot, |s| wd_hash(self.dirs[s as usize].wd));
        self.wds = wds;
        self.dirs[slot as usize].wd = 0;
        let volume = self.dirs[slot as usize].volume;
        if let Some(Some(volume)) = self.volumes.get_mut(volume as usize) {
            volume.watches -= 1;
        }
        wd
    }

    /// `id` is watched as `wd` (taken from any directory that had it).
    pub fn set_wd(&mut self, id: Id, wd: i32) -> bool {
        match self.slot(id) {
            Some(slot) if wd > 0 => {
                self.set_wd_slot(slot, wd);
                true
            }
            _ => false,
        }
    }

    /// IN_IGNORED: the kernel dropped the watch of `id`. Returns the wd it had (0: none).
    pub fn dropped_by_kernel(&mut self, id: Id) -> i32 {
        let Some(slot) = self.slot(id) else {
            return 0;
        };
        let wd = self.clear_wd(slot);
        if wd != 0 {
            self.owned.remove(&wd);
        }
        wd
    }

    fn unwatch_slot(&mut self, slot: u32) {
        let volume = self.dirs[slot as usize].volume;
        if let Some(Some(volume)) = self.volumes.get_mut(volume as usize) {
            volume.unwatched.remove(&slot);
        }
        let wd = self.clear_wd(slot);
        if wd != 0 {
            self.retired.insert(wd);
            self.rm_watch(wd);
        }
    }

    /// Stops watching `id` (the watch removed, retired until its IN_IGNORED).
    pub fn unwatch(&mut self, id: Id) {
        if let Some(slot) = self.slot(id) {
            self.unwatch_slot(slot);
        }
    }

    /// `id` is left unwatched (watch limit, watch error): retried, covered by rescans.
    pub fn mark_unwatched(&mut self, id: Id) {
        if let Some(slot) = self.slot(id) {
            let volume = self.dirs[slot as usize].volume;
            if let Some(Some(volume)) = self.volumes.get_mut(volume as usize) {
                volume.unwatched.insert(slot);
            }
        }
    }

    fn rm_watch(&mut self, wd: i32) {
        if !self.owned.remove(&wd) {
            return;
        }
        if let Some(fanotify) = &self.fanotify {
            fanotify.unwatch(wd);
        } else if self.inotify_fd >= 0 {
            // SAFETY: plain syscall; a watch the kernel dropped already fails with EINVAL.
            unsafe { libc::inotify_rm_watch(self.inotify_fd, wd) };
        }
    }

    pub fn retire(&mut self, wd: i32) {
        self.retired.insert(wd);
    }

    pub fn unretire(&mut self, wd: i32) -> bool {
        self.retired.remove(&wd)
    }

    pub fn is_retired(&self, wd: i32) -> bool {
        self.retired.contains(&wd)
    }

    pub fn own(&mut self, wd: i32) {
        self.owned.insert(wd);
    }

    pub fn disown(&mut self, wd: i32) -> bool {
        self.owned.remove(&wd)
    }

    pub fn owns(&self, wd: i32) -> bool {
        self.owned.contains(&wd)
    }

    pub fn owned_count(&self) -> usize {
        self.owned.len()
    }

    pub fn clear_owned(&mut self) {
        self.owned = HashSet::default();
        self.inotify_fd = -1;
        self.fanotify = None;
    }

    // --- media files ------------------------------------------------------------------

    fn device_of_file(&self, file: u32) -> u64 {
        let dir = self.files[file as usize].dir;
        let volume = self.dirs[dir as usize].volume;
        self.device(volume).unwrap_or(u64::MAX)
    }

    fn inode_rehash(&self) -> impl Fn(u32) -> u64 + '_ {
        move |file| inode_hash(self.device_of_file(file), self.files[file as usize].inode)
    }

    /// One link of (device, inode), if any is known.
    fn find_inode(&self, device: u64, inode: u64) -> Option<u32> {
        self.inodes.find(inode_hash(device, inode), |file| {
            self.files[file as usize].inode == inode && self.device_of_file(file) == device
        })
    }

    /// (inode, stamp) of the media file `name` of `id`.
    pub fn file(&self, id: Id, name: &[u8]) -> Option<(u64, u64)> {
        let slot = self.slot(id)?;
        let file = self.find_file(slot, name)?;
        let file = &self.files[file as usize];
        Some((file.inode, file.stamp))
    }

    /// (name, inode, stamp) of every media file of `id`.
    pub fn files(&self, id: Id) -> Vec<(&[u8], u64, u64)> {
        let mut out = Vec::new();
        if let Some(slot) = self.slot(id) {
            let mut at = self.dirs[slot as usize].first_file;
            while at != NONE {
                let file = &self.files[at as usize];
                out.push((self.name_of(file.name), file.inode, file.stamp));
                at = file.next;
            }
        }
        out.reverse(); // in the order they were added
        out
    }

    pub fn has_files(&self, id: Id) -> bool {
        self.dir(id).is_some_and(|dir| dir.first_file != NONE)
    }

    /// Records `name` in `id` as a link of `inode` (replacing what had that name). The first
    /// link of an inode sets its stamp; a further one takes the inode's. Returns the stamp.
    pub fn add_link(&mut self, id: Id, name: &[u8], inode: u64, stamp: u64) -> Option<u64> {
        let slot = self.slot(id)?;
        Some(self.add_link_slot(slot, name, inode, stamp, false))
    }

    /// `absent`: the caller knows `dir` has no file `name` (no lookup).
    fn add_link_slot(
        &mut self,
        dir: u32,
        name: &[u8],
        inode: u64,
        stamp: u64,
        absent: bool,
    ) -> u64 {
        if let Some(old) = (!absent).then(|| self.find_file(dir, name)).flatten() {
            self.remove_file(old);
        }
        self.child_links += 1;
        let device = self
            .device(self.dirs[dir as usize].volume)
            .unwrap_or(u64::MAX);
        let other = self.find_inode(device, inode);
        let stamp = other.map_or(stamp, |other| self.files[other as usize].stamp);
        let name = self.store_name(name);
        let first = self.dirs[dir as usize].first_file;
        let record = File {
            dir,
            name,
            inode,
            stamp,
            next: first,
            prev: NONE,
            link: NONE,
        };
        let slot = if self.free_file != NONE {
            let slot = self.free_file;
            self.free_file = self.files[slot as usize].next;
            self.files[slot as usize] = record;
            slot
        } else {
            self.files.push(record);
            (self.files.len() - 1) as u32
        };
        self.file_count += 1;
        if first != NONE {
            self.files[first as usize].prev = slot;
        }
        self.dirs[dir as usize].first_file = slot;
        let hash = child_hash(dir, true, self.name_of(name));
        let mut children = std::mem::take(&mut self.children);
        children.insert(hash, slot | FILE_TAG, self.child_rehash());
        self.children = children;
        match other {
            Some(other) => {
                // Into the ring after `other`.
                let after = self.files[other as usize].link;
                self.files[slot as usize].link = if after == NONE { other } else { after };
                self.files[other as usize].link = slot;
            }
            None => {
                let mut inodes = std::mem::take(&mut self.inodes);
                inodes.insert(inode_hash(device, inode), slot, self.inode_rehash());
                self.inodes = inodes;
            }
        }
        stamp
    }

    /// Unlinks and frees a file slot; returns whether other links of its inode remain.
    fn remove_file(&mut self, slot: u32) -> bool {
        let File {
            dir,
            name,
            inode,
            next,
            prev,
            link,
            ..
        } = self.files[slot as usize];
        let device = self.device_of_file(slot);
        if prev != NONE {
            self.files[prev as usize].next = next;
        } else {
            self.dirs[dir as usize].first_file = next;
        }
        if next != NONE {
            self.files[next as usize].prev = prev;
        }
        let hash = child_hash(dir, true, self.name_of(name));
        let mut children = std::mem::take(&mut self.children);
        children.remove(hash, slot | FILE_TAG, self.child_rehash());
        self.children = children;
        // The ring of links: find the one before `slot`.
        let remaining = link != NONE;
        let mut inodes = std::mem::take(&mut self.inodes);
        let indexed = inodes.remove(inode_hash(device, inode), slot, self.inode_rehash());
        if remaining {
            let mut before = link;
            while self.files[before as usize].link != slot {
                before = self.files[before as usize].link;
            }
            self.files[before as usize].link = if link == before { NONE } else { link };
            if indexed {
                inodes.insert(inode_hash(device, inode), before, self.inode_rehash());
            }
        }
        self.inodes = inodes;
        self.free_name(name);
        let file = &mut self.files[slot as usize];
        file.dir = NONE;
        file.link = NONE;
        file.next = self.free_file;
        self.free_file = slot;
        self.file_count -= 1;
        remaining
    }

    /// Forgets the media file `name` of `id`: its inode and whether other links remain.
    pub fn remove_link(&mut self, id: Id, name: &[u8]) -> Option<(u64, bool)> {
        let slot = self.slot(id)?;
        let file = self.find_file(slot, name)?;
        let inode = self.files[file as usize].inode;
        let remaining = self.remove_file(file);
        self.maybe_compact();
        Some((inode, remaining))
    }

    fn ring(&self, device: u64, inode: u64) -> Vec<u32> {
        let mut out = Vec::new();
        if let Some(first) = self.find_inode(device, inode) {
            let mut at = first;
            loop {
                out.push(at);
                at = self.files[at as usize].link;
                if at == NONE || at == first {
                    break;
                }
            }
        }
        out
    }

    /// The stamp last recorded for (device, inode), None when no link of it is known.
    pub fn inode_stamp(&self, device: u64, inode: u64) -> Option<u64> {
        self.find_inode(device, inode)
            .map(|file| self.files[file as usize].stamp)
    }

    /// Every known (directory, name) of (device, inode).
    pub fn links(&self, device: u64, inode: u64) -> Vec<(Id, &[u8])> {
        let mut out: Vec<(Id, &[u8])> = self
            .ring(device, inode)
            .into_iter()
            .map(|file| {
                let record = &self.files[file as usize];
                (self.id_of(record.dir), self.name_of(record.name))
            })
            .collect();
        out.sort_by_key(|&(id, _)| id as u32);
        out
    }

    /// Gives every link of (device, inode) the stamp `stamp`.
    pub fn set_stamp(&mut self, device: u64, inode: u64, stamp: u64) {
        for file in self.ring(device, inode) {
            self.files[file as usize].stamp = stamp;
        }
    }

    pub fn dir_count(&self) -> usize {
        self.dir_count
    }

    pub fn file_count(&self) -> usize {
        self.file_count
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len
    }

    /// Bytes held by the arenas and tables (capacity), for benchmarks.
    pub fn heap_bytes(&self) -> usize {
        self.dirs.capacity() * std::mem::size_of::<Dir>()
            + self.files.capacity() * std::mem::size_of::<File>()
            + self.names.capacity()
            + (self.children.buckets.capacity()
                + self.inodes.buckets.capacity()
                + self.wds.buckets.capacity())
                * 4
            + (self.retired.capacity() + self.owned.capacity()) * 5
    }

    // --- listings ---------------------------------------------------------------------

    /// Merges a listing of `top` (a new, empty directory: what was listed from it) into the
    /// index: its directories become subdirectories with their watches, its media files links.
    /// A directory whose watch is already another directory's (moved there, its move not read
    /// yet) is left out and named in `collisions`; a directory gone since its parent was listed
    /// is left out. `report`: the media files added are named in `added`. In one call: see
    /// `merge_start` and `merge_step` for the same merge a slice at a time.
    pub fn merge(
        &mut self,
        top: Id,
        listing: &Listing,
        report: bool,
        cancel: &AtomicBool,
    ) -> Result<Merged, Cancelled> {
        let mut job = self.merge_start(top, listing, report);
        while !job.done {
            if cancel.load(Ordering::Relaxed) {
                return Err(Cancelled);
            }
            self.merge_step(&mut job, listing, SLICE);
        }
        Ok(job.merged)
    }

    /// A merge of `listing` into `top` to be carried out by `merge_step`: O(1) but for room
    /// made in the arenas and tables for the whole listing (grown by doubling, the arenas of a
    /// volume's listing would keep up to half of their capacity unused, and each table growth
    /// would rehash it all again).
    pub fn merge_start(&mut self, top: Id, listing: &Listing, report: bool) -> MergeJob {
        let mut job = MergeJob {
            top,
            report,
            ids: Vec::new(),
            created: Vec::new(),
            fresh_from: 0,
            links_seen: self.child_links,
            next_file: 0,
            done: true,
            merged: Merged::default(),
        };
        if self.slot(top).is_none() {
            job.merged.gone = true;
            return job;
        }
        if listing.gone {
            self.remove_subtree(top, false);
            job.merged.gone = true;
            return job;
        }
        self.dirs.reserve(listing.dirs.len());
        self.files.reserve(listing.files.len());
        self.names.reserve(listing.names.len());
        let mut children = std::mem::take(&mut self.children);
        children.reserve(
            listing.dirs.len() + listing.files.len(),
            self.child_rehash(),
        );
        self.children = children;
        job.ids = Vec::with_capacity(listing.dirs.len());
        job.created = Vec::with_capacity(listing.dirs.len());
        job.done = false;
        job
    }

    /// Merges up to `budget` more entries (directories, then media files) of the job's
    /// listing; returns the entries handled. Between two steps the index may change: a
    /// directory of the listing merged already and removed since (its id stale) takes what is
    /// below it out of the merge; one moved since receives the rest of its content where it
    /// is now; one created since under a listed name is merged into. Events of the tree being
    /// merged are still best applied after the merge: one about a directory not merged yet
    /// finds nothing to change, and the merge then adds the directory as it was listed.
    pub fn merge_step(&mut self, job: &mut MergeJob, listing: &Listing, budget: usize) -> usize {
        let gone =
            |errno: Errno| errno == libc::ENOENT || errno == libc::ENOTDIR || errno == libc::ELOOP;
        let report = job.report;
        if self.child_links != job.links_seen {
            // Something else linked children since the last step (events between two steps):
            // the directories merged so far are looked into again.
            job.fresh_from = job.ids.len();
        }
        let mut handled = 0;
        while handled < budget && job.ids.len() < listing.dirs.len() && !job.done {
            handled += 1;
            let listed = &listing.dirs[job.ids.len()];
            let parent = if listed.parent == NO_PARENT {
                None
            } else {
                match self.slot(job.ids[listed.parent as usize]) {
                    None => {
                        job.push(LEFT_OUT, false); // below a directory left out, or removed since
                        continue;
                    }
                    slot => slot,
                }
            };
            let in_fresh = listed.parent != NO_PARENT && job.fresh(listed.parent as usize);
            let mut created = false;
            let name = listing.name(listed.name);
            let slot = match parent {
                None => match self.slot(job.top) {
                    Some(top) => top,
                    None => {
                        job.merged.gone = true;
                        self.finish_merge(job);
                        break;
                    }
                },
                Some(parent) => match (!in_fresh).then(|| self.find_subdir(parent, name)) {
                    Some(Some(existing)) => existing,
                    _ => {
                        let name = self.store_name(name);
                        let volume = self.dirs[parent as usize].volume;
                        let slot = self.alloc_dir(volume, parent, name);
                        self.link_dir(slot);
                        created = true;
                        slot
                    }
                },
            };
            let top = parent.is_none();
            let wd = match listed.watch {
                Watch::Wd(wd) => wd,
                _ => 0,
            };
            let is_gone = gone(listed.read_error);
            let holder = if wd > 0 {
                self.dir_of_wd_slot(wd)
            } else {
                None
            };
            if wd > 0 {
                self.owned.insert(wd);
                if holder.is_none() && is_gone {
                    self.retired.insert(wd); // its IN_IGNORED is expected
                    self.rm_watch(wd);
                }
            }
            let collision = holder.is_some_and(|holder| holder != slot);
            if collision || (is_gone && !top) {
                // Gone since its parent was listed, or the same directory reached twice: left
                // out (its own events, or the other directory, tell the rest).
                let dir_parent = self.dirs[slot as usize].parent;
                if report && collision && dir_parent != NONE {
                    let own_name = self.name_of(self.dirs[slot as usize].name).to_vec();
                    job.merged.collisions.push((
                        self.id_of(dir_parent),
                        own_name,
                        self.id_of(holder.unwrap_or(NONE)),
                    ));
                }
                let id = self.id_of(slot);
                self.remove_subtree(id, false);
                if top {
                    self.finish_merge(job); // nothing of it is merged
                    break;
                }
                job.push(LEFT_OUT, false);
                continue;
            }
            let id = self.id_of(slot);
            if wd > 0 && !is_gone {
                self.set_wd_slot(slot, wd);
            } else {
                job.merged.unwatched += 1;
                self.mark_unwatched(id);
                if let Watch::Failed(errno) = listed.watch {
                    job.merged.errors.push((errno, true, id));
                }
            }
            if listed.read_error != 0 {
                job.merged.errors.push((listed.read_error, false, id));
            } else {
                job.merged.directories += 1;
            }
            job.push(id, created);
        }
        while handled < budget && job.next_file < listing.files.len() && !job.done {
            handled += 1;
            let at = job.next_file;
            job.next_file += 1;
            let listed = &listing.files[at];
            let Some(dir) = job
                .ids
                .get(listed.dir as usize)
                .and_then(|&id| self.slot(id))
            else {
                continue;
            };
            let name = listing.name(listed.name);
            let absent = job.fresh(listed.dir as usize);
            if report && !absent && self.find_file(dir, name).is_some() {
                continue;
            }
            let stamp = stamp(listed.size, listed.mtime_ns, listed.nlink);
            self.add_link_slot(dir, name, listed.ino, stamp, absent);
            if report {
                job.merged.added.push((self.id_of(dir), at as u32));
            }
        }
        if !job.done && job.ids.len() == listing.dirs.len() && job.next_file == listing.files.len()
        {
            self.finish_merge(job);
        }
        job.links_seen = self.child_links;
        handled
    }

    fn finish_merge(&mut self, job: &mut MergeJob) {
        job.done = true;
        if !job.report {
            self.trim(); // a volume's listing, not one directory's
        }
    }

    /// Gives back what big changes (a listing merged, a volume dropped) left unused: the slack
    /// of the arenas, and the heap the listing used (`malloc_trim`), so that the steady RSS is
    /// the index's.
    pub fn trim(&mut self) {
        for_slack(&mut self.dirs);
        for_slack(&mut self.files);
        for_slack(&mut self.names);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: plain libc call, no pointer involved.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// The index behind one lock, shared by a thread that merges or drops whole trees (a listing
/// thread) and one that handles events (which must never wait long). Whole-tree work takes the
/// lock for one slice (`slice` entries) at a time, and lets any thread waiting for the lock in
/// before it takes it again: a plain mutex would let it barge back in and starve the waiter.
pub struct SharedIndex {
    inner: Mutex<LiveIndex>,
    /// Threads in `lock` waiting for the lock.
    waiting: AtomicUsize,
    slice: AtomicUsize,
    /// Entries handled by sliced work so far, and the most one hold of the lock handled.
    handled: AtomicUsize,
    longest_hold: AtomicUsize,
}

impl SharedIndex {
    pub fn new(index: LiveIndex) -> SharedIndex {
        SharedIndex {
            inner: Mutex::new(index),
            waiting: AtomicUsize::new(0),
            slice: AtomicUsize::new(SLICE),
            handled: AtomicUsize::new(0),
            longest_hold: AtomicUsize::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, LiveIndex> {
        self.lock_counted().0
    }

    /// `lock`, and how many entries sliced work handled while this thread waited for it.
    pub fn lock_counted(&self) -> (MutexGuard<'_, LiveIndex>, usize) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let before = self.handled.load(Ordering::SeqCst);
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let after = self.handled.load(Ordering::SeqCst);
        (guard, after - before)
    }

    /// The lock if it is free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, LiveIndex>> {
        match self.inner.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Entries sliced work handles per hold of the lock (at least 1).
    pub fn set_slice(&self, entries: usize) {
        self.slice.store(entries.max(1), Ordering::Relaxed);
    }

    pub fn slice(&self) -> usize {
        self.slice.load(Ordering::Relaxed)
    }

    /// The most entries one hold of the lock by sliced work handled.
    pub fn longest_hold(&self) -> usize {
        self.longest_hold.load(Ordering::Relaxed)
    }

    /// Runs `step` (given the index and a budget, it returns the entries it handled) one slice
    /// per hold of the lock until `done`, the lock given to waiting threads in between.
    fn sliced<J>(
        &self,
        job: &mut J,
        cancel: &AtomicBool,
        done: impl Fn(&J) -> bool,
        mut step: impl FnMut(&mut LiveIndex, &mut J, usize) -> usize,
    ) -> Result<(), Cancelled> {
        loop {
            while self.waiting.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            let mut index = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if done(job) {
                return Ok(());
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Cancelled);
            }
            let handled = step(&mut index, job, self.slice());
            self.longest_hold.fetch_max(handled, Ordering::Relaxed);
            self.handled.fetch_add(handled, Ordering::SeqCst);
            drop(index);
        }
    }

    /// `LiveIndex::merge`, a slice per hold of the lock.
    pub fn merge(
        &self,
        top: Id,
        listing: &Listing,
        report: bool,
        cancel: &AtomicBool,
    ) -> Result<Merged, Cancelled> {
        let mut job = self.lock().merge_start(top, listing, report);
        self.sliced(&mut job, cancel, MergeJob::done, |index, job, budget| {
            index.merge_step(job, listing, budget)
        })?;
        Ok(job.merged)
    }

    /// `LiveIndex::drop_volume`, a slice per hold of the lock.
    pub fn drop_volume(&self, number: u32, cancel: &AtomicBool) -> Result<(), Cancelled> {
        let mut job = self.lock().drop_start(number);
        self.sliced(&mut job, cancel, DropJob::done, |index, job, budget| {
            index.drop_step(job, budget)
        })
    }

    /// `LiveIndex::release_dropped`, a slice per hold of the lock.
    pub fn release_dropped(&self) {
        let mut finished = false;
        let never = AtomicBool::new(false);
        let _ = self.sliced(
            &mut finished,
            &never,
            |finished| *finished,
            |index, finished, budget| {
                let handled = index.release_dropped_step(budget);
                *finished = handled < budget;
                handled
            },
        );
    }
}

/// Shrinks a big arena that has more than an eighth of its capacity unused.
fn for_slack<T>(arena: &mut Vec<T>) {
    if arena.capacity() > 4096 && arena.capacity() - arena.len() > arena.capacity() / 8 {
        arena.shrink_to_fit();
    }
}

fn join(base: &[u8], name: &[u8]) -> Vec<u8> {
    if base.is_empty() {
        return name.to_vec();
    }
    let mut path = Vec::with_capacity(base.len() + 1 + name.len());
    path.extend_from_slice(base);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

#[cfg(test)]
#[path = "liveindex_tests.rs"]
mod tests;
