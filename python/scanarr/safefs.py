"""The one module through which scanarr removes, links or replaces anything on disk.

Commands from the API name files as ``(volume, relative_path)``. This module turns such a name into
a directory file descriptor and a final name, and does every destructive operation relative to that
descriptor. Its guarantees:

1. **Lexically inside.** `split_relative_path` accepts only a relative POSIX path of plain names:
   no leading ``/``, no ``.`` or ``..``, no empty component (``a//b``, trailing ``/``), no NUL, no
   name over 255 bytes, no path over 4,095 bytes, nothing that cannot be encoded for the OS.
2. **Physically inside.** `VolumeRoot` opens the configured root once (its path is the operator's
   and is opened as written) and checks its ``st_dev`` against the device recorded for the volume
   (an unmounted mount point is an empty directory on another device: refused as unavailable).
   `ParentDirectories` then walks from that descriptor one directory at a time. With
   ``openat2`` (Linux ≥ 5.6) each step carries
   ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV``, so the kernel refuses a symlink
   (``ELOOP``) or a mount point (``EXDEV``). Where ``openat2`` is missing or blocked (``ENOSYS`` or
   ``EPERM`` from a seccomp filter) each step is ``openat(O_PATH | O_NOFOLLOW)`` and ``fstat`` of
   what it pinned: a symlink is refused (``ELOOP``), so is a different ``st_dev`` or mount id
   (``/proc/self/fdinfo``; a bind mount of the same filesystem keeps ``st_dev``) as ``EXDEV``;
   only then is the checked directory reopened through ``"."``. Without ``/proc`` the fallback
   can only compare ``st_dev``.
3. **Race-free walk.** Every later step is relative to a descriptor already checked, never to a
   path string, so swapping a directory on the way for a symlink cannot redirect the operation:
   the swap is refused, or the operation happens in the directory that was checked.
4. **Only regular files.** `lstat_regular_file` never follows the final component and refuses
   anything but a regular file on the volume's device. A symlink named like a media file is
   *refused*, not unlinked: the API only knows media files, so a symlink at that name is not what
   it asked to delete, and the operator should look at it (``not_a_regular_file``).
5. **Nothing recursive.** Files go one name at a time (`unlink_file`); directories only with
   ``rmdir`` (`remove_empty_directory`), which the kernel refuses for a non-empty directory, and
   never for a directory the caller protects (volume roots, nested volume roots).
6. **Replace without loss.** `link_replace` links the source to a fresh temporary name beside the
   target and renames it over the target: the target name always points at the old file or the
   new one, and any failure leaves the old target and removes the temporary name.
   `link_create` makes a new name the same way but never overwrites (``RENAME_NOREPLACE``, or a
   second link). Both check that the temporary link is the source inode the caller checked
   before it can reach the target name, so a source replaced meanwhile fails
   (``source_changed``) with nothing changed. Neither leaves the temporary name behind, not
   even when the target became a link of the source (where rename(2) does nothing);
   `remove_temporary_links` clears those a killed process left. A failed `ParentDirectories`
   walk with ``create`` removes the directories it made (`remove_created`, for its caller too).

What it cannot promise: between the last check of a name (`lstat_regular_file`, or the caller's
`before_rename`) and `unlink_file` or the rename, another process may put a different file at the
same name inside the checked directory; Linux has no "unlink if inode matches". Callers therefore
check right before the step, with nothing slow in between. The damage is bounded to that name
inside the volume, and only by someone who could delete it anyway.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

NAME_MAX = 255
PATH_MAX = 4096

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
# openat2 has number 437 on every architecture using the common syscall table (since Linux 5.6).
# Elsewhere (alpha, mips, ia64 number it differently) the fallback walk is used.
_OPENAT2_MACHINES = {"x86_64", "aarch64", "armv7l", "armv6l", "i686", "i386", "riscv64", "ppc64le"}
_SYS_OPENAT2 = 437 if platform.machine() in _OPENAT2_MACHINES else None
#: The temporary names `link_replace` and `link_create` make beside a target, and nothing else.
TEMPORARY_LINK_NAME = re.compile(r"\.scanarr-link-[0-9a-f]{16}\.tmp")


class UnsafePath(ValueError):
    """A relative path that is not a plain path below its volume root; `str()` says why."""


# The protocol's error codes for a refusal (PROTOCOL.md §7); the last one is, by the protocol's
# wording, a phrase rather than a code.
RefusalReason = Literal[
    "volume_unavailable",
    "volume_unverified",
    "unknown_volume",
    "not_a_regular_file",
    "cross_device",
    "source_changed",
    "target_changed",
    "inode_mismatch",
    "deletion disabled by watcher config",
]


class Refused(Exception):
    """Something safefs will not touch; `reason` is the protocol error code, `detail` the why."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason} ({detail})")
        self.reason = reason
        self.detail = detail


def split_relative_path(relative_path: str) -> list[str]:
    """The components of `relative_path`, or `UnsafePath` when it could leave its root."""
    if not relative_path:
        raise UnsafePath("empty path")
    if "\x00" in relative_path:
        raise UnsafePath("NUL character in path")
    if relative_path.startswith("/"):
        raise UnsafePath("absolute path")
    try:
        encoded = os.fsencode(relative_path)
    except UnicodeEncodeError:
        raise UnsafePath("path cannot be encoded for the file system") from None
    if len(encoded) >= PATH_MAX:
        raise UnsafePath(f"path longer than {PATH_MAX - 1} bytes")
    components = relative_path.split("/")
    for component in components:
        if not component:
            raise UnsafePath("empty component")
        if component in (".", ".."):
            raise UnsafePath(f"{component!r} component")
        if len(os.fsencode(component)) > NAME_MAX:
            raise UnsafePath(f"name longer than {NAME_MAX} bytes")
    return components


# --- opening directories ------------------------------------------------------------------


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2_directory(dir_fd: int, name: str) -> int:
    if _SYS_OPENAT2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), name)
    how = _OpenHow(
        _DIRECTORY_FLAGS & ~os.O_NOFOLLOW,  # with O_NOFOLLOW a symlink reads as ENOTDIR, not ELOOP
        0,
        _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_XDEV | _RESOLVE_NO_MAGICLINKS,
    )
    path = os.fsencode(name)
    for _attempt in range(16):  # EAGAIN: a concurrent rename or mount; EINTR: a signal
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code not in (errno.EAGAIN, errno.EINTR):
            break
    raise OSError(code, os.strerror(code), name)


def _probe_openat2() -> bool:
    """Whether openat2 works here (ENOSYS: kernel < 5.6; EPERM: blocked by a seccomp filter)."""
    root_fd = os.open("/", _DIRECTORY_FLAGS)
    try:
        os.close(_openat2_directory(root_fd, "."))
    except OSError:
        return False
    finally:
        os.close(root_fd)
    return True


#: Whether directory walks use openat2. Probed once; set it to False to force the fallback walk.
USE_OPENAT2: bool = _probe_openat2()


def mount_id(fd: int) -> int | None:
    """The mount id of an open descriptor, from /proc/self/fdinfo; None when /proc is absent."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class VolumeRoot:
    """An open volume root: every walk starts from `fd` and must stay on `device` / `mount`."""

    def __init__(self, path: str, recorded_device: int | None) -> None:
        """Open `path`; `Refused("volume_unavailable")` if it is missing or on another device."""
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise Refused("volume_unavailable", f"{path}: {error.strerror}") from None
        status = os.fstat(self.fd)
        if recorded_device is not None and status.st_dev != recorded_device:
            os.close(self.fd)
            raise Refused(
                "volume_unavailable",
                f"{path} is on device {status.st_dev}, recorded {recorded_device}: not mounted?",
            )
        self.path = path
        self.device = status.st_dev
        self.identity = (status.st_dev, status.st_ino)
        self.mount = mount_id(self.fd)

    def still_present(self) -> bool:
        """Whether the configured path still leads to this same root (not unmounted meanwhile)."""
        try:
            status = os.stat(self.path)
        except OSError:
            return False
        return (status.st_dev, status.st_ino) == self.identity

    def close(self) -> None:
        os.close(self.fd)

    def open_child(self, dir_fd: int, name: str) -> int:
        """Open directory `name` under `dir_fd` without following a symlink or leaving the mount."""
        if USE_OPENAT2:
            return _openat2_directory(dir_fd, name)
        # O_PATH|O_NOFOLLOW pins whatever is at the name (a symlink itself, never its target)
        # without side effects; it is checked, then reopened through "." for a readable fd.
        handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            status = os.fstat(handle)
            if stat.S_ISLNK(status.st_mode):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
            if not stat.S_ISDIR(status.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
            if status.st_dev != self.device or (
                self.mount is not None and mount_id(handle) != self.mount
            ):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), name)
            return os.open(".", _DIRECTORY_FLAGS, dir_fd=handle)
        finally:
            os.close(handle)


class ParentDirectories:
    """The open directories from the root down to a file's parent: `fds[i]` holds `names[i]`.

    `fds[0]` is the root's descriptor (owned by the VolumeRoot); the others are closed by
    `close()`. Raises OSError from the walk: ELOOP for a symlink, EXDEV for a mount point,
    ENOENT/ENOTDIR when the path does not exist.
    """

    def __init__(self, root: VolumeRoot, names: Sequence[str], *, create: bool = False) -> None:
        """Walk `names` from the root; with `create`, make missing directories (umask applies)."""
        self.root = root
        self.names = list(names)
        self.fds = [root.fd]
        self.created: list[int] = []  # indexes into `names` of the directories this walk made
        try:
            for name in self.names:
                self.fds.append(self._open(name, create))
        except BaseException:
            self.remove_created()
            self.close()
            raise

    def _open(self, name: str, create: bool) -> int:
        try:
            return self.root.open_child(self.fds[-1], name)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(name, 0o777, dir_fd=self.fds[-1])
        except FileExistsError:
            pass  # made meanwhile by someone else: not ours; open_child checks what it is
        else:
            self.created.append(len(self.fds) - 1)
        return self.root.open_child(self.fds[-1], name)

    def remove_created(self) -> None:
        """Undo the walk's `create`: rmdir the directories it made, deepest first, while empty.

        A directory is removed only while its name still holds the directory this walk opened;
        the first one that is not empty (someone else uses it now), gone or replaced stops the
        removal, as its parents are then not empty either.
        """
        for index in reversed(self.created):
            if index + 1 >= len(self.fds):
                return  # made, but the walk failed opening it: not known to be ours
            made = os.fstat(self.fds[index + 1])
            try:
                now = os.stat(self.names[index], dir_fd=self.fds[index], follow_symlinks=False)
                if _identity(now) != _identity(made):
                    return
                os.rmdir(self.names[index], dir_fd=self.fds[index])
            except OSError:
                return
        self.created = []

    @property
    def fd(self) -> int:
        """The innermost directory (the file's parent)."""
        return self.fds[-1]

    def close(self) -> None:
        for fd in self.fds[1:]:
            os.close(fd)
        self.fds = self.fds[:1]


# --- the operations -----------------------------------------------------------------------


def lstat_regular_file(dir_fd: int, name: str, device: int) -> os.stat_result:
    """`lstat` of `name` in `dir_fd`; `Refused` unless it is a regular file on `device`."""
    status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(status.st_mode):
        raise Refused("not_a_regular_file", "symbolic link")
    if not stat.S_ISREG(status.st_mode):
        raise Refused("not_a_regular_file", "directory or special file")
    if status.st_dev != device:
        raise Refused("cross_device", f"on device {status.st_dev}, volume on {device}")
    return status


def unlink_file(dir_fd: int, name: str) -> None:
    """Remove the name `name` in `dir_fd` (never follows it; refuses directories)."""
    os.unlink(name, dir_fd=dir_fd)


def remove_empty_directory(
    dir_fd: int, name: str, device: int, protected: Iterable[tuple[int, int]]
) -> bool:
    """`rmdir` of `name` in `dir_fd` if it is an empty directory on `device` not in `protected`.

    `protected` holds ``(st_dev, st_ino)`` identities never to remove. False (and nothing done)
    when it is not empty, not a directory, protected, gone, or a mount point; other errors raise.
    """
    try:
        status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    identity = (status.st_dev, status.st_ino)
    if not stat.S_ISDIR(status.st_mode) or status.st_dev != device or identity in protected:
        return False
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY, errno.ENOENT):
            return False
        raise
    return True


def link_new(source_fd: int, source_name: str, target_fd: int, target_name: str) -> None:
    """Hardlink `source_name` as a new name `target_name`; never follows, never overwrites."""
    os.link(
        source_name, target_name, src_dir_fd=source_fd, dst_dir_fd=target_fd, follow_symlinks=False
    )


def _identity(status: os.stat_result) -> tuple[int, int]:
    return (status.st_dev, status.st_ino)


def is_temporary_link_name(name: str) -> bool:
    """Whether `name` is exactly a temporary name `link_replace` / `link_create` make."""
    return TEMPORARY_LINK_NAME.fullmatch(name) is not None


def _link_temporary(
    source_fd: int, source_name: str, target_fd: int, source: tuple[int, int]
) -> str:
    """Link `source_name` to a fresh temporary name in `target_fd`, checked to be `source`."""
    while True:
        temporary = f".scanarr-link-{secrets.token_hex(8)}.tmp"
        try:
            link_new(source_fd, source_name, target_fd, temporary)
            break
        except FileExistsError:
            continue
    # link(2) links whatever holds the source name *now*: it may have been replaced since the
    # caller checked it. The temporary name pins the inode, so one check here is final.
    try:
        linked = os.stat(temporary, dir_fd=target_fd, follow_symlinks=False)
        if _identity(linked) != source:
            raise Refused(
                "source_changed",
                f"the source name now holds inode {linked.st_ino}, inode {source[1]} was checked",
            )
    except BaseException as error:
        _discard_after(error, target_fd, temporary)
        raise
    return temporary


def _discard_after(error: BaseException, target_fd: int, temporary: str) -> None:
    """Remove the temporary name after `error`; if that fails too, say it was left."""
    try:
        os.unlink(temporary, dir_fd=target_fd)
    except OSError as cleanup:
        code = error.errno if isinstance(error, OSError) else cleanup.errno
        text = error.strerror if isinstance(error, OSError) else str(error)
        raise OSError(
            code, f"{text}; temporary link {temporary} left: {cleanup.strerror}"
        ) from error


def _remove_if_still_there(target_fd: int, temporary: str, source: tuple[int, int]) -> None:
    """Remove the temporary name if it is still the source: rename(2) between two names of one
    inode does nothing and succeeds, so a target that became a link of the source meanwhile
    leaves it behind (and the fallback of `link_create` leaves it on purpose)."""
    try:
        status = os.stat(temporary, dir_fd=target_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # moved onto the target: the usual case
    if _identity(status) == source:
        os.unlink(temporary, dir_fd=target_fd)


def link_replace(
    source_fd: int,
    source_name: str,
    target_fd: int,
    target_name: str,
    *,
    source: tuple[int, int],
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Make `target_name` a hardlink of `source_name`, replacing what is there atomically.

    `source` is the ``(st_dev, st_ino)`` the caller checked at the source name. Links to a fresh
    hidden temporary name beside the target, checks that name is `source` (else
    `Refused("source_changed")`), runs `before_rename`, then renames it over the target.
    `before_rename`, when given, may raise to cancel: the last check before the old target goes
    (e.g. that the target is still the file the caller meant to replace). On any failure the
    temporary name is removed and the old target is untouched.
    """
    temporary = _link_temporary(source_fd, source_name, target_fd, source)
    try:
        if before_rename is not None:
            before_rename()
        os.rename(temporary, target_name, src_dir_fd=target_fd, dst_dir_fd=target_fd)
    except BaseException as error:
        _discard_after(error, target_fd, temporary)
        raise
    _remove_if_still_there(target_fd, temporary, source)


def link_create(
    source_fd: int,
    source_name: str,
    target_fd: int,
    target_name: str,
    *,
    source: tuple[int, int],
) -> None:
    """Make the new name `target_name` a hardlink of `source_name` (checked `source`).

    Never overwrites (`FileExistsError`). Like `link_replace` it goes through a checked temporary
    name, so a source replaced after the caller's check never gets the target name
    (`Refused("source_changed")`, nothing left). The temporary name is then moved with
    ``renameat2(RENAME_NOREPLACE)``; where that is missing (old glibc or kernel, NFS, some FUSE
    file systems) it is linked to the target name — link(2) never overwrites either — and removed.
    """
    temporary = _link_temporary(source_fd, source_name, target_fd, source)
    try:
        if not _rename_noreplace(target_fd, temporary, target_name):
            link_new(target_fd, temporary, target_fd, target_name)
    except BaseException as error:
        _discard_after(error, target_fd, temporary)
        raise
    _remove_if_still_there(target_fd, temporary, source)


_RENAME_NOREPLACE = 1
_renameat2 = getattr(_libc, "renameat2", None)  # glibc >= 2.28
if _renameat2 is not None:
    _renameat2.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    )
    _renameat2.restype = ctypes.c_int

#: Whether `link_create` tries renameat2; set it to False to force the link-then-unlink fallback.
USE_RENAMEAT2: bool = _renameat2 is not None


def _rename_noreplace(dir_fd: int, old: str, new: str) -> bool:
    """renameat2(RENAME_NOREPLACE) in `dir_fd`; False where this system or file system lacks it."""
    if not USE_RENAMEAT2 or _renameat2 is None:
        return False
    if _renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), new)


def remove_temporary_links(dir_fd: int, device: int) -> list[str]:
    """Remove what a kill between link and rename left in `dir_fd`; the names removed.

    Only names exactly of the temporary pattern, only regular files on `device` with another
    link (the temporary name is never the only name of a file), never following a symlink.
    """
    removed = []
    for name in os.listdir(dir_fd):
        if not is_temporary_link_name(name):
            continue
        try:
            status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(status.st_mode) and status.st_dev == device and status.st_nlink > 1:
            os.unlink(name, dir_fd=dir_fd)
            removed.append(name)
    return removed
