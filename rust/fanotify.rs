//! Whole-filesystem live watching with fanotify, presented as an inotify-like event source.
//!
//! One fanotify group (`FAN_REPORT_DFID_NAME_TARGET`: every event names its directory by file
//! handle, the entry by name, and the object by handle) holds one `FAN_MARK_FILESYSTEM` mark per
//! filesystem that holds a watched directory: no watch per directory, no watch limit, and kernel
//! memory that does not grow with the tree. What inotify calls watches becomes a handle map:
//! each directory the watcher cares about is registered (`name_to_handle_at`) under a small
//! integer key, and the events read are turned into inotify events `(key, mask, cookie, name)`
//! of those keys. An event whose directory is not registered (outside every volume, or in a
//! directory left out by the filters) is dropped here, without a syscall.
//!
//! - `FAN_RENAME` (old and new directory and name in one event) becomes an `IN_MOVED_FROM` /
//!   `IN_MOVED_TO` pair with a synthetic cookie; only the known side when the other directory is
//!   not registered, as inotify reports a move out of or into its watched directories.
//! - `FAN_DELETE_SELF` of a registered directory becomes `IN_DELETE_SELF` then `IN_IGNORED`, and
//!   the key is forgotten; `FAN_Q_OVERFLOW` becomes `IN_Q_OVERFLOW` (key -1).
//! - Events fanotify merged in its queue (one mask with several bits, e.g. `CREATE|CLOSE_WRITE`
//!   of one file) are split in the order they happen: create, attrib, close-write, delete.
//!
//! `FAN_MOVED_FROM`/`FAN_MOVED_TO` are not asked for: `FAN_RENAME` says the same, paired.
//!
//! A filesystem fanotify cannot mark or identify (no fsid, no file handles: CIFS, most FUSE
//! filesystems, a btrfs subvolume) can fall back to plain inotify watches on an inotify instance
//! kept alongside (`with_inotify_fallback`): its directories get their inotify watch descriptor
//! as key, below `KEY_BASE`. Both descriptors sit in one epoll set, whose descriptor `fd` is the
//! one to wait on.
//!
//! A filesystem mark disappears silently with its filesystem, so each marked filesystem also
//! gets one inotify watch (a sentinel, on the directory that marked it): its `IN_UNMOUNT` becomes
//! `IN_UNMOUNT` then `IN_IGNORED` for every key of that filesystem, as inotify watches would say.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::sys::Errno;

/// The inotify masks the events are translated to.
pub use libc::{
    IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_IGNORED, IN_ISDIR,
    IN_MOVED_FROM, IN_MOVED_TO, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_UNMOUNT,
};

/// Keys of registered directories start here; inotify watch descriptors of the fallback stay
/// below (a fresh inotify instance would need a billion watches to reach it).
pub const KEY_BASE: i32 = 1 << 30;

/// The events of every filesystem mark.
pub const MARK_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_RENAME
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR;

pub const INIT_FLAGS: u32 = libc::FAN_CLASS_NOTIF
    | libc::FAN_REPORT_DFID_NAME_TARGET
    | libc::FAN_NONBLOCK
    | libc::FAN_CLOEXEC;

const METADATA_VERSION: u8 = 3;
const METADATA_LEN: usize = 24;
const MAX_HANDLE_SZ: usize = 128;

/// An inotify-like event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub key: i32,
    pub mask: u32,
    pub cookie: u32,
    pub name: Vec<u8>,
}

/// Which step failed, for the caller's explanation (no capability, old kernel, a filesystem
/// without file handles...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Init,
    Open,
    Handle,
    Statfs,
    Mark,
    Read,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub errno: Errno,
}

impl Failure {
    fn new(step: Step, errno: Errno) -> Failure {
        Failure { step, errno }
    }

    /// The filesystem cannot be watched by fanotify (as opposed to: the path is bad).
    pub fn unsupported_filesystem(&self) -> bool {
        matches!(self.step, Step::Handle | Step::Mark)
            && matches!(
                self.errno,
                libc::EOPNOTSUPP | libc::ENODEV | libc::EXDEV | libc::EINVAL | libc::ENOSYS
            )
    }
}

fn last_errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

const INLINE_HANDLE: usize = 20;

/// A directory's identity: its filesystem (interned fsid and handle type) and handle bytes,
/// inline for the usual sizes (ext4, xfs, tmpfs: 8 to 16 bytes; btrfs: 20), 24 bytes in all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Handle {
    Inline {
        fs: u16,
        len: u8,
        bytes: [u8; INLINE_HANDLE],
    },
    Heap {
        fs: u16,
        bytes: Box<[u8]>,
    },
}

impl Handle {
    fn new(fs: u16, bytes: &[u8]) -> Handle {
        if bytes.len() <= INLINE_HANDLE {
            let mut inline = [0u8; INLINE_HANDLE];
            inline[..bytes.len()].copy_from_slice(bytes);
            Handle::Inline {
                fs,
                len: bytes.len() as u8,
                bytes: inline,
            }
        } else {
            Handle::Heap {
                fs,
                bytes: bytes.into(),
            }
        }
    }
}

/// A hasher for the handle map's integer and handle keys, and the live index's watch sets: they
/// come from the kernel (inode and generation numbers, watch descriptors), so SipHash's
/// resistance to chosen keys buys nothing, and hashing is a tenth of listing a directory. Each
/// word is folded in and mixed (the splitmix64 finaliser), so the low bits hashbrown picks
/// buckets with and the top seven it tags them with both vary.
#[derive(Default, Clone, Copy)]
pub struct Mix(u64);

impl Mix {
    fn fold(&mut self, word: u64) {
        let mut x = (self.0 ^ word).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = x ^ (x >> 31);
    }
}

impl std::hash::Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.fold(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.fold(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.fold(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.fold(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.fold(u64::from(value));
    }

    fn write_i32(&mut self, value: i32) {
        self.fold(u64::from(value as u32));
    }

    fn write_u64(&mut self, value: u64) {
        self.fold(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.fold(value as u64);
    }
}

pub(crate) type MixState = std::hash::BuildHasherDefault<Mix>;

/// Handles of 8 bytes or fewer (ext4, xfs with 32-bit inodes: the usual case) of one filesystem
/// and one length, held as integers: 17 bytes an entry where a `Handle` key takes 33.
struct ShortHandles {
    fs: u16,
    len: u8,
    keys: HashMap<u64, i32, MixState>,
}

fn short_handle(bytes: &[u8]) -> Option<u64> {
    (bytes.len() <= 8).then(|| {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(word)
    })
}

/// The handle map. Plain data: the parser works on it alone.
///
/// Only handle → key is stored (about 17 bytes a directory for handles of 8 bytes or fewer, 33
/// for longer ones, with the table's slack), plus the set of live keys (9): a key removed by
/// `remove` leaves its handle's entry behind, dropped when that handle is seen again or swept
/// once such entries are many (amortised O(1)).
#[derive(Default)]
pub struct HandleMap {
    /// (fsid, handle type) of each interned filesystem; its index is `Handle`'s `fs`.
    filesystems: Vec<([u8; 8], i32)>,
    /// Handles of 8 bytes or fewer, by (filesystem, length): a few classes in all.
    short: Vec<ShortHandles>,
    /// Longer handles.
    keys: HashMap<Handle, i32, MixState>,
    /// Live key → its filesystem (index in `filesystems`).
    live: HashMap<i32, u16, MixState>,
    /// Live keys per interned filesystem.
    live_per_fs: Vec<usize>,
    /// Filesystems whose last live key `remove` took, for their owner to unmark.
    emptied: Vec<[u8; 8]>,
    /// Keys removed whose entry in `short` or `keys` is still there.
    stale: HashSet<i32, MixState>,
    next_key: i32,
    next_cookie: u32,
}

impl HandleMap {
    pub fn new() -> HandleMap {
        HandleMap {
            next_key: KEY_BASE,
            next_cookie: 0,
            ..HandleMap::default()
        }
    }

    fn intern(&mut self, fsid: [u8; 8], handle_type: i32) -> u16 {
        if let Some(index) = self.lookup_fs(fsid, handle_type) {
            return index;
        }
        self.filesystems.push((fsid, handle_type));
        self.live_per_fs.push(0);
        (self.filesystems.len() - 1) as u16
    }

    fn lookup_fs(&self, fsid: [u8; 8], handle_type: i32) -> Option<u16> {
        self.filesystems
            .iter()
            .position(|known| *known == (fsid, handle_type))
            .map(|index| index as u16)
    }

    /// The key of a directory (the same one for the same directory), registering it if new.
    pub fn register(&mut self, fsid: [u8; 8], handle_type: i32, bytes: &[u8]) -> i32 {
        let fs = self.intern(fsid, handle_type);
        if let Some(key) = self.entry(fs, bytes) {
            if !self.stale.remove(&key) {
                return key;
            }
        }
        let key = self.next_key;
        // Keys are not reused (as inotify does not reuse watch descriptors soon): an event or
        // an IN_IGNORED of a removed key cannot be taken for a new directory's.
        self.next_key = if key == i32::MAX { KEY_BASE } else { key + 1 };
        match short_handle(bytes) {
            Some(word) => {
                let class = self.short_class(fs, bytes.len()).unwrap_or_else(|| {
                    self.short.push(ShortHandles {
                        fs,
                        len: bytes.len() as u8,
                        keys: HashMap::default(),
                    });
                    self.short.len() - 1
                });
                self.short[class].keys.insert(word, key);
            }
            None => {
                self.keys.insert(Handle::new(fs, bytes), key);
            }
        }
        self.live.insert(key, fs);
        self.live_per_fs[fs as usize] += 1;
        key
    }

    pub fn key_of(&self, fsid: [u8; 8], handle_type: i32, bytes: &[u8]) -> Option<i32> {
        let fs = self.lookup_fs(fsid, handle_type)?;
        let key = self.entry(fs, bytes)?;
        (!self.stale.contains(&key)).then_some(key)
    }

    /// The key stored for a handle, live or stale.
    fn entry(&self, fs: u16, bytes: &[u8]) -> Option<i32> {
        match short_handle(bytes) {
            Some(word) => {
                let class = self.short_class(fs, bytes.len())?;
                self.short[class].keys.get(&word).copied()
            }
            None => self.keys.get(&Handle::new(fs, bytes)).copied(),
        }
    }

    /// Where the short handles of `len` bytes of filesystem `fs` are kept, if any are.
    fn short_class(&self, fs: u16, len: usize) -> Option<usize> {
        self.short
            .iter()
            .position(|class| class.fs == fs && usize::from(class.len) == len)
    }

    /// Handle entries held, live or stale.
    fn entries(&self) -> usize {
        self.keys.len()
            + self
                .short
                .iter()
                .map(|class| class.keys.len())
                .sum::<usize>()
    }

    pub fn remove(&mut self, key: i32) -> bool {
        let Some(fs) = self.live.remove(&key) else {
            return false;
        };
        let count = &mut self.live_per_fs[fs as usize];
        *count -= 1;
        let fsid = self.filesystems[fs as usize].0;
        if *count == 0 && self.live_on(fsid) == 0 {
            self.emptied.push(fsid);
        }
        self.stale.insert(key);
        if self.stale.len() > 1024 && self.stale.len() * 2 > self.entries() {
            let stale = std::mem::take(&mut self.stale);
            self.keys.retain(|_, key| !stale.contains(key));
            self.keys.shrink_to_fit();
            for class in &mut self.short {
                class.keys.retain(|_, key| !stale.contains(key));
                class.keys.shrink_to_fit();
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Live keys on the filesystem `fsid` (whatever its handle types).
    pub fn live_on(&self, fsid: [u8; 8]) -> usize {
        self.filesystems
            .iter()
            .zip(&self.live_per_fs)
            .filter(|((known, _), _)| *known == fsid)
            .map(|(_, count)| count)
            .sum()
    }

    /// The filesystems left without a live key by `remove` since the last call.
    pub fn take_emptied(&mut self) -> Vec<[u8; 8]> {
        std::mem::take(&mut self.emptied)
    }

    /// Forgets every key of the filesystem `fsid`; returns them.
    fn remove_filesystem(&mut self, fsid: [u8; 8]) -> Vec<i32> {
        let filesystems: Vec<u16> = (0..self.filesystems.len())
            .filter(|&index| self.filesystems[index].0 == fsid)
            .map(|index| index as u16)
            .collect();
        let mut keys = Vec::new();
        for &fs in &filesystems {
            self.live_per_fs[fs as usize] = 0;
        }
        let (live, stale) = (&mut self.live, &mut self.stale);
        let mut forget = |key: i32| {
            if live.remove(&key).is_some() {
                keys.push(key);
            }
            stale.remove(&key);
        };
        self.keys.retain(|handle, key| {
            let fs = match handle {
                Handle::Inline { fs, .. } | Handle::Heap { fs, .. } => *fs,
            };
            if !filesystems.contains(&fs) {
                return true;
            }
            forget(*key);
            false
        });
        self.short.retain(|class| {
            if !filesystems.contains(&class.fs) {
                return true;
            }
            class.keys.values().for_each(|&key| forget(key));
            false
        });
        keys.sort_unstable();
        keys
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn cookie(&mut self) -> u32 {
        self.next_cookie = self.next_cookie.wrapping_add(1).max(1);
        self.next_cookie
    }
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// One fid record: the directory (or object) key if registered, and the name that follows.
struct Record<'a> {
    key: Option<i32>,
    name: &'a [u8],
}

/// Parses an info record body (after its 4-byte header): fsid, `struct file_handle`, then for
/// the *_NAME types a NUL-terminated name.
fn parse_fid<'a>(map: &HandleMap, body: &'a [u8], named: bool) -> Option<Record<'a>> {
    let fsid: [u8; 8] = body.get(0..8)?.try_into().ok()?;
    let handle_bytes = u32_at(body, 8)? as usize;
    let handle_type = u32_at(body, 12)? as i32;
    let handle = body.get(16..16 + handle_bytes)?;
    let name = if named {
        let rest = &body[16 + handle_bytes..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    } else {
        &[][..]
    };
    Some(Record {
        key: map.key_of(fsid, handle_type, handle),
        name,
    })
}

/// Turns a buffer of fanotify events (a whole `read`) into inotify-like events of registered
/// directories, appended to `out`. A malformed tail is ignored.
pub fn parse_events(map: &mut HandleMap, buf: &[u8], out: &mut Vec<Event>) {
    let mut at = 0usize;
    while at + METADATA_LEN <= buf.len() {
        let Some(event_len) = u32_at(buf, at).map(|n| n as usize) else {
            break;
        };
        if event_len < METADATA_LEN || at + event_len > buf.len() {
            break;
        }
        let event = &buf[at..at + event_len];
        at += event_len;
        if event[4] != METADATA_VERSION {
            continue;
        }
        let metadata_len = u16_at(event, 6).unwrap_or(METADATA_LEN as u16) as usize;
        let mask = u64_at(event, 8).unwrap_or(0);
        let fd = u32_at(event, 16).unwrap_or(0) as i32;
        if fd >= 0 {
            // Not expected of a FID group; never leak a descriptor.
            // SAFETY: the kernel handed this descriptor to us.
            unsafe { libc::close(fd) };
        }
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            out.push(Event {
                key: -1,
                mask: IN_Q_OVERFLOW,
                cookie: 0,
                name: Vec::new(),
            });
            continue;
        }
        let mut dir: Option<Record<'_>> = None;
        let mut old: Option<Record<'_>> = None;
        let mut new: Option<Record<'_>> = None;
        let mut object: Option<Record<'_>> = None;
        let mut rat = metadata_len.max(METADATA_LEN);
        while rat + 4 <= event.len() {
            let info_type = event[rat];
            let len = u16_at(event, rat + 2).unwrap_or(0) as usize;
            if len < 4 || rat + len > event.len() {
                break;
            }
            let body = &event[rat + 4..rat + len];
            rat += len;
            let map_ref: &HandleMap = map;
            match info_type {
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME => dir = parse_fid(map_ref, body, true),
                libc::FAN_EVENT_INFO_TYPE_DFID => dir = parse_fid(map_ref, body, false),
                libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => old = parse_fid(map_ref, body, true),
                libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => new = parse_fid(map_ref, body, true),
                libc::FAN_EVENT_INFO_TYPE_FID => object = parse_fid(map_ref, body, false),
                _ => {}
            }
        }
        let isdir = if mask & libc::FAN_ONDIR != 0 {
            IN_ISDIR
        } else {
            0
        };
        if mask & libc::FAN_RENAME != 0 {
            let from = old.as_ref().and_then(|r| r.key.map(|k| (k, r.name)));
            let to = new.as_ref().and_then(|r| r.key.map(|k| (k, r.name)));
            if from.is_none() && to.is_none() {
                continue; // both ends outside every volume
            }
            let cookie = map.cookie();
            if let Some((key, name)) = from {
                out.push(Event {
                    key,
                    mask: IN_MOVED_FROM | isdir,
                    cookie,
                    name: name.to_vec(),
                });
            }
            if let Some((key, name)) = to {
                out.push(Event {
                    key,
                    mask: IN_MOVED_TO | isdir,
                    cookie,
                    name: name.to_vec(),
                });
            }
            continue;
        }
        let on_self = isdir != 0
            && match &dir {
                None => true,
                Some(r) => r.name.is_empty() || r.name == b".",
            };
        if on_self {
            // An event on a directory itself: reported with its own handle (and "." as name).
            let key = object
                .as_ref()
                .and_then(|r| r.key)
                .or_else(|| dir.as_ref().and_then(|r| r.key));
            let Some(key) = key else { continue };
            if mask & libc::FAN_ATTRIB != 0 {
                out.push(self_event(key, IN_ATTRIB | IN_ISDIR));
            }
            if mask & libc::FAN_MOVE_SELF != 0 {
                out.push(self_event(key, IN_MOVE_SELF));
            }
            if mask & libc::FAN_DELETE_SELF != 0 {
                out.push(self_event(key, IN_DELETE_SELF));
                out.push(self_event(key, IN_IGNORED));
                map.remove(key);
            }
            continue;
        }
        let Some(Record {
            key: Some(key),
            name,
        }) = dir
        else {
            continue; // outside every volume
        };
        for (fan, inotify) in [
            (libc::FAN_CREATE, IN_CREATE),
            (libc::FAN_ATTRIB, IN_ATTRIB),
            (libc::FAN_CLOSE_WRITE, IN_CLOSE_WRITE),
            (libc::FAN_DELETE, IN_DELETE),
        ] {
            if mask & fan != 0 {
                out.push(Event {
                    key,
                    mask: inotify | isdir,
                    cookie: 0,
                    name: name.to_vec(),
                });
            }
        }
    }
}

fn self_event(key: i32, mask: u32) -> Event {
    Event {
        key,
        mask,
        cookie: 0,
        name: Vec::new(),
    }
}

/// Parses raw inotify events (the fallback instance's) into `out`, keys being the wds.
pub fn parse_inotify(buf: &[u8], out: &mut Vec<Event>) {
    let mut at = 0usize;
    while at + 16 <= buf.len() {
        let wd = u32_at(buf, at).unwrap_or(0) as i32;
        let mask = u32_at(buf, at + 4).unwrap_or(0);
        let cookie = u32_at(buf, at + 8).unwrap_or(0);
        let len = u32_at(buf, at + 12).unwrap_or(0) as usize;
        let Some(raw) = buf.get(at + 16..at + 16 + len) else {
            break;
        };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        out.push(Event {
            key: wd,
            mask,
            cookie,
            name: raw[..end].to_vec(),
        });
        at += 16 + len;
    }
}

struct State {
    map: HandleMap,
    /// The filesystems marked (fsid → the directory that marked it, for `unmark`).
    marked: HashMap<[u8; 8], CString>,
    /// mount id → fsid, so that a directory costs no `statfs` once its mount is known.
    mounts: HashMap<i32, [u8; 8]>,
    /// The fallback inotify instance, made on first need.
    inotify: Option<OwnedFd>,
    /// Filesystems (fsid) found unsupported, with the failure: the fallback is used for them.
    unsupported: HashMap<[u8; 8], Failure>,
    /// An inotify watch per marked filesystem (wd → fsid), for its IN_UNMOUNT: a filesystem
    /// mark goes away silently with its filesystem.
    sentinels: HashMap<i32, [u8; 8]>,
    /// Sentinels removed by `unmark`, whose IN_IGNORED is swallowed.
    retired_sentinels: HashSet<i32>,
    /// Keys removed by `unwatch`, whose IN_IGNORED the next `read` delivers (as the kernel does
    /// after `inotify_rm_watch`).
    ignored: Vec<i32>,
}

/// A fanotify group, its handle map and optionally the inotify fallback; see the module
/// documentation. Shared between the reading thread, a listing thread and the live index.
pub struct Fanotify {
    fanotify: OwnedFd,
    epoll: OwnedFd,
    inotify_mask: Option<u32>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Fanotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanotify").field("fd", &self.fd()).finish()
    }
}

fn registry() -> MutexGuard<'static, Vec<(RawFd, Weak<Fanotify>)>> {
    static REGISTRY: Mutex<Vec<(RawFd, Weak<Fanotify>)>> = Mutex::new(Vec::new());
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The instance whose `fd` this is, if any: the native lister registers directories with it
/// instead of adding inotify watches (see `livelist::WatchTarget`).
pub fn instance_for_fd(fd: RawFd) -> Option<Arc<Fanotify>> {
    registry()
        .iter()
        .find(|(known, _)| *known == fd)
        .and_then(|(_, weak)| weak.upgrade())
}

fn fsid_of(path: &CStr) -> Result<[u8; 8], Errno> {
    // SAFETY: statfs is plain data; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated, `st` a valid out pointer.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(last_errno());
    }
    // SAFETY: fsid_t is two ints: read its bytes as the kernel reports them in events.
    let bytes: [u8; 8] = unsafe { std::mem::transmute_copy(&st.f_fsid) };
    Ok(bytes)
}

/// `path` or its nearest ancestor that is on the filesystem `fsid` now.
fn path_on(path: &CStr, fsid: [u8; 8]) -> Option<CString> {
    let mut bytes = path.to_bytes().to_vec();
    loop {
        let candidate = CString::new(bytes.clone()).ok()?;
        if fsid_of(&candidate) == Ok(fsid) {
            return Some(candidate);
        }
        let cut = bytes.iter().rposition(|&b| b == b'/')?;
        if cut == 0 {
            return (bytes.len() > 1)
                .then(|| c"/".to_owned())
                .filter(|root| fsid_of(root) == Ok(fsid));
        }
        bytes.truncate(cut);
    }
}

fn open_path(path: &CStr) -> Result<OwnedFd, Errno> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated.
    crate::sys::retry_fd(|| unsafe { libc::open(path.as_ptr(), flags) })
}

/// A `struct file_handle` as `name_to_handle_at` fills it, and the mount id.
pub(crate) struct RawHandle {
    buf: [u8; 8 + MAX_HANDLE_SZ],
    mount_id: i32,
}

impl RawHandle {
    /// The mount the handle was read through (unique among the mounts present).
    pub(crate) fn mount_id(&self) -> i32 {
        self.mount_id
    }

    fn handle_type(&self) -> i32 {
        u32_at(&self.buf, 4).unwrap_or(0) as i32
    }

    fn bytes(&self) -> &[u8] {
        let len = (u32_at(&self.buf, 0).unwrap_or(0) as usize).min(MAX_HANDLE_SZ);
        &self.buf[8..8 + len]
    }
}

/// The handle of an open file or directory, read from its descriptor (no path lookup).
pub(crate) fn handle_of_open(fd: RawFd) -> Result<RawHandle, Errno> {
    handle_of(fd, c"", libc::AT_EMPTY_PATH)
}

/// Whether every directory of the filesystem holding the open `fd` has the device of its
/// mount: ext2/3/4, XFS, tmpfs and F2FS. Not btrfs or bcachefs, whose subvolumes have a device
/// of their own under one mount (a scan does not enter them).
pub(crate) fn one_device_per_mount(fd: RawFd) -> bool {
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const TMPFS: i64 = 0x0102_1994;
    const F2FS: i64 = 0xF2F5_2010;
    // SAFETY: statfs is plain data; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer; a bad `fd` only makes the call fail.
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 or u32 depending on the target
    let kind = st.f_type as i64;
    matches!(kind, EXT4 | XFS | TMPFS | F2FS)
}

/// `name_to_handle_at(dirfd, path, flags)`; a final symlink is not followed.
fn handle_of(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> Result<RawHandle, Errno> {
    let mut raw = RawHandle {
        buf: [0u8; 8 + MAX_HANDLE_SZ],
        mount_id: 0,
    };
    raw.buf[0..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    // SAFETY: `buf` is a `struct file_handle` with room for MAX_HANDLE_SZ bytes; `path` is
    // NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dirfd,
            path.as_ptr(),
            raw.buf.as_mut_ptr(),
            &mut raw.mount_id as *mut libc::c_int,
            flags,
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    Ok(raw)
}

impl Fanotify {
    /// A new group. `inotify_mask`: directories on filesystems fanotify cannot watch get an
    /// inotify watch with this mask instead (None: they fail with the reason).
    pub fn new(inotify_mask: Option<u32>) -> Result<Arc<Fanotify>, Failure> {
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::fanotify_init(
                INIT_FLAGS,
                (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32,
            )
        };
        if fd < 0 {
            return Err(Failure::new(Step::Init, last_errno()));
        }
        // SAFETY: just returned to us.
        let fanotify = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscall.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(Failure::new(Step::Init, last_errno()));
        }
        // SAFETY: just returned to us.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        epoll_add(&epoll, fanotify.as_raw_fd()).map_err(|e| Failure::new(Step::Init, e))?;
        let instance = Arc::new(Fanotify {
            fanotify,
            epoll,
            inotify_mask,
            state: Mutex::new(State {
                map: HandleMap::new(),
                marked: HashMap::new(),
                mounts: HashMap::new(),
                inotify: None,
                unsupported: HashMap::new(),
                sentinels: HashMap::new(),
                retired_sentinels: HashSet::new(),
                ignored: Vec::new(),
            }),
        });
        let mut registry = registry();
        registry.retain(|(_, weak)| weak.strong_count() > 0);
        registry.push((instance.fd(), Arc::downgrade(&instance)));
        Ok(instance)
    }

    /// The descriptor to wait on (an epoll set: readable when either source is).
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers directory `path` (not following a final symlink); returns its key, the same
    /// one for the same directory. Marks its filesystem first when it is new.
    pub fn watch(&self, path: &CStr) -> Result<i32, Failure> {
        let dir = open_path(path).map_err(|e| Failure::new(Step::Open, e))?;
        let handle = handle_of(dir.as_raw_fd(), c"", libc::AT_EMPTY_PATH);
        self.register(path, handle)
    }

    /// `watch` of a directory the caller opened (`dir`) from `path`: its handle is read from
    /// the descriptor, without a path lookup.
    pub fn watch_open(&self, dir: RawFd, path: &CStr) -> Result<i32, Failure> {
        self.register(path, handle_of_open(dir))
    }

    /// `watch` of a path the caller just found to be a directory (the native lister, which
    /// `lstat`ed it): one `name_to_handle_at`, without opening it first.
    pub fn watch_directory(&self, path: &CStr) -> Result<i32, Failure> {
        self.register(path, handle_of(libc::AT_FDCWD, path, 0))
    }

    /// `watch` of directory `path` by the handle the caller read (`handle_of_open`).
    pub(crate) fn register(
        &self,
        path: &CStr,
        handle: Result<RawHandle, Errno>,
    ) -> Result<i32, Failure> {
        let mut state = self.lock();
        let raw = match handle {
            Ok(raw) => raw,
            Err(errno) => {
                let failure = Failure::new(Step::Handle, errno);
                if failure.unsupported_filesystem() && self.inotify_mask.is_some() {
                    if let Ok(fsid) = fsid_of(path) {
                        state.unsupported.entry(fsid).or_insert(failure);
                    }
                }
                return self.fall_back(&mut state, path, failure);
            }
        };
        let fsid = match state.mounts.get(&raw.mount_id) {
            Some(fsid) => *fsid,
            None => {
                let fsid = fsid_of(path).map_err(|e| Failure::new(Step::Statfs, e))?;
                state.mounts.insert(raw.mount_id, fsid);
                fsid
            }
        };
        if let Some(failure) = state.unsupported.get(&fsid).copied() {
            return self.fall_back(&mut state, path, failure);
        }
        if !state.marked.contains_key(&fsid) {
            if let Err(errno) = self.mark(path) {
                let failure = Failure::new(Step::Mark, errno);
                if failure.unsupported_filesystem() {
                    state.unsupported.insert(fsid, failure);
                    return self.fall_back(&mut state, path, failure);
                }
                return Err(failure);
            }
            state.marked.insert(fsid, path.to_owned());
            let wd = self.inotify_watch(&mut state, path, IN_UNMOUNT)?;
            state.sentinels.insert(wd, fsid);
        }
        Ok(state.map.register(fsid, raw.handle_type(), raw.bytes()))
    }

    fn mark(&self, path: &CStr) -> Result<(), Errno> {
        self.fanotify_mark(libc::FAN_MARK_ADD, path)
    }

    fn fanotify_mark(&self, action: libc::c_uint, path: &CStr) -> Result<(), Errno> {
        // SAFETY: `path` is NUL-terminated.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fanotify.as_raw_fd(),
                action | libc::FAN_MARK_FILESYSTEM,
                MARK_MASK,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    /// Removes the marks (and sentinels) of the filesystems left without a registered directory:
    /// their events stop reaching the group. The mark is removed through the directory that made
    /// it or, that one gone, its nearest ancestor still on the filesystem; when there is none it
    /// stays, and its events go on being dropped as outside every volume (a later registration
    /// there marks it again, which the kernel merges).
    fn release_emptied(&self, state: &mut State) {
        for fsid in state.map.take_emptied() {
            if state.map.live_on(fsid) > 0 {
                continue;
            }
            let Some(path) = state.marked.remove(&fsid) else {
                continue;
            };
            if let Some(on_it) = path_on(&path, fsid) {
                // ENOENT (not marked any more) and the like leave nothing to do.
                let _ = self.fanotify_mark(libc::FAN_MARK_REMOVE, &on_it);
            }
            let sentinel = state
                .sentinels
                .iter()
                .find(|(_, known)| **known == fsid)
                .map(|(wd, _)| *wd);
            if let (Some(wd), Some(inotify)) = (sentinel, state.inotify.as_ref()) {
                state.sentinels.remove(&wd);
                // SAFETY: plain syscall on our descriptor.
                if unsafe { libc::inotify_rm_watch(inotify.as_raw_fd(), wd) } == 0 {
                    state.retired_sentinels.insert(wd);
                }
            }
        }
    }

    fn fall_back(&self, state: &mut State, path: &CStr, failure: Failure) -> Result<i32, Failure> {
        let Some(mask) = self.inotify_mask else {
            return Err(failure);
        };
        if !failure.unsupported_filesystem() {
            return Err(failure);
        }
        self.inotify_watch(state, path, mask)
    }

    /// An inotify watch on the instance kept alongside (made on first need).
    fn inotify_watch(&self, state: &mut State, path: &CStr, mask: u32) -> Result<i32, Failure> {
        if state.inotify.is_none() {
            // SAFETY: plain syscall.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(Failure::new(Step::Init, last_errno()));
            }
            // SAFETY: just returned to us.
            let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
            epoll_add(&self.epoll, fd).map_err(|e| Failure::new(Step::Init, e))?;
            state.inotify = Some(inotify);
        }
        let fd = state.inotify.as_ref().map(AsRawFd::as_raw_fd).unwrap_or(-1);
        // SAFETY: `path` is NUL-terminated.
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
        if wd < 0 {
            return Err(Failure::new(Step::Mark, last_errno()));
        }
        Ok(wd)
    }

    /// Forgets a key (its directory's events are dropped from now on); a fallback inotify
    /// watch is removed (its IN_IGNORED follows). False when the key was not known.
    pub fn remove(&self, key: i32) -> bool {
        let mut state = self.lock();
        if key >= KEY_BASE {
            let removed = state.map.remove(key);
            self.release_emptied(&mut state);
            return removed;
        }
        match &state.inotify {
            // SAFETY: plain syscall on our descriptor.
            Some(fd) => unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), key) == 0 },
            None => false,
        }
    }

    /// `remove`, and for a registered directory its IN_IGNORED queued for the next `read`: what
    /// removing an inotify watch does (the index removes the keys of removed directories).
    pub fn unwatch(&self, key: i32) -> bool {
        let removed = self.remove(key);
        if removed && key >= KEY_BASE {
            self.lock().ignored.push(key);
        }
        removed
    }

    /// Whether IN_IGNORED events of removed keys wait for `read`.
    pub fn has_queued(&self) -> bool {
        !self.lock().ignored.is_empty()
    }

    pub fn registered(&self) -> usize {
        self.lock().map.len()
    }

    pub fn filesystems_marked(&self) -> usize {
        self.lock().marked.len()
    }

    /// Why each filesystem watched with the inotify fallback could not be watched by fanotify.
    pub fn unsupported(&self) -> Vec<Failure> {
        self.lock().unsupported.values().copied().collect()
    }

    /// Every event queued now (at most `max_bytes` of them read), of registered directories.
    pub fn read(&self, max_bytes: usize) -> Result<Vec<Event>, Failure> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        let inotify = self.lock().inotify.as_ref().map(AsRawFd::as_raw_fd);
        for (fd, is_fanotify) in [(Some(self.fanotify.as_raw_fd()), true), (inotify, false)] {
            let Some(fd) = fd else { continue };
            while total < max_bytes {
                // SAFETY: `buf` is writable for its length.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    let errno = last_errno();
                    if errno == libc::EINTR {
                        continue;
                    }
                    if errno == libc::EAGAIN {
                        break;
                    }
                    return Err(Failure::new(Step::Read, errno));
                }
                if n == 0 {
                    break;
                }
                let n = n as usize;
                total += n;
                let mut state = self.lock();
                if is_fanotify {
                    parse_events(&mut state.map, &buf[..n], &mut out);
                    self.release_emptied(&mut state);
                } else {
                    let mut raw = Vec::new();
                    parse_inotify(&buf[..n], &mut raw);
                    for event in raw {
                        if state.retired_sentinels.contains(&event.key) {
                            if event.mask & IN_IGNORED != 0 {
                                state.retired_sentinels.remove(&event.key);
                            }
                            continue;
                        }
                        match state.sentinels.get(&event.key).copied() {
                            None => out.push(event),
                            Some(fsid) => sentinel_event(&mut state, fsid, &event, &mut out),
                        }
                    }
                }
            }
        }
        let ignored = std::mem::take(&mut self.lock().ignored);
        out.extend(ignored.into_iter().map(|key| Event {
            key,
            mask: IN_IGNORED,
            cookie: 0,
            name: Vec::new(),
        }));
        Ok(out)
    }

    /// Drops the instance from the registry (before its descriptors close).
    pub fn unregister(self: &Arc<Self>) {
        let fd = self.fd();
        registry().retain(|(known, weak)| *known != fd && weak.strong_count() > 0);
    }
}

/// An event of a filesystem's sentinel watch: on IN_UNMOUNT each key of the filesystem gets
/// IN_UNMOUNT then IN_IGNORED, as inotify watches would; on IN_IGNORED (its directory gone) the
/// filesystem is marked again, with a new sentinel, by the next directory registered on it.
fn sentinel_event(state: &mut State, fsid: [u8; 8], event: &Event, out: &mut Vec<Event>) {
    if event.mask & IN_UNMOUNT != 0 {
        for key in state.map.remove_filesystem(fsid) {
            out.push(self_event(key, IN_UNMOUNT));
            out.push(self_event(key, IN_IGNORED));
        }
    }
    if event.mask & IN_IGNORED != 0 {
        state.sentinels.remove(&event.key);
    }
    if event.mask & (IN_UNMOUNT | IN_IGNORED) != 0 {
        state.marked.remove(&fsid);
        state.mounts.clear(); // mount ids and fsids may be reused by the next filesystem
    }
}

fn epoll_add(epoll: &OwnedFd, fd: RawFd) -> Result<(), Errno> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: `event` is a valid epoll_event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::fs;

    const FSID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn record(info_type: u8, handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&FSID);
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(name) = name {
            body.extend_from_slice(name);
            body.push(0);
        }
        while (body.len() + 4) % 4 != 0 {
            body.push(0);
        }
        let mut rec = vec![info_type, 0];
        rec.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        rec.extend_from_slice(&body);
        rec
    }

    fn event(mask: u64, records: &[Vec<u8>]) -> Vec<u8> {
        let len = METADATA_LEN + records.iter().map(Vec::len).sum::<usize>();
        let mut buf = Vec::new();
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.push(METADATA_VERSION);
        buf.push(0);
        buf.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        buf.extend_from_slice(&mask.to_ne_bytes());
        buf.extend_from_slice(&(-1i32).to_ne_bytes()); // FAN_NOFD
        buf.extend_from_slice(&0i32.to_ne_bytes());
        for rec in records {
            buf.extend_from_slice(rec);
        }
        buf
    }

    /// An event of `mask` about the entry `name` of the directory `dir`, and nothing more.
    fn dirent(mask: u64, dir: &[u8], name: &[u8]) -> Vec<u8> {
        let record = record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, dir, Some(name));
        event(mask, &[record])
    }

    fn map_with(dirs: &[&[u8]]) -> (HandleMap, Vec<i32>) {
        let mut map = HandleMap::new();
        let keys = dirs.iter().map(|h| map.register(FSID, 1, h)).collect();
        (map, keys)
    }

    fn parse(map: &mut HandleMap, buf: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        parse_events(map, buf, &mut out);
        out
    }

    fn ev(key: i32, mask: u32, cookie: u32, name: &str) -> Event {
        Event {
            key,
            mask,
            cookie,
            name: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn registering_the_same_handle_gives_the_same_key_and_removed_keys_are_not_reused() {
        let (mut map, keys) = map_with(&[b"aaaaaaaa", b"bbbbbbbb"]);
        assert_ne!(keys[0], keys[1]);
        assert!(keys.iter().all(|k| *k >= KEY_BASE));
        assert_eq!(map.register(FSID, 1, b"aaaaaaaa"), keys[0]);
        assert!(map.remove(keys[0]));
        assert!(!map.remove(keys[0]));
        let again = map.register(FSID, 1, b"aaaaaaaa");
        assert!(again != keys[0] && again != keys[1]);
        // Same bytes on another filesystem: another directory.
        assert_ne!(map.register([9; 8], 1, b"bbbbbbbb"), keys[1]);
        let long = [7u8; 40];
        let key = map.register(FSID, 1, &long);
        assert_eq!(map.key_of(FSID, 1, &long), Some(key));
        assert!(std::mem::size_of::<Handle>() <= 24);
    }

    #[test]
    fn short_handles_of_other_lengths_or_filesystems_are_other_directories() {
        let mut map = HandleMap::new();
        // The same integer once padded: a 4-byte handle and an 8-byte one ending in zeros.
        let four = map.register(FSID, 1, &[1, 2, 3, 4]);
        let eight = map.register(FSID, 1, &[1, 2, 3, 4, 0, 0, 0, 0]);
        let other_type = map.register(FSID, 2, &[1, 2, 3, 4]);
        let nine = map.register(FSID, 1, &[1, 2, 3, 4, 0, 0, 0, 0, 0]);
        let keys = [four, eight, other_type, nine];
        assert_eq!(HashSet::<i32>::from_iter(keys).len(), 4, "{keys:?}");
        assert_eq!(map.key_of(FSID, 1, &[1, 2, 3, 4]), Some(four));
        assert_eq!(map.key_of(FSID, 1, &[1, 2, 3, 4, 0, 0, 0, 0]), Some(eight));
        assert_eq!(map.key_of(FSID, 1, &[1, 2, 3]), None);
        assert_eq!(map.key_of([9; 8], 1, &[1, 2, 3, 4]), None);
        // Forgetting the filesystem forgets its short and long handles alike.
        let mut gone = map.remove_filesystem(FSID);
        gone.sort_unstable();
        let mut all = keys.to_vec();
        all.sort_unstable();
        assert_eq!(gone, all);
        assert_eq!(map.entries(), 0);
        assert!(map.is_empty());
    }

    #[test]
    fn removed_keys_are_swept_and_their_directories_can_come_back() {
        let mut map = HandleMap::new();
        let handles: Vec<[u8; 8]> = (0..5000u64).map(u64::to_ne_bytes).collect();
        let keys: Vec<i32> = handles.iter().map(|h| map.register(FSID, 1, h)).collect();
        for key in &keys[..4000] {
            assert!(map.remove(*key));
        }
        assert_eq!(map.len(), 1000);
        assert!(map.entries() < 5000, "stale entries swept");
        assert_eq!(map.key_of(FSID, 1, &handles[10]), None);
        assert_eq!(map.key_of(FSID, 1, &handles[4500]), Some(keys[4500]));
        let back = map.register(FSID, 1, &handles[10]);
        assert!(!keys.contains(&back));
        assert_eq!(map.key_of(FSID, 1, &handles[10]), Some(back));
        assert_eq!(map.len(), 1001);
    }

    #[test]
    fn dirent_events_of_known_directories_become_inotify_events_and_others_are_dropped() {
        let (mut map, keys) = map_with(&[b"dir-aaaa"]);
        let mut buf = event(
            libc::FAN_CREATE | libc::FAN_CLOSE_WRITE,
            &[
                record(
                    libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                    b"dir-aaaa",
                    Some(b"a.mkv"),
                ),
                record(libc::FAN_EVENT_INFO_TYPE_FID, b"file-1", None),
            ],
        );
        buf.extend(dirent(
            libc::FAN_CREATE | libc::FAN_ONDIR,
            b"dir-aaaa",
            b"Sub \xff",
        ));
        buf.extend(dirent(libc::FAN_DELETE, b"elsewhere", b"x"));
        buf.extend(dirent(
            libc::FAN_ATTRIB | libc::FAN_DELETE,
            b"dir-aaaa",
            b"b.mkv",
        ));
        let out = parse(&mut map, &buf);
        let k = keys[0];
        assert_eq!(
            out,
            [
                ev(k, IN_CREATE, 0, "a.mkv"),
                ev(k, IN_CLOSE_WRITE, 0, "a.mkv"),
                Event {
                    key: k,
                    mask: IN_CREATE | IN_ISDIR,
                    cookie: 0,
                    name: b"Sub \xff".to_vec()
                },
                ev(k, IN_ATTRIB, 0, "b.mkv"),
                ev(k, IN_DELETE, 0, "b.mkv"),
            ]
        );
    }

    #[test]
    fn renames_pair_up_with_a_cookie_and_a_move_across_the_boundary_keeps_its_known_side() {
        let (mut map, keys) = map_with(&[b"dir-aaaa", b"dir-bbbb"]);
        let rename = |from: &[u8], to: &[u8], mask: u64| {
            event(
                libc::FAN_RENAME | mask,
                &[
                    record(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, from, Some(b"old")),
                    record(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, to, Some(b"new")),
                    record(libc::FAN_EVENT_INFO_TYPE_FID, b"object", None),
                ],
            )
        };
        let mut buf = rename(b"dir-aaaa", b"dir-bbbb", 0);
        buf.extend(rename(b"dir-aaaa", b"outside!", libc::FAN_ONDIR));
        buf.extend(rename(b"outside!", b"dir-bbbb", 0));
        buf.extend(rename(b"outside!", b"outside?", 0));
        let out = parse(&mut map, &buf);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], ev(keys[0], IN_MOVED_FROM, out[0].cookie, "old"));
        assert_eq!(out[1], ev(keys[1], IN_MOVED_TO, out[0].cookie, "new"));
        assert_ne!(out[0].cookie, 0);
        assert_eq!(out[2].mask, IN_MOVED_FROM | IN_ISDIR);
        assert_eq!((out[2].key, out[3].key), (keys[0], keys[1]));
        assert_eq!(out[3].mask, IN_MOVED_TO);
        let cookies: HashSet<u32> = out.iter().map(|e| e.cookie).collect();
        assert_eq!(cookies.len(), 3, "each rename has its own cookie");
    }

    #[test]
    fn a_deleted_directory_gets_delete_self_then_ignored_and_is_forgotten() {
        let (mut map, keys) = map_with(&[b"dir-aaaa", b"dir-bbbb"]);
        let mut buf = event(
            libc::FAN_DELETE_SELF | libc::FAN_ONDIR,
            &[
                record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, b"dir-bbbb", Some(b".")),
                record(libc::FAN_EVENT_INFO_TYPE_FID, b"dir-bbbb", None),
            ],
        );
        buf.extend(dirent(
            libc::FAN_MOVE_SELF | libc::FAN_ONDIR,
            b"dir-aaaa",
            b".",
        ));
        buf.extend(event(libc::FAN_Q_OVERFLOW, &[]));
        let out = parse(&mut map, &buf);
        assert_eq!(
            out,
            [
                ev(keys[1], IN_DELETE_SELF, 0, ""),
                ev(keys[1], IN_IGNORED, 0, ""),
                ev(keys[0], IN_MOVE_SELF, 0, ""),
                ev(-1, IN_Q_OVERFLOW, 0, ""),
            ]
        );
        assert_eq!(map.key_of(FSID, 1, b"dir-bbbb"), None);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_truncated_buffer_is_ignored_past_the_last_whole_event() {
        let (mut map, keys) = map_with(&[b"dir-aaaa"]);
        let mut buf = dirent(libc::FAN_CREATE, b"dir-aaaa", b"a");
        let whole = buf.len();
        buf.extend(dirent(libc::FAN_CREATE, b"dir-aaaa", b"b"));
        let out = parse(&mut map, &buf[..whole + 30]);
        assert_eq!(out, [ev(keys[0], IN_CREATE, 0, "a")]);
        let mut raw = Vec::new();
        for (wd, mask, name) in [(3i32, IN_CREATE, &b"x.mkv\0\0\0"[..]), (4, IN_IGNORED, b"")] {
            raw.extend_from_slice(&wd.to_ne_bytes());
            raw.extend_from_slice(&mask.to_ne_bytes());
            raw.extend_from_slice(&0u32.to_ne_bytes());
            raw.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            raw.extend_from_slice(name);
        }
        let mut out = Vec::new();
        parse_inotify(&raw, &mut out);
        assert_eq!(
            out,
            [ev(3, IN_CREATE, 0, "x.mkv"), ev(4, IN_IGNORED, 0, "")]
        );
    }

    /// The native lister given this instance's descriptor registers each directory it lists.
    #[test]
    fn the_lister_registers_directories_with_a_fanotify_instance() {
        use std::os::unix::fs::MetadataExt;
        let Some((fan, root)) = kernel_group("fanlist") else {
            return;
        };
        for dir in ["A/1", "A/2", "B", "@eaDir/x"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("A/1/a.mkv"), b"a").unwrap();
        let filter = crate::filter::Filter::default();
        let device = fs::metadata(&root).unwrap().dev();
        let options = crate::livelist::ListOptions::new(fan.fd(), 0, device, &filter);
        let top = root.as_os_str().as_encoded_bytes();
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let listing = crate::livelist::list_tree(top, &options, &cancel).unwrap();
        let keys: Vec<i32> = listing
            .dirs
            .iter()
            .map(|dir| match dir.watch {
                crate::livelist::Watch::Wd(key) => key,
                other => panic!("not registered: {other:?}"),
            })
            .collect();
        assert_eq!(keys.len(), 5, "root, A, A/1, A/2, B (not @eaDir)");
        assert!(keys.iter().all(|key| *key >= KEY_BASE));
        assert_eq!(fan.registered(), 5);
        let c = CString::new(root.join("A/1").as_os_str().as_encoded_bytes()).unwrap();
        assert!(keys.contains(&fan.watch(&c).unwrap()));
        assert_eq!(listing.files.len(), 1);
        fan.unregister();
        assert!(instance_for_fd(fan.fd()).is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    /// A group and an empty temporary directory, when this process may use fanotify
    /// (CAP_SYS_ADMIN, Linux 5.17+): the tests against the kernel are skipped otherwise.
    fn kernel_group(tag: &str) -> Option<(Arc<Fanotify>, std::path::PathBuf)> {
        let Ok(fan) = Fanotify::new(None) else {
            eprintln!("fanotify not available here: skipped");
            return None;
        };
        Some((fan, crate::testing::scratch_dir(tag)))
    }

    fn c(path: &std::path::Path) -> CString {
        CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
    }

    #[test]
    fn a_filesystem_left_without_directories_is_unmarked_and_marked_again_when_needed() {
        let Some((fan, root)) = kernel_group("fanunmark") else {
            return;
        };
        fs::create_dir_all(root.join("a/sub")).unwrap();
        let read_all = |fan: &Fanotify| {
            let mut events = Vec::new();
            for _ in 0..10 {
                events.extend(fan.read(1 << 20).unwrap());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            events
        };
        let a = fan.watch(&c(&root.join("a"))).unwrap();
        let sub = fan.watch(&c(&root.join("a/sub"))).unwrap();
        assert_eq!(fan.filesystems_marked(), 1);
        assert!(fan.remove(sub));
        assert_eq!(
            fan.filesystems_marked(),
            1,
            "a directory is still registered there"
        );
        let kernel_marks = |fan: &Fanotify| {
            let info = format!("/proc/self/fdinfo/{}", fan.fanotify.as_raw_fd());
            let info = fs::read_to_string(info).unwrap();
            info.lines()
                .filter(|l| l.starts_with("fanotify sdev"))
                .count()
        };
        assert_eq!(kernel_marks(&fan), 1);
        assert!(fan.remove(a));
        assert_eq!(fan.filesystems_marked(), 0);
        assert_eq!(kernel_marks(&fan), 0, "the filesystem mark is removed");
        // Nothing of that filesystem reaches the group any more, not even the sentinel's end.
        fs::write(root.join("a/x.mkv"), b"x").unwrap();
        assert!(read_all(&fan).is_empty());
        // Registered again: marked again, with its events.
        let again = fan.watch(&c(&root.join("a"))).unwrap();
        assert_ne!(again, a);
        assert_eq!(fan.filesystems_marked(), 1);
        assert_eq!(kernel_marks(&fan), 1);
        fs::write(root.join("a/y.mkv"), b"y").unwrap();
        let events = read_all(&fan);
        assert!(events
            .iter()
            .any(|e| (e.key, e.mask, e.name.as_slice()) == (again, IN_CLOSE_WRITE, &b"y.mkv"[..])));
        // A directory deleted takes its key: the last one gone unmarks too.
        fs::remove_dir(root.join("a/sub")).unwrap();
        fs::remove_file(root.join("a/x.mkv")).unwrap();
        fs::remove_file(root.join("a/y.mkv")).unwrap();
        fs::remove_dir(root.join("a")).unwrap();
        let events = read_all(&fan);
        assert!(events
            .iter()
            .any(|e| (e.key, e.mask) == (again, IN_IGNORED)));
        assert_eq!(fan.registered(), 0);
        assert_eq!(fan.filesystems_marked(), 0);
        assert_eq!(kernel_marks(&fan), 0);
        fan.unregister();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn real_events_of_registered_directories_only() {
        let Some((fan, root)) = kernel_group("fanotify") else {
            return;
        };
        fs::create_dir_all(root.join("watched/sub")).unwrap();
        fs::create_dir_all(root.join("outside")).unwrap();
        let watched = fan.watch(&c(&root.join("watched"))).unwrap();
        let sub = fan.watch(&c(&root.join("watched/sub"))).unwrap();
        assert_eq!(fan.watch(&c(&root.join("watched"))).unwrap(), watched);
        assert_eq!(fan.registered(), 2);
        assert_eq!(fan.filesystems_marked(), 1);
        let file = root.join("watched").join("a.mkv");
        assert_eq!(
            fan.watch(&c(&file.with_extension("nope")))
                .unwrap_err()
                .step,
            Step::Open
        );
        fs::write(root.join("outside/noise.mkv"), b"x").unwrap();
        fs::write(&file, b"x").unwrap();
        fs::rename(&file, root.join("watched/sub/b.mkv")).unwrap();
        fs::rename(root.join("watched/sub/b.mkv"), root.join("outside/b.mkv")).unwrap();
        fs::remove_dir(root.join("watched/sub")).unwrap();
        let mut events = Vec::new();
        for _ in 0..50 {
            events.extend(fan.read(1 << 20).unwrap());
            if events.iter().any(|e| e.mask & IN_IGNORED != 0) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let seen: Vec<(i32, u32, &[u8])> = events
            .iter()
            .filter(|e| e.mask & IN_ATTRIB == 0)
            .map(|e| (e.key, e.mask, e.name.as_slice()))
            .collect();
        assert_eq!(
            seen[..5],
            [
                (watched, IN_CREATE, &b"a.mkv"[..]),
                (watched, IN_CLOSE_WRITE, b"a.mkv"),
                (watched, IN_MOVED_FROM, b"a.mkv"),
                (sub, IN_MOVED_TO, b"b.mkv"),
                (sub, IN_MOVED_FROM, b"b.mkv"),
            ]
        );
        // The directory's own end and its parent's entry removal, in the kernel's order.
        let mut rest = seen[5..].to_vec();
        rest.sort();
        assert_eq!(
            rest,
            [
                (watched, IN_DELETE | IN_ISDIR, &b"sub"[..]),
                (sub, IN_DELETE_SELF, b""),
                (sub, IN_IGNORED, b""),
            ]
        );
        let moved: Vec<&Event> = events.iter().filter(|e| e.cookie != 0).collect();
        assert_eq!(moved[0].cookie, moved[1].cookie);
        assert_ne!(moved[1].cookie, moved[2].cookie);
        assert_eq!(fan.registered(), 1);
        fan.unregister();
        fs::remove_dir_all(&root).unwrap();
    }
}
