"""What the live watcher knows of each volume: its watched directories and their media files.

The state lives in one native index (`scanarr._native.LiveIndex`, in compact arenas: about
40 bytes per directory or media file plus its name): per directory its parent, name, inotify
watch descriptor, subdirectories and media files (name, inode, stamp); the ``(device, inode)``
→ links index for hard-link propagation; the wd → directory table and the retired watches; per
volume its watch count and the directories left unwatched. Paths are never stored: they are the
chain of parents, so moving a directory is a single re-parenting.

This module is the façade the translator and the service use: a `Directory` is a light handle
(the index's id of the directory, which names its slot and the slot's generation: a handle kept
past the directory's removal is detectably stale, `attached()` is False), made on demand and
never stored per directory; handles compare equal by id.

`TreeWalker.sync` brings a known subtree in line with the disk (watch before listing, so nothing
created in between is missed; ``lstat`` media files; say what was added, kept or removed). New
trees — a volume listed from scratch, a directory created or moved in — are listed and watched
natively and merged into the index in one native call with the GIL released (`list_and_merge`).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator, Mapping

import attrs

from scanarr import _native, heap
from scanarr.live.filters import MediaFilter, is_utf8
from scanarr.live.inotify import WATCH_MASK, Inotify, WatchLimitReached

log = logging.getLogger(__name__)


class InodeIndex:
    """The native index of every watched volume of one inotify instance, and the volumes by
    their number in it. ``(device, inode)`` → the known links of a media file."""

    __slots__ = ("native", "trees")

    def __init__(self, native: _native.LiveIndex | None = None) -> None:
        self.native = native if native is not None else _native.LiveIndex()
        self.trees: dict[int, VolumeTree] = {}

    def __len__(self) -> int:
        return self.native.inode_count

    def node(self, directory_id: int | None) -> Directory | None:
        """The handle of a directory of the index, None when it is gone."""
        if directory_id is None:
            return None
        number = self.native.volume_of(directory_id)
        tree = None if number is None else self.trees.get(number)
        return None if tree is None else Directory(tree, directory_id)

    def get(self, device: int, inode: int) -> InodeEntry | None:
        stamp = self.native.inode_stamp(device, inode)
        return None if stamp is None else InodeEntry(self, device, inode, stamp)

    def add_link(self, directory: Directory, name: str, st: os.stat_result) -> InodeEntry:
        """Record `name` in `directory` as a link of ``st.st_ino``; returns the inode's entry."""
        return self.add_link_stamped(directory, name, st.st_ino, stamp_of(st))

    def add_link_stamped(
        self, directory: Directory, name: str, inode: int, stamp: int
    ) -> InodeEntry:
        """`add_link` with the inode and stamp given (the first link of an inode sets its stamp;
        a further one takes the inode's)."""
        recorded = self.native.add_link(directory.id, name, inode, stamp)
        if recorded is None:
            raise KeyError(f"directory {directory.id} is no longer in the index")
        return InodeEntry(self, directory.volume.device, inode, recorded)

    def remove_link(self, directory: Directory, name: str) -> tuple[int, InodeEntry | None]:
        """Forget `name` in `directory`; returns its inode and the entry if other links remain
        (KeyError if not known)."""
        removed = self.native.remove_link(directory.id, name)
        if removed is None:
            raise KeyError(name)
        inode, remaining = removed
        return inode, self.get(directory.volume.device, inode) if remaining else None

    def links(self, device: int, inode: int) -> list[tuple[Directory, str]]:
        """Every known ``(directory, name)`` of an inode (volumes no longer watched left out)."""
        links: list[tuple[Directory, str]] = []
        for directory_id, name in self.native.links(device, inode):
            directory = self.node(directory_id)
            if directory is not None and not directory.volume.detached:
                links.append((directory, name))
        return links


class InodeEntry:
    """What was last reported for an inode (as a stamp): a view made on demand."""

    __slots__ = ("device", "index", "inode", "stamp")

    def __init__(self, index: InodeIndex, device: int, inode: int, stamp: int) -> None:
        self.index = index
        self.device = device
        self.inode = inode
        self.stamp = stamp

    def links(self) -> list[tuple[Directory, str]]:
        return self.index.links(self.device, self.inode)

    def differs(self, st: os.stat_result) -> bool:
        return stamp_of(st) != self.stamp

    def update(self, st: os.stat_result) -> None:
        self.stamp = stamp_of(st)
        self.index.native.set_stamp(self.device, self.inode, self.stamp)


class VolumeTree:
    """One watched volume: its root, its device and its directories (in the index)."""

    __slots__ = (
        "detached",
        "device",
        "excluded",
        "filter",
        "index",
        "number",
        "path",
        "root",
        "volume_id",
    )

    def __init__(
        self,
        volume_id: str,
        path: str,
        device: int,
        media_filter: MediaFilter,
        excluded: frozenset[str] = frozenset(),
        *,
        index: InodeIndex,
    ) -> None:
        self.volume_id = volume_id
        self.path = path  # absolute, normalised, no trailing "/"
        self.device = device  # st_dev of the root: directories on other devices are not entered
        self.filter = media_filter
        self.excluded = excluded  # absolute roots of nested volumes, watched by those volumes
        self.index = index
        self.number, root = index.native.add_volume(device)
        index.trees[self.number] = self
        self.root = Directory(self, root)
        # Set when the volume stops being watched: its directories are freed later, off the trio
        # thread (`free`); until then its events and its links are ignored.
        self.detached = False

    @property
    def watches(self) -> int:
        """Directories watched: a count the index keeps, so that health never walks the tree."""
        return self.index.native.watches(self.number)

    @property
    def unwatched_count(self) -> int:
        """Directories left unwatched by the watch limit or a watch error (retried, and covered
        by rescans meanwhile)."""
        return self.index.native.unwatched_count(self.number)

    def unwatched_tops(self) -> list[Directory]:
        """Unwatched directories whose parent is watched: syncing these covers every unwatched
        one."""
        return [Directory(self, top) for top in self.index.native.unwatched_tops(self.number)]

    def free(self) -> bool:
        """Forget every directory of the volume, with the GIL released (in the listing thread).
        Its watches are removed by `TreeWalker.release_dropped` unless another volume listed
        meanwhile took them over. False when the watcher is stopping."""
        self.detached = True
        done = self.index.native.drop_volume(self.number)
        if done:
            self.index.trees.pop(self.number, None)
        return done


class Subdirs(Mapping[str, "Directory"]):
    """The subdirectories of a directory by name: a view of the index."""

    __slots__ = ("_directory",)

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def get(self, name: str, default: object = None) -> Directory | None:  # type: ignore[override]
        directory = self._directory
        child = directory.volume.index.native.subdir(directory.id, name)
        return None if child is None else Directory(directory.volume, child)

    def __getitem__(self, name: str) -> Directory:
        child = self.get(name)
        if child is None:
            raise KeyError(name)
        return child

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        directory = self._directory
        return iter([name for name, _ in directory.volume.index.native.subdirs(directory.id)])

    def __len__(self) -> int:
        directory = self._directory
        return len(directory.volume.index.native.subdirs(directory.id))

    def __bool__(self) -> bool:
        directory = self._directory
        return directory.volume.index.native.has_subdirs(directory.id)

    def children(self) -> list[tuple[str, Directory]]:
        directory = self._directory
        volume = directory.volume
        return [
            (name, Directory(volume, child))
            for name, child in volume.index.native.subdirs(directory.id)
        ]


class Directory:
    """A handle of a watched (or, past the watch limit, unwatched) directory of a volume."""

    __slots__ = ("id", "volume")

    def __init__(self, volume: VolumeTree, directory_id: int) -> None:
        self.volume = volume
        self.id = directory_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Directory) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Directory({self.volume.volume_id!r}, {self.relative_path()!r})"

    @property
    def _native(self) -> _native.LiveIndex:
        return self.volume.index.native

    @property
    def name(self) -> str:
        return self._native.name(self.id) or ""

    @property
    def parent(self) -> Directory | None:
        parent = self._native.parent(self.id)
        return None if parent is None else Directory(self.volume, parent)

    @property
    def wd(self) -> int | None:
        """The watch descriptor, None while not watched."""
        return self._native.wd(self.id) or None

    @property
    def subdirs(self) -> Subdirs:
        return Subdirs(self)

    def new_subdir(self, name: str) -> Directory:
        child = self._native.new_subdir(self.id, name)
        if child is None:
            raise KeyError(f"{name!r}: already a subdirectory, or the directory is gone")
        return Directory(self.volume, child)

    def move_to(self, parent: Directory, name: str) -> bool:
        """Become `name` in `parent` (same volume, name free, not below itself)."""
        return self._native.move_dir(self.id, parent.id, name)

    # --- media files ----------------------------------------------------------------------

    def file_record(self, name: str) -> tuple[int, int] | None:
        """(inode, stamp) of the media file `name`, None if not known."""
        return self._native.file(self.id, name)

    def file_inode(self, name: str) -> int | None:
        record = self._native.file(self.id, name)
        return None if record is None else record[0]

    def has_file(self, name: str) -> bool:
        return self._native.file(self.id, name) is not None

    def file_records(self) -> list[tuple[str, tuple[int, int]]]:
        """(name, (inode, stamp)) of every media file."""
        return [(name, (inode, stamp)) for name, inode, stamp in self._native.files(self.id)]

    def file_names(self) -> list[str]:
        return [name for name, _inode, _stamp in self._native.files(self.id)]

    def has_files(self) -> bool:
        return self._native.has_files(self.id)

    def names_of(self, inode: int) -> list[str]:
        """Names of this directory's media files that are links of `inode`."""
        return self._native.names_of(self.id, inode)

    # --- paths --------------------------------------------------------------------------

    def relative_path(self) -> str:
        """Path in the volume ("" for the root, and for a directory no longer in it)."""
        return self._native.path(self.id) or ""

    def child_path(self, name: str) -> str:
        """Relative path of the entry `name` in this directory."""
        relative = self.relative_path()
        return f"{relative}/{name}" if relative else name

    def absolute_path(self, name: str | None = None) -> str:
        relative = self.relative_path() if name is None else self.child_path(name)
        return f"{self.volume.path}/{relative}" if relative else self.volume.path

    def attached(self) -> bool:
        """Whether this directory is still part of its volume's tree."""
        return self._native.is_live(self.id)

    def is_within(self, other: Directory) -> bool:
        """Whether `other` is this directory or above it."""
        return self._native.is_within(self.id, other.id)

    def iter_tree(self) -> Iterator[tuple[Directory, str]]:
        """This directory and every directory below it, each with its path below this one (for
        tests and small trees: it makes a handle per directory)."""
        stack: list[tuple[Directory, str]] = [(self, "")]
        while stack:
            node, below = stack.pop()
            yield node, below
            for name, child in node.subdirs.children():
                stack.append((child, f"{below}/{name}" if below else name))


def join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


STAMP_MASK = (1 << 60) - 1

# A volume listed with at least this many directories: once its listing is merged and freed,
# the C heap's free memory is given back (`heap.trim`, a few ms in the listing thread), or
# the agent would keep the listing's peak as its steady size.
TRIM_AFTER_DIRECTORIES = 20_000


def stamp_of(st: os.stat_result) -> int:
    """A 60-bit digest of size, mtime and link count: what "changed" is judged on (the same
    digest the native merge gives listed files)."""
    return _native.LiveIndex.stamp(st.st_size, st.st_mtime_ns, st.st_nlink)


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
    # a directory elsewhere in the tree whose move has not been read yet; it was not entered.
    collisions: list[tuple[Directory, str, Directory]] = attrs.Factory(list)
    unwatched: int = 0  # directories left unwatched by the watch limit or a watch error
    directories: int = 0  # directories listed
    watch_limit: WatchLimitReached | None = None
    errors: list[OSError] = attrs.Factory(list)  # unreadable or unwatchable directories


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


class WatchTable:
    """wd → directory, and the watches removed by us until their IN_IGNORED arrives: views of
    the index (nothing is kept per watch in Python)."""

    __slots__ = ("_index",)

    def __init__(self, index: InodeIndex) -> None:
        self._index = index

    def get(self, wd: int) -> Directory | None:
        return self._index.node(self._index.native.dir_of_wd(wd))

    def __contains__(self, wd: int) -> bool:
        return self._index.native.dir_of_wd(wd) is not None


class RetiredWatches:
    __slots__ = ("_native",)

    def __init__(self, native: _native.LiveIndex) -> None:
        self._native = native

    def __contains__(self, wd: int) -> bool:
        return self._native.is_retired(wd)

    def add(self, wd: int) -> None:
        self._native.retire(wd)

    def discard(self, wd: int) -> None:
        self._native.unretire(wd)


class TreeWalker:
    """Watches and lists directories of one inotify instance, keeping the index."""

    def __init__(self, inotify: Inotify, index: InodeIndex) -> None:
        self.inotify = inotify
        self.index = index
        self.nodes = WatchTable(index)  # wd → directory
        self.retired = RetiredWatches(index.native)
        self._stopping = False
        # New trees (and their watches) are listed natively, with the GIL released.
        self._lister = _native.LiveLister()

    @property
    def stopping(self) -> bool:
        """Set on shutdown: a listing or a merge in a worker thread gives up (a native one too)."""
        return self._stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._stopping = value
        if value:
            self._lister.cancel()
            self.index.native.cancel()

    # --- watches ------------------------------------------------------------------------

    def _watch(
        self, node: Directory, changes: SubtreeChanges
    ) -> _Gone | _Replaced | Directory | None:
        """Watch `node`'s directory (again). Returns None when `node` is watched (or left
        unwatched by the watch limit), or what stands in the way: the directory is gone, it was
        replaced by another one, or it is already watched as another directory (returned)."""
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
        if holder is not None and holder != node:
            return holder
        current = node.wd
        if current is not None and current != wd:
            return _Replaced(wd)
        self.index.native.set_wd(node.id, wd)
        return None

    def _left_unwatched(self, node: Directory, changes: SubtreeChanges) -> None:
        changes.unwatched += 1
        self.index.native.mark_unwatched(node.id)

    def dropped_by_kernel(self, node: Directory) -> None:
        """IN_IGNORED: the kernel removed the watch of `node` (its directory is gone)."""
        self.index.native.dropped_by_kernel(node.id)

    def release_dropped(self) -> None:
        """Remove the watches of freed volumes that no directory listed since took over."""
        self.index.native.release_dropped()

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
        `silent`: nothing will be reported, `added` and `kept` stay empty; a directory known to
        be new and empty (a volume listed from scratch) is then listed natively and merged in one
        call with the GIL released, nothing of it crossing into Python.
        `stop_at_limit`: once the watch limit is hit, list nothing more (a retry of unwatched
        directories costs one ``inotify_add_watch`` while no watch is free); what is not
        listed stays as known, unwatched.
        """
        changes = changes or SubtreeChanges()
        if silent and not top.subdirs and not top.has_files() and top.wd is None:
            merged = self.list_and_merge(top, report=False)
            self.merge_problems(top, merged, changes)
            large = merged.directories >= TRIM_AFTER_DIRECTORIES
            del merged  # and the listing it holds: tens of MiB for a large volume
            if large:
                heap.trim()
            return changes
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
                name = node.name
                self._drop(node, below, changes)
                if isinstance(obstacle, Directory):
                    if parent is not None:
                        changes.collisions.append((parent, name, obstacle))
                elif isinstance(obstacle, _Replaced) and parent is not None:
                    fresh = parent.new_subdir(name)
                    self.index.native.set_wd(fresh.id, obstacle.wd)
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
            for name, (inode, _stamp) in node.file_records():
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
            known = dict(node.subdirs.children())
            for name, child in known.items():
                if name not in present:
                    self._drop(child, join(below, name), changes)
            for name in subdir_names:
                child_node = known.get(name)
                if child_node is None:
                    child_node = node.new_subdir(name)
                stack.append((child_node, join(below, name)))
        return changes

    def list_native(self, top: Directory) -> _native.LiveListing:
        """List and watch `top` and everything below it natively, with the GIL released."""
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

    def list_and_merge(self, top: Directory, *, report: bool) -> _native.LiveMerge:
        """List `top` (a new, empty directory) natively and merge the listing into the index in
        one call, both with the GIL released (in the listing thread). `report`: the media files
        added are kept in the result (`added_slice`), and directories already watched
        elsewhere (moved there, their move not read yet) in its collisions."""
        listing = self.list_native(top)
        merged = self.index.native.merge(top.id, listing, report)
        if merged is None:
            raise WalkStopped
        return merged

    def merge_problems(
        self, top: Directory, merged: _native.LiveMerge, changes: SubtreeChanges
    ) -> None:
        """What a merge found besides media files: counts, errors, the watch limit, the
        collisions."""
        index = self.index
        volume = top.volume
        changes.directories += merged.directories
        changes.unwatched += merged.unwatched
        for code, _watching, directory_id in merged.errors:
            directory = index.node(directory_id)
            path = volume.path if directory is None else directory.absolute_path()
            changes.errors.append(OSError(code, os.strerror(code), path))
        limit = merged.watch_limit
        if limit is not None:
            changes.watch_limit = WatchLimitReached(
                limit or errno.ENOSPC,
                os.strerror(limit)
                if limit
                else f"scanarr's own watch cap ({self.inotify.max_watches}) reached",
                top.absolute_path(),
            )
        for parent_id, name, holder_id in merged.collisions:
            parent = index.node(parent_id)
            holder = index.node(holder_id)
            if parent is not None and holder is not None:
                changes.collisions.append((parent, name, holder))

    def added_slice(
        self, top: Directory, merged: _native.LiveMerge, start: int, stop: int
    ) -> list[tuple[Directory, str, os.stat_result]]:
        """The media files a reported merge added, ``start..stop``, as `SubtreeChanges.added`
        (directories removed since are left out)."""
        volume = top.volume
        native = self.index.native
        device = volume.device
        added: list[tuple[Directory, str, os.stat_result]] = []
        for directory_id, name, inode, size, mtime_ns, nlink in merged.added(start, stop):
            if native.is_live(directory_id):
                directory = Directory(volume, directory_id)
                added.append((directory, name, _listed_stat(device, inode, size, mtime_ns, nlink)))
        return added

    def _drop(self, node: Directory, below: str, changes: SubtreeChanges) -> None:
        """Forget a directory gone from the disk; its media files go to `removed`."""
        for path, inode in self.remove_subtree(node):
            changes.removed.append((join(below, path), inode))

    def remove_subtree(self, node: Directory) -> list[tuple[str, int]]:
        """Detach `node` from its parent, unwatch it and everything below; returns the media files
        that were under it as (path below `node`, inode)."""
        return self.index.native.remove_subtree(node.id)
