//! Thin wrappers over the fd-relative Linux syscalls the walk is built on: `openat`, `fstatat`,
//! `fstat`, `getdents64`, `pread`. Errors are raw errno values; `message` renders them the way
//! Rust's `io::Error` does ("Permission denied (os error 13)").
//!
//! On 32-bit targets (armv7 NAS boxes) the plain `struct stat` has a 32-bit size and inode, so
//! `fstatat` fails with EOVERFLOW on any file over 2 GiB, and `off_t` cannot address past 2 GiB.
//! There the wrappers use `statx` (64-bit sizes, inodes and times), falling back to `fstatat64` on
//! kernels older than 4.11, and `pread64`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub type Errno = i32;

fn last_errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// strerror-style text for an errno value.
pub fn message(errno: Errno) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// The fields of `struct stat` the scan reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

impl Stat {
    #[cfg(target_pointer_width = "64")]
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            // st_nlink is u32 on some targets and u64 on others.
            #[allow(clippy::unnecessary_cast)]
            nlink: st.st_nlink as u64,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_sec: st.st_mtime,
            mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// A path as a C string; a NUL byte inside it cannot name a file.
pub fn c_path(path: &[u8]) -> Result<CString, Errno> {
    CString::new(path).map_err(|_| libc::EINVAL)
}

/// Calls `call` (a syscall that returns -1 and sets errno) again while it fails with EINTR: what
/// it returned, or the errno it failed with.
#[inline]
pub fn retry<T: Copy + PartialOrd + From<i8>>(mut call: impl FnMut() -> T) -> Result<T, Errno> {
    loop {
        let rc = call();
        if rc >= T::from(0) {
            return Ok(rc);
        }
        let errno = last_errno();
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

/// `retry` of a call that opens a descriptor, which the result then owns.
#[inline]
pub fn retry_fd(call: impl FnMut() -> libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: the syscall just returned this descriptor to us and nothing else owns it.
    retry(call).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a volume root. Symlinks inside the root's own path are followed (the operator named it);
/// nothing below it is.
pub fn open_root(path: &CStr) -> Result<OwnedFd, Errno> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated.
    retry_fd(|| unsafe { libc::open(path.as_ptr(), flags) })
}

/// Opens the subdirectory `name` of `dir`, refusing a symlink (a directory swapped for a link
/// between readdir and open must not lead the walk elsewhere).
pub fn open_dir_at(dir: RawFd, name: &CStr) -> Result<OwnedFd, Errno> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated; `dir` is an open descriptor owned by the caller.
    retry_fd(|| unsafe { libc::openat(dir, name.as_ptr(), flags) })
}

/// Opens a file for reading without following a final symlink and without blocking on a FIFO.
/// `O_NOATIME` spares a metadata write per hashed file where the caller owns it.
pub fn open_file_at(dir: RawFd, name: &CStr) -> Result<OwnedFd, Errno> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: as in `open_dir_at`.
    match retry_fd(|| unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_NOATIME) }) {
        Err(libc::EPERM) => retry_fd(|| unsafe { libc::openat(dir, name.as_ptr(), flags) }),
        other => other,
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the `lstat` of an entry, resolved from its directory.
pub fn lstat_at(dir: RawFd, name: &CStr) -> Result<Stat, Errno> {
    stat_at(dir, name, libc::AT_SYMLINK_NOFOLLOW)
}

#[cfg(target_pointer_width = "64")]
pub fn fstat(fd: &OwnedFd) -> Result<Stat, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer; `fd` is open.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    if rc == 0 {
        // SAFETY: fstat filled the buffer.
        Ok(Stat::from_raw(unsafe { st.assume_init_ref() }))
    } else {
        Err(last_errno())
    }
}

#[cfg(target_pointer_width = "32")]
pub fn fstat(fd: &OwnedFd) -> Result<Stat, Errno> {
    stat_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

#[cfg(target_pointer_width = "64")]
fn stat_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> Result<Stat, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer; `name` is NUL-terminated.
    retry(|| unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat filled the buffer.
    Ok(Stat::from_raw(unsafe { st.assume_init_ref() }))
}

#[cfg(target_pointer_width = "32")]
fn stat_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> Result<Stat, Errno> {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Set once the kernel has answered ENOSYS: every later call goes straight to fstatat64.
    static NO_STATX: AtomicBool = AtomicBool::new(false);
    if !NO_STATX.load(Ordering::Relaxed) {
        match statx_at(dir, name, flags) {
            Err(libc::ENOSYS) => NO_STATX.store(true, Ordering::Relaxed),
            // Some container seccomp profiles deny statx with EPERM; fstatat64 is then allowed.
            Err(libc::EPERM) => {}
            other => return other,
        }
    }
    fstatat64_at(dir, name, flags)
}

/// `statx(dir, name, flags)` through the raw syscall: glibc has no wrapper before 2.28, and the
/// wheels target glibc 2.17.
#[cfg_attr(target_pointer_width = "64", allow(dead_code))]
fn statx_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> Result<Stat, Errno> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let mask = libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_NLINK | libc::STATX_INO;
    let mask = mask | libc::STATX_SIZE | libc::STATX_MTIME;
    // SAFETY: `stx` is a valid out-pointer of the kernel's struct statx; `name` is
    // NUL-terminated.
    retry(|| unsafe {
        libc::syscall(
            libc::SYS_statx,
            dir,
            name.as_ptr(),
            flags | libc::AT_STATX_SYNC_AS_STAT,
            mask,
            stx.as_mut_ptr(),
        )
    })?;
    // SAFETY: statx filled the buffer (and it was zeroed before).
    let stx = unsafe { stx.assume_init_ref() };
    Ok(Stat {
        // The same encoding glibc gives `st_dev`, so both paths report equal devices.
        dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        mode: u32::from(stx.stx_mode),
        nlink: u64::from(stx.stx_nlink),
        size: stx.stx_size,
        mtime_sec: stx.stx_mtime.tv_sec,
        mtime_nsec: stx.stx_mtime.tv_nsec,
    })
}

#[cfg(target_pointer_width = "32")]
fn fstatat64_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> Result<Stat, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: `st` is a valid out-pointer; `name` is NUL-terminated.
    retry(|| unsafe { libc::fstatat64(dir, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat64 filled the buffer.
    let st = unsafe { st.assume_init_ref() };
    Ok(Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: u64::from(st.st_nlink),
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime_sec: i64::from(st.st_mtime),
        mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
    })
}

/// `pread` that retries on EINTR; returns 0 at end of file.
pub fn pread(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    // A 32-bit `off_t` stops at 2 GiB: read big files there with the 64-bit offset interface.
    #[cfg(target_pointer_width = "32")]
    use libc::{off64_t as Offset, pread64 as pread_at};
    #[cfg(target_pointer_width = "64")]
    use libc::{off_t as Offset, pread as pread_at};
    let offset = Offset::try_from(offset).map_err(|_| libc::EINVAL)?;
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n =
        retry(|| unsafe { pread_at(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) })?;
    Ok(n as usize)
}

/// Tells the kernel the file will be read front to back (bigger read-ahead on a NAS).
pub fn advise_sequential(fd: &OwnedFd) {
    // SAFETY: advisory only; a failure changes nothing but speed.
    unsafe {
        libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

pub const DT_UNKNOWN: u8 = libc::DT_UNKNOWN;
pub const DT_DIR: u8 = libc::DT_DIR;
pub const DT_REG: u8 = libc::DT_REG;

/// Fills `buf` with `linux_dirent64` records of the open directory `dir`; 0 means the end.
pub fn getdents(dir: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes; the kernel writes whole records.
    let n = retry(|| unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    })?;
    Ok(n as usize)
}

/// One entry of a `getdents64` buffer.
pub struct DirEntry<'a> {
    pub d_type: u8,
    /// The name with its NUL terminator, as the kernel wrote it.
    pub name: &'a CStr,
}

/// Iterates the records `getdents` wrote into a buffer.
pub struct DirEntries<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> DirEntries<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        DirEntries { buf, pos: 0 }
    }
}

// Layout of `struct linux_dirent64`: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
const RECLEN_OFFSET: usize = 16;
const TYPE_OFFSET: usize = 18;
const NAME_OFFSET: usize = 19;

impl<'a> Iterator for DirEntries<'a> {
    type Item = DirEntry<'a>;

    fn next(&mut self) -> Option<DirEntry<'a>> {
        let rest = self.buf.get(self.pos..)?;
        if rest.len() < NAME_OFFSET + 1 {
            return None;
        }
        let reclen = u16::from_ne_bytes([rest[RECLEN_OFFSET], rest[RECLEN_OFFSET + 1]]) as usize;
        if reclen < NAME_OFFSET + 1 || reclen > rest.len() {
            return None;
        }
        let record = &rest[..reclen];
        self.pos += reclen;
        let name = CStr::from_bytes_until_nul(&record[NAME_OFFSET..]).ok()?;
        Some(DirEntry {
            d_type: record[TYPE_OFFSET],
            name,
        })
    }
}

/// Effective user id (tests skip permission checks as root).
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn c(path: &std::path::Path) -> CString {
        c_path(path.as_os_str().as_bytes()).unwrap()
    }

    // The statx path (32-bit targets) must report exactly what fstatat reports, including for a
    // sparse file past 4 GiB, a future mtime past 2038 and a symlink that is not followed.
    #[test]
    fn statx_reports_what_fstatat_reports() {
        let dir = std::env::temp_dir().join(format!("scanarr-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.mkv");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(5 << 30).unwrap();
        let future = std::time::UNIX_EPOCH + std::time::Duration::new(4_102_444_800, 123_456_789);
        file.set_modified(future).unwrap();
        drop(file);
        std::os::unix::fs::symlink("big.mkv", dir.join("link")).unwrap();
        for path in [big.clone(), dir.join("link"), dir.clone()] {
            let expected = lstat_at(libc::AT_FDCWD, &c(&path)).unwrap();
            let got = statx_at(libc::AT_FDCWD, &c(&path), libc::AT_SYMLINK_NOFOLLOW).unwrap();
            assert_eq!(got, expected, "{}", path.display());
        }
        let got = statx_at(libc::AT_FDCWD, &c(&big), libc::AT_SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(got.size, 5 << 30);
        assert_eq!(
            (got.mtime_sec, got.mtime_nsec),
            (4_102_444_800, 123_456_789)
        );
        assert_eq!(
            statx_at(libc::AT_FDCWD, c"/nonexistent/scanarr", 0),
            Err(libc::ENOENT)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
