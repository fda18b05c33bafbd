//! The live watcher's listing of a directory tree, with its inotify watches added on the way.
//!
//! `list_tree` walks one tree depth first, like the Python walker it replaces for whole-volume
//! listings: each directory is watched *before* it is listed (a file created in between is then
//! either listed or reported by an event), its subdirectories are entered when the name filter,
//! UTF-8 and the volume's device allow, and its media files are `lstat`ed. Once the watch limit
//! is hit (ENOSPC/EMFILE, or the caller's own budget is spent) no further watch is tried, but the
//! listing goes on: the caller keeps the whole tree and covers the unwatched part by rescans.
//!
//! The result is two flat arenas — directories (each naming its parent's index, parents first)
//! and media files (each naming its directory's index) — that the caller turns into its index.
//! Nothing here needs Python; `python.rs` runs it with the interpreter detached.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::filter::Filter;
use crate::paths::join;
use crate::sys::{self, Errno};

/// `parent` of the top directory.
pub const NO_PARENT: u32 = u32::MAX;

/// What became of a directory's watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// Watched with this descriptor.
    Wd(i32),
    /// Not watched: the watch limit was reached (at this directory or before it).
    Limit,
    /// `inotify_add_watch` failed with this errno (EACCES...): not watched.
    Failed(Errno),
}

/// A name in `Listing::names`: one buffer for every name, so that a million of them cost two
/// words each and one allocation (freed at once, and returned to the system, when dropped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Name {
    pub start: u32,
    pub len: u32,
}

#[derive(Debug)]
pub struct ListedDir {
    pub parent: u32,
    /// Name in its parent (empty for the top directory).
    pub name: Name,
    pub watch: Watch,
    /// errno of opening or reading the directory (0: listed). Its content is unknown then.
    pub read_error: Errno,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub dir: u32,
    pub name: Name,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub nlink: u64,
}

#[derive(Debug, Default)]
pub struct Listing {
    pub dirs: Vec<ListedDir>,
    pub files: Vec<ListedFile>,
    pub names: Vec<u8>,
    /// Why watching stopped: the errno of the add_watch that hit the limit, or 0 when the
    /// caller's budget ran out. None: every directory could be watched.
    pub watch_limit: Option<Errno>,
    /// The top directory is gone (or is not a directory): `dirs` and `files` are empty.
    pub gone: bool,
    /// Parts listed by threads of their own and put together (1: listed by one thread).
    pub parts: usize,
}

pub struct ListOptions<'a> {
    /// The inotify instance's descriptor (or a fanotify instance's: see `WatchTarget`).
    pub inotify_fd: RawFd,
    pub mask: u32,
    /// `st_dev` of the volume: directories of another filesystem are not entered.
    pub device: u64,
    pub filter: &'a Filter,
    /// Absolute paths not to enter (roots of nested volumes).
    pub excluded: &'a [Vec<u8>],
    /// Watches that may still be added (the caller's own cap); None: no cap.
    pub watch_budget: Option<usize>,
    /// Threads listing a large tree (0: `DEFAULT_LIST_THREADS`).
    pub threads: usize,
}

impl<'a> ListOptions<'a> {
    /// Options with nothing excluded, no watch budget and the default threads.
    pub fn new(inotify_fd: RawFd, mask: u32, device: u64, filter: &'a Filter) -> Self {
        ListOptions {
            inotify_fd,
            mask,
            device,
            filter,
            excluded: &[],
            watch_budget: None,
            threads: 0,
        }
    }
}

impl Listing {
    pub fn name(&self, name: Name) -> &[u8] {
        &self.names[name.start as usize..(name.start + name.len) as usize]
    }

    fn add_name(&mut self, name: &[u8]) -> Name {
        let start = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.extend_from_slice(name);
        Name {
            start,
            len: name.len() as u32,
        }
    }
}

/// The listing was cancelled (the watcher is shutting down).
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

/// Where a directory's watch goes: an inotify watch on `inotify_fd`, or, when that descriptor
/// is a fanotify instance's (`crate::fanotify::instance_for_fd`), a file handle registered in its
/// handle map (its filesystem mark covers the directory already).
enum WatchTarget {
    Inotify { fd: RawFd, mask: u32 },
    Fanotify(std::sync::Arc<crate::fanotify::Fanotify>),
}

impl WatchTarget {
    fn for_fd(fd: RawFd, mask: u32) -> WatchTarget {
        match crate::fanotify::instance_for_fd(fd) {
            Some(instance) => WatchTarget::Fanotify(instance),
            None => WatchTarget::Inotify { fd, mask },
        }
    }

    /// `handle`: the directory's fanotify handle, read by the caller already.
    fn watch(
        &self,
        path: &CStr,
        dir: Option<&OwnedFd>,
        handle: Option<Handle>,
    ) -> Result<i32, Errno> {
        match self {
            WatchTarget::Inotify { fd, mask } => add_watch(*fd, path, *mask),
            WatchTarget::Fanotify(instance) => match (handle, dir) {
                (Some(handle), _) => instance.register(path, handle),
                (None, Some(dir)) => instance.watch_open(dir.as_raw_fd(), path),
                (None, None) => instance.watch_directory(path),
            }
            .map_err(|f| f.errno),
        }
    }
}

type Handle = Result<crate::fanotify::RawHandle, Errno>;

/// Whether a directory opened below the top may be on another filesystem, so that its device
/// must be read (`fstat`) and compared with the volume's. Under fanotify the handle, read
/// anyway, names the directory's mount: on the top's mount, on a filesystem with one device
/// per mount, it is the volume's filesystem and the `fstat` is spared.
struct MountCheck {
    /// The top's mount id; -1 while unknown, or when its filesystem has devices below a mount.
    top_mount: AtomicI64,
}

impl MountCheck {
    /// The top directory, open, and its handle: its mount is the reference when its filesystem
    /// has one device per mount.
    fn learn_top(&self, top: &OwnedFd, handle: &Handle) {
        if let Ok(handle) = handle {
            if crate::fanotify::one_device_per_mount(top.as_raw_fd()) {
                let mount = i64::from(handle.mount_id());
                self.top_mount.store(mount, Ordering::Relaxed);
            }
        }
    }

    fn needs_fstat(&self, handle: Option<&Handle>) -> bool {
        let top = self.top_mount.load(Ordering::Relaxed);
        match handle {
            Some(Ok(handle)) => top < 0 || i64::from(handle.mount_id()) != top,
            _ => true,
        }
    }
}

fn add_watch(fd: RawFd, path: &CStr, mask: u32) -> Result<i32, Errno> {
    // SAFETY: `path` is NUL-terminated; a bad `fd` only makes the call fail.
    sys::retry(|| unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) })
}

/// Opens a directory without following a final symlink (the top one may be followed: the
/// caller resolved it): `name` relative to `parent` when given, else `path`.
fn open_dir(path: &CStr, at: Option<(&OwnedFd, &CStr)>, follow: bool) -> Result<OwnedFd, Errno> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let (dirfd, path) = match at {
        Some((parent, name)) => (parent.as_raw_fd(), name),
        None => (libc::AT_FDCWD, path),
    };
    // SAFETY: `path` is NUL-terminated.
    sys::retry_fd(|| unsafe { libc::openat(dirfd, path.as_ptr(), flags) })
}

fn is_gone(errno: Errno) -> bool {
    errno == libc::ENOENT || errno == libc::ENOTDIR || errno == libc::ELOOP
}

/// A directory still to be listed: its parent (an index in the listing part being built), the
/// length of its own name at the end of `path`, and its absolute path.
struct Pending {
    parent: u32,
    name_len: u32,
    path: Vec<u8>,
    /// The parent directory, open: the directory is opened relative to it (no path lookup).
    /// None for the top, or when `MAX_OPEN_PARENTS` were held already.
    parent_fd: Option<Arc<ParentFd>>,
}

/// A listed directory kept open for its subdirectories still pending, counted in `open`.
struct ParentFd {
    fd: OwnedFd,
    open: Arc<AtomicUsize>,
}

impl Drop for ParentFd {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Directories held open at once for their pending subdirectories (by all threads): past it,
/// subdirectories are opened by path. Depth first, a thread holds about one per level.
const MAX_OPEN_PARENTS: usize = 128;

/// A directory handed to another thread: `parent` indexes the part numbered `part`.
struct Handed {
    part: u32,
    pending: Pending,
}

/// One thread's listing of one or more subtrees: a `Listing` whose directories without a parent
/// in it (`NO_PARENT`) are `roots`, each naming its parent in a part numbered lower (or
/// NO_PARENT: the top).
struct Part {
    id: u32,
    /// (index in `listing.dirs`, part of the parent, index of the parent there)
    roots: Vec<(u32, u32, u32)>,
    listing: Listing,
}

/// The directories waiting for a thread, and who is idle.
struct Queue {
    handed: Vec<Handed>,
    workers: usize,
    idle: usize,
    done: bool,
}

/// What the listing threads share.
struct Shared<'a> {
    options: &'a ListOptions<'a>,
    target: WatchTarget,
    cancel: &'a AtomicBool,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Threads waiting for work (read without the lock, to decide whether to hand some).
    idle: AtomicUsize,
    next_part: AtomicU32,
    /// Watches that may still be added (`usize::MAX`: no cap).
    budget: AtomicUsize,
    limit_hit: AtomicBool,
    limit: Mutex<Option<Errno>>,
    /// The top directory is gone.
    gone: AtomicBool,
    /// `ParentFd`s alive.
    open_parents: Arc<AtomicUsize>,
    mounts: MountCheck,
}

/// Directories listed by the calling thread before others join in: a new folder's listing
/// (the common case on the event path) spawns no thread.
const ALONE: usize = 64;

/// Threads listing a large tree when the caller does not say (`ListOptions::threads` 0).
pub const DEFAULT_LIST_THREADS: usize = 4;

impl Shared<'_> {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next directory for a thread out of work; None once every thread is (the listing is
    /// over) or it is stopped.
    fn take(&self) -> Option<Handed> {
        let mut queue = self.lock();
        loop {
            if queue.done {
                return None;
            }
            if let Some(handed) = queue.handed.pop() {
                return Some(handed);
            }
            queue.idle += 1;
            self.idle.store(queue.idle, Ordering::Relaxed);
            if queue.idle == queue.workers {
                queue.done = true;
                self.wake.notify_all();
                return None;
            }
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            queue.idle -= 1;
            self.idle.store(queue.idle, Ordering::Relaxed);
        }
    }

    fn hand(&self, part: u32, stack: &mut Vec<Pending>) {
        // The shallowest half: the largest subtrees.
        let half = stack.len() / 2;
        let mut queue = self.lock();
        queue
            .handed
            .extend(stack.drain(..half).map(|pending| Handed { part, pending }));
        self.wake.notify_all();
    }

    fn stop(&self) {
        let mut queue = self.lock();
        queue.done = true;
        self.wake.notify_all();
    }

    fn add_worker(&self) {
        self.lock().workers += 1;
    }

    fn hit_limit(&self, errno: Errno) {
        let mut limit = self.limit.lock().unwrap_or_else(|p| p.into_inner());
        limit.get_or_insert(errno);
        self.limit_hit.store(true, Ordering::Relaxed);
    }

    /// Watch first, then list: nothing created in between is missed. `dir`: the directory,
    /// open (fanotify identifies it through the descriptor).
    fn watch(&self, path: &CStr, dir: Option<&OwnedFd>, handle: Option<Handle>) -> Watch {
        if self.limit_hit.load(Ordering::Relaxed) {
            return Watch::Limit;
        }
        let spent = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| match left {
                usize::MAX => Some(usize::MAX),
                0 => None,
                left => Some(left - 1),
            })
            .is_err();
        if spent {
            self.hit_limit(0);
            return Watch::Limit;
        }
        match self.target.watch(path, dir, handle) {
            Ok(wd) => Watch::Wd(wd),
            Err(errno) if errno == libc::ENOSPC || errno == libc::EMFILE => {
                self.hit_limit(errno);
                Watch::Limit
            }
            Err(errno) => Watch::Failed(errno),
        }
    }

    /// Lists one subtree (a handed directory) depth first into `part`, handing half of what
    /// is pending to idle threads. `spawn` is called once `ALONE` directories were listed with
    /// more pending.
    fn list_subtree(
        &self,
        part: &mut Part,
        handed: Handed,
        buf: &mut [u8],
        spawn: &mut dyn FnMut(),
    ) -> Result<(), Cancelled> {
        let top = handed.part == NO_PARENT;
        let listing = &mut part.listing;
        part.roots.push((
            listing.dirs.len() as u32,
            handed.part,
            handed.pending.parent,
        ));
        let mut stack = vec![Pending {
            parent: NO_PARENT,
            ..handed.pending
        }];
        let mut listed = 0usize;
        while let Some(pending) = stack.pop() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Cancelled);
            }
            self.list_dir(listing, pending, top, buf, &mut stack);
            if self.gone.load(Ordering::Relaxed) {
                return Ok(());
            }
            listed += 1;
            if listed >= ALONE && stack.len() > 1 {
                spawn();
            }
            if stack.len() > 1 && self.idle.load(Ordering::Relaxed) > 0 {
                self.hand(part.id, &mut stack);
            }
        }
        Ok(())
    }

    /// Watches and lists one directory into `listing`, pushing its subdirectories.
    fn list_dir(
        &self,
        listing: &mut Listing,
        pending: Pending,
        top: bool,
        buf: &mut [u8],
        stack: &mut Vec<Pending>,
    ) {
        let options = self.options;
        let index = listing.dirs.len() as u32;
        let is_top = top && pending.parent == NO_PARENT;
        let path = pending.path;
        let own_name = &path[path.len() - pending.name_len as usize..];
        let Ok(c_path) = CString::new(path.clone()) else {
            return;
        };
        let c_name = CString::new(own_name).ok();
        let at = match (&pending.parent_fd, &c_name) {
            (Some(parent), Some(name)) => Some((&parent.fd, name.as_c_str())),
            _ => None,
        };
        // Opened first (relative to its parent, without following a symlink), so that the
        // device is read from the directory itself and fanotify identifies it by descriptor;
        // then watched; then read.
        let opened = open_dir(&c_path, at, is_top);
        drop(pending.parent_fd);
        let mut handle = None;
        if let Ok(dir) = &opened {
            if let WatchTarget::Fanotify(_) = self.target {
                let read = crate::fanotify::handle_of_open(dir.as_raw_fd());
                if is_top {
                    self.mounts.learn_top(dir, &read);
                }
                handle = Some(read);
            }
            if !is_top && self.mounts.needs_fstat(handle.as_ref()) {
                match sys::fstat(dir) {
                    // Another filesystem mounted here: not this volume.
                    Ok(st) if st.dev != options.device => return,
                    _ => {}
                }
            }
        }
        let name = listing.add_name(own_name);
        listing.dirs.push(ListedDir {
            parent: pending.parent,
            name,
            watch: Watch::Limit,
            read_error: 0,
        });
        let dir = match opened {
            Ok(dir) => dir,
            Err(errno) if is_gone(errno) => {
                if is_top {
                    self.gone.store(true, Ordering::Relaxed);
                    return;
                }
                // Gone since its parent was listed: its own event follows; forget it.
                listing.dirs[index as usize].read_error = errno;
                listing.dirs[index as usize].watch = Watch::Failed(errno);
                return;
            }
            Err(errno) => {
                // Unreadable (EACCES...): still watched by path, as inotify allows.
                let watch = self.watch(&c_path, None, None);
                let entry = &mut listing.dirs[index as usize];
                entry.watch = watch;
                entry.read_error = errno;
                return;
            }
        };
        let watch = self.watch(&c_path, Some(&dir), handle);
        if let Watch::Failed(errno) = watch {
            if is_gone(errno) {
                if is_top {
                    self.gone.store(true, Ordering::Relaxed);
                    return;
                }
                listing.dirs[index as usize].read_error = errno;
                listing.dirs[index as usize].watch = watch;
                return;
            }
        }
        listing.dirs[index as usize].watch = watch;
        let first_child = stack.len();
        loop {
            let n = match sys::getdents(&dir, buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(errno) => {
                    listing.dirs[index as usize].read_error = errno;
                    break;
                }
            };
            for entry in sys::DirEntries::new(&buf[..n]) {
                let name = entry.name.to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let d_type = entry.d_type;
                let maybe_dir = d_type == sys::DT_DIR || d_type == sys::DT_UNKNOWN;
                let maybe_file = d_type == sys::DT_REG || d_type == sys::DT_UNKNOWN;
                let wanted_dir = maybe_dir && options.filter.accepts_dir(name);
                let wanted_file = maybe_file && options.filter.accepts_file(name);
                if !wanted_dir && !wanted_file {
                    continue;
                }
                if std::str::from_utf8(name).is_err() {
                    continue; // cannot be reported as JSON text
                }
                if d_type == sys::DT_DIR {
                    // Its device is checked once it is opened: no lstat here.
                    if wanted_dir {
                        let child = join(&path, name);
                        if !options.excluded.contains(&child) {
                            stack.push(Pending {
                                parent: index,
                                name_len: name.len() as u32,
                                path: child,
                                parent_fd: None,
                            });
                        }
                    }
                    continue;
                }
                let Ok(st) = sys::lstat_at(dir.as_raw_fd(), entry.name) else {
                    continue; // removed while listing: its own event follows
                };
                if st.is_dir() && wanted_dir {
                    if st.dev != options.device {
                        continue; // another filesystem mounted here: not this volume
                    }
                    let child = join(&path, name);
                    if options.excluded.contains(&child) {
                        continue;
                    }
                    stack.push(Pending {
                        parent: index,
                        name_len: name.len() as u32,
                        path: child,
                        parent_fd: None,
                    });
                } else if st.is_regular() && wanted_file {
                    let name = listing.add_name(name);
                    listing.files.push(ListedFile {
                        dir: index,
                        name,
                        ino: st.ino,
                        size: st.size,
                        mtime_ns: st
                            .mtime_sec
                            .saturating_mul(1_000_000_000)
                            .saturating_add(i64::from(st.mtime_nsec)),
                        nlink: st.nlink,
                    });
                }
            }
        }
        if stack.len() > first_child {
            let held = self.open_parents.fetch_add(1, Ordering::Relaxed);
            if held < MAX_OPEN_PARENTS {
                let parent = Arc::new(ParentFd {
                    fd: dir,
                    open: Arc::clone(&self.open_parents),
                });
                for child in &mut stack[first_child..] {
                    child.parent_fd = Some(Arc::clone(&parent));
                }
            } else {
                self.open_parents.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A thread's work: subtrees until none is left. A subtree goes into the thread's current
    /// part when its parent's part is numbered lower, into a new part otherwise.
    fn work(&self, first: Option<Handed>, spawn: &mut dyn FnMut()) -> Result<Vec<Part>, Cancelled> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut parts: Vec<Part> = Vec::new();
        let mut next = first;
        loop {
            let handed = match next.take() {
                Some(handed) => handed,
                None => match self.take() {
                    Some(handed) => handed,
                    None => break,
                },
            };
            let fits = parts
                .last()
                .is_some_and(|part| handed.part != NO_PARENT && handed.part < part.id);
            if !fits {
                parts.push(Part {
                    id: self.next_part.fetch_add(1, Ordering::Relaxed),
                    roots: Vec::new(),
                    listing: Listing::default(),
                });
            }
            let part = parts.last_mut().expect("a part was just made");
            if self.list_subtree(part, handed, &mut buf, spawn).is_err() {
                self.stop();
                return Err(Cancelled);
            }
            if self.gone.load(Ordering::Relaxed) {
                self.stop();
                break;
            }
        }
        Ok(parts)
    }
}

/// The parts in one listing, parents first: a part's roots have their parents in parts numbered
/// lower (a directory is handed on only once its parent was listed, in a part numbered then).
fn stitch(mut parts: Vec<Part>) -> Listing {
    parts.sort_unstable_by_key(|part| part.id);
    let count = parts.len();
    let dirs: usize = parts.iter().map(|part| part.listing.dirs.len()).sum();
    let files: usize = parts.iter().map(|part| part.listing.files.len()).sum();
    let names: usize = parts.iter().map(|part| part.listing.names.len()).sum();
    let mut parts = parts.into_iter();
    // The first part (the top's) is the base: its entries stay where they are, and growing
    // its arenas in place (glibc moves a large block with mremap, without copying it) keeps
    // the peak near the listing's own size rather than twice it.
    let Some(first) = parts.next() else {
        return Listing::default();
    };
    let mut listing = first.listing;
    listing.dirs.reserve_exact(dirs - listing.dirs.len());
    listing.files.reserve_exact(files - listing.files.len());
    listing.names.reserve_exact(names - listing.names.len());
    listing.parts = count;
    let mut offsets: Vec<u32> = vec![0; first.id as usize + 1];
    // Parts are numbered 0.. in order; an id with no part (none is lost, but be safe) maps to
    // the offset of the part after it.
    for part in parts {
        let dir_offset = listing.dirs.len() as u32;
        let name_offset = u32::try_from(listing.names.len()).unwrap_or(u32::MAX);
        while offsets.len() <= part.id as usize {
            offsets.push(dir_offset);
        }
        let Part {
            roots,
            listing: own,
            ..
        } = part;
        let moved = |name: Name| Name {
            start: name.start.saturating_add(name_offset),
            len: name.len,
        };
        listing.names.extend_from_slice(&own.names);
        let mut roots = roots.into_iter().peekable();
        for (at, dir) in own.dirs.into_iter().enumerate() {
            let parent = if dir.parent == NO_PARENT {
                match roots.next_if(|root| root.0 as usize == at) {
                    Some((_, NO_PARENT, _)) | None => NO_PARENT,
                    Some((_, part, index)) => offsets[part as usize] + index,
                }
            } else {
                dir.parent + dir_offset
            };
            listing.dirs.push(ListedDir {
                parent,
                name: moved(dir.name),
                ..dir
            });
        }
        listing
            .files
            .extend(own.files.into_iter().map(|file| ListedFile {
                dir: file.dir + dir_offset,
                name: moved(file.name),
                ..file
            }));
    }
    // Arenas grown by doubling keep up to half of their capacity unused while the index
    // merges the listing: give it back.
    listing.dirs.shrink_to_fit();
    listing.files.shrink_to_fit();
    listing.names.shrink_to_fit();
    listing
}

/// Lists `top` (an absolute path) and everything below it; see the module documentation.
/// Directories are watched and listed by the calling thread, joined by up to
/// `options.threads - 1` more once the tree turns out large (each taking subtrees from the
/// others' pending directories); the listing names parents before their subdirectories.
pub fn list_tree(
    top: &[u8],
    options: &ListOptions<'_>,
    cancel: &AtomicBool,
) -> Result<Listing, Cancelled> {
    let threads = match options.threads {
        0 => DEFAULT_LIST_THREADS,
        n => n.min(64),
    };
    let shared = Shared {
        options,
        target: WatchTarget::for_fd(options.inotify_fd, options.mask),
        cancel,
        queue: Mutex::new(Queue {
            handed: Vec::new(),
            workers: 1,
            idle: 0,
            done: false,
        }),
        wake: Condvar::new(),
        idle: AtomicUsize::new(0),
        next_part: AtomicU32::new(0),
        budget: AtomicUsize::new(
            options
                .watch_budget
                .map_or(usize::MAX, |budget| budget.min(usize::MAX - 1)),
        ),
        limit_hit: AtomicBool::new(false),
        limit: Mutex::new(None),
        gone: AtomicBool::new(false),
        open_parents: Arc::new(AtomicUsize::new(0)),
        mounts: MountCheck {
            top_mount: AtomicI64::new(-1),
        },
    };
    let first = Handed {
        part: NO_PARENT,
        pending: Pending {
            parent: NO_PARENT,
            name_len: 0,
            path: top.to_vec(),
            parent_fd: None,
        },
    };
    let parts = std::thread::scope(|scope| {
        let shared = &shared;
        let mut helpers = Vec::new();
        let mut started = false;
        let mut spawn = || {
            if std::mem::replace(&mut started, true) {
                return;
            }
            for _ in 1..threads {
                shared.add_worker();
                let spawned = std::thread::Builder::new()
                    .name("scanarr-list".into())
                    .spawn_scoped(scope, move || shared.work(None, &mut || {}));
                match spawned {
                    Ok(handle) => helpers.push(handle),
                    Err(_) => {
                        // No thread: count it out again (the others carry on).
                        let mut queue = shared.lock();
                        queue.workers -= 1;
                        shared.wake.notify_all();
                        break;
                    }
                }
            }
        };
        let mut parts = shared.work(Some(first), &mut spawn);
        for helper in helpers {
            let joined = helper.join().unwrap_or(Err(Cancelled));
            match (&mut parts, joined) {
                (Ok(parts), Ok(more)) => parts.extend(more),
                (Ok(_), Err(Cancelled)) => parts = Err(Cancelled),
                (Err(_), _) => {}
            }
        }
        parts
    })?;
    if shared.gone.load(Ordering::Relaxed) {
        return Ok(Listing {
            gone: true,
            ..Listing::default()
        });
    }
    let mut listing = stitch(parts);
    listing.watch_limit = *shared.limit.lock().unwrap_or_else(|p| p.into_inner());
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{hard_link, scratch_dir, write_files};
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    struct Inotify(RawFd);

    impl Inotify {
        fn new() -> Inotify {
            // SAFETY: plain syscall.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
            assert!(fd >= 0);
            Inotify(fd)
        }
    }

    impl Drop for Inotify {
        fn drop(&mut self) {
            // SAFETY: we own the descriptor.
            unsafe { libc::close(self.0) };
        }
    }

    fn temp_tree(tag: &str) -> PathBuf {
        let root = scratch_dir(&format!("livelist-{tag}"));
        fs::create_dir_all(root.join(".hidden")).unwrap();
        write_files(
            &root,
            &[
                ("Movie (2001)/movie.mkv", b"movie"),
                ("Movie (2001)/movie.nfo", b"nfo"),
                ("Movie (2001)/Extras/trailer.MP4", b"trailer"),
                ("Movie (2001)/partial.mkv.part", b""),
                ("@eaDir/thumbs/x.mkv", b""),
                ("Show/Season 01/e01.mkv", b"e01"),
            ],
        );
        hard_link(&root, "Show/Season 01/e01.mkv", "Show/e01-link.mkv");
        std::os::unix::fs::symlink(root.join("Show"), root.join("ShowLink")).unwrap();
        root
    }

    /// `temp_tree(tag)`, an inotify instance and the default filter to list it with.
    fn fixture(tag: &str) -> (PathBuf, Inotify, Filter) {
        (temp_tree(tag), Inotify::new(), Filter::default())
    }

    fn path_of(listing: &Listing, index: u32) -> String {
        let mut names = Vec::new();
        let mut at = index;
        while at != 0 {
            let dir = &listing.dirs[at as usize];
            names.push(String::from_utf8(listing.name(dir.name).to_vec()).unwrap());
            at = dir.parent;
        }
        names.reverse();
        names.join("/")
    }

    fn watched(listing: &Listing) -> usize {
        listing
            .dirs
            .iter()
            .filter(|dir| matches!(dir.watch, Watch::Wd(_)))
            .count()
    }

    fn list(root: &Path, inotify: &Inotify, budget: Option<usize>, filter: &Filter) -> Listing {
        list_with(root, inotify, budget, filter, 0)
    }

    fn list_with(
        root: &Path,
        inotify: &Inotify,
        budget: Option<usize>,
        filter: &Filter,
        threads: usize,
    ) -> Listing {
        let device = fs::metadata(root.parent().unwrap()).unwrap().dev();
        let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW;
        let options = ListOptions {
            watch_budget: budget,
            threads,
            ..ListOptions::new(inotify.0, mask, device, filter)
        };
        list_tree(
            root.as_os_str().as_encoded_bytes(),
            &options,
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    #[test]
    fn lists_watches_and_filters_like_a_scan() {
        let (root, inotify, filter) = fixture("filters");
        let listing = list(&root, &inotify, None, &filter);
        let mut dirs: Vec<String> = (0..listing.dirs.len() as u32)
            .map(|i| path_of(&listing, i))
            .collect();
        dirs.sort();
        assert_eq!(
            dirs,
            [
                "",
                "Movie (2001)",
                "Movie (2001)/Extras",
                "Show",
                "Show/Season 01"
            ]
        );
        assert!(listing
            .dirs
            .iter()
            .all(|dir| matches!(dir.watch, Watch::Wd(_))));
        assert_eq!(listing.watch_limit, None);
        assert_eq!(
            listing.parts, 1,
            "a small tree is listed by the calling thread"
        );
        for (index, dir) in listing.dirs.iter().enumerate().skip(1) {
            assert!((dir.parent as usize) < index, "parents come first");
        }
        let mut files: Vec<(String, u64)> = listing
            .files
            .iter()
            .map(|file| {
                let name = String::from_utf8(listing.name(file.name).to_vec()).unwrap();
                let dir = path_of(&listing, file.dir);
                (
                    if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    },
                    file.nlink,
                )
            })
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                ("Movie (2001)/Extras/trailer.MP4".to_string(), 1),
                ("Movie (2001)/movie.mkv".to_string(), 1),
                ("Show/Season 01/e01.mkv".to_string(), 2),
                ("Show/e01-link.mkv".to_string(), 2),
            ]
        );
        let movie = fs::metadata(root.join("Movie (2001)/movie.mkv")).unwrap();
        let listed = listing
            .files
            .iter()
            .find(|file| listing.name(file.name) == b"movie.mkv")
            .unwrap();
        assert_eq!((listed.ino, listed.size), (movie.ino(), 5));
        assert_eq!(
            listed.mtime_ns,
            movie.mtime() * 1_000_000_000 + movie.mtime_nsec()
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn past_the_budget_nothing_more_is_watched_but_everything_is_listed() {
        let (root, inotify, filter) = fixture("budget");
        let listing = list(&root, &inotify, Some(2), &filter);
        let watched = watched(&listing);
        assert_eq!(watched, 2);
        assert_eq!(listing.watch_limit, Some(0));
        assert_eq!(listing.dirs.len(), 5);
        assert_eq!(listing.files.len(), 4);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_top_is_gone_and_a_cancelled_listing_stops() {
        let (root, inotify, filter) = fixture("gone");
        let listing = list(&root.join("nope"), &inotify, None, &filter);
        assert!(listing.gone && listing.dirs.is_empty());
        let device = fs::metadata(&root).unwrap().dev();
        let options = ListOptions::new(inotify.0, libc::IN_CREATE, device, &filter);
        let cancelled = AtomicBool::new(true);
        let top = root.as_os_str().as_encoded_bytes();
        assert_eq!(list_tree(top, &options, &cancelled).unwrap_err(), Cancelled);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn nested_volume_roots_are_not_entered() {
        let (root, inotify, filter) = fixture("nested");
        let excluded = vec![root.join("Show").as_os_str().as_encoded_bytes().to_vec()];
        let device = fs::metadata(&root).unwrap().dev();
        let options = ListOptions {
            excluded: &excluded,
            ..ListOptions::new(inotify.0, libc::IN_CREATE, device, &filter)
        };
        let top = root.as_os_str().as_encoded_bytes();
        let listing = list_tree(top, &options, &AtomicBool::new(false)).unwrap();
        assert_eq!(listing.dirs.len(), 3);
        assert_eq!(listing.files.len(), 2);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A tree large enough for the listing to be shared between threads: 40 folders of 12
    /// subfolders each holding one media file (and one skipped), 521 directories in all.
    fn wide_tree(tag: &str) -> PathBuf {
        let root = scratch_dir(&format!("livelist-{tag}"));
        for folder in 0..40 {
            for sub in 0..12 {
                let dir = root.join(format!("Folder {folder}/Sub {sub}"));
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join(format!("f{folder}-{sub}.mkv")), b"x").unwrap();
                fs::write(dir.join("notes.txt"), b"x").unwrap();
            }
        }
        root
    }

    fn content(listing: &Listing) -> (Vec<String>, Vec<String>) {
        for (index, dir) in listing.dirs.iter().enumerate().skip(1) {
            assert!((dir.parent as usize) < index, "parents come first");
        }
        assert_eq!(listing.dirs[0].parent, NO_PARENT);
        assert!(listing.dirs[1..].iter().all(|dir| dir.parent != NO_PARENT));
        let mut dirs: Vec<String> = (0..listing.dirs.len() as u32)
            .map(|i| path_of(listing, i))
            .collect();
        let mut files: Vec<String> = listing
            .files
            .iter()
            .map(|file| {
                let name = String::from_utf8(listing.name(file.name).to_vec()).unwrap();
                format!("{}/{name}", path_of(listing, file.dir))
            })
            .collect();
        dirs.sort();
        files.sort();
        (dirs, files)
    }

    #[test]
    fn threads_list_the_same_tree_with_every_directory_watched_once() {
        let root = wide_tree("threads");
        let filter = Filter::default();
        let alone = list_with(&root, &Inotify::new(), None, &filter, 1);
        assert_eq!(alone.parts, 1);
        let (dirs, files) = content(&alone);
        assert_eq!((dirs.len(), files.len()), (521, 480));
        for _ in 0..5 {
            let inotify = Inotify::new();
            let shared = list_with(&root, &inotify, None, &filter, 4);
            assert!(shared.parts > 1, "listed by one thread");
            assert_eq!(content(&shared), (dirs.clone(), files.clone()));
            let mut wds: Vec<i32> = shared
                .dirs
                .iter()
                .map(|dir| match dir.watch {
                    Watch::Wd(wd) => wd,
                    other => panic!("not watched: {other:?}"),
                })
                .collect();
            wds.sort_unstable();
            wds.dedup();
            assert_eq!(wds.len(), 521, "one watch per directory");
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn threads_share_the_watch_budget_and_still_list_everything() {
        let root = wide_tree("threadbudget");
        let filter = Filter::default();
        let inotify = Inotify::new();
        let listing = list_with(&root, &inotify, Some(100), &filter, 4);
        let watched = watched(&listing);
        assert_eq!(watched, 100);
        assert_eq!(listing.watch_limit, Some(0));
        let (dirs, files) = content(&listing);
        assert_eq!((dirs.len(), files.len()), (521, 480));
        fs::remove_dir_all(&root).unwrap();
    }
}
