"""The outbound path of live events (§5, §6, §9): what the live watcher hands to the agent.

The live watcher (inotify) produces `FileCreated`, `FileModified`, `FileDeleted` and
`FileRenamed` models and calls ``await agent.live.submit(event)``; it asks for a rescan with
``agent.live.request_rescan(volume_id, reason, detail)`` (a `scanarr.reasons.RescanReason`:
event queue overflow, watch limit reached...).

`submit` sends the event on the current session and waits for the write, so a slow API slows
the producer instead of growing a queue. While the event's volume is being scanned it ALSO
sends the file as ``scan.file`` with the running scan_id (§5): without that, a file created in
a directory the walk has already passed would be missing from the scan and wiped by the API.
That copy never follows the scan's ``scan.completed`` (see `ScanEnd`): once the scan has ended
the live event alone is sent.

While disconnected, events go to the `OfflineStore` when one is given (§9's bounded on-disk
queue); without one, or when the store reports it overflowed, the volume is rescanned once
connected instead — a rescan is the truth, so nothing is lost either way. `run` (a service task)
replays the store on every new session, which exists only once its first config is applied (§2),
then rescans the volumes the store could not keep events for; until the replay is over `submit`
waits, so live events reach the API in the order they happened.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from scanarr import rfc3339
from scanarr.protocol import (
    FileCreated,
    FileDeleted,
    FileModified,
    FileRenamed,
    ScanFile,
    WatchPath,
)
from scanarr.reasons import DroppedEvents, RequestRescan, RescanReason

from .scans import ScanService
from .session import Link, Session, SessionLost
from .volumes import VolumeSet

if TYPE_CHECKING:
    from scanarr.metrics import Metrics

log = logging.getLogger(__name__)

LiveEvent = FileCreated | FileModified | FileDeleted | FileRenamed


class OfflineStore(Protocol):
    """Keeps live events while the watcher is disconnected (§9)."""

    def put(self, event: LiveEvent) -> bool:
        """Keep `event`; False when full (the caller then rescans the volume instead)."""
        ...

    async def replay(self, session: Session) -> list[str]:
        """Send what was kept, in order, after the next config, and forget it; the volumes
        whose events could not all be kept (to rescan). Raises SessionLost."""
        ...


class LiveWatching(Protocol):
    """What the agent needs of a live watcher (`scanarr.live.LiveWatcher` is one)."""

    def set_volumes(self, volumes: Sequence[WatchPath], extensions: Sequence[str]) -> None:
        """Watch these volumes from now on (after each config)."""
        ...

    async def wait_applied(self) -> None:
        """Return once the watches of the volumes set so far are in place (before a scan)."""
        ...

    def expect_removal(self, volume_id: str, relative_path: str) -> None:
        """A delete command is about to remove this path: not to be reported as deleted."""
        ...


@attrs.frozen
class LiveInputs:
    """What the agent gives the live watcher it builds (`LiveWatcherFactory`)."""

    submit: Callable[[LiveEvent], Awaitable[None]]
    request_rescan: RequestRescan
    # (volume_id, why it is degraded — or None once it is fully watched again)
    set_degraded: Callable[[str, str | None], None]


LiveWatcherFactory = Callable[[LiveInputs], LiveWatching]


class LiveEvents:
    def __init__(
        self,
        link: Link,
        volumes: VolumeSet,
        scans: ScanService,
        metrics: Metrics | None = None,
        *,
        offline_store: OfflineStore | None = None,
    ) -> None:
        self._link = link
        self._volumes = volumes
        self._scans = scans
        self._metrics = metrics
        self.offline_store = offline_store
        self.events_sent = 0
        self._replay_session: Session | None = None
        self._replay_wakeup = trio.Event()
        self._replayed = trio.Event()  # set while no replay is due or running
        self._replayed.set()
        link.add_listener(self._on_session)

    def _on_session(self, session: Session | None) -> None:
        if session is not None and self.offline_store is not None:
            self._replay_session = session
            self._replayed = trio.Event()
            self._replay_wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Replay the offline store on each new session (see the module docstring)."""
        task_status.started()
        while True:
            await self._replay_wakeup.wait()
            self._replay_wakeup = trio.Event()
            session, store = self._replay_session, self.offline_store
            try:
                if session is not None and store is not None and session.alive:
                    for volume_id in await store.replay(session):
                        self.request_rescan(volume_id, RescanReason.STORE_OVERFLOWED)
            except SessionLost:
                pass  # the store keeps what was not acknowledged; replayed next time
            except Exception:
                log.exception("replaying the offline event queue failed")
            finally:
                self._replayed.set()

    def request_rescan(
        self, volume_id: str, reason: RescanReason, detail: str | None = None
    ) -> None:
        """Queue a rescan of `volume_id` (coalesced with one waiting), the agent's own or the
        live watcher's (`detail`: more about `reason`, e.g. how a root was lost)."""
        text = reason.describe(detail)
        log.warning("rescanning volume %s: %s", volume_id, text)
        if self._metrics is not None:
            self._metrics.rescan_requested(reason)
        self._scans.request(volume_id, reason=text)

    async def submit(self, event: LiveEvent) -> None:
        """Send a live event now (see the module docstring). Never raises for a lost session."""
        await self._replayed.wait()
        session = self._link.current
        if session is None or not session.alive:
            self._keep_offline(event)
            return
        try:
            await session.send(event)
        except SessionLost:
            self._keep_offline(event)
            return
        self.events_sent += 1
        # On a lost session the scan restarts from the beginning and walks the file anyway.
        with contextlib.suppress(SessionLost):
            await self._mirror_into_scan(event)

    def _keep_offline(self, event: LiveEvent) -> None:
        store = self.offline_store
        if store is not None and store.put(event):
            return
        dropped, rescan = (
            (DroppedEvents.NO_STORE, RescanReason.DISCONNECTED)
            if store is None
            else (DroppedEvents.STORE_FULL, RescanReason.STORE_FULL)
        )
        if self._metrics is not None:
            self._metrics.event_dropped(dropped)
        self.request_rescan(event.volume_id, rescan)

    async def _mirror_into_scan(self, event: LiveEvent) -> None:
        if isinstance(event, FileDeleted):
            return
        running = self._scans.live_scan(event.volume_id)
        if running is None:
            return
        scan_id = running.scan_id
        volume = self._volumes.get(event.volume_id)
        if volume is None:
            return
        relative_path = (
            event.new_relative_path if isinstance(event, FileRenamed) else event.relative_path
        )
        path = os.path.join(volume.path, relative_path)
        try:
            status = await trio.to_thread.run_sync(os.lstat, path)
        except FileNotFoundError:
            return  # gone again: nothing to keep
        except OSError as error:
            log.warning("cannot stat %s for scan %s: %s", path, scan_id, error.strerror)
            return
        # Dropped when the scan ended during the lstat: nothing of a scan after its end.
        await running.send(
            ScanFile(
                scan_id=scan_id,
                volume_id=volume.id,
                volume_path=volume.path,
                relative_path=relative_path,
                filename=event.filename,
                inode=status.st_ino,
                device_id=status.st_dev,
                size_bytes=status.st_size,
                hardlink_count=status.st_nlink,
                mod_time=rfc3339.from_ns(status.st_mtime_ns),
            )
        )
