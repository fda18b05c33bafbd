"""The scan service: which volume is scanned when, and what survives a disconnect (§5).

Scans run one at a time, in request order: ``command.scan.all`` queues its volumes one after
another under one scan_id, and a NAS disk is not asked to serve two walks at once.

Requests for one volume are coalesced, so a volume has at most one scan running and one waiting:

- a request whose scan_id is already running or waiting for that volume is a duplicate: ignored;
- a request while the volume is being scanned queues one follow-up scan (the walk in progress may
  already have passed what prompted the request);
- a request while a scan of the volume is waiting merges into it. An API request (it carries the
  API's scan_id) takes over a waiting scan the watcher started itself, so the API's scan_id is
  the one answered; a second API scan_id for the same waiting scan is refused, and the caller
  answers it with ``scan.failed`` (`RequestResult.refused`).

A scan cut by a disconnect is restarted from the beginning, with the same scan_id and a new
``scan.started``, on the next session. A volume removed from the config has its scan cancelled (no
``scan.completed``); a volume whose path or the scan extensions changed is rescanned.

Other services use:

- `request(volume_id, scan_id=None, reason=...)` — e.g. the live watcher after an inotify
  overflow (``reason`` ends up in the logs);
- `live_scan(volume_id)` — the volume's running scan (`LiveScan`) once its ``scan.started``
  went out and until its end, so a live event can also be sent as ``scan.file`` (§5); what is
  sent through it never follows the scan's ``scan.completed`` or ``scan.failed``;
- `before_scan` (a constructor argument) — awaited before each walk starts; with live watching
  it is "wait until the watches of the current config are in place", so a file created during
  the scan is either walked or reported live.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable

import attrs
import trio

from scanarr import heap
from scanarr.protocol import Message, ScanFailed, utc_timestamp

from .scan_walk import ScanEnd, ScanOutcome, ScanRequest, scan_volume
from .session import Link, Session, SessionLost
from .status import StatusBoard
from .volumes import ConfigChange, VolumeSet

log = logging.getLogger(__name__)


def new_scan_id() -> str:
    return str(uuid.uuid4())


@attrs.frozen
class ScanJob:
    volume_id: str
    scan_id: str
    reason: str
    from_api: bool = False  # the scan_id came from a command


class RequestResult(enum.Enum):
    QUEUED = "queued"
    MERGED = "merged"  # into a waiting scan of the volume (which may now carry this scan_id)
    DUPLICATE = "duplicate"  # this scan_id is already running or waiting for the volume
    REFUSED = "refused"  # a waiting scan already answers another API scan_id


@attrs.define
class _Running:
    job: ScanJob
    scope: trio.CancelScope
    session: Session | None = None  # where its scan.started went, once it did
    cancel_reason: str | None = None  # why it was cancelled (None: restarted or not cancelled)
    concluded: bool = False  # scan.completed or scan.failed sent: nothing left to cancel
    end: ScanEnd = attrs.Factory(ScanEnd)


@attrs.frozen
class LiveScan:
    """A volume's scan in progress, as the live path adds to it (§5)."""

    scan_id: str
    session: Session
    _end: ScanEnd

    async def send(self, message: Message) -> bool:
        """Send `message` within the scan; False (not sent) when the scan has ended meanwhile.
        Raises SessionLost."""
        return await self._end.send_within(self.session, message)


# Called after each completed scan: (volume_id, root st_dev, completion timestamp).
ScanRecorder = Callable[[str, int, str], Awaitable[None]]


class ScanService:
    def __init__(
        self,
        link: Link,
        volumes: VolumeSet,
        status: StatusBoard,
        *,
        recorded_devices: Callable[[], dict[str, int]],
        record_scan: ScanRecorder,
        progress_interval: float,
        before_scan: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._link = link
        self._volumes = volumes
        self._status = status
        self._recorded_devices = recorded_devices
        self._record_scan = record_scan
        self._progress_interval = progress_interval
        self._queue: collections.deque[ScanJob] = collections.deque()
        self._queued_event = trio.Event()
        self._running: _Running | None = None
        self._before_scan = before_scan
        self.completed_count = 0  # scans that sent scan.completed (for logs and tests)

    # --- requests --------------------------------------------------------------------------

    @property
    def running_job(self) -> ScanJob | None:
        return self._running.job if self._running is not None else None

    @property
    def waiting_jobs(self) -> list[ScanJob]:
        return list(self._queue)

    def busy_with(self, volume_id: str) -> ScanJob | None:
        """The running or else the waiting job of `volume_id`, if any."""
        if self._running is not None and self._running.job.volume_id == volume_id:
            return self._running.job
        return self._waiting(volume_id)

    def _waiting(self, volume_id: str) -> ScanJob | None:
        for job in self._queue:
            if job.volume_id == volume_id:
                return job
        return None

    def request(
        self,
        volume_id: str,
        scan_id: str | None = None,
        *,
        reason: str,
        from_api: bool = False,
    ) -> RequestResult:
        """Queue a scan of `volume_id`, coalesced as the module docstring says."""
        new = ScanJob(volume_id, scan_id or new_scan_id(), reason, from_api)
        running = self._running.job if self._running is not None else None
        waiting = self._waiting(volume_id)
        for existing in (running, waiting):
            if (
                existing is not None
                and existing.volume_id == volume_id
                and existing.scan_id == new.scan_id
            ):
                return RequestResult.DUPLICATE
        if waiting is None:
            self._queue.append(new)
            self._queued_event.set()
            return RequestResult.QUEUED
        if new.from_api and not waiting.from_api:
            self._queue = collections.deque(new if job is waiting else job for job in self._queue)
            log.info(
                "scan %s of volume %s takes over the waiting scan %s",
                new.scan_id,
                volume_id,
                waiting.scan_id,
            )
            return RequestResult.MERGED
        if new.from_api:
            log.warning(
                "scan %s of volume %s refused: scan %s of it is already waiting",
                new.scan_id,
                volume_id,
                waiting.scan_id,
            )
            return RequestResult.REFUSED
        log.info(
            "scan of volume %s (%s) merged into the waiting scan %s",
            volume_id,
            reason,
            waiting.scan_id,
        )
        return RequestResult.MERGED

    def request_all(
        self, scan_id: str | None = None, *, reason: str, from_api: bool = False
    ) -> list[str]:
        """Queue every configured volume, in config order; the volume ids refused."""
        refused = []
        for volume in self._volumes.ordered():
            result = self.request(volume.id, scan_id, reason=reason, from_api=from_api)
            if result is RequestResult.REFUSED:
                refused.append(volume.id)
        return refused

    def cancel(self, volume_id: str, *, reason: str) -> None:
        """Drop the volume's queued scan and cancel its running one (no scan.completed)."""
        self._queue = collections.deque(job for job in self._queue if job.volume_id != volume_id)
        running = self._running
        if running is not None and running.job.volume_id == volume_id and not running.concluded:
            running.cancel_reason = reason
            running.scope.cancel()

    def restart(self, volume_id: str, *, reason: str) -> None:
        """Start the volume's running scan over (same scan_id), or queue a new scan."""
        running = self._running
        if running is not None and running.job.volume_id == volume_id and not running.concluded:
            log.info("restarting scan %s of volume %s: %s", running.job.scan_id, volume_id, reason)
            running.cancel_reason = None
            running.scope.cancel()
            # The restart replaces any follow-up waiting for the volume.
            self._queue = collections.deque(
                job for job in self._queue if job.volume_id != volume_id
            )
            self._queue.appendleft(running.job)
            self._queued_event.set()
            return
        self.request(volume_id, reason=reason)

    def on_config(self, change: ConfigChange, *, scan_changes: bool) -> None:
        """Follow a config change (§3).

        Removed volumes always lose their scans. With `scan_changes` false (a config from the
        state file, or the first config from the API, which `scan_on_start` alone governs),
        nothing is scanned for the change itself.
        """
        for volume in change.removed:
            self.cancel(volume.id, reason="volume removed from the config")
        if not scan_changes:
            return
        for old, new in change.moved:
            log.info("volume %s moved from %s to %s", new.id, old.path, new.path)
            self.restart(new.id, reason=f"path changed to {new.path}")
        if change.extensions_changed:
            for volume in self._volumes.ordered():
                self.restart(volume.id, reason="scan extensions changed")
        for volume in change.added:
            self.request(volume.id, reason="new volume")

    def live_scan(self, volume_id: str) -> LiveScan | None:
        """The volume's scan in progress, once scan.started was sent and until its end."""
        running = self._running
        if running is None or running.job.volume_id != volume_id or running.session is None:
            return None
        if not running.session.alive or running.end.ended:
            return None
        return LiveScan(running.job.scan_id, running.session, running.end)

    # --- the runner --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            while not self._queue:
                self._queued_event = trio.Event()
                await self._queued_event.wait()
            job = self._queue.popleft()
            if self._volumes.get(job.volume_id) is None:
                continue  # removed while queued
            await self._run_job(job)

    async def _run_job(self, job: ScanJob) -> None:
        running = _Running(job, trio.CancelScope())
        self._running = running
        self._status.set_scanning(job.volume_id, True)
        try:
            with running.scope:
                await self._scan_until_done(running)
            if running.scope.cancelled_caught and running.cancel_reason is not None:
                log.info(
                    "scan %s of volume %s cancelled: %s",
                    job.scan_id,
                    job.volume_id,
                    running.cancel_reason,
                )
                if running.session is not None and running.session.alive:
                    with contextlib.suppress(SessionLost):
                        await running.end.send_final(
                            running.session,
                            ScanFailed(
                                scan_id=job.scan_id,
                                volume_id=job.volume_id,
                                reason=f"cancelled: {running.cancel_reason}",
                            ),
                        )
        finally:
            # Ended, whatever happened: a restart is a new run with its own scan.started.
            running.end.end()
            self._running = None
            self._status.set_scanning(job.volume_id, False)

    async def _scan_until_done(self, running: _Running) -> None:
        job = running.job
        while True:
            if self._before_scan is not None:
                await self._before_scan()
            session = await self._link.wait_session()
            volume = self._volumes.get(job.volume_id)
            if volume is None:
                return
            request = ScanRequest(
                scan_id=job.scan_id,
                volume_id=job.volume_id,
                volume_path=volume.path,
                extensions=self._volumes.scan_extensions,
                exclude=self._volumes.nested_roots(job.volume_id),
                recorded_device=self._recorded_devices().get(job.volume_id),
            )

            def started(session: Session = session) -> None:
                running.session = session

            try:
                outcome = await scan_volume(
                    session,
                    request,
                    progress_interval=self._progress_interval,
                    on_started=started,
                    end=running.end,
                )
            except SessionLost:
                running.session = None
                log.warning(
                    "connection lost during scan %s of volume %s; it restarts from the "
                    "beginning after reconnecting",
                    job.scan_id,
                    job.volume_id,
                )
                continue
            except Exception as error:
                # A bug or an unexpected failure must not take the agent down: the scan fails
                # (never completes, so the API deletes nothing) and the next one may succeed.
                log.exception("scan %s of volume %s crashed", job.scan_id, job.volume_id)
                running.concluded = True
                failed = ScanFailed(
                    scan_id=job.scan_id,
                    volume_id=job.volume_id,
                    reason=f"internal error: {type(error).__name__}: {error}",
                )
                with contextlib.suppress(SessionLost):
                    await running.end.send_final(session, failed)
                running.end.end()
                self._status.mark_scan_result(job.volume_id, "failed")
                return
            running.concluded = True
            await self._conclude(job, outcome)
            # The walker and its batches are gone only now: give back what they held (see
            # scanarr.heap; scan_volume trims once before scan.completed already).
            del outcome
            await trio.to_thread.run_sync(heap.trim)
            return

    async def _conclude(self, job: ScanJob, outcome: ScanOutcome) -> None:
        if outcome.completed is not None and outcome.root_device is not None:
            self.completed_count += 1
            self._status.mark_scan_result(job.volume_id, "completed")
            await self._record_scan(job.volume_id, outcome.root_device, utc_timestamp())
        elif outcome.failed is not None:
            self._status.mark_scan_result(
                job.volume_id, "unavailable" if outcome.unavailable else "failed"
            )
