//! The parallel walk.
//!
//! Walker threads take directories from a private stack (depth first, so pending work stays
//! proportional to depth × fan-out rather than to the tree) and hand the shallowest half of it to
//! a shared queue whenever another thread sits idle. Directories are opened relative to their
//! parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, listed with `getdents64`, and only entries
//! whose name passes the filter are `fstatat`ed. Reported files go into a per-thread batch that is
//! sent through a bounded channel: a consumer that stops pulling stops the walk, and memory stays
//! flat whatever the tree size.

use std::collections::{HashSet, VecDeque};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};

use crate::filter::Filter;
use crate::fingerprint::{self, Spec};
use crate::paths;
use crate::stats::{StatsDelta, StatsTable, WalkStats};
use crate::sys::{self, Errno, Stat};

/// What failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A root is missing, unreadable or not a directory.
    Root,
    /// A directory below a root could not be opened or listed.
    ReadDir,
    /// An entry could not be `lstat`ed (ENOENT: it vanished after it was listed).
    Stat,
    /// A reported file could not be fingerprinted.
    Fingerprint,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Root => "root",
            ErrorKind::ReadDir => "read_dir",
            ErrorKind::Stat => "stat",
            ErrorKind::Fingerprint => "fingerprint",
        }
    }
}

/// A failure met during the walk; the walk goes on past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkError {
    pub root_index: u32,
    /// Absolute path of what failed.
    pub path: Vec<u8>,
    /// 0 when the failure is not an OS error.
    pub errno: Errno,
    pub kind: ErrorKind,
    pub message: String,
}

/// One reported file. Its path lives in the batch's shared buffer.
#[derive(Clone, Debug)]
pub struct FileEntry {
    pub root_index: u32,
    path_start: usize,
    path_end: usize,
    name_start: usize,
    pub inode: u64,
    pub device_id: u64,
    pub hardlink_count: u64,
    pub size_bytes: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub fingerprint: Option<u128>,
    pub fingerprint_error: Option<String>,
}

impl FileEntry {
    /// `st_mtime` in nanoseconds (i128: an i64 of nanoseconds ends in 2262).
    pub fn mtime_ns(&self) -> i128 {
        i128::from(self.mtime_sec) * 1_000_000_000 + i128::from(self.mtime_nsec)
    }
}

/// Files reported and errors met by one walker thread since its previous batch.
#[derive(Default)]
pub struct Batch {
    pub files: Vec<FileEntry>,
    paths: Vec<u8>,
    pub errors: Vec<WalkError>,
    /// Directories read (completely or partially) since the previous batch.
    pub dirs_walked: u64,
}

impl Batch {
    fn with_capacity(files: usize) -> Batch {
        Batch {
            files: Vec::with_capacity(files),
            paths: Vec::with_capacity(files * 64),
            errors: Vec::new(),
            dirs_walked: 0,
        }
    }

    /// POSIX path relative to the root, no leading `/`.
    pub fn relative_path(&self, file: &FileEntry) -> &[u8] {
        &self.paths[file.path_start..file.path_end]
    }

    /// The last component of `relative_path`.
    pub fn filename(&self, file: &FileEntry) -> &[u8] {
        &self.paths[file.name_start..file.path_end]
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn has_news(&self) -> bool {
        !self.files.is_empty() || !self.errors.is_empty() || self.dirs_walked != 0
    }

    /// Moves everything of `other` into this batch.
    fn append(&mut self, other: Batch) {
        let offset = self.paths.len();
        self.paths.extend_from_slice(&other.paths);
        self.files.extend(other.files.into_iter().map(|mut file| {
            file.path_start += offset;
            file.path_end += offset;
            file.name_start += offset;
            file
        }));
        self.errors.extend(other.errors);
        self.dirs_walked += other.dirs_walked;
    }
}

/// Leftovers of threads that went idle or held files for a while, merged so that the consumer
/// gets few, full batches rather than one small batch per idle moment of each thread.
#[derive(Default)]
struct Partial {
    batch: Batch,
    /// When the oldest leftover arrived.
    since: Option<Instant>,
}

/// How to walk.
#[derive(Clone)]
pub struct WalkOptions {
    pub filter: Filter,
    /// Directories not to enter (nested volume roots), absolute or relative to the working dir.
    pub exclude: Vec<Vec<u8>>,
    /// Do not enter directories on another device than their root.
    pub same_device: bool,
    /// Walker threads; 0 means `DEFAULT_THREADS`.
    pub threads: usize,
    /// Files per batch at most (at least 1).
    pub batch_size: usize,
    /// Batches waiting for the consumer at most (at least 1).
    pub max_pending_batches: usize,
    /// Fingerprint every reported file on the walker threads.
    pub fingerprint: Option<Spec>,
    /// Leave files whose relative path is not valid UTF-8 out of the totals (files, bytes,
    /// inodes), counting them in `non_utf8_files` instead: the totals then cover exactly the
    /// files a JSON consumer can send (`Batch::json_records` skips the others).
    pub utf8_totals: bool,
}

/// Called by tests after a directory listing was read, with the directory's relative path.
#[cfg(test)]
type ListingHook = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Points where tests change the tree at the worst moment; empty outside tests.
#[derive(Clone, Default)]
struct Hooks {
    #[cfg(test)]
    after_listing: Option<ListingHook>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            filter: Filter::default(),
            exclude: Vec::new(),
            same_device: true,
            threads: 0,
            batch_size: 1024,
            max_pending_batches: 4,
            fingerprint: None,
            utf8_totals: false,
        }
    }
}

/// What `Walk::next_batch` got.
pub enum Next {
    Batch(Batch),
    /// Nothing arrived within the timeout; the walk goes on.
    Timeout,
    /// The walk is over (finished or cancelled) and everything was delivered.
    Over,
}

/// An open directory whose subdirectories are still to be opened.
struct OpenDir {
    fd: OwnedFd,
    root: u32,
    root_dev: u64,
    /// Path relative to the root, NUL-terminated (just the NUL for the root).
    rel: Box<[u8]>,
}

impl OpenDir {
    fn rel(&self) -> &[u8] {
        &self.rel[..self.rel.len() - 1]
    }
}

/// A directory waiting to be walked.
enum Job {
    Root(u32),
    Dir {
        parent: Arc<OpenDir>,
        /// Path relative to the root, NUL-terminated.
        rel: Box<[u8]>,
        name_start: usize,
    },
}

struct Shared {
    roots: Vec<Vec<u8>>,
    /// Per root: paths relative to it that are not entered.
    excludes: Vec<HashSet<Vec<u8>>>,
    filter: Filter,
    same_device: bool,
    batch_size: usize,
    fingerprint: Option<Spec>,
    utf8_totals: bool,
    queue: Mutex<VecDeque<Job>>,
    work_ready: Condvar,
    /// Threads waiting for work (others share theirs when this is not 0).
    idle: AtomicUsize,
    /// Directories known and not yet walked; the walk is done when it reaches 0.
    pending: AtomicUsize,
    done: AtomicBool,
    cancelled: AtomicBool,
    live_workers: AtomicUsize,
    /// Threads that have not yet merged their last batch into `partial`.
    finishing: AtomicUsize,
    partial: Mutex<Partial>,
    stats: StatsTable,
    #[cfg_attr(not(test), allow(dead_code))]
    hooks: Hooks,
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn lock_partial(&self) -> MutexGuard<'_, Partial> {
        self.partial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The merged leftovers, when they have waited long enough (or `force`).
    fn take_partial(&self, force: bool) -> Option<Batch> {
        let mut partial = self.lock_partial();
        let due = partial
            .since
            .is_some_and(|since| since.elapsed() >= FLUSH_AFTER);
        if (force || due) && partial.batch.has_news() {
            partial.since = None;
            Some(std::mem::take(&mut partial.batch))
        } else {
            None
        }
    }

    fn wake_all(&self) {
        let _queue = self.lock_queue();
        self.work_ready.notify_all();
    }
}

/// How long an idle thread sleeps before it looks at the cancel flag again (a wake-up normally
/// comes sooner, through the condition variable).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// A thread that holds reported files this long sends them even if its batch is not full.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// `getdents64` buffer: a large directory is listed in few syscalls.
const DIRENT_BUFFER: usize = 64 * 1024;
const WORKER_STACK: usize = 512 * 1024;

/// A walk in progress; dropping it cancels it.
pub struct Walk {
    shared: Arc<Shared>,
    batches: Receiver<Batch>,
    /// Dropped on cancel: every `select!` on `cancelled_rx` then wakes up at once.
    cancel_signal: Mutex<Option<Sender<()>>>,
    cancelled_rx: Receiver<()>,
}

fn current_dir_bytes() -> io::Result<Vec<u8>> {
    Ok(std::env::current_dir()?
        .into_os_string()
        .into_encoded_bytes())
}

impl Walk {
    /// Starts the walker threads over `roots`.
    pub fn start(roots: Vec<Vec<u8>>, options: WalkOptions) -> io::Result<Walk> {
        Walk::start_hooked(roots, options, Hooks::default())
    }

    fn start_hooked(roots: Vec<Vec<u8>>, options: WalkOptions, hooks: Hooks) -> io::Result<Walk> {
        let needs_cwd = roots
            .iter()
            .chain(&options.exclude)
            .any(|p| p.first() != Some(&b'/'));
        let cwd = if needs_cwd {
            current_dir_bytes()?
        } else {
            b"/".to_vec()
        };
        let roots: Vec<Vec<u8>> = roots.iter().map(|r| paths::absolute(r, &cwd)).collect();
        let exclude: Vec<Vec<u8>> = options
            .exclude
            .iter()
            .map(|e| paths::absolute(e, &cwd))
            .collect();
        let excludes = roots
            .iter()
            .map(|root| {
                exclude
                    .iter()
                    .filter_map(|e| paths::strictly_below(root, e).map(<[u8]>::to_vec))
                    .collect()
            })
            .collect();
        let threads = match options.threads {
            0 => crate::DEFAULT_THREADS,
            n => n,
        };
        let root_count = u32::try_from(roots.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many roots"))?;
        let shared = Arc::new(Shared {
            excludes,
            filter: options.filter,
            same_device: options.same_device,
            batch_size: options.batch_size.max(1),
            fingerprint: options.fingerprint,
            utf8_totals: options.utf8_totals,
            queue: Mutex::new((0..root_count).map(Job::Root).collect()),
            work_ready: Condvar::new(),
            idle: AtomicUsize::new(0),
            pending: AtomicUsize::new(roots.len()),
            done: AtomicBool::new(roots.is_empty()),
            cancelled: AtomicBool::new(false),
            live_workers: AtomicUsize::new(threads),
            finishing: AtomicUsize::new(threads),
            partial: Mutex::new(Partial::default()),
            stats: StatsTable::new(roots.len()),
            roots,
            hooks,
        });
        let (tx, batches) = bounded(options.max_pending_batches.max(1));
        let (cancel_signal, cancelled_rx) = bounded::<()>(0);
        let walk = Walk {
            shared: Arc::clone(&shared),
            batches,
            cancel_signal: Mutex::new(Some(cancel_signal)),
            cancelled_rx: cancelled_rx.clone(),
        };
        for index in 0..threads {
            let worker = Worker::new(Arc::clone(&shared), tx.clone(), cancelled_rx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("scanarr-walk-{index}"))
                .stack_size(WORKER_STACK)
                .spawn(move || worker.run());
            if let Err(error) = spawned {
                shared
                    .live_workers
                    .fetch_sub(threads - index, Ordering::SeqCst);
                shared
                    .finishing
                    .fetch_sub(threads - index, Ordering::SeqCst);
                walk.cancel();
                return Err(error);
            }
        }
        Ok(walk)
    }

    /// The roots, absolute and lexically clean, in the order given.
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.shared.roots
    }

    /// Waits up to `timeout` for the next batch.
    pub fn next_batch(&self, timeout: Duration) -> Next {
        if self.is_cancelled() {
            return Next::Over;
        }
        select! {
            recv(self.batches) -> batch => match batch {
                Ok(batch) => Next::Batch(batch),
                Err(_) => Next::Over,
            },
            recv(self.cancelled_rx) -> _ => Next::Over,
            default(timeout) => Next::Timeout,
        }
    }

    /// Stops the walk: threads stop at their next check, and `next_batch` says `Over` at once.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::SeqCst);
        self.cancel_signal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.shared.wake_all();
    }

    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// Walker threads that have not exited yet.
    pub fn threads_running(&self) -> usize {
        self.shared.live_workers.load(Ordering::SeqCst)
    }

    /// True once `next_batch` has nothing more to give: the walk ended (or was cancelled) and
    /// every batch it produced was delivered.
    pub fn is_finished(&self) -> bool {
        self.is_cancelled()
            || (self.shared.live_workers.load(Ordering::SeqCst) == 0 && self.batches.is_empty())
    }

    /// Totals over every root, so far.
    pub fn stats(&self) -> WalkStats {
        self.shared.stats.overall()
    }

    /// Totals of one root, so far; `None` when there is no such root.
    pub fn root_stats(&self, root: usize) -> Option<WalkStats> {
        self.shared.stats.root(root)
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// One walker thread.
struct Worker {
    shared: Arc<Shared>,
    tx: Sender<Batch>,
    cancelled_rx: Receiver<()>,
    /// Directories this thread walks next, deepest last.
    local: Vec<Job>,
    batch: Batch,
    delta: StatsDelta,
    dirents: Vec<u8>,
    reader: fingerprint::Reader,
    last_flush: Instant,
    stopping: bool,
}

impl Worker {
    fn new(shared: Arc<Shared>, tx: Sender<Batch>, cancelled_rx: Receiver<()>) -> Worker {
        let batch = Batch::with_capacity(shared.batch_size.min(4096));
        Worker {
            shared,
            tx,
            cancelled_rx,
            local: Vec::new(),
            batch,
            delta: StatsDelta::default(),
            dirents: vec![0; DIRENT_BUFFER],
            reader: fingerprint::Reader::new(),
            last_flush: Instant::now(),
            stopping: false,
        }
    }

    fn run(mut self) {
        while let Some(job) = self.next_job() {
            let before = self.local.len();
            self.walk(job);
            let found = self.local.len() - before;
            if found > 0 {
                self.shared.pending.fetch_add(found, Ordering::SeqCst);
            }
            if self.shared.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.shared.done.store(true, Ordering::SeqCst);
                self.shared.wake_all();
            }
            self.share_if_others_idle();
            if self.batch.has_news() && self.last_flush.elapsed() >= FLUSH_AFTER {
                self.hand_over();
            }
            if self.stopping {
                break;
            }
        }
        if !self.shared.is_cancelled() {
            self.hand_over();
            // The last thread to finish sends what the others left behind.
            if self.shared.finishing.fetch_sub(1, Ordering::SeqCst) == 1 {
                if let Some(batch) = self.shared.take_partial(true) {
                    self.send(batch);
                }
            }
        }
        self.shared.live_workers.fetch_sub(1, Ordering::SeqCst);
    }

    fn next_job(&mut self) -> Option<Job> {
        if self.shared.is_cancelled() {
            return None;
        }
        if let Some(job) = self.local.pop() {
            return Some(job);
        }
        // Going idle: hand over what this thread holds rather than sit on it.
        if self.batch.has_news() || !self.delta.is_empty() {
            self.hand_over();
            if self.stopping {
                return None;
            }
        }
        let shared = Arc::clone(&self.shared);
        let mut queue = shared.lock_queue();
        loop {
            if shared.is_cancelled() || shared.done.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(job) = queue.pop_front() {
                return Some(job);
            }
            if let Some(batch) = shared.take_partial(false) {
                drop(queue);
                if !self.send(batch) {
                    return None;
                }
                queue = shared.lock_queue();
                continue;
            }
            shared.idle.fetch_add(1, Ordering::SeqCst);
            queue = shared
                .work_ready
                .wait_timeout(queue, IDLE_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            shared.idle.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Gives the shallowest half of this thread's pending directories (the biggest subtrees) to
    /// the shared queue when another thread has nothing to do.
    fn share_if_others_idle(&mut self) {
        if self.local.len() < 2 || self.shared.idle.load(Ordering::Relaxed) == 0 {
            return;
        }
        let half = self.local.len() / 2;
        let mut queue = self.shared.lock_queue();
        queue.extend(self.local.drain(..half));
        drop(queue);
        self.shared.work_ready.notify_all();
    }

    fn walk(&mut self, job: Job) {
        match job {
            Job::Root(root) => self.walk_root(root),
            Job::Dir {
                parent,
                rel,
                name_start,
            } => {
                let name = CStr::from_bytes_with_nul(&rel[name_start..])
                    .expect("a directory entry name has no NUL inside");
                let opened = sys::open_dir_at(parent.fd.as_raw_fd(), name);
                let (root, root_dev) = (parent.root, parent.root_dev);
                // Release the parent's descriptor as soon as its last child is open.
                drop(parent);
                let fd = match opened {
                    Ok(fd) => fd,
                    Err(errno) => {
                        self.error(root, ErrorKind::ReadDir, &rel[..rel.len() - 1], errno);
                        return;
                    }
                };
                if self.shared.same_device {
                    match sys::fstat(&fd) {
                        Ok(st) if st.dev != root_dev => {
                            self.delta.skipped_mount(root);
                            return;
                        }
                        Ok(_) => {}
                        Err(errno) => {
                            self.error(root, ErrorKind::ReadDir, &rel[..rel.len() - 1], errno);
                            return;
                        }
                    }
                }
                self.list(OpenDir {
                    fd,
                    root,
                    root_dev,
                    rel,
                });
            }
        }
    }

    fn walk_root(&mut self, root: u32) {
        let opened = sys::c_path(&self.shared.roots[root as usize])
            .and_then(|path| sys::open_root(&path))
            .and_then(|fd| sys::fstat(&fd).map(|st| (fd, st)));
        match opened {
            Ok((fd, st)) => self.list(OpenDir {
                fd,
                root,
                root_dev: st.dev,
                rel: Box::new([0]),
            }),
            Err(errno) => self.error(root, ErrorKind::Root, b"", errno),
        }
    }

    /// Reads a directory: reports its files and queues its subdirectories on this thread.
    fn list(&mut self, dir: OpenDir) {
        let dir = Arc::new(dir);
        self.delta.dir(dir.root);
        self.batch.dirs_walked += 1;
        let mut buf = std::mem::take(&mut self.dirents);
        'listing: loop {
            let len = match sys::getdents(&dir.fd, &mut buf) {
                Ok(0) => break,
                Ok(len) => len,
                Err(errno) => {
                    self.error(dir.root, ErrorKind::ReadDir, dir.rel(), errno);
                    break;
                }
            };
            #[cfg(test)]
            if let Some(hook) = &self.shared.hooks.after_listing {
                hook(dir.rel());
            }
            for entry in sys::DirEntries::new(&buf[..len]) {
                let name = entry.name.to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                match entry.d_type {
                    sys::DT_DIR if self.shared.filter.accepts_dir(name) => {
                        self.queue_subdir(&dir, name);
                    }
                    sys::DT_REG if self.shared.filter.accepts_file(name) => {
                        if self.shared.is_cancelled() {
                            break 'listing;
                        }
                        self.report(&dir, entry.name, None);
                    }
                    sys::DT_UNKNOWN => {
                        // Some file systems do not say the type: stat whatever might matter.
                        let as_dir = self.shared.filter.accepts_dir(name);
                        let as_file = self.shared.filter.accepts_file(name);
                        if !(as_dir || as_file) {
                            continue;
                        }
                        if self.shared.is_cancelled() {
                            break 'listing;
                        }
                        match sys::lstat_at(dir.fd.as_raw_fd(), entry.name) {
                            Ok(st) if st.is_dir() && as_dir => self.queue_subdir(&dir, name),
                            Ok(st) if st.is_regular() && as_file => {
                                self.report(&dir, entry.name, Some(st));
                            }
                            Ok(_) => {}
                            Err(errno) => {
                                let rel = child_rel(dir.rel(), name);
                                self.error(dir.root, ErrorKind::Stat, &rel, errno);
                            }
                        }
                    }
                    // Filtered out by name, or a symlink, FIFO, socket or device: never reported,
                    // never followed.
                    _ => {}
                }
            }
        }
        self.dirents = buf;
    }

    fn queue_subdir(&mut self, dir: &Arc<OpenDir>, name: &[u8]) {
        let mut rel = child_rel(dir.rel(), name);
        let excludes = &self.shared.excludes[dir.root as usize];
        if !excludes.is_empty() && excludes.contains(&rel) {
            return;
        }
        let name_start = rel.len() - name.len();
        rel.push(0);
        self.local.push(Job::Dir {
            parent: Arc::clone(dir),
            rel: rel.into_boxed_slice(),
            name_start,
        });
    }

    /// `lstat`s (unless the caller did) and reports one file that passed the name filter.
    fn report(&mut self, dir: &OpenDir, name: &CStr, st: Option<Stat>) {
        let st = match st {
            Some(st) => st,
            None => match sys::lstat_at(dir.fd.as_raw_fd(), name) {
                Ok(st) => st,
                Err(errno) => {
                    let rel = child_rel(dir.rel(), name.to_bytes());
                    self.error(dir.root, ErrorKind::Stat, &rel, errno);
                    return;
                }
            },
        };
        // Replaced by a symlink or something else since it was listed.
        if !st.is_regular() {
            return;
        }
        let (fingerprint, fingerprint_error) = match self.shared.fingerprint {
            None => (None, None),
            Some(spec) => {
                let result = sys::open_file_at(dir.fd.as_raw_fd(), name)
                    .map_err(fingerprint::FingerprintError::os)
                    .and_then(|fd| {
                        self.reader
                            .fingerprint_fd(&fd, spec, &self.shared.cancelled)
                    });
                match result {
                    Ok(digest) => (Some(digest), None),
                    Err(e) if e.is_cancelled() => return,
                    Err(e) => {
                        let rel = child_rel(dir.rel(), name.to_bytes());
                        self.push_error(
                            dir.root,
                            ErrorKind::Fingerprint,
                            &rel,
                            e.errno,
                            &e.message,
                        );
                        (None, Some(e.message))
                    }
                }
            }
        };
        // A path is valid UTF-8 exactly when both parts are: they are joined by an ASCII '/'.
        if self.shared.utf8_totals
            && (std::str::from_utf8(dir.rel()).is_err()
                || std::str::from_utf8(name.to_bytes()).is_err())
        {
            self.delta.non_utf8_file(dir.root);
        } else {
            self.shared
                .stats
                .file(&mut self.delta, dir.root, st.dev, st.ino, st.nlink, st.size);
        }
        let paths = &mut self.batch.paths;
        let path_start = paths.len();
        if !dir.rel().is_empty() {
            paths.extend_from_slice(dir.rel());
            paths.push(b'/');
        }
        let name_start = paths.len();
        paths.extend_from_slice(name.to_bytes());
        self.batch.files.push(FileEntry {
            root_index: dir.root,
            path_start,
            path_end: paths.len(),
            name_start,
            inode: st.ino,
            device_id: st.dev,
            hardlink_count: st.nlink,
            size_bytes: st.size,
            mtime_sec: st.mtime_sec,
            mtime_nsec: st.mtime_nsec,
            fingerprint,
            fingerprint_error,
        });
        if self.batch.files.len() >= self.shared.batch_size {
            self.flush();
        }
    }

    fn error(&mut self, root: u32, kind: ErrorKind, rel: &[u8], errno: Errno) {
        self.push_error(root, kind, rel, errno, &sys::message(errno));
    }

    fn push_error(&mut self, root: u32, kind: ErrorKind, rel: &[u8], errno: Errno, message: &str) {
        self.delta.error(root);
        self.batch.errors.push(WalkError {
            root_index: root,
            path: paths::join(&self.shared.roots[root as usize], rel),
            errno,
            kind,
            message: message.to_owned(),
        });
    }

    /// Publishes this thread's counts and sends its full batch.
    fn flush(&mut self) {
        self.shared.stats.commit(&mut self.delta);
        self.last_flush = Instant::now();
        if self.batch.has_news() {
            let fresh = self.fresh_batch();
            let batch = std::mem::replace(&mut self.batch, fresh);
            self.send(batch);
        }
    }

    /// Publishes this thread's counts and merges its batch into the shared leftovers, sending
    /// them when they fill a batch or have waited long enough.
    fn hand_over(&mut self) {
        self.shared.stats.commit(&mut self.delta);
        self.last_flush = Instant::now();
        if !self.batch.has_news() {
            return;
        }
        let fresh = self.fresh_batch();
        let mine = std::mem::replace(&mut self.batch, fresh);
        let mut ready = Vec::new();
        {
            let mut partial = self.shared.lock_partial();
            if partial.batch.files.len() + mine.files.len() > self.shared.batch_size {
                ready.push(std::mem::take(&mut partial.batch));
                partial.since = None;
            }
            partial.batch.append(mine);
            let since = *partial.since.get_or_insert_with(Instant::now);
            if partial.batch.files.len() >= self.shared.batch_size || since.elapsed() >= FLUSH_AFTER
            {
                ready.push(std::mem::take(&mut partial.batch));
                partial.since = None;
            }
        }
        for batch in ready {
            if !self.send(batch) {
                break;
            }
        }
    }

    fn fresh_batch(&self) -> Batch {
        Batch::with_capacity(self.shared.batch_size.min(4096))
    }

    /// Sends a batch, blocking while the channel is full unless the walk is cancelled meanwhile.
    /// False (and the thread stops) when the batch could not be delivered.
    fn send(&mut self, batch: Batch) -> bool {
        let sent = match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(batch)) => select! {
                send(self.tx, batch) -> result => result.is_ok(),
                recv(self.cancelled_rx) -> _ => false,
            },
        };
        if !sent {
            self.stopping = true;
        }
        sent
    }
}

fn child_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = Vec::with_capacity(parent.len() + name.len() + 2);
    if !parent.is_empty() {
        rel.extend_from_slice(parent);
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
