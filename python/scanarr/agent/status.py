"""Volume statuses and the ``watcher.status`` heartbeat (§9).

`StatusBoard` holds one status per configured volume. Each volume has a *base* status that any
service may set with `set_volume_status` (``watching``, ``unavailable``, ``error``, ``degraded``;
the live watcher, for instance, sets ``degraded`` when inotify watches run out), and a
*scanning* flag the scan service raises while it walks the volume; the reported status is
``scanning`` while the flag is up, the base status otherwise. A failed scan sets
``unavailable`` (root missing, not a directory, unmounted) or ``error`` (an unreadable directory
inside); the next completed scan clears them. The top-level status is
``degraded`` when any volume is unavailable, in error or degraded, else ``scanning`` when any is
being scanned, else ``watching``.

`StatusBoard.run` sends ``watcher.status`` when a session starts (right after its config),
whenever a reported status changes, and every `interval` seconds.
"""

from __future__ import annotations

import logging
import time
import typing
from collections.abc import Iterable
from typing import Literal

import trio

from scanarr.protocol import (
    VolumeStatus,
    VolumeStatusName,
    WatcherStatus,
    WatcherStatusName,
    WatchPath,
)

from .session import Link, Session, SessionLost

log = logging.getLogger(__name__)

# What a service sets; ``scanning`` is reported on top of it while a scan runs.
BaseStatus = Literal["watching", "unavailable", "error", "degraded"]
BASE_STATUSES: tuple[BaseStatus, ...] = typing.get_args(BaseStatus)
_DEGRADED: frozenset[VolumeStatusName] = frozenset({"unavailable", "error", "degraded"})
# How a scan ended, for `mark_scan_result`.
ScanResult = Literal["completed", "unavailable", "failed"]


class StatusBoard:
    def __init__(self, link: Link, *, interval: float) -> None:
        self._link = link
        self.interval = interval
        self._started = time.monotonic()
        self._paths: dict[str, str] = {}
        self._base: dict[str, BaseStatus] = {}
        self._scanning: set[str] = set()
        self._wakeup = trio.Event()
        self._last_sent: WatcherStatus | None = None
        link.add_listener(self._on_session)

    # --- what other services call --------------------------------------------------------

    def set_volumes(self, volumes: Iterable[WatchPath]) -> None:
        """Follow the config: new volumes start ``watching``, removed ones disappear."""
        wanted = {volume.id: volume.path for volume in volumes}
        for volume_id in list(self._paths):
            if volume_id not in wanted:
                del self._paths[volume_id]
                self._base.pop(volume_id, None)
                self._scanning.discard(volume_id)
        for volume_id, path in wanted.items():
            self._paths[volume_id] = path
            self._base.setdefault(volume_id, "watching")
        self._changed()

    def set_volume_status(self, volume_id: str, status: BaseStatus) -> None:
        """Set a volume's base status."""
        if status not in BASE_STATUSES:  # a caller without type checking
            raise ValueError(f"unknown volume status {status!r}")
        if volume_id not in self._paths or self._base.get(volume_id) == status:
            return
        log.info("volume %s is now %s", volume_id, status)
        self._base[volume_id] = status
        self._changed()

    def mark_scan_result(self, volume_id: str, result: ScanResult) -> None:
        """After a scan: ``completed``, ``unavailable`` (the root: missing, unmounted...) or
        ``failed`` (inside the volume: an unreadable directory...). A failure sets the volume
        ``unavailable`` or ``error``; a completed scan clears those two (``degraded``, which the
        live watcher sets and clears, stays)."""
        if result == "unavailable":
            self.set_volume_status(volume_id, "unavailable")
        elif result == "failed":
            self.set_volume_status(volume_id, "error")
        elif self._base.get(volume_id) in ("unavailable", "error"):
            self.set_volume_status(volume_id, "watching")

    def base_status(self, volume_id: str) -> BaseStatus | None:
        """The status set by `set_volume_status` (None if not configured)."""
        return self._base.get(volume_id)

    def volume_status(self, volume_id: str) -> VolumeStatusName | None:
        """The reported status of a volume (None if not configured)."""
        if volume_id not in self._paths:
            return None
        return "scanning" if volume_id in self._scanning else self._base[volume_id]

    def set_scanning(self, volume_id: str, scanning: bool) -> None:
        if volume_id not in self._paths:
            return
        if scanning and volume_id not in self._scanning:
            self._scanning.add(volume_id)
        elif not scanning and volume_id in self._scanning:
            self._scanning.discard(volume_id)
        else:
            return
        self._changed()

    def snapshot(self) -> WatcherStatus:
        volumes = [
            VolumeStatus(
                id=volume_id,
                path=path,
                status="scanning" if volume_id in self._scanning else self._base[volume_id],
            )
            for volume_id, path in self._paths.items()
        ]
        statuses = {volume.status for volume in volumes}
        overall: WatcherStatusName
        if statuses & _DEGRADED:
            overall = "degraded"
        elif "scanning" in statuses:
            overall = "scanning"
        else:
            overall = "watching"
        return WatcherStatus(
            status=overall,
            volumes=volumes,
            uptime_seconds=int(time.monotonic() - self._started),
        )

    # --- reporting -----------------------------------------------------------------------

    def _changed(self) -> None:
        self._wakeup.set()

    def _on_session(self, session: Session | None) -> None:
        if session is not None:
            self._last_sent = None  # a new session gets a status at once
            self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self.interval) as timer:
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            session = self._link.current
            if session is None:
                continue
            status = self.snapshot()
            if not timer.cancelled_caught and _same_volumes(status, self._last_sent):
                continue  # woken by a change that changed nothing reported
            try:
                await session.send(status)
            except SessionLost:
                continue
            self._last_sent = status


def _same_volumes(status: WatcherStatus, previous: WatcherStatus | None) -> bool:
    return (
        previous is not None
        and previous.status == status.status
        and previous.volumes == status.volumes
    )
