"""Translation of raw inotify events into protocol events, with the rules of PROTOCOL.md §6.

- ``file.created`` when a media file is complete: on ``IN_CLOSE_WRITE`` of a file not known yet,
  on ``IN_MOVED_TO``, or on ``IN_CREATE`` of a new hard link (``st_nlink > 1``: ``link()`` never
  closes anything). Never on ``IN_CREATE`` of a file being written.
- ``file.modified`` when size, mtime or link count differ from what was last reported for the
  inode, checked once the path has been quiet for `debounce` seconds (trailing edge) after an
  ``IN_CLOSE_WRITE``/``IN_ATTRIB``, or after another link of the inode was removed. Every known
  path of the inode gets one.
- Renames are paired by cookie. Only a ``IN_MOVED_FROM`` of something known waits for its pair,
  at most `rename_wait` seconds after it was read, and holds back the events after it meanwhile
  so that order is kept; unpaired it becomes ``file.deleted``. An unpaired ``IN_MOVED_TO`` is a
  move in: ``file.created``. Across volumes: deleted + created.
- Directories created or moved in are watched, then listed: their media files are created.
  A new directory (not known before) is listed natively by the host in its listing thread:
  the translator stops at its event (`to_list`) and goes on once the host has merged the
  listing (`report_listed`). Events read meanwhile wait in the buffer, so whatever was created
  in the new tree after its watch is either in the listing (its later events then find it
  known) or reported by its own event — never lost, never twice.
  Moved within a volume: each media file under it is renamed. Moved out or deleted: each is
  deleted. A listing can run ahead of events not read yet; whatever it finds is reconciled with
  what is known (kept → renamed, new → created, gone → deleted), so the view converges.

Events are hints: every decision is checked with ``lstat`` against the disk, and anything that
cannot be explained (queue overflow, unknown watch, a lost root) is handed to the host, which
asks for a rescan — the truth.
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
from collections.abc import Callable
from typing import Protocol, TypeAlias, TypedDict

from scanarr.live.filters import is_utf8
from scanarr.live.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    RawEvent,
)
from scanarr.live.tree import Directory, SubtreeChanges, TreeWalker, VolumeTree, join
from scanarr.protocol import FileCreated, FileDeleted, FileModified, FileRenamed

log = logging.getLogger(__name__)

LiveEvent: TypeAlias = FileCreated | FileModified | FileDeleted | FileRenamed


class TranslatorHost(Protocol):
    """What the translator cannot settle itself; implemented by the live watcher service."""

    def overflow(self) -> None:
        """IN_Q_OVERFLOW: events were lost, every volume needs a rescan."""

    def unknown_watch(self, wd: int, mask: int) -> None:
        """An event for a watch descriptor that is not ours."""

    def root_lost(self, volume: VolumeTree, why: str) -> None:
        """The volume root was deleted, moved, unmounted or its watch dropped."""

    def walk_problems(self, volume: VolumeTree, changes: SubtreeChanges) -> None:
        """A listing hit the watch limit or unreadable directories."""

    def path_appeared(self, path: str) -> None:
        """A directory appeared at the root of a nested volume."""

    def name_skipped(self, volume: VolumeTree, relative_path: str) -> None:
        """A media file whose name is not valid UTF-8 (cannot be sent as JSON)."""


def _lstat(path: str) -> os.stat_result | None:
    """lstat of a regular file, or None when it is gone or is something else."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


class EventTranslator:
    """Turns raw events into protocol events appended to `out`, keeping the tree up to date."""

    def __init__(
        self,
        walker: TreeWalker,
        host: TranslatorHost,
        *,
        debounce: float,
        rename_wait: float,
        removal_expiry: float,
        clock: Callable[[], float],
        expected_removals: dict[tuple[str, str], float] | None = None,
    ) -> None:
        self.walker = walker
        self.index = walker.index
        self.host = host
        self.debounce = debounce
        self.rename_wait = rename_wait
        self.removal_expiry = removal_expiry
        self.clock = clock
        self.out: list[LiveEvent] = []
        # Events read and not processed yet, with the time they were read.
        self._buffer: list[RawEvent] = []
        self._read_at: list[float] = []
        self._position = 0
        self._moved_to: dict[int, RawEvent] = {}  # cookie → IN_MOVED_TO not processed yet
        self._moved_from: dict[tuple[int, str], RawEvent] = {}  # (wd, name) → not processed yet
        # Modification checks: (device, inode) → due time, and a heap of (due, device, inode).
        self._checks: dict[tuple[int, int], float] = {}
        self._check_heap: list[tuple[float, int, int]] = []
        # Removals announced by scanarr's own delete command: (volume_id, path) → expiry.
        self._expected = expected_removals if expected_removals is not None else {}
        self.blocked_until: float | None = None  # waiting for the pair of a MOVED_FROM
        # New directories to list (by the host) before any further event is processed.
        self.to_list: list[Directory] = []

    # --- input ---------------------------------------------------------------------------

    def feed(self, events: list[RawEvent], read_at: float) -> None:
        self._buffer.extend(events)
        self._read_at.extend([read_at] * len(events))
        for event in events:
            if event.mask & IN_MOVED_TO:
                self._moved_to[event.cookie] = event
            elif event.mask & IN_MOVED_FROM:
                self._moved_from[(event.wd, event.name)] = event

    def discard_pending(self) -> None:
        """Forget events not processed yet (after an overflow: a resync replaces them)."""
        self._buffer.clear()
        self._read_at.clear()
        self._position = 0
        self._moved_to.clear()
        self._moved_from.clear()
        self.blocked_until = None

    @property
    def pending(self) -> int:
        return len(self._buffer) - self._position

    def expect_removal(self, volume_id: str, relative_path: str) -> None:
        self._expected[(volume_id, relative_path)] = self.clock() + self.removal_expiry

    def next_deadline(self) -> float | None:
        deadlines = [
            deadline
            for deadline in (
                self.blocked_until,
                self._check_heap[0][0] if self._check_heap else None,
            )
            if deadline is not None
        ]
        return min(deadlines) if deadlines else None

    # --- processing ----------------------------------------------------------------------

    def process(self, max_events: int = 500) -> None:
        """Process buffered events in order, until done, blocked on a rename pair, or
        `max_events` handled (so that the caller's loop yields between batches)."""
        self.blocked_until = None
        buffer = self._buffer
        end = self._position + max_events
        # (an overflow handled on the way empties the buffer)
        while self._position < len(buffer) and self._position < end:
            event = buffer[self._position]
            blocked = self._handle(event, self._read_at[self._position])
            if blocked is not None:
                self.blocked_until = blocked
                break
            self._position += 1
            if self.to_list:
                break  # the next events may be about the new tree: the host lists it first
        # Compact only once half is processed: deleting the head of a long backlog for every
        # batch would make draining it quadratic.
        if self._position and self._position * 2 >= len(buffer):
            del buffer[: self._position]
            del self._read_at[: self._position]
            self._position = 0

    def fire_due_checks(self, max_checks: int = 2000) -> None:
        now = self.clock()
        heap = self._check_heap
        while heap and heap[0][0] <= now and max_checks > 0:
            max_checks -= 1
            due, device, inode = heapq.heappop(heap)
            if self._checks.get((device, inode)) == due:
                del self._checks[(device, inode)]
                self._check_inode(device, inode)
        if self._expected:
            for key in [key for key, expiry in self._expected.items() if expiry <= now]:
                del self._expected[key]

    def _handle(self, event: RawEvent, read_at: float) -> float | None:
        mask = event.mask
        if mask & IN_MOVED_FROM and self._moved_from.get((event.wd, event.name)) is event:
            blocked = self._handle_event(event, read_at)
            if blocked is None:
                del self._moved_from[(event.wd, event.name)]
            return blocked
        return self._handle_event(event, read_at)

    def _handle_event(self, event: RawEvent, read_at: float) -> float | None:
        mask = event.mask
        if mask & IN_Q_OVERFLOW:
            self.host.overflow()
            return None
        walker = self.walker
        node = walker.nodes.get(event.wd)
        if node is not None and node.volume.detached:
            # A volume no longer watched, freed later: its events say nothing any more.
            if mask & IN_IGNORED:
                walker.dropped_by_kernel(node)
            return None
        if node is None:
            if event.wd in walker.retired:
                if mask & IN_IGNORED:
                    walker.retired.discard(event.wd)
                    walker.inotify.forget(event.wd)
            elif mask & IN_IGNORED:
                log.debug("IN_IGNORED for watch %d, not ours", event.wd)
            else:
                if mask & IN_MOVED_TO and self._moved_to.get(event.cookie) is event:
                    del self._moved_to[event.cookie]
                # Removed, so that its next events do not ask for yet another rescan.
                walker.retired.add(event.wd)
                walker.inotify.rm_watch(event.wd, unknown=True)
                self.host.unknown_watch(event.wd, mask)
            return None
        if mask & (IN_IGNORED | IN_UNMOUNT) or (
            node.parent is None and mask & (IN_DELETE_SELF | IN_MOVE_SELF)
        ):
            self._directory_lost(node, event)
            return None
        if not event.name:
            return None  # DELETE_SELF/MOVE_SELF of a subdirectory: its parent tells us more
        if mask & IN_ISDIR:
            return self._directory_event(node, event, read_at)
        return self._file_event(node, event, read_at)

    def _directory_lost(self, node: Directory, event: RawEvent) -> None:
        volume = node.volume
        if event.mask & IN_UNMOUNT:
            self.host.root_lost(volume, "filesystem unmounted")
            return
        if node.parent is None:
            why = "deleted" if event.mask & IN_DELETE_SELF else "moved"
            if event.mask & IN_IGNORED:
                why = "watch dropped by the kernel"
            self.host.root_lost(volume, f"volume root {why}")
            return
        # IN_IGNORED of a subdirectory: it was deleted; its own files were reported one by one.
        self.walker.dropped_by_kernel(node)
        if node.attached():
            prefix = node.relative_path()
            for below, _inode in self.walker.remove_subtree(node):
                self._deleted(volume, join(prefix, below))

    # --- directories ---------------------------------------------------------------------

    def _directory_event(self, parent: Directory, event: RawEvent, read_at: float) -> float | None:
        mask = event.mask
        name = event.name
        if mask & IN_MOVED_FROM:
            moved = parent.subdirs.get(name)
            if moved is None:
                return None  # never known (hidden, system, nested root...): nothing to move
            destination = self._pair(event, read_at)
            if isinstance(destination, float):
                return destination
            if destination is None:
                self._remove_directory(moved)
            else:
                self._move_directory(moved, *destination)
            return None
        if mask & IN_MOVED_TO:
            if self._moved_to.get(event.cookie) is not event:
                return None  # already handled with its IN_MOVED_FROM
            del self._moved_to[event.cookie]
            self._directory_appeared(parent, name)
        elif mask & IN_CREATE:
            self._directory_appeared(parent, name)
        elif mask & IN_DELETE:
            gone = parent.subdirs.get(name)
            if gone is not None:
                self._remove_directory(gone)
        return None

    def _accepts_directory(self, parent: Directory, name: str) -> bool:
        volume = parent.volume
        if not volume.filter.accepts_dir(name) or not is_utf8(name):
            return False
        if volume.excluded and parent.absolute_path(name) in volume.excluded:
            self.host.path_appeared(parent.absolute_path(name))
            return False
        return True

    def _directory_appeared(self, parent: Directory, name: str) -> None:
        """A directory created or moved in: watch it, list it, report its media files."""
        if not self._accepts_directory(parent, name):
            return
        node = parent.subdirs.get(name)
        if node is None:
            # Listed (and watched) by the host, off the trio thread: a directory moved in may
            # hold a whole library.
            self.to_list.append(parent.new_subdir(name))
            return
        self._report_sync(node, node.relative_path())

    def _remove_directory(self, node: Directory) -> None:
        prefix = node.relative_path()
        for below, _inode in self.walker.remove_subtree(node):
            self._deleted(node.volume, join(prefix, below))

    def _move_directory(self, moved: Directory, parent: Directory, name: str) -> None:
        """`moved` is now `name` in `parent`: renamed within a volume, else deleted + created."""
        if parent.is_within(moved):
            return  # cannot happen on disk; a stale view of a tree moved since
        if parent.volume is not moved.volume or not self._accepts_directory(parent, name):
            self._remove_directory(moved)
            self._directory_appeared(parent, name)
            return
        old_prefix = moved.relative_path()
        replaced = parent.subdirs.get(name)
        if replaced is not None and replaced != moved:
            self._remove_directory(replaced)  # rename(2) over an empty directory
        moved.move_to(parent, name)  # one re-parenting: every path below follows
        self._report_sync(moved, old_prefix)

    def report_listed(self, node: Directory, changes: SubtreeChanges) -> None:
        """Report a slice of what the host's native listing of the new directory `node` found
        (the last slice carries its problems and collisions)."""
        pending = self._report_changes(node, node.relative_path(), changes)
        self._report_syncs(pending)

    def report_listing(self, node: Directory, changes: SubtreeChanges) -> None:
        """Report what a sync of `node` made elsewhere (a worker thread retrying unwatched
        directories) found; its problems are the caller's."""
        pending = self._report_changes(node, node.relative_path(), changes, report_problems=False)
        self._report_syncs(pending)

    def _report_sync(self, node: Directory, old_prefix: str) -> None:
        """Sync `node` with the disk and report the differences; `old_prefix` is where its
        known content was last reported (its relative path before a move)."""
        self._report_syncs([(node, old_prefix)])

    def _report_syncs(self, pending: list[tuple[Directory, str]]) -> None:
        while pending:
            node, old_prefix = pending.pop()
            changes = self.walker.sync(node)
            pending.extend(self._report_changes(node, old_prefix, changes))

    def _report_changes(
        self,
        node: Directory,
        old_prefix: str,
        changes: SubtreeChanges,
        *,
        report_problems: bool = True,
    ) -> list[tuple[Directory, str]]:
        """Report the differences a sync of `node` found; returns the directories to sync next
        (known elsewhere, whose move was not read yet)."""
        pending: list[tuple[Directory, str]] = []
        volume = node.volume
        moved = old_prefix != node.relative_path()
        for directory, name, below, st in changes.kept:
            old_path = join(old_prefix, below, name) if moved else ""
            new_path = directory.child_path(name) if moved else ""
            if old_path != new_path:
                self.out.append(_file_renamed(old_path, directory, name, st))
                entry = self.index.get(volume.device, st.st_ino)
                if entry is not None:
                    entry.update(st)
            elif (entry := self.index.get(volume.device, st.st_ino)) and entry.differs(st):
                self._schedule_check(volume.device, st.st_ino)
        for below, inode in changes.removed:
            self._deleted(volume, join(old_prefix, below))
            if self.index.get(volume.device, inode) is not None:
                self._schedule_check(volume.device, inode)
        for directory, name, st in changes.added:
            self._report_created(directory, name, st, listed=True)
        if report_problems and (changes.watch_limit is not None or changes.errors):
            self.host.walk_problems(volume, changes)
        for target_parent, name, holder in changes.collisions:
            if not target_parent.attached() or name in target_parent.subdirs:
                continue
            if holder.attached() and holder.parent is not None:
                # A directory we know elsewhere: the events of its move are not read yet.
                if holder.volume is not target_parent.volume:
                    self._remove_directory(holder)
                else:
                    holder_prefix = holder.relative_path()
                    if holder.move_to(target_parent, name):
                        pending.append((holder, holder_prefix))
                        continue
            fresh = target_parent.new_subdir(name)
            pending.append((fresh, fresh.relative_path()))
        return pending

    # --- files ---------------------------------------------------------------------------

    def _file_event(self, node: Directory, event: RawEvent, read_at: float) -> float | None:
        mask = event.mask
        name = event.name
        volume = node.volume
        if not volume.filter.accepts_file(name):
            if mask & IN_MOVED_TO and self._moved_to.get(event.cookie) is event:
                del self._moved_to[event.cookie]
            return None
        if not is_utf8(name):
            if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                self.host.name_skipped(volume, node.child_path(name))
            if mask & IN_MOVED_TO and self._moved_to.get(event.cookie) is event:
                del self._moved_to[event.cookie]
            return None
        if mask & IN_MOVED_FROM:
            if not node.has_file(name):
                return None  # never reported: its IN_MOVED_TO alone tells the story
            destination = self._pair(event, read_at)
            if isinstance(destination, float):
                return destination
            if destination is None:
                self._file_gone(node, name)
            else:
                self._move_file(node, name, *destination)
            return None
        if mask & IN_MOVED_TO:
            if self._moved_to.get(event.cookie) is not event:
                return None  # already handled with its IN_MOVED_FROM
            del self._moved_to[event.cookie]
            st = _lstat(node.absolute_path(name))
            if st is not None:
                self._file_present(node, name, st, written=False)
        elif mask & IN_CLOSE_WRITE:
            st = _lstat(node.absolute_path(name))
            if st is not None:
                self._file_present(node, name, st, written=True)
        elif mask & IN_CREATE:
            # A new name with several links is a hard link made by link(): complete already.
            # Anything else is being written; IN_CLOSE_WRITE will tell when it is done. A name
            # already known was listed after this event was queued: nothing new.
            if node.has_file(name):
                return None
            st = _lstat(node.absolute_path(name))
            if st is not None and st.st_nlink > 1:
                self._file_present(node, name, st, written=False)
        elif mask & IN_DELETE:
            if node.has_file(name):
                self._file_gone(node, name)
        elif mask & IN_ATTRIB:
            inode = node.file_inode(name)
            if inode is not None:
                self._schedule_check(volume.device, inode)
        return None

    def _pair(self, event: RawEvent, read_at: float) -> tuple[Directory, str] | float | None:
        """The destination of a MOVED_FROM: (directory, name); None when it went out of every
        watched directory; the time to wait until when its MOVED_TO may still come."""
        partner = self._moved_to.pop(event.cookie, None)
        if partner is None:
            deadline = read_at + self.rename_wait
            return deadline if self.clock() < deadline else None
        destination = self.walker.nodes.get(partner.wd)
        if destination is None:
            return None  # moved into a directory we just stopped watching
        return destination, partner.name

    def _file_present(
        self, node: Directory, name: str, st: os.stat_result, *, written: bool
    ) -> None:
        """A complete media file is at `name`: created if new, else maybe modified."""
        known = node.file_inode(name)
        if known is not None:
            if known == st.st_ino:
                if written:
                    self._schedule_check(node.volume.device, known)
                return
            self._file_gone(node, name)  # replaced by another file under the same name
        self._report_created(node, name, st)

    def _report_created(
        self, node: Directory, name: str, st: os.stat_result, *, listed: bool = False
    ) -> None:
        device = node.volume.device
        other_links = self.index.links(device, st.st_ino)
        other_links = [(d, n) for d, n in other_links if not (d == node and n == name)]
        if listed and self._moved_here(node, name, st, other_links):
            return
        if not node.has_file(name):
            self.index.add_link(node, name, st)
        self.out.append(_file_state(FileCreated, node, name, st))
        entry = self.index.get(device, st.st_ino)
        if entry is not None and other_links and entry.differs(st):
            # A new link of a known inode: its other paths have a new hardlink_count.
            for directory, other in other_links:
                self._report_modified(directory, other, st)
        if entry is not None:
            entry.update(st)

    def _moved_here(
        self,
        node: Directory,
        name: str,
        st: os.stat_result,
        other_links: list[tuple[Directory, str]],
    ) -> bool:
        """A listing found `name`, whose inode is known at a path with an IN_MOVED_FROM not
        processed yet: it was moved here (into a directory not watched yet, so its IN_MOVED_TO
        never came, as in ``mkdir New && mv a.mkv New/``). Reported as renamed; the MOVED_FROM
        then finds nothing left to move."""
        for directory, other in other_links:
            if directory.volume is not node.volume or directory.wd is None:
                continue
            if (directory.wd, other) not in self._moved_from:
                continue
            old_path = directory.child_path(other)
            self.index.remove_link(directory, other)
            entry = self.index.get(node.volume.device, st.st_ino)
            if entry is not None:
                entry.update(st)
            self.out.append(_file_renamed(old_path, node, name, st))
            return True
        return False

    def _file_gone(self, node: Directory, name: str) -> None:
        inode, remaining = self.index.remove_link(node, name)
        self._deleted(node.volume, node.child_path(name))
        if remaining is not None:
            self._schedule_check(node.volume.device, inode)

    def _move_file(self, node: Directory, name: str, parent: Directory, new_name: str) -> None:
        volume = node.volume
        accepted = parent.volume.filter.accepts_file(new_name) and is_utf8(new_name)
        if parent.volume is not volume or not accepted:
            self._file_gone(node, name)
            if accepted:
                st = _lstat(parent.absolute_path(new_name))
                if st is not None:
                    self._file_present(parent, new_name, st, written=False)
            return
        inode = node.file_inode(name)
        if inode is None:
            raise KeyError(name)
        if parent.has_file(new_name) and not (parent == node and new_name == name):
            self._file_gone(parent, new_name)  # the file it replaced
        st = _lstat(parent.absolute_path(new_name))
        if st is None or st.st_ino != inode:
            # Moved on or replaced since: only "gone from here" is certain. What is at the new
            # name now, if anything, is told by its own events.
            self._file_gone(node, name)
            return
        old_path = node.child_path(name)
        self.index.remove_link(node, name)
        self.index.add_link(parent, new_name, st).update(st)
        self.out.append(_file_renamed(old_path, parent, new_name, st))

    # --- modifications -------------------------------------------------------------------

    def _schedule_check(self, device: int, inode: int) -> None:
        due = self.clock() + self.debounce
        key = (device, inode)
        self._checks[key] = due
        heapq.heappush(self._check_heap, (due, device, inode))

    def _check_inode(self, device: int, inode: int) -> None:
        """Debounce over: report every path of the inode if its attributes changed."""
        entry = self.index.get(device, inode)
        if entry is None:
            return
        links = self.index.links(device, inode)
        for directory, name in links:
            st = _lstat(directory.absolute_path(name))
            if st is not None and st.st_ino == inode:
                break
        else:
            return  # every link is gone or replaced: their own events say so
        if not entry.differs(st):
            return
        entry.update(st)
        for directory, name in links:
            self._report_modified(directory, name, st)

    def _report_modified(self, directory: Directory, name: str, st: os.stat_result) -> None:
        self.out.append(_file_state(FileModified, directory, name, st))

    def _deleted(self, volume: VolumeTree, relative_path: str) -> None:
        expiry = self._expected.pop((volume.volume_id, relative_path), None)
        if expiry is not None and expiry > self.clock():
            return  # removed by scanarr's own delete command, which reports it itself
        self.out.append(
            FileDeleted(
                volume_id=volume.volume_id,
                relative_path=relative_path,
                filename=relative_path.rpartition("/")[2],
            )
        )


class _InodeFields(TypedDict):
    """The fields of a live event that its file's lstat gives."""

    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int


def _inode_fields(st: os.stat_result) -> _InodeFields:
    return _InodeFields(
        inode=st.st_ino, device_id=st.st_dev, size_bytes=st.st_size, hardlink_count=st.st_nlink
    )


def _file_state(
    kind: type[FileCreated | FileModified], directory: Directory, name: str, st: os.stat_result
) -> FileCreated | FileModified:
    """`file.created` or `file.modified` of the file `name` of `directory`, as `st` describes it."""
    return kind(
        volume_id=directory.volume.volume_id,
        relative_path=directory.child_path(name),
        filename=name,
        **_inode_fields(st),
    )


def _file_renamed(
    old_path: str, directory: Directory, name: str, st: os.stat_result
) -> FileRenamed:
    """`file.renamed` of the file at `old_path` now `name` in `directory` (on the same volume)."""
    return FileRenamed(
        volume_id=directory.volume.volume_id,
        old_relative_path=old_path,
        new_relative_path=directory.child_path(name),
        filename=name,
        **_inode_fields(st),
    )
