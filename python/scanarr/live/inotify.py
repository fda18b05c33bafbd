"""Raw inotify for trio: one non-blocking inotify fd, read in one go when it becomes readable.

No thread per watch and no thread for reading: the run loop waits with
`trio.lowlevel.wait_readable` and then reads every pending event with a single ``read``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import NamedTuple

import trio
from inotify_simple import INotify, flags

from scanarr import _native

# Events of every watched directory. IN_MODIFY is left out on purpose: a download writing a file
# produces one per write(); a modification is looked at when the writer closes the file
# (IN_CLOSE_WRITE) or changes its metadata (IN_ATTRIB). IN_EXCL_UNLINK drops events for files
# already unlinked; IN_DONT_FOLLOW/IN_ONLYDIR refuse a path swapped for a symlink or a file.
WATCH_MASK: int = (
    flags.CREATE
    | flags.CLOSE_WRITE
    | flags.ATTRIB
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.DELETE
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.EXCL_UNLINK
    | flags.ONLYDIR
    | flags.DONT_FOLLOW
)

IN_CREATE: int = flags.CREATE
IN_CLOSE_WRITE: int = flags.CLOSE_WRITE
IN_ATTRIB: int = flags.ATTRIB
IN_MOVED_FROM: int = flags.MOVED_FROM
IN_MOVED_TO: int = flags.MOVED_TO
IN_DELETE: int = flags.DELETE
IN_DELETE_SELF: int = flags.DELETE_SELF
IN_MOVE_SELF: int = flags.MOVE_SELF
IN_UNMOUNT: int = flags.UNMOUNT
IN_Q_OVERFLOW: int = flags.Q_OVERFLOW
IN_IGNORED: int = flags.IGNORED
IN_ISDIR: int = flags.ISDIR

# errno values of inotify_add_watch that mean "no watch left" rather than "this path is bad".
WATCH_LIMIT_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EMFILE})


class RawEvent(NamedTuple):
    """One inotify event as read from the fd (`name` decoded with ``os.fsdecode``)."""

    wd: int
    mask: int
    cookie: int
    name: str


class WatchLimitReached(OSError):
    """``inotify_add_watch`` failed with ENOSPC/EMFILE (or scanarr's own `max_watches` cap)."""


class Inotify:
    """An inotify instance: add and remove watches, wait for and read events."""

    def __init__(self, max_watches: int | None = None) -> None:
        self._inotify = INotify(nonblocking=True)
        self._max_watches = max_watches
        # The live index of this instance (`scanarr.live.tree`): it also keeps the set of its
        # watches, so that those the native lister adds are not each handed to Python.
        self.table = _native.LiveIndex(self._inotify.fileno())

    @property
    def fd(self) -> int:
        fd: int = self._inotify.fileno()
        return fd

    @property
    def watch_count(self) -> int:
        return self.table.owned_count

    def add_watch(self, path: str) -> int:
        """Watch directory `path`; returns its watch descriptor (the same one for the same inode).

        Raises WatchLimitReached when no watch is left, other `OSError`s as they come
        (ENOENT/ENOTDIR: the directory went away or was swapped for something else).
        """
        if self._max_watches is not None and self.table.owned_count >= self._max_watches:
            raise WatchLimitReached(
                errno.ENOSPC, f"scanarr's own watch cap ({self._max_watches}) reached", path
            )
        try:
            wd: int = self._inotify.add_watch(path, WATCH_MASK)
        except OSError as error:
            if error.errno in WATCH_LIMIT_ERRNOS:
                raise WatchLimitReached(error.errno, os.strerror(error.errno), path) from None
            error.filename = path
            raise
        self.table.own(wd)
        return wd

    @property
    def max_watches(self) -> int | None:
        return self._max_watches

    def watch_budget(self) -> int | None:
        """Watches scanarr's own cap still allows (None: no cap of its own)."""
        if self._max_watches is None:
            return None
        return max(0, self._max_watches - self.table.owned_count)

    def adopt(self, wd: int) -> None:
        """A watch added on this instance's fd by the native lister."""
        self.table.own(wd)

    def rm_watch(self, wd: int, *, unknown: bool = False) -> None:
        """Stop watching `wd`. A watch the kernel already dropped (EINVAL) is not an error.
        Watches this object did not add are left alone unless `unknown` is set."""
        if not self.table.disown(wd) and not unknown:
            return
        try:
            self._inotify.rm_watch(wd)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise

    def forget(self, wd: int) -> None:
        """The kernel dropped `wd` (IN_IGNORED): it no longer counts against the limit."""
        self.table.disown(wd)

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.fd)

    def read_pending(self) -> list[RawEvent]:
        """Every event queued right now, in one read (empty when there is none)."""
        # inotify_simple's Event is a namedtuple with the same fields, in the same order.
        events: list[RawEvent] = self._inotify.read(timeout=0)
        return events

    def close(self) -> None:
        self.table.clear_owned()  # (and the index removes no watch any more)
        self._inotify.close()


def read_sysctl(name: str, area: str = "inotify") -> int | None:
    """A numeric ``fs.<area>.*`` limit (inotify or fanotify), or None when it cannot be read."""
    try:
        with open(f"/proc/sys/fs/{area}/{name}") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def flag_names(mask: int) -> Sequence[str]:
    return [flag.name or "?" for flag in flags.from_mask(mask)]
