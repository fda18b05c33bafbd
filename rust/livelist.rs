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
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::filter::Filter;
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

    fn watch(&self, path: &CStr) -> Result<i32, Errno> {
        match self {
            WatchTarget::Inotify { fd, mask } => add_watch(*fd, path, *mask),
            WatchTarget::Fanotify(instance) => instance.watch_directory(path).map_err(|f| f.errno),
        }
    }
}

fn add_watch(fd: RawFd, path: &CStr, mask: u32) -> Result<i32, Errno> {
    loop {
        // SAFETY: `path` is NUL-terminated; a bad `fd` only makes the call fail.
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
        if wd >= 0 {
            return Ok(wd);
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

/// Opens a directory by path without following a final symlink (the top one may be followed:
/// the caller resolved it).
fn open_dir(path: &CStr, follow: bool) -> Result<OwnedFd, Errno> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    loop {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: the descriptor was just returned to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

fn is_gone(errno: Errno) -> bool {
    errno == libc::ENOENT || errno == libc::ENOTDIR || errno == libc::ELOOP
}

fn join(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(base.len() + 1 + name.len());
    path.extend_from_slice(base);
    if !base.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Lists `top` (an absolute path) and everything below it; see the module documentation.
pub fn list_tree(
    top: &[u8],
    options: &ListOptions<'_>,
    cancel: &AtomicBool,
) -> Result<Listing, Cancelled> {
    let mut listing = Listing::default();
    let mut budget = options.watch_budget;
    let target = WatchTarget::for_fd(options.inotify_fd, options.mask);
    let mut buf = vec![0u8; 64 * 1024];
    // (index in listing.dirs, absolute path)
    let mut stack: Vec<(u32, Vec<u8>)> = Vec::new();
    listing.dirs.push(ListedDir {
        parent: NO_PARENT,
        name: Name::default(),
        watch: Watch::Limit,
        read_error: 0,
    });
    stack.push((0, top.to_vec()));
    while let Some((index, path)) = stack.pop() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Cancelled);
        }
        let Ok(c_path) = CString::new(path.clone()) else {
            continue;
        };
        // Watch first, then list: nothing created in between is missed.
        let watch = if listing.watch_limit.is_some() {
            Watch::Limit
        } else if budget == Some(0) {
            listing.watch_limit = Some(0);
            Watch::Limit
        } else {
            match target.watch(&c_path) {
                Ok(wd) => {
                    budget = budget.map(|left| left - 1);
                    Watch::Wd(wd)
                }
                Err(errno) if errno == libc::ENOSPC || errno == libc::EMFILE => {
                    listing.watch_limit = Some(errno);
                    Watch::Limit
                }
                Err(errno) if is_gone(errno) => {
                    if index == 0 {
                        listing.gone = true;
                        listing.dirs.clear();
                        return Ok(listing);
                    }
                    // Gone since its parent was listed: its own event follows; forget it.
                    listing.dirs[index as usize].read_error = errno;
                    listing.dirs[index as usize].watch = Watch::Failed(errno);
                    continue;
                }
                Err(errno) => Watch::Failed(errno),
            }
        };
        listing.dirs[index as usize].watch = watch;
        let dir = match open_dir(&c_path, index == 0) {
            Ok(dir) => dir,
            Err(errno) => {
                listing.dirs[index as usize].read_error = errno;
                continue;
            }
        };
        let mut subdirs: Vec<Vec<u8>> = Vec::new();
        loop {
            let n = match sys::getdents(&dir, &mut buf) {
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
                let Ok(st) = sys::lstat_at(std::os::fd::AsRawFd::as_raw_fd(&dir), entry.name)
                else {
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
                    subdirs.push(name.to_vec());
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
        for name in subdirs {
            let child_path = join(&path, &name);
            let child = listing.dirs.len() as u32;
            let name = listing.add_name(&name);
            listing.dirs.push(ListedDir {
                parent: index,
                name,
                watch: Watch::Limit,
                read_error: 0,
            });
            stack.push((child, child_path));
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let root =
            std::env::temp_dir().join(format!("scanarr-livelist-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("Movie (2001)/Extras")).unwrap();
        fs::create_dir_all(root.join("@eaDir/thumbs")).unwrap();
        fs::create_dir_all(root.join(".hidden")).unwrap();
        fs::create_dir_all(root.join("Show/Season 01")).unwrap();
        fs::write(root.join("Movie (2001)/movie.mkv"), b"movie").unwrap();
        fs::write(root.join("Movie (2001)/movie.nfo"), b"nfo").unwrap();
        fs::write(root.join("Movie (2001)/Extras/trailer.MP4"), b"trailer").unwrap();
        fs::write(root.join("Movie (2001)/partial.mkv.part"), b"").unwrap();
        fs::write(root.join("@eaDir/thumbs/x.mkv"), b"").unwrap();
        fs::write(root.join("Show/Season 01/e01.mkv"), b"e01").unwrap();
        fs::hard_link(
            root.join("Show/Season 01/e01.mkv"),
            root.join("Show/e01-link.mkv"),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("Show"), root.join("ShowLink")).unwrap();
        root
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

    fn list(root: &Path, inotify: &Inotify, budget: Option<usize>, filter: &Filter) -> Listing {
        let device = fs::metadata(root.parent().unwrap()).unwrap().dev();
        let options = ListOptions {
            inotify_fd: inotify.0,
            mask: libc::IN_CREATE | libc::IN_DELETE | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW,
            device,
            filter,
            excluded: &[],
            watch_budget: budget,
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
        let root = temp_tree("filters");
        let inotify = Inotify::new();
        let filter = Filter::default();
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
        let root = temp_tree("budget");
        let inotify = Inotify::new();
        let filter = Filter::default();
        let listing = list(&root, &inotify, Some(2), &filter);
        let watched = listing
            .dirs
            .iter()
            .filter(|dir| matches!(dir.watch, Watch::Wd(_)))
            .count();
        assert_eq!(watched, 2);
        assert_eq!(listing.watch_limit, Some(0));
        assert_eq!(listing.dirs.len(), 5);
        assert_eq!(listing.files.len(), 4);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_top_is_gone_and_a_cancelled_listing_stops() {
        let root = temp_tree("gone");
        let inotify = Inotify::new();
        let filter = Filter::default();
        let listing = list(&root.join("nope"), &inotify, None, &filter);
        assert!(listing.gone && listing.dirs.is_empty());
        let options = ListOptions {
            inotify_fd: inotify.0,
            mask: libc::IN_CREATE,
            device: fs::metadata(&root).unwrap().dev(),
            filter: &filter,
            excluded: &[],
            watch_budget: None,
        };
        let cancelled = AtomicBool::new(true);
        let top = root.as_os_str().as_encoded_bytes();
        assert_eq!(list_tree(top, &options, &cancelled).unwrap_err(), Cancelled);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn nested_volume_roots_are_not_entered() {
        let root = temp_tree("nested");
        let inotify = Inotify::new();
        let filter = Filter::default();
        let excluded = vec![root.join("Show").as_os_str().as_encoded_bytes().to_vec()];
        let options = ListOptions {
            inotify_fd: inotify.0,
            mask: libc::IN_CREATE,
            device: fs::metadata(&root).unwrap().dev(),
            filter: &filter,
            excluded: &excluded,
            watch_budget: None,
        };
        let top = root.as_os_str().as_encoded_bytes();
        let listing = list_tree(top, &options, &AtomicBool::new(false)).unwrap();
        assert_eq!(listing.dirs.len(), 3);
        assert_eq!(listing.files.len(), 2);
        fs::remove_dir_all(&root).unwrap();
    }
}
