"""Whole-filesystem live watching with fanotify, behind the interface of `Inotify`.

One fanotify mark per filesystem covers every directory on it: no watch per directory, no
watch limit, kernel memory that does not grow with the tree. What the tree calls a watch is a
directory registered in the native handle map (`scanarr._native.Fanotify`, see
``rust/fanotify.rs``): its key stands for an inotify watch descriptor, and the events read come
back as inotify events of those keys, so the tree and the translator are the same for both
backends. Events of directories not registered (outside every volume) are dropped natively.

Removing a key queues its ``IN_IGNORED`` (as ``inotify_rm_watch`` does), delivered by the next
`read_pending`; the live index removes the keys of the directories it removes the same way.
With `inotify_fallback`, a filesystem fanotify cannot mark or identify (no file handles or
fsid: CIFS, most FUSE filesystems, a btrfs subvolume) is watched with inotify watches instead,
through the same object.

Requires ``CAP_SYS_ADMIN`` and Linux 5.17+ (``FAN_REPORT_DFID_NAME_TARGET``, ``FAN_RENAME``).
"""

from __future__ import annotations

import errno
import os

import trio

from scanarr import _native
from scanarr.live.inotify import WATCH_MASK, Inotify, RawEvent

# Bytes read per `read_pending`: a bound on one step of the trio thread (about 40,000 events).
_READ_LIMIT = 4 << 20

# The mark covers the whole filesystem: writes elsewhere on it (downloads, a build) are read and
# dropped natively, but each would still wake the watcher. After a read that found nothing of
# the volumes, the next wait starts this much later, so such a filesystem wakes it at most ~50
# times a second (events of the volumes are then at most this much later; the queue holds
# 16,384 events meanwhile, far more than a disk writes in 20 ms).
NOISE_PAUSE = 0.02


class FanotifyUnavailable(OSError):
    """fanotify cannot be used here; `reason` says why in words a user can act on."""

    def __init__(self, reason: str, error_number: int = 0) -> None:
        super().__init__(error_number, reason)
        self.reason = reason


def explain(error: OSError) -> str:
    """Why fanotify is not usable, from the OSError of `_native.Fanotify` or its `add_watch`."""
    text = str(error.strerror or error)
    code = error.errno
    if text.startswith("fanotify_init"):
        if code == errno.EPERM:
            return "fanotify needs CAP_SYS_ADMIN, which this process does not have"
        if code == errno.EINVAL:
            return (
                "this kernel lacks fanotify FAN_REPORT_DFID_NAME_TARGET / FAN_RENAME "
                "(Linux 5.17 or later)"
            )
        if code == errno.ENOSYS:
            return "this kernel has no fanotify"
        return f"fanotify_init failed: {os.strerror(code or 0)}"
    where = f" ({error.filename})" if error.filename else ""
    if code == errno.EPERM and text.startswith("fanotify_mark"):
        return "fanotify filesystem marks need CAP_SYS_ADMIN, which this process does not have"
    if text.startswith("name_to_handle_at"):
        return f"the filesystem of the volume{where} has no file handles"
    if text.startswith("fanotify_mark"):
        if code == errno.EXDEV:
            return f"the volume{where} is a subvolume fanotify cannot mark as a whole filesystem"
        if code == errno.EINVAL:
            return f"this kernel or filesystem refuses the fanotify mark{where} (FAN_RENAME?)"
        return f"the filesystem of the volume{where} cannot be marked by fanotify: {text}"
    return f"fanotify: {text}{where}"


class Fanotify(Inotify):
    """A fanotify group with the methods of `Inotify`, usable wherever one is (see the module
    docstring). None of `Inotify`'s state is used: every method is its own; the live index of
    the instance (`table`) keeps the keys registered as its watches."""

    def __init__(self, max_watches: int | None = None, *, inotify_fallback: bool = False) -> None:
        # `max_watches` is an inotify cap: fanotify has no per-directory watch to count.
        del max_watches
        try:
            self._native = _native.Fanotify(inotify_mask=WATCH_MASK if inotify_fallback else None)
        except OSError as error:
            raise FanotifyUnavailable(explain(error), error.errno or 0) from None
        # Given the group's descriptor, the index removes a removed directory's key from the
        # handle map (and queues its IN_IGNORED) instead of calling inotify_rm_watch.
        self.table = _native.LiveIndex(self._native.fd)
        self._read_nothing = False  # the last read found no event of the volumes (NOISE_PAUSE)

    @property
    def fd(self) -> int:
        return self._native.fd

    @property
    def watch_count(self) -> int:
        """Directories registered (what inotify would hold as watches)."""
        return self._native.registered

    @property
    def filesystems_marked(self) -> int:
        return self._native.filesystems_marked

    def fallbacks(self) -> list[tuple[str, int]]:
        """(syscall, errno) of each filesystem watched with the inotify fallback."""
        return self._native.fallbacks()

    def add_watch(self, path: str) -> int:
        """Register directory `path`; its key (the same one for the same directory). OSErrors
        as inotify raises them (ENOENT/ENOTDIR/ELOOP: gone or not a directory)."""
        try:
            key = self._native.add_watch(path)
        except OSError as error:
            raise OSError(error.errno, error.strerror, path) from None
        self.table.own(key)
        return key

    @property
    def max_watches(self) -> int | None:
        return None

    def watch_budget(self) -> int | None:
        return None  # no watch limit

    def adopt(self, wd: int) -> None:
        """A directory registered by the native lister: already in the handle map."""
        self.table.own(wd)

    def rm_watch(self, wd: int, *, unknown: bool = False) -> None:
        if self.table.disown(wd) or unknown:
            self._native.unwatch(wd)

    def forget(self, wd: int) -> None:
        """IN_IGNORED was read: the key is gone from the handle map already."""
        self.table.disown(wd)

    async def wait_readable(self) -> None:
        if self._native.has_queued:
            await trio.lowlevel.checkpoint()
            return
        if self._read_nothing:
            await trio.sleep(NOISE_PAUSE)
        await trio.lowlevel.wait_readable(self.fd)

    def read_pending(self) -> list[RawEvent]:
        """Every event queued right now (up to a bounded read), then the IN_IGNORED of keys
        removed since the last call."""
        events = [
            RawEvent(key, mask, cookie, os.fsdecode(name))
            for key, mask, cookie, name in self._native.read(_READ_LIMIT)
        ]
        self._read_nothing = not events
        return events

    def close(self) -> None:
        self.table.clear_owned()
        self._native.close()


def probe(paths: list[str] | None = None) -> str | None:
    """None when fanotify can watch these paths (without paths: can mark a filesystem at all);
    else why not. Costs one fanotify group, closed before returning."""
    try:
        instance = _native.Fanotify(inotify_mask=None)
    except OSError as error:
        return explain(error)
    try:
        if not paths:
            # A group may be allowed (unprivileged FID groups, Linux 5.13+) while filesystem
            # marks are not: try one. Other failures are the filesystem's, not the process's.
            try:
                instance.add_watch("/")
            except OSError as error:
                if error.errno == errno.EPERM:
                    return explain(error)
            return None
        for path in paths or ():
            try:
                instance.add_watch(path)
            except OSError as error:
                if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    continue  # not a filesystem question: the watcher reports the root itself
                return explain(error)
        return None
    finally:
        instance.close()
