"""`LiveWatcher`: the live-watching service of the agent (PROTOCOL.md §6).

One trio task owns one inotify instance and every watch; it is started with ``nursery.start``::

    watcher = LiveWatcher(emit, request_rescan, debounce=1.0)
    await nursery.start(watcher.run)
    watcher.set_volumes(config.watch_paths, config.scan_extensions)
    await watcher.wait_applied()          # watches in place: a scan started now misses nothing

- ``emit(event)`` — async, called in order from the watcher's task with a `FileCreated`,
  `FileModified`, `FileDeleted` or `FileRenamed`. While it blocks nothing is read: a slow
  consumer back-pressures inotify, and if the kernel queue overflows the volumes are rescanned.
- ``request_rescan(volume_id, reason, detail)`` — sync, must not block (queue it, coalesce
  it); its result is ignored. Called on queue overflow and unknown watches (every volume), on a
  volume root deleted, moved or unmounted and when it comes back, periodically while the watch
  limit leaves directories unwatched and once they are all watched again, periodically for
  network/FUSE filesystems, and when nested volumes change what a volume covers; always once the
  volume has been listed again, so the scan cannot miss a file the listing absorbed. `reason`
  is a `scanarr.reasons.RescanReason`; `detail` says more (how a root was lost) or is None.
- `set_volumes(volumes, extensions)` — hot reload, diffed by volume id; applied by the task.
  Scans the config itself implies (new volume, path or extensions changed: §3) are the agent's:
  `set_volumes` never requests them. Start them after `wait_applied()`, so that a file created
  during the scan is either seen by the scan or reported live.
- `expect_removal(volume_id, relative_path)` — the delete command says it is about to unlink a
  path; its ``file.deleted`` is not emitted (the command reports it) if it comes within
  `removal_expiry` seconds.
- `health()` — per volume: watches, unwatched directories, degraded flag and reason, network
  filesystem type; `stats()` — counters for metrics. `health_changed()` is called when a
  volume's degraded state changes, so the agent can send ``watcher.status``.

The initial listing of a volume is silent: the agent scans it. Live events start from the watch.
A volume is degraded while its root is missing or unmounted (retried with backoff, from
`watch_retry_delay` up to `watch_retry_max_delay`) or while the watch limit leaves directories
unwatched (rescanned every `fallback_rescan_interval`, watches retried with the same backoff).

Nothing proportional to a tree runs on the trio thread: whole-volume listings (native, see
`scanarr._native.LiveLister`, merged into the native index in one call with the GIL
released), listings of directories created or moved in (the same, their media files then
reported in slices between other tasks' steps), the freeing of a dropped volume's directories
(detached in O(1) first) and retries of unwatched directories run in one
listing thread at a time, while events are only read; health figures come from counts each
tree keeps; events are processed in bounded batches. The listing thread is never abandoned:
on cancellation it is stopped through the walker's stop flag and waited for. The watch limit
and unwatchable directories are logged when they start and end, summarised once a minute in
between (`scanarr.logs.RepeatingCondition`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import attrs
import trio

from scanarr.live.backend import BackendChoice, choose_backend, open_backend
from scanarr.live.events import EventTranslator, LiveEvent
from scanarr.live.fanotify import Fanotify
from scanarr.live.filters import MediaFilter
from scanarr.live.inotify import Inotify, read_sysctl
from scanarr.live.mounts import MOUNTINFO_PATH, filesystem_of, is_network_filesystem
from scanarr.live.tree import (
    Directory,
    InodeIndex,
    SubtreeChanges,
    TreeWalker,
    VolumeTree,
    WalkStopped,
)
from scanarr.logs import RepeatingCondition
from scanarr.protocol import WatchPath
from scanarr.reasons import RequestRescan, RescanReason
from scanarr.volume_paths import is_inside, resolve_root

log = logging.getLogger(__name__)

EmitEvent = Callable[[LiveEvent], Awaitable[None]]

# Events buffered while a volume is being listed; past this, they count as an overflow.
MAX_BACKLOG = 1_000_000

# Media files of a new directory's listing reported (and emitted) per step of the trio thread.
_REPORT_SLICE = 512

# Keys of the repeating warnings of a volume (with its id).
_WATCH_LIMIT = "watch limit"
_UNWATCHABLE = "unwatchable directories"

T = TypeVar("T")


@attrs.frozen
class VolumeHealth:
    """How well a volume is watched, for ``watcher.status`` and metrics."""

    volume_id: str
    path: str
    watches: int  # directories watched by inotify
    unwatched_directories: int  # directories covered only by rescans (watch limit, errors)
    degraded: bool
    reason: str | None  # why degraded
    network_filesystem: str | None  # filesystem type when remote changes make no event
    rescans_requested: int


@attrs.frozen
class LiveStats:
    events_emitted: int
    overflows: int
    unknown_watch_events: int
    rescans_requested: int
    watch_limit_hits: int
    skipped_names: int  # media files whose name is not valid UTF-8
    watches: int
    filesystems_marked: int = 0  # fanotify: filesystems with a mark (0 under inotify)


class _Volume:
    """A configured volume and its watching state."""

    def __init__(self, config: WatchPath, path: str) -> None:
        self.config = config
        self.path = path  # normalised absolute path, symlinks of the root resolved
        self.tree: VolumeTree | None = None
        self.root_problem: str | None = None  # root missing, unmounted...
        self.watch_problem: str | None = None  # watch limit reached, unwatchable dirs
        self.network_filesystem: str | None = None
        self.excluded: frozenset[str] = frozenset()
        # The root was a mount point when last watched: once the filesystem is unmounted, the
        # empty directory left underneath is not the volume and is not watched.
        self.root_is_mount_point = False
        self.retry_at: float | None = None
        self.retry_delay = 0.0
        self.fallback_rescan_at: float | None = None
        self.network_rescan_at: float | None = None
        self.rescans_requested = 0

    @property
    def degraded(self) -> bool:
        return self.root_problem is not None or self.watch_problem is not None


def _normalise(path: str) -> str:
    return resolve_root(path)  # the nesting rule of the scans too


class LiveWatcher:
    """Watches volumes with inotify and emits protocol events (see the module docstring)."""

    def __init__(
        self,
        emit: EmitEvent,
        request_rescan: RequestRescan,
        *,
        debounce: float = 1.0,
        rename_wait: float = 0.2,
        network_rescan_interval: float = 900.0,
        fallback_rescan_interval: float = 300.0,
        watch_retry_delay: float = 30.0,
        watch_retry_max_delay: float = 600.0,
        removal_expiry: float = 60.0,
        max_watches: int | None = None,
        mount_table: str = MOUNTINFO_PATH,
        health_changed: Callable[[], None] | None = None,
        backend: str = "inotify",
    ) -> None:
        self._emit = emit
        self._request_rescan = request_rescan
        self._debounce = debounce
        self._rename_wait = rename_wait
        self._network_rescan_interval = network_rescan_interval
        self._fallback_rescan_interval = fallback_rescan_interval
        self._watch_retry_delay = watch_retry_delay
        self._watch_retry_max_delay = watch_retry_max_delay
        self._removal_expiry = removal_expiry
        self._max_watches = max_watches
        self._mount_table = mount_table
        self._health_changed = health_changed
        self._backend_requested = backend  # auto, inotify or fanotify (`scanarr.live.backend`)
        self._backend: BackendChoice | None = None
        self._fallbacks_logged = 0
        self._volumes: dict[str, _Volume] = {}
        self._filter = MediaFilter(())
        self._extensions: frozenset[str] = frozenset()
        self._pending_config: tuple[list[WatchPath], list[str]] | None = None
        self._config_generation = 0
        self._applied_generation = 0
        self._applied = trio.Event()
        self._resync: set[str] = set()  # volume ids to list again (silently)
        # Rescans asked for once the volume has been listed again: a scan starting earlier could
        # pass a directory before a file appears there, and the silent listing absorb that file.
        self._rescan_after_walk: dict[str, RescanReason] = {}
        self._retry_now: set[str] = set()
        self._wait_scope: trio.CancelScope | None = None
        self._inotify: Inotify | None = None
        self._walker: TreeWalker | None = None
        self._translator: EventTranslator | None = None
        self._index = InodeIndex()
        self._events_emitted = 0
        self._overflows = 0
        self._unknown_watch_events = 0
        self._rescans_requested = 0
        self._watch_limit_hits = 0
        self._skipped_names = 0
        self._skipped_logged: set[str] = set()
        self._random = random.Random()
        self._expected_removals: dict[tuple[str, str], float] = {}
        self._walking = False  # a worker thread is changing the trees: health() uses its cache
        self._health_cache: dict[str, VolumeHealth] = {}
        self._retry_due: set[str] = set()  # volume ids whose unwatched directories to retry
        # Trees of volumes no longer watched, to free (and unwatch) in the listing thread.
        self._detached: list[VolumeTree] = []
        # The watch limit and unwatchable directories are retried again and again: logged when
        # they start and end, summarised once a minute in between.
        self._warnings = RepeatingCondition(log)

    # --- interface for the agent ---------------------------------------------------------

    def set_volumes(self, volumes: Sequence[WatchPath], extensions: Sequence[str]) -> None:
        """Watch exactly these volumes, reporting files with these extensions (hot reload)."""
        self._pending_config = (list(volumes), list(extensions))
        self._config_generation += 1
        self._wake()

    async def wait_applied(self) -> None:
        """Return once every `set_volumes` so far is applied (watches in place)."""
        while self._applied_generation < self._config_generation:
            await self._applied.wait()

    def expect_removal(self, volume_id: str, relative_path: str) -> None:
        """The delete command is about to remove this path: do not report it as deleted."""
        expiry = trio.current_time() + self._removal_expiry
        self._expected_removals[(volume_id, relative_path)] = expiry

    def health(self) -> dict[str, VolumeHealth]:
        if self._walking:
            # Trees are being built in a worker thread: the last report, with new volumes at 0.
            return {
                volume_id: self._health_cache.get(volume_id)
                or VolumeHealth(
                    volume_id=volume_id,
                    path=volume.config.path,
                    watches=0,
                    unwatched_directories=0,
                    degraded=volume.degraded,
                    reason=volume.root_problem or volume.watch_problem,
                    network_filesystem=volume.network_filesystem,
                    rescans_requested=volume.rescans_requested,
                )
                for volume_id, volume in self._volumes.items()
            }
        self._health_cache = self._compute_health()
        return dict(self._health_cache)

    def _compute_health(self) -> dict[str, VolumeHealth]:
        """From the counts each tree keeps as watches come and go: O(volumes)."""
        report: dict[str, VolumeHealth] = {}
        for volume_id, volume in self._volumes.items():
            tree = volume.tree
            report[volume_id] = VolumeHealth(
                volume_id=volume_id,
                path=volume.config.path,
                watches=0 if tree is None else tree.watches,
                unwatched_directories=0 if tree is None else tree.unwatched_count,
                degraded=volume.degraded,
                reason=volume.root_problem or volume.watch_problem,
                network_filesystem=volume.network_filesystem,
                rescans_requested=volume.rescans_requested,
            )
        return report

    def stats(self) -> LiveStats:
        return LiveStats(
            events_emitted=self._events_emitted,
            overflows=self._overflows,
            unknown_watch_events=self._unknown_watch_events,
            rescans_requested=self._rescans_requested,
            watch_limit_hits=self._watch_limit_hits,
            skipped_names=self._skipped_names,
            watches=self._inotify.watch_count if self._inotify is not None else 0,
            filesystems_marked=getattr(self._inotify, "filesystems_marked", 0),
        )

    @property
    def backend(self) -> BackendChoice | None:
        """The backend in use and why (None until `run` has chosen it)."""
        return self._backend

    def watched_paths(self, volume_id: str) -> list[str]:
        """Relative paths of the watched directories of a volume ("" is the root)."""
        volume = self._volumes.get(volume_id)
        if volume is None or volume.tree is None or self._walking:
            return []
        return sorted(below for node, below in volume.tree.root.iter_tree() if node.wd is not None)

    # --- the task ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        choice = self._backend = choose_backend(self._backend_requested)
        log.info("live watching with %s: %s", choice.name, choice.reason)
        inotify = self._inotify = open_backend(choice, self._max_watches)
        # A new run knows nothing of what an earlier one listed: the index is the instance's.
        self._index = InodeIndex(inotify.table)
        walker = self._walker = TreeWalker(inotify, self._index)
        translator = self._translator = EventTranslator(
            walker,
            self,
            debounce=self._debounce,
            rename_wait=self._rename_wait,
            removal_expiry=self._removal_expiry,
            clock=trio.current_time,
            expected_removals=self._expected_removals,
        )
        # A new inotify instance: whatever an earlier run watched is listed and watched again,
        # and wait_applied() waits for that.
        for volume in self._volumes.values():
            volume.tree = None
            self._resync.add(volume.config.id)
        if self._volumes:
            self._config_generation += 1
        try:
            task_status.started()
            while True:
                await self._do_pending_work()
                translator.process()
                if translator.to_list:
                    await self._list_appeared()
                translator.fire_due_checks()
                self._fire_timers()
                await self._emit_out()
                if self._has_pending_work():
                    # Work is done in bounded batches: let the other tasks (and signals) in.
                    await trio.lowlevel.checkpoint()
                    continue
                deadline = self._next_deadline()
                with trio.CancelScope(deadline=deadline) as scope:
                    self._wait_scope = scope
                    await inotify.wait_readable()
                self._wait_scope = None
                events = inotify.read_pending()
                if events:
                    translator.feed(events, trio.current_time())
        finally:
            walker.stopping = True
            self._wait_scope = None
            self._translator = None
            self._walker = None
            self._inotify = None
            inotify.close()

    def _wake(self) -> None:
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def _has_pending_work(self) -> bool:
        translator = self._translator
        return bool(
            self._pending_config is not None
            or self._resync
            or self._retry_now
            or self._retry_due
            or self._detached
            or (translator is not None and translator.to_list)
            or (translator is not None and translator.out)
            or (translator is not None and translator.pending and translator.blocked_until is None)
        )

    def _next_deadline(self) -> float:
        deadlines = [math.inf]
        if self._translator is not None:
            deadline = self._translator.next_deadline()
            if deadline is not None:
                deadlines.append(deadline)
        for volume in self._volumes.values():
            for at in (volume.retry_at, volume.fallback_rescan_at, volume.network_rescan_at):
                if at is not None:
                    deadlines.append(at)
        return min(deadlines)

    async def _emit_out(self) -> None:
        translator = self._translator
        assert translator is not None
        while translator.out:
            events, translator.out = translator.out, []
            for event in events:
                await self._emit(event)
                self._events_emitted += 1

    def schedule_rescan(
        self, volume: _Volume, reason: RescanReason, detail: str | None = None
    ) -> None:
        """The one way a rescan is asked for."""
        volume.rescans_requested += 1
        self._rescans_requested += 1
        log.info(
            "rescan of volume %s (%s): %s",
            volume.config.id,
            volume.config.path,
            reason.describe(detail),
        )
        self._request_rescan(volume.config.id, reason, detail)

    # --- configuration -------------------------------------------------------------------

    async def _do_pending_work(self) -> None:
        to_walk: list[_Volume] = []
        generation = self._config_generation
        if self._pending_config is not None:
            volumes, extensions = self._pending_config
            self._pending_config = None
            to_walk.extend(self._apply_config(volumes, extensions))
        for volume_id in self._retry_now:
            volume = self._volumes.get(volume_id)
            if volume is not None and volume.tree is None:
                volume.retry_at = trio.current_time()
        self._retry_now.clear()
        for volume_id in self._resync:
            volume = self._volumes.get(volume_id)
            if volume is not None and volume not in to_walk:
                to_walk.append(volume)
        self._resync.clear()
        if to_walk:
            await self._walk(to_walk)
        elif self._detached:
            await self._free_detached()
        while self._retry_due and not self._resync:
            volume = self._volumes.get(self._retry_due.pop())
            if volume is not None and volume.tree is not None:
                await self._retry_watches(volume)
        while self._rescan_after_walk and not self._resync:
            volume_id, reason = self._rescan_after_walk.popitem()
            volume = self._volumes.get(volume_id)
            if volume is not None:
                self.schedule_rescan(volume, reason)
        if generation > self._applied_generation:
            self._applied_generation = generation
            self._applied.set()
            self._applied = trio.Event()

    def _apply_config(self, volumes: list[WatchPath], extensions: list[str]) -> list[_Volume]:
        """Diff the new volume list with the current one; returns the volumes to list again."""
        extensions_set = frozenset(extension.lower().lstrip(".") for extension in extensions)
        extensions_changed = extensions_set != self._extensions
        self._extensions = extensions_set
        self._filter = MediaFilter(extensions_set)
        wanted = {config.id: config for config in volumes}
        to_walk: list[_Volume] = []
        for volume_id in list(self._volumes):
            volume = self._volumes[volume_id]
            config = wanted.get(volume_id)
            if config is None or _normalise(config.path) != volume.path:
                self._drop_volume(volume)
                del self._volumes[volume_id]
                log.info("stopped watching volume %s (%s)", volume_id, volume.config.path)
            else:
                volume.config = config
        for volume_id, config in wanted.items():
            if volume_id not in self._volumes:
                volume = self._volumes[volume_id] = _Volume(config, _normalise(config.path))
                to_walk.append(volume)
        roots = {volume.path for volume in self._volumes.values()}
        for volume in self._volumes.values():
            excluded = frozenset(
                root for root in roots if root != volume.path and is_inside(root, volume.path)
            )
            if excluded != volume.excluded:
                if volume not in to_walk:
                    to_walk.append(volume)
                    self._rescan_after_walk[volume.config.id] = RescanReason.NESTED
                volume.excluded = excluded
            elif extensions_changed and volume not in to_walk:
                to_walk.append(volume)
        return to_walk

    def _drop_volume(self, volume: _Volume) -> None:
        """Stop watching a volume, silently (nothing is reported deleted). In O(1): the tree is
        marked detached (its events and links are ignored from now on) and freed, with its
        watches, in the listing thread before anything else is listed."""
        tree = volume.tree
        volume.tree = None
        if tree is not None and not tree.detached:
            tree.detached = True
            self._detached.append(tree)

    async def _free_detached(self) -> None:
        detached, self._detached = self._detached, []
        walker = self._walker
        assert walker is not None

        def free() -> None:
            for tree in detached:
                self._free(tree)
            walker.release_dropped()

        await self._in_listing_thread(free)

    # --- listing volumes -----------------------------------------------------------------

    def _open_root(self, volume: _Volume) -> VolumeTree | None:
        """A fresh tree for the volume root, or None (and the volume degraded) if it is not
        there."""
        try:
            st = os.stat(volume.path)
        except OSError as error:
            self._root_unavailable(volume, f"volume root unavailable: {error.strerror}")
            return None
        if not stat.S_ISDIR(st.st_mode):
            self._root_unavailable(volume, "volume root is not a directory")
            return None
        try:
            mount_point = os.stat(os.path.dirname(volume.path)).st_dev != st.st_dev
        except OSError as error:
            self._root_unavailable(volume, f"parent of the volume root: {error.strerror}")
            return None
        if volume.root_is_mount_point and not mount_point:
            self._root_unavailable(volume, "no filesystem mounted on the volume root")
            return None
        volume.root_is_mount_point = mount_point
        return VolumeTree(
            volume.config.id,
            volume.path,
            st.st_dev,
            self._filter,
            volume.excluded,
            index=self._index,
        )

    async def _walk(self, volumes: list[_Volume]) -> None:
        """List volumes again from scratch in a worker thread, reading events meanwhile."""
        walker = self._walker
        assert walker is not None
        # (volume, tree known so far, fresh tree or None when the root is not there)
        jobs: list[tuple[_Volume, VolumeTree | None, VolumeTree | None]] = []
        for volume in volumes:
            old, volume.tree = volume.tree, None
            if old is not None:
                old.detached = True
            jobs.append((volume, old, self._open_root(volume)))
        # Trees of volumes dropped since: freed first, so their watches are not in the way.
        detached, self._detached = self._detached, []

        def list_volumes() -> list[SubtreeChanges | None]:
            # Everything proportional to a tree runs here, not on the trio thread: the old trees
            # are freed (their watches are taken over by the new ones — same wd for the same
            # directory — or removed at the end), the new ones listed.
            for tree in detached:
                self._free(tree)
            for _volume, old, _new in jobs:
                if old is not None:
                    self._free(old)
            results = [
                None if new is None else walker.sync(new.root, silent=True)
                for _volume, _old, new in jobs
            ]
            walker.release_dropped()
            return results

        results = await self._in_listing_thread(list_volumes)

        for (volume, _old, tree), changes in zip(jobs, results, strict=True):
            if tree is None or changes is None:
                continue
            volume.tree = tree
            if tree.root.wd is None and changes.watch_limit is None:
                volume.tree = None
                why = f": {changes.errors[0]}" if changes.errors else ""
                self._root_unavailable(volume, f"volume root could not be watched{why}")
                continue
            recovered = volume.root_problem is not None
            volume.root_problem = None
            volume.retry_at = None
            self._detect_network_filesystem(volume)
            self._set_watch_problem(volume, self._problem_of(volume, changes))
            if volume.watch_problem is None and not recovered:
                volume.retry_delay = 0.0
            if recovered:
                self.schedule_rescan(volume, RescanReason.ROOT_BACK)
                self._notify_health()
            log.info(
                "watching volume %s (%s): %d directories",
                volume.config.id,
                volume.config.path,
                changes.directories,
            )
        self._log_fallbacks()

    def _log_fallbacks(self) -> None:
        """Filesystems fanotify cannot watch, watched with inotify instead: logged once each."""
        backend = self._inotify
        if not isinstance(backend, Fanotify):
            return
        fallbacks = backend.fallbacks()
        for syscall, error_number in fallbacks[self._fallbacks_logged :]:
            log.warning(
                "a filesystem of the volumes cannot be watched by fanotify (%s: %s): its "
                "directories are watched with inotify (one watch each)",
                syscall,
                os.strerror(error_number),
            )
        self._fallbacks_logged = len(fallbacks)

    def _free(self, tree: VolumeTree) -> None:
        """Forget a tree listed before (in the listing thread, the GIL released)."""
        if not tree.free():
            raise WalkStopped

    async def _list_appeared(self) -> None:
        """List the directories created or moved in that the translator stopped at: natively,
        in the listing thread and merged into the index there (events are read, not processed,
        meanwhile), then their media files reported in slices, yielding in between. Only then
        are the events after theirs processed: by then every watch of the new tree has its
        directory."""
        walker = self._walker
        translator = self._translator
        inotify = self._inotify
        assert walker is not None and translator is not None and inotify is not None
        while translator.to_list:
            node = translator.to_list.pop(0)
            if node.volume.detached or not node.attached():
                continue
            merged = await self._in_listing_thread(
                functools.partial(walker.list_and_merge, node, report=True)
            )
            # Merged (watches and all) in the listing thread; the media files it added are
            # reported here, a slice at a time, reading (not processing) events in between so
            # that the kernel queue does not overflow behind a big tree.
            for start in range(0, merged.added_count, _REPORT_SLICE):
                batch = walker.added_slice(node, merged, start, start + _REPORT_SLICE)
                translator.report_listed(node, SubtreeChanges(added=batch))
                await self._emit_out()
                events = inotify.read_pending()
                if events:
                    translator.feed(events, trio.current_time())
                    if translator.pending > MAX_BACKLOG:
                        log.warning("more than %d events while listing a directory", MAX_BACKLOG)
                        self.overflow()
                await trio.lowlevel.checkpoint()
            changes = SubtreeChanges()
            walker.merge_problems(node, merged, changes)
            translator.report_listed(node, changes)  # what is left: problems, collisions

    async def _in_listing_thread(self, work: Callable[[], T]) -> T:
        """Run `work` (which changes the trees and the watch table) in a worker thread while
        events are read (and buffered: they are processed after it).

        The thread is never abandoned: on cancellation (shutdown) it is told to stop through the
        walker's stop flag and waited for, so it cannot touch the inotify instance `run` closes.
        """
        walker = self._walker
        assert walker is not None
        finished = False

        async def drain() -> None:
            try:
                await self._drain_while_walking()
            finally:
                if not finished:
                    walker.stopping = True  # cancelled: the listing gives up at its next step

        self._health_cache = self._compute_health()
        self._walking = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                try:
                    result = await trio.to_thread.run_sync(work)
                except WalkStopped:
                    await trio.lowlevel.checkpoint()  # raises Cancelled: why it stopped
                    raise
                finally:
                    finished = True
                    nursery.cancel_scope.cancel()
        finally:
            self._walking = False
        return result

    async def _drain_while_walking(self) -> None:
        """Read events while a listing runs (they are processed after it), so that the kernel
        queue does not overflow during a long listing."""
        inotify = self._inotify
        translator = self._translator
        assert inotify is not None and translator is not None
        while True:
            await inotify.wait_readable()
            translator.feed(inotify.read_pending(), trio.current_time())
            if translator.pending > MAX_BACKLOG:
                log.warning("more than %d events while listing volumes", MAX_BACKLOG)
                self.overflow()

    def _detect_network_filesystem(self, volume: _Volume) -> None:
        mount = filesystem_of(volume.path, self._mount_table)
        filesystem = mount.filesystem_type if mount is not None else None
        if filesystem is not None and is_network_filesystem(filesystem):
            if volume.network_filesystem != filesystem:
                log.warning(
                    "volume %s (%s) is on %s (%s): changes made by other machines make no "
                    "inotify event; it is rescanned every %s s",
                    volume.config.id,
                    volume.config.path,
                    filesystem,
                    mount.source if mount else "?",
                    round(self._network_rescan_interval),
                )
                volume.network_filesystem = filesystem
                volume.network_rescan_at = self._jittered(self._network_rescan_interval)
        else:
            volume.network_filesystem = None
            volume.network_rescan_at = None

    def _jittered(self, interval: float) -> float:
        return trio.current_time() + interval * self._random.uniform(0.9, 1.1)

    # --- timers --------------------------------------------------------------------------

    def _fire_timers(self) -> None:
        now = trio.current_time()
        for volume in list(self._volumes.values()):
            if volume.network_rescan_at is not None and volume.network_rescan_at <= now:
                volume.network_rescan_at = self._jittered(self._network_rescan_interval)
                self.schedule_rescan(volume, RescanReason.NETWORK)
            if volume.fallback_rescan_at is not None and volume.fallback_rescan_at <= now:
                volume.fallback_rescan_at = self._jittered(self._fallback_rescan_interval)
                self.schedule_rescan(volume, RescanReason.WATCH_LIMIT)
            if volume.retry_at is not None and volume.retry_at <= now:
                volume.retry_at = None
                if volume.tree is None:
                    self._resync.add(volume.config.id)  # the root again, from scratch
                else:
                    self._retry_due.add(volume.config.id)

    async def _retry_watches(self, volume: _Volume) -> None:
        """Try again to watch the directories the watch limit (or a watch error) left
        unwatched, in the listing thread. While no watch is free this costs one
        ``inotify_add_watch``: the first directory that hits the limit ends the retry."""
        tree = volume.tree
        walker = self._walker
        translator = self._translator
        assert tree is not None and walker is not None and translator is not None

        def retry() -> list[tuple[Directory, SubtreeChanges]]:
            synced: list[tuple[Directory, SubtreeChanges]] = []
            for top in tree.unwatched_tops():
                if walker.stopping:
                    raise WalkStopped
                changes = walker.sync(top, stop_at_limit=True)
                synced.append((top, changes))
                if changes.watch_limit is not None:
                    break
            return synced

        synced = await self._in_listing_thread(retry)
        if volume.tree is not tree:
            return
        problems = SubtreeChanges()
        for top, changes in synced:
            if top.attached():
                translator.report_listing(top, changes)
            problems.watch_limit = problems.watch_limit or changes.watch_limit
            problems.errors.extend(changes.errors)
        had_watch_problem = volume.watch_problem is not None
        self._set_watch_problem(volume, self._problem_of(volume, problems))
        if volume.watch_problem is None and had_watch_problem:
            volume.retry_delay = 0.0
            self.schedule_rescan(volume, RescanReason.WATCHES_RESTORED)

    def _schedule_retry(self, volume: _Volume) -> None:
        if volume.retry_at is not None:
            return
        if volume.retry_delay <= 0:
            volume.retry_delay = self._watch_retry_delay
        else:
            volume.retry_delay = min(volume.retry_delay * 2, self._watch_retry_max_delay)
        volume.retry_at = trio.current_time() + volume.retry_delay

    def _root_unavailable(self, volume: _Volume, reason: str) -> None:
        if volume.root_problem != reason:
            log.warning("volume %s (%s): %s", volume.config.id, volume.config.path, reason)
        changed = volume.root_problem is None
        volume.root_problem = reason
        self._schedule_retry(volume)
        if changed:
            self._notify_health()

    def _notify_health(self) -> None:
        if self._health_changed is not None:
            self._health_changed()

    def _volume_of(self, tree: VolumeTree) -> _Volume | None:
        volume = self._volumes.get(tree.volume_id)
        return volume if volume is not None and volume.tree is tree else None

    # --- TranslatorHost ------------------------------------------------------------------

    def overflow(self) -> None:
        self._overflows += 1
        if self._backend is not None and self._backend.name == "fanotify":
            log.warning(
                "fanotify event queue overflowed (fs.fanotify.max_queued_events=%s): events were "
                "lost, every volume is rescanned",
                read_sysctl("max_queued_events", "fanotify"),
            )
        else:
            log.warning(
                "inotify event queue overflowed (fs.inotify.max_queued_events=%s): events were "
                "lost, every volume is rescanned",
                read_sysctl("max_queued_events"),
            )
        if self._translator is not None:
            self._translator.discard_pending()
        for volume_id in self._volumes:
            self._resync.add(volume_id)
            self._rescan_after_walk[volume_id] = RescanReason.OVERFLOW

    def unknown_watch(self, wd: int, mask: int) -> None:
        self._unknown_watch_events += 1
        log.warning(
            "inotify event for unknown watch %d (mask %#x): every volume is rescanned", wd, mask
        )
        for volume_id in self._volumes:
            self._resync.add(volume_id)
            self._rescan_after_walk.setdefault(volume_id, RescanReason.UNKNOWN_WATCH)

    def root_lost(self, tree: VolumeTree, why: str) -> None:
        volume = self._volume_of(tree)
        if volume is None:
            return
        self._drop_volume(volume)
        self.schedule_rescan(volume, RescanReason.ROOT_LOST, why)
        volume.retry_delay = 0.0
        self._root_unavailable(volume, why)

    def walk_problems(self, tree: VolumeTree, changes: SubtreeChanges) -> None:
        """A listing of new directories hit the watch limit or unwatchable directories."""
        volume = self._volume_of(tree)
        if volume is None:
            return
        reason = self._problem_of(volume, changes)
        if reason is not None:
            self._set_watch_problem(volume, reason)

    def _problem_of(self, volume: _Volume, changes: SubtreeChanges) -> str | None:
        """Why a listing of `volume` leaves it degraded (None when it does not), logged as a
        repeating condition. Counts come from the trees: nothing here walks one."""
        tree = volume.tree
        unwatched = 0 if tree is None else tree.unwatched_count
        volume_id = volume.config.id
        if changes.errors:
            self._warnings.occurred(
                (_UNWATCHABLE, volume_id),
                "volume %s (%s): %d directories cannot be watched or read, e.g. %s",
                volume_id,
                volume.config.path,
                len(changes.errors),
                "; ".join(str(error) for error in changes.errors[:5]),
            )
        if changes.watch_limit is not None:
            self._watch_limit_hits += 1
            total_unwatched = sum(
                other.tree.unwatched_count
                for other in self._volumes.values()
                if other.tree is not None
            )
            watches = self._inotify.watch_count if self._inotify is not None else 0
            needed = watches + total_unwatched
            limit = read_sysctl("max_user_watches")
            reason = (
                f"inotify watch limit reached ({changes.watch_limit.strerror}): "
                f"{unwatched} directories not watched, covered by rescans every "
                f"{round(self._fallback_rescan_interval)} s"
            )
            self._warnings.occurred(
                (_WATCH_LIMIT, volume_id),
                "volume %s (%s): %s. scanarr needs at least %d watches (it has %d; "
                "fs.inotify.max_user_watches=%s, shared by every process of this user): raise it, "
                "e.g. `sysctl -w fs.inotify.max_user_watches=%d` and in /etc/sysctl.d/",
                volume_id,
                volume.config.path,
                reason,
                needed,
                watches,
                limit,
                max(needed * 2, (limit or 0) * 2),
            )
            return reason
        if changes.errors:
            return f"{len(changes.errors)} directories cannot be watched: {changes.errors[0]}"
        if unwatched and volume.watch_problem is not None:
            return volume.watch_problem  # what is still unwatched is retried
        return None

    def _set_watch_problem(self, volume: _Volume, reason: str | None) -> None:
        """The one place a volume's watch health changes: degraded (covered by fallback
        rescans, retried with backoff) or not, the agent told on each change."""
        was = volume.watch_problem
        volume.watch_problem = reason
        volume_id = volume.config.id
        if reason is None:
            volume.fallback_rescan_at = None
            self._warnings.ended(
                (_WATCH_LIMIT, volume_id),
                "volume %s (%s): every directory is watched again",
                volume_id,
                volume.config.path,
            )
            self._warnings.ended(
                (_UNWATCHABLE, volume_id),
                "volume %s (%s): every directory can be watched and read again",
                volume_id,
                volume.config.path,
            )
            if was is not None:
                self._notify_health()
            return
        if volume.fallback_rescan_at is None:
            volume.fallback_rescan_at = self._jittered(self._fallback_rescan_interval)
        self._schedule_retry(volume)
        if was is None:
            self._notify_health()

    def path_appeared(self, path: str) -> None:
        for volume in self._volumes.values():
            if volume.path == path and volume.tree is None:
                self._retry_now.add(volume.config.id)

    def name_skipped(self, tree: VolumeTree, relative_path: str) -> None:
        self._skipped_names += 1
        if relative_path not in self._skipped_logged and len(self._skipped_logged) < 1000:
            self._skipped_logged.add(relative_path)
            log.warning(
                "volume %s: %r is not valid UTF-8 and cannot be reported",
                tree.volume_id,
                relative_path,
            )


__all__ = [
    "Directory",
    "LiveStats",
    "LiveWatcher",
    "RequestRescan",
    "RescanReason",
    "VolumeHealth",
]
