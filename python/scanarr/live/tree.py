"""What the live watcher knows of each volume: its watched directories and their media files.

Each volume is a tree of `Directory` nodes, one per directory that passes the filters, each with
its inotify watch descriptor and the inodes of its media files by name. Paths are never stored:
they are computed from the chain of parents, so moving a directory is a single re-parenting.

`InodeIndex` maps ``(device, inode)`` to the directories holding a link of that inode and the
attributes last reported for it, so that when a link is created or removed the other paths of the
inode can be told their new ``hardlink_count``. It stores no path: a link is its directory node
and its name (the string object keying the directory's files, shared).

`populate` and `reconcile` bring a subtree in line with the disk: watch (before listing, so nothing
created in between is missed), list, ``lstat`` media files, and say what was added, kept or removed.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from scanarr import _native
from scanarr.live import filetable
from scanarr.live.filters import MediaFilter, is_utf8
from scanarr.live.inotify import WATCH_MASK, Inotify, WatchLimitReached

log = logging.getLogger(__name__)


class VolumeTree:
    """One watched volume: its root, its device and its directory tree."""

    __slots__ = (
        "detached",
        "device",
        "excluded",
        "filter",
        "path",
        "root",
        "unwatched",
        "volume_id",
        "watches",
    )

    def __init__(
        self,
        volume_id: str,
        path: str,
        device: int,
        media_filter: MediaFilter,
        excluded: frozenset[str] = frozenset(),
    ) -> None:
        self.volume_id = volume_id
        self.path = path  # absolute, normalised, no trailing "/"
        self.device = device  # st_dev of the root: directories on other devices are not entered
        self.filter = media_filter
        self.excluded = excluded  # absolute roots of nested volumes, watched by those volumes
        self.root = Directory("", None, self)
        # Kept as watches are added and removed, so that health and retries never walk the tree:
        # the number of watched directories, and the directories left unwatched by the watch
        # limit or a watch error (retried, and covered by rescans meanwhile).
        self.watches = 0
        self.unwatched: set[Directory] = set()
        # Set when the volume stops being watched: the tree is freed later, off the trio thread;
        # until then its events and its links are ignored.
        self.detached = False

    def unwatched_tops(self) -> list[Directory]:
        """Unwatched directories whose parent is watched: syncing these covers every unwatched
        one. Forgets those no longer in the tree."""
        tops: list[Directory] = []
        for node in list(self.unwatched):
            if node.wd is not None or not node.attached():
                self.unwatched.discard(node)
            elif node.parent is None or node.parent.wd is not None:
                tops.append(node)
        return tops


# Most directories have no subdirectory: they share this read-only empty mapping instead of
# holding an empty dict each (a write to it would raise, not corrupt).
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Directory:
    """A watched (or, past the watch limit, unwatched) directory of a volume."""

    __slots__ = ("_files", "name", "parent", "subdirs", "volume", "wd")

    def __init__(self, name: str, parent: Directory | None, volume: VolumeTree) -> None:
        self.name = name
        self.parent = parent
        self.volume = volume
        self.wd: int | None = None  # None while not watched
        self.subdirs: Mapping[str, Directory] = _EMPTY
        self._files: filetable.FileTable = filetable.EMPTY

    def add_subdir(self, child: Directory) -> Directory:
        """Make `child` (whose parent is this directory) the subdirectory `child.name`."""
        subdirs = self.subdirs
        if not isinstance(subdirs, dict):
            subdirs = self.subdirs = {}
        subdirs[child.name] = child
        return child

    def new_subdir(self, name: str) -> Directory:
        return self.add_subdir(Directory(name, self, self.volume))

    def remove_subdir(self, name: str) -> None:
        subdirs = self.subdirs
        if isinstance(subdirs, dict):
            del subdirs[name]
            if not subdirs:
                self.subdirs = _EMPTY

    # --- media files (see `scanarr.live.filetable`) ---------------------------------------

    def file_record(self, name: str) -> tuple[int, int] | None:
        """(inode, stamp) of the media file `name`, None if not known."""
        return filetable.record(self._files, name)

    def file_inode(self, name: str) -> int | None:
        record = filetable.record(self._files, name)
        return None if record is None else record[0]

    def has_file(self, name: str) -> bool:
        return filetable.record(self._files, name) is not None

    def file_records(self) -> list[tuple[str, tuple[int, int]]]:
        """(name, (inode, stamp)) of every media file."""
        return list(filetable.items(self._files).items())

    def file_names(self) -> list[str]:
        return list(filetable.items(self._files))

    def file_count(self) -> int:
        return filetable.count(self._files)

    def names_of(self, inode: int) -> list[str]:
        """Names of this directory's media files that are links of `inode`."""
        return filetable.names_of(self._files, inode)

    def set_file(self, name: str, inode: int, stamp: int) -> None:
        self._files = filetable.with_file(self._files, name, inode, stamp)

    def set_stamp(self, inode: int, stamp: int) -> None:
        """Give every link of `inode` in this directory the stamp `stamp`."""
        self._files = filetable.with_stamp(self._files, inode, stamp)

    def pop_file(self, name: str) -> int:
        """Forget the media file `name`; returns its inode (KeyError if not known)."""
        self._files, inode = filetable.without_file(self._files, name)
        return inode

    # --- paths --------------------------------------------------------------------------

    def relative_path(self) -> str:
        names: list[str] = []
        node: Directory = self
        while node.parent is not None:
            names.append(node.name)
            node = node.parent
        return "/".join(reversed(names))

    def child_path(self, name: str) -> str:
        """Relative path of the entry `name` in this directory."""
        relative = self.relative_path()
        return f"{relative}/{name}" if relative else name

    def absolute_path(self, name: str | None = None) -> str:
        relative = self.relative_path() if name is None else self.child_path(name)
        return f"{self.volume.path}/{relative}" if relative else self.volume.path

    def attached(self) -> bool:
        """Whether this node is still part of its volume's tree."""
        node: Directory = self
        while node.parent is not None:
            if node.parent.subdirs.get(node.name) is not node:
                return False
            node = node.parent
        return node is self.volume.root

    def iter_tree(self) -> Iterator[tuple[Directory, str]]:
        """This directory and every directory below it, each with its path below this one."""
        stack: list[tuple[Directory, str]] = [(self, "")]
        while stack:
            node, below = stack.pop()
            yield node, below
            for name, child in node.subdirs.items():
                stack.append((child, f"{below}/{name}" if below else name))


def forget_subtree(directories: list[tuple[Directory, str]]) -> None:
    """Break the parent ↔ child cycles of directories no longer in a tree, so that reference
    counting frees them: listed trees are kept out of the cyclic GC (`freeze_listed`)."""
    for directory, _below in directories:
        directory.subdirs = _EMPTY


def freeze_listed() -> None:
    """Move every object alive now — a freshly listed tree above all — out of the cyclic GC's
    reach. A full collection would otherwise walk the whole tree (0.3–0.7 s for a million
    entries) while holding the GIL, stalling the trio thread; trees drop their cycles when
    parts are removed (`forget_subtree`), so what is frozen is still freed when unused."""
    gc.freeze()


def join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


STAMP_MASK = (1 << 60) - 1


def stamp_of(st: os.stat_result) -> int:
    """A 60-bit digest of size, mtime and link count: what "changed" is judged on."""
    return hash((st.st_size, st.st_mtime_ns, st.st_nlink)) & STAMP_MASK


class InodeEntry:
    """What was last reported for an inode (as a stamp), and its known links: a view of the
    directories holding it, made on demand (nothing of it is kept)."""

    __slots__ = ("holders", "inode", "stamp")

    def __init__(self, inode: int, holders: tuple[Directory, ...], stamp: int) -> None:
        self.inode = inode
        self.holders = holders
        self.stamp = stamp

    def links(self) -> list[tuple[Directory, str]]:
        return [
            (directory, name)
            for directory in self.holders
            if not directory.volume.detached
            for name in directory.names_of(self.inode)
        ]

    def differs(self, st: os.stat_result) -> bool:
        return stamp_of(st) != self.stamp

    def update(self, st: os.stat_result) -> None:
        self.stamp = stamp_of(st)
        for directory in self.holders:
            directory.set_stamp(self.inode, self.stamp)


Holders = Directory | tuple[Directory, ...]


class InodeIndex:
    """``(device, inode)`` → the directories holding a link of it, for every media file of every
    watched volume. A link's name and the inode's stamp are in the directory (`set_file`); an
    inode held by one directory, nearly all of them, costs a dict slot and its key."""

    __slots__ = ("_devices",)

    def __init__(self) -> None:
        self._devices: dict[int, dict[int, Holders]] = {}

    def __len__(self) -> int:
        return sum(len(inodes) for inodes in self._devices.values())

    def get(self, device: int, inode: int) -> InodeEntry | None:
        inodes = self._devices.get(device)
        held = None if inodes is None else inodes.get(inode)
        if held is None:
            return None
        holders = held if isinstance(held, tuple) else (held,)
        for directory in holders:
            for name in directory.names_of(inode):
                record = directory.file_record(name)
                assert record is not None
                return InodeEntry(inode, holders, record[1])
        raise AssertionError(f"inode {inode} indexed without a link")

    def add_link(self, directory: Directory, name: str, st: os.stat_result) -> InodeEntry:
        """Record `name` in `directory` as a link of ``st.st_ino``; returns the inode's entry."""
        return self.add_link_stamped(directory, name, st.st_ino, stamp_of(st))

    def add_link_stamped(
        self, directory: Directory, name: str, inode: int, stamp: int
    ) -> InodeEntry:
        """`add_link` with the inode and stamp given (the first link of an inode sets its stamp;
        a further one takes the inode's)."""
        inodes = self._devices.setdefault(directory.volume.device, {})
        held = inodes.get(inode)
        if held is None:
            inodes[inode] = directory
            holders: tuple[Directory, ...] = (directory,)
        else:
            entry = self.get(directory.volume.device, inode)
            assert entry is not None
            stamp = entry.stamp
            holders = held if isinstance(held, tuple) else (held,)
            if not any(holder is directory for holder in holders):
                holders = inodes[inode] = (*holders, directory)
        directory.set_file(name, inode, stamp)
        return InodeEntry(inode, holders, stamp)

    def remove_link(self, directory: Directory, name: str) -> tuple[int, InodeEntry | None]:
        """Forget `name` in `directory`; returns its inode and the entry if other links remain."""
        inode = directory.pop_file(name)
        device = directory.volume.device
        inodes = self._devices.get(device, {})
        held = inodes.get(inode)
        if held is None:
            return inode, None
        if not directory.names_of(inode):
            holders = held if isinstance(held, tuple) else (held,)
            remaining = tuple(holder for holder in holders if holder is not directory)
            if not remaining:
                del inodes[inode]
                return inode, None
            inodes[inode] = remaining if len(remaining) > 1 else remaining[0]
        return inode, self.get(device, inode)

    def links(self, device: int, inode: int) -> list[tuple[Directory, str]]:
        """Every known ``(directory, name)`` of an inode."""
        entry = self.get(device, inode)
        return [] if entry is None else entry.links()


@attrs.define
class SubtreeChanges:
    """What `TreeWalker.sync` found, relative to the directory it synced."""

    # (directory, name, lstat) of media files not known before
    added: list[tuple[Directory, str, os.stat_result]] = attrs.Factory(list)
    # (directory, name, path below the synced directory, lstat) of known files still there
    kept: list[tuple[Directory, str, str, os.stat_result]] = attrs.Factory(list)
    # (path below the synced directory, inode) of known files gone
    removed: list[tuple[str, int]] = attrs.Factory(list)
    # (parent, name, holder): the directory `name` of `parent` is already watched as `holder`,
    # a node elsewhere in the tree whose move has not been read yet; it was not entered.
    collisions: list[tuple[Directory, str, Directory]] = attrs.Factory(list)
    unwatched: int = 0  # directories left unwatched by the watch limit or a watch error
    directories: int = 0  # directories listed
    watch_limit: WatchLimitReached | None = None
    errors: list[OSError] = attrs.Factory(list)  # unreadable or unwatchable directories


# Entries turned into nodes per slice of a native listing: in the listing thread, and smaller
# on the trio thread (a new directory's listing, merged between other tasks' steps).
_SLICE = 4096
_TRIO_SLICE = 1024
_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


def _listed_stat(device: int, inode: int, size: int, mtime_ns: int, nlink: int) -> os.stat_result:
    """What the native lister saw of a media file, as the `lstat` result the translator reads
    (inode, device, size, mtime, link count)."""
    seconds = mtime_ns // 1_000_000_000
    return os.stat_result(
        (
            stat.S_IFREG,
            inode,
            device,
            nlink,
            0,
            0,
            size,
            seconds,
            seconds,
            seconds,
            float(seconds),
            mtime_ns / 1e9,
            float(seconds),
            mtime_ns,
            mtime_ns,
            mtime_ns,
        )
    )


class WalkStopped(Exception):
    """The watcher is shutting down while a listing runs."""


class _Gone:
    """The directory is not there any more (or is not a directory)."""


class _Replaced:
    """Another directory now stands where a known one was; `wd` already watches it."""

    __slots__ = ("wd",)

    def __init__(self, wd: int) -> None:
        self.wd = wd


_GONE = _Gone()


class TreeWalker:
    """Watches and lists directories of one inotify instance; keeps the wd → node map."""

    def __init__(self, inotify: Inotify, index: InodeIndex) -> None:
        self.inotify = inotify
        self.index = index
        self.nodes: dict[int, Directory] = {}  # wd → node
        self.retired: set[int] = set()  # watches removed by us, until their IN_IGNORED arrives
        self._stopping = False
        # Whole-volume listings (and their watches) are done natively, with the GIL released.
        self._lister = _native.LiveLister()

    @property
    def stopping(self) -> bool:
        """Set on shutdown: a listing in a worker thread gives up (a native one too)."""
        return self._stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._stopping = value
        if value:
            self._lister.cancel()

    # --- watches ------------------------------------------------------------------------

    def _watch(
        self, node: Directory, changes: SubtreeChanges
    ) -> _Gone | _Replaced | Directory | None:
        """Watch `node`'s directory (again). Returns None when `node` is watched (or left
        unwatched by the watch limit), or what stands in the way: the directory is gone, it was
        replaced by another one, or it is already watched as another node (returned)."""
        if changes.watch_limit is not None:
            if node.wd is None:  # a directory watched already keeps its watch
                self._left_unwatched(node, changes)
            return None
        try:
            wd = self.inotify.add_watch(node.absolute_path())
        except WatchLimitReached as error:
            changes.watch_limit = error
            self._left_unwatched(node, changes)
            return None
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return _GONE
            changes.errors.append(error)
            self._left_unwatched(node, changes)
            return None
        holder = self.nodes.get(wd)
        if holder is not None and holder is not node:
            return holder
        if node.wd is not None and node.wd != wd:
            return _Replaced(wd)
        self._assign(node, wd)
        return None

    def _assign(self, node: Directory, wd: int) -> None:
        volume = node.volume
        if node.wd is None:
            volume.watches += 1
        node.wd = wd
        volume.unwatched.discard(node)
        self.retired.discard(wd)
        self.nodes[wd] = node

    @staticmethod
    def _left_unwatched(node: Directory, changes: SubtreeChanges) -> None:
        changes.unwatched += 1
        node.volume.unwatched.add(node)

    def dropped_by_kernel(self, node: Directory) -> None:
        """IN_IGNORED: the kernel removed the watch of `node` (its directory is gone)."""
        wd = node.wd
        if wd is not None:
            del self.nodes[wd]
            node.wd = None
            node.volume.watches -= 1
            self.inotify.forget(wd)

    def unwatch(self, node: Directory) -> None:
        wd = node.wd
        node.wd = None
        node.volume.unwatched.discard(node)
        if wd is not None:
            node.volume.watches -= 1
        if wd is not None and self.nodes.get(wd) is node:
            del self.nodes[wd]
            self.retired.add(wd)
            self.inotify.rm_watch(wd)

    # --- listing ------------------------------------------------------------------------

    def _list(
        self, node: Directory, changes: SubtreeChanges
    ) -> tuple[list[str], dict[str, os.stat_result]] | _Gone | None:
        """Subdirectories to enter and media files (with lstat) of `node`; `_GONE` when the
        directory went away, None when it cannot be read (what is known of it is kept)."""
        volume = node.volume
        accepts_dir = volume.filter.accepts_dir
        accepts_file = volume.filter.accepts_file
        path = node.absolute_path()
        subdirs: list[str] = []
        files: dict[str, os.stat_result] = {}
        try:
            with os.scandir(path) as entries:
                for count, entry in enumerate(entries):
                    if count & 1023 == 1023 and self.stopping:
                        raise WalkStopped  # a huge directory: shutdown does not wait for it
                    name = entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if not accepts_dir(name) or not is_utf8(name):
                                continue
                            if volume.excluded and f"{path}/{name}" in volume.excluded:
                                continue
                            if entry.stat(follow_symlinks=False).st_dev != volume.device:
                                continue  # another filesystem mounted here: not this volume
                            subdirs.append(name)
                        elif entry.is_file(follow_symlinks=False) and accepts_file(name):
                            if not is_utf8(name):
                                continue
                            st = entry.stat(follow_symlinks=False)
                            if stat.S_ISREG(st.st_mode):
                                files[name] = st
                    except FileNotFoundError:
                        continue  # removed while listing: its own event follows
        except (FileNotFoundError, NotADirectoryError):
            return _GONE
        except OSError as error:
            changes.errors.append(error)
            return None
        return subdirs, files

    # --- subtrees -----------------------------------------------------------------------

    def sync(
        self,
        top: Directory,
        changes: SubtreeChanges | None = None,
        *,
        silent: bool = False,
        stop_at_limit: bool = False,
    ) -> SubtreeChanges:
        """Bring `top` and everything below it in line with the disk.

        Watches each directory before listing it, so nothing created in between is missed.
        Media files found and not known are recorded (inode index included) and returned in
        `added`; known ones still there in `kept`; known ones gone in `removed`. Directories
        gone are dropped (their files in `removed`); `top` itself too when it is gone.
        `silent`: nothing will be reported, `added` and `kept` stay empty (a whole volume's
        lstat results would otherwise be held until the end of its listing).
        `stop_at_limit`: once the watch limit is hit, list nothing more (a retry of unwatched
        directories costs one ``inotify_add_watch`` while no watch is free); what is not
        listed stays as known, unwatched.
        """
        changes = changes or SubtreeChanges()
        if silent and not top.subdirs and not top.file_count() and top.wd is None:
            return self._list_new(top, changes)
        index = self.index
        stack: list[tuple[Directory, str]] = [(top, "")]
        while stack:
            if self.stopping:
                raise WalkStopped
            node, below = stack.pop()
            obstacle = self._watch(node, changes)
            if stop_at_limit and changes.watch_limit is not None:
                for rest, _below in stack:
                    if rest.wd is None:
                        self._left_unwatched(rest, changes)
                break
            if obstacle is not None:
                parent = node.parent
                self._drop(node, below, changes)
                if isinstance(obstacle, Directory):
                    if parent is not None:
                        changes.collisions.append((parent, node.name, obstacle))
                elif isinstance(obstacle, _Replaced) and parent is not None:
                    fresh = parent.new_subdir(node.name)
                    self._assign(fresh, obstacle.wd)
                    stack.append((fresh, below))
                continue
            listing = self._list(node, changes)
            if listing is None:
                continue
            if isinstance(listing, _Gone):
                self._drop(node, below, changes)
                continue
            changes.directories += 1
            subdir_names, files = listing
            for name, inode in [(name, record[0]) for name, record in node.file_records()]:
                st = files.pop(name, None)
                if st is not None and st.st_ino == inode:
                    if not silent:
                        changes.kept.append((node, name, below, st))
                    continue
                inode, _entry = index.remove_link(node, name)
                changes.removed.append((join(below, name), inode))
                if st is not None:
                    files[name] = st  # another file under a known name: added below
            for name, st in files.items():
                index.add_link(node, name, st)
                if not silent:
                    changes.added.append((node, name, st))
            present = set(subdir_names)
            for name in [name for name in node.subdirs if name not in present]:
                self._drop(node.subdirs[name], join(below, name), changes)
            for name in subdir_names:
                child = node.subdirs.get(name)
                if child is None:
                    child = node.new_subdir(name)
                stack.append((child, join(below, name)))
        return changes

    def list_native(self, top: Directory) -> _native.LiveListing:
        """List and watch `top` and everything below it natively, with the GIL released (in the
        listing thread: nothing of the tree is touched). `merge_listed` then builds the nodes."""
        volume = top.volume
        inotify = self.inotify
        listing = self._lister.list(
            top.absolute_path(),
            inotify_fd=inotify.fd,
            mask=WATCH_MASK,
            device=volume.device,
            extensions=sorted(volume.filter.extensions),
            excluded=sorted(volume.excluded),
            watch_budget=inotify.watch_budget(),
        )
        if listing is None:
            raise WalkStopped
        return listing

    def _list_new(self, top: Directory, changes: SubtreeChanges) -> SubtreeChanges:
        """`sync` of a directory known to be new and empty (a volume listed from scratch):
        listed and watched by the native lister, then turned into nodes and index entries in
        slices (the GIL is let go between them)."""
        listing = self.list_native(top)
        # No collection while a million objects are made (each would walk them all, holding
        # the GIL); they are frozen once built.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _slice in self.merge_listed(top, listing, changes, report=False):
                pass
            return changes
        finally:
            if gc_was_enabled:
                gc.enable()
            freeze_listed()

    def merge_listed(
        self,
        top: Directory,
        listing: _native.LiveListing,
        changes: SubtreeChanges,
        *,
        report: bool,
    ) -> Iterator[None]:
        """Turn a native listing of `top` (a new, empty node) into nodes and index entries,
        yielding after each slice so that the caller can let others run in between.

        `report`: the media files go to `changes.added` (with an ``lstat``-like result), and a
        directory already watched as another node (moved there, its move not read yet) to
        `changes.collisions`; else nothing is kept of them (a silent whole-volume listing)."""
        if listing.gone:
            self._drop(top, "", changes)
            return
        inotify = self.inotify
        size = _TRIO_SLICE if report else _SLICE
        nodes: list[Directory | None] = []
        for start in range(0, listing.dir_count, size):
            if self.stopping:
                raise WalkStopped
            for parent_index, name, wd, read_errno in listing.dirs(start, start + size):
                parent = None if parent_index < 0 else nodes[parent_index]
                if parent_index >= 0 and parent is None:
                    nodes.append(None)  # below a directory left out
                    continue
                node = top if parent is None else parent.new_subdir(name)
                holder = self.nodes.get(wd) if wd > 0 else None
                gone = read_errno in _GONE_ERRNOS
                if wd > 0:
                    inotify.adopt(wd)
                    if holder is None and gone:
                        self.retired.add(wd)  # its IN_IGNORED is expected
                        inotify.rm_watch(wd)
                collision = holder is not None and holder is not node
                if collision or (gone and parent is not None):
                    # Gone since its parent was listed, or the same directory reached twice:
                    # left out (its own events, or the other node, tell the rest).
                    if node is top:
                        top_parent = top.parent
                        if top_parent is not None and top_parent.subdirs.get(top.name) is top:
                            top_parent.remove_subdir(top.name)
                        if report and collision and top_parent is not None:
                            assert holder is not None
                            changes.collisions.append((top_parent, top.name, holder))
                    else:
                        assert parent is not None
                        parent.remove_subdir(name)
                        if report and collision:
                            assert holder is not None
                            changes.collisions.append((parent, name, holder))
                    nodes.append(None)
                    continue
                if wd > 0 and not gone:
                    self._assign(node, wd)
                else:
                    self._left_unwatched(node, changes)
                    if wd < 0:
                        changes.errors.append(OSError(-wd, os.strerror(-wd), node.absolute_path()))
                if read_errno:
                    changes.errors.append(
                        OSError(read_errno, os.strerror(read_errno), node.absolute_path())
                    )
                else:
                    changes.directories += 1
                nodes.append(node)
            yield
        if listing.watch_limit is not None:
            limit = listing.watch_limit
            changes.watch_limit = WatchLimitReached(
                limit or errno.ENOSPC,
                os.strerror(limit)
                if limit
                else f"scanarr's own watch cap ({inotify.max_watches}) reached",
                top.absolute_path(),
            )
        add_link = self.index.add_link_stamped
        device = top.volume.device
        for start in range(0, listing.file_count, size):
            if self.stopping:
                raise WalkStopped
            for dir_index, name, inode, file_size, mtime_ns, nlink in listing.files(
                start, start + size
            ):
                directory = nodes[dir_index]
                if directory is None:
                    continue
                if not report:
                    stamp = hash((file_size, mtime_ns, nlink)) & STAMP_MASK
                    add_link(directory, name, inode, stamp)
                    continue
                if directory.has_file(name):
                    continue
                st = _listed_stat(device, inode, file_size, mtime_ns, nlink)
                self.index.add_link(directory, name, st)
                changes.added.append((directory, name, st))  # (the caller takes each slice)
            yield

    def _drop(self, node: Directory, below: str, changes: SubtreeChanges) -> None:
        """Forget a directory gone from the disk; its media files go to `removed`."""
        for path, inode in self.remove_subtree(node):
            changes.removed.append((join(below, path), inode))

    def remove_subtree(self, node: Directory) -> list[tuple[str, int]]:
        """Detach `node` from its parent, unwatch it and everything below; returns the media files
        that were under it as (path below `node`, inode)."""
        parent = node.parent
        if parent is not None and parent.subdirs.get(node.name) is node:
            parent.remove_subdir(node.name)
        removed: list[tuple[str, int]] = []
        directories = list(node.iter_tree())
        for directory, below in directories:
            self.unwatch(directory)
            for name in directory.file_names():
                inode, _entry = self.index.remove_link(directory, name)
                removed.append((join(below, name), inode))
        forget_subtree(directories)
        return removed
