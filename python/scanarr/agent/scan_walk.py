"""One scan of one volume over one session: native walk → ``scan.file`` frames → socket (§4, §5).

The hot path never builds a Python object per file: the native `Batch.json_frames` renders
each file's JSON between a per-batch head (type, timestamp, scan_id, volume_id, volume_path) and
a tail and frames and masks it in the same call, so `Session.send_scan_files` writes a batch as
one ``bytes`` in one ``send_all`` (in V1.5, frames go through the dialect's translation). While
the socket is full (a slow API) the write blocks, this task stops pulling batches, the walker's
bounded queue fills and its threads wait: memory stays flat and nothing is dropped.

``scan.completed`` is sent only after a complete walk. A root that is missing, not a directory,
unreadable, or on another device than recorded gives ``scan.failed`` (`ScanOutcome.unavailable`);
so does an unreadable directory or an un-stat-able file inside the volume (its files would be
wiped by the API), naming the first such path. A file or directory that vanished during the walk
(ENOENT/ENOTDIR) is not a failure: it is gone, and the API may forget it.

Raises `SessionLost` when the connection drops; the caller restarts the scan, from the beginning,
with the same scan_id, on the next session.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import stat
import typing
from collections.abc import Callable, Sequence

import attrs
import trio

from scanarr import heap
from scanarr._native import Batch, Walker, WalkError
from scanarr.protocol import (
    SCAN_FILE_SCAN_FIELDS,
    Message,
    ScanCompleted,
    ScanFailed,
    ScanFile,
    ScanProgress,
    ScanStarted,
    as_text,
    frame_head,
    utc_timestamp,
)

from .session import Session

log = logging.getLogger(__name__)

PROGRESS_EVERY_FILES = 100  # §4: a scan.progress every 100 files...
BATCH_WAIT = 0.25  # seconds next_batch may block; bounds cancellation latency
_VANISHED = {errno.ENOENT, errno.ENOTDIR}


@attrs.frozen
class ScanRequest:
    """What to scan, resolved from the config in force when the scan starts."""

    scan_id: str
    volume_id: str
    volume_path: str
    extensions: Sequence[str]
    exclude: Sequence[str]  # nested volume roots
    recorded_device: int | None  # st_dev of the root at the last completed scan


class ScanEnd:
    """Orders what other tasks add to a running scan with the scan's end (§5).

    The live path sends ``scan.file`` copies of live events through `send_within`; the scan
    sends its ``scan.completed`` or ``scan.failed`` through `send_final`. Both hold one lock, so
    no message of a scan leaves after its end, even while the scan's task is still busy with
    what follows the end (saving its state).
    """

    def __init__(self) -> None:
        self._lock = trio.Lock()
        self.ended = False

    async def send_final(self, session: Session, message: Message) -> None:
        """Send the scan's last message. Raises SessionLost (the scan then has not ended)."""
        async with self._lock:
            await session.send(message)
            self.ended = True

    def end(self) -> None:
        """The scan ends without a final message (cancelled on a lost connection)."""
        self.ended = True

    async def send_within(self, session: Session, message: Message) -> bool:
        """Send `message` as part of the scan; False (not sent) once the scan has ended."""
        async with self._lock:
            if self.ended:
                return False
            await session.send(message)
            return True


@attrs.frozen
class ScanOutcome:
    completed: ScanCompleted | None = None
    failed: ScanFailed | None = None
    unavailable: bool = False  # the root itself is the problem (missing, unmounted...)
    root_device: int | None = None


class _Failure(Exception):
    def __init__(self, reason: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unavailable = unavailable


def _text(path: str | bytes) -> str:
    """A path for a human-readable reason; non-UTF-8 bytes shown as escapes."""
    return path.decode("utf-8", "backslashreplace") if isinstance(path, bytes) else path


def _check_root(path: str, recorded_device: int | None) -> os.stat_result:
    """The root's stat, or _Failure. Follows a symlinked root: the volume is what it points to."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise _Failure(f"volume root does not exist: {path}", unavailable=True) from None
    except OSError as error:
        raise _Failure(
            f"volume root cannot be read: {path}: {error.strerror}", unavailable=True
        ) from None
    if not stat.S_ISDIR(status.st_mode):
        raise _Failure(f"volume root is not a directory: {path}", unavailable=True)
    if recorded_device is not None and status.st_dev != recorded_device:
        raise _Failure(
            f"volume root {path} is on device {status.st_dev}, not {recorded_device} as at the "
            "last scan (not mounted?)",
            unavailable=True,
        )
    return status


def _json_string(value: str) -> str:
    """`value` as `protocol.encode` writes a string (non-ASCII as is, surrogates as U+FFFD),
    so a frame built from these pieces is that function's text, byte for byte."""
    return json.dumps(as_text(value), ensure_ascii=False)


def scan_file_prefix(scan_id: str, volume_id: str, volume_path: str) -> str:
    """What every ``scan.file`` of a scan has after ``"data":``, up to its file's fields
    (`SCAN_FILE_SCAN_FIELDS`; the native encoder writes the rest, `_native.SCAN_FILE_FIELDS`)."""
    values = {"scan_id": scan_id, "volume_id": volume_id, "volume_path": volume_path}
    members = (f'"{name}":{_json_string(values[name])},' for name in SCAN_FILE_SCAN_FIELDS)
    return "{" + "".join(members)


def scan_file_head(timestamp: str, prefix: str) -> str:
    """The head `Batch.json_frames` puts before each file's fields (tail: ``}}``)."""
    return frame_head(ScanFile.TYPE, timestamp) + prefix


class ProgressText:
    """scan.progress frames rendered without json.dumps (ids are pre-escaped once): the text
    `protocol.encode` gives the same `ScanProgress`."""

    def __init__(self, scan_id: str, volume_id: str) -> None:
        self._middle = (
            '{"scan_id":'
            + _json_string(scan_id)
            + ',"volume_id":'
            + _json_string(volume_id)
            + ',"files_scanned":'
        )

    def __call__(self, timestamp: str, dirs: int, files: int) -> str:
        return (
            frame_head(ScanProgress.TYPE, timestamp)
            + self._middle
            + str(files)
            + ',"dirs_scanned":'
            + str(dirs)
            + "}}"
        )


async def scan_volume(
    session: Session,
    request: ScanRequest,
    *,
    progress_interval: float,
    on_started: Callable[[], None] = lambda: None,
    end: ScanEnd | None = None,
) -> ScanOutcome:
    """Walk `request`'s volume and stream the scan on `session`. Raises SessionLost.

    The final ``scan.completed`` / ``scan.failed`` goes through `end` (see `ScanEnd`)."""
    end = end if end is not None else ScanEnd()
    from scanarr import _native

    started = trio.current_time()
    try:
        root_status = await trio.to_thread.run_sync(
            _check_root, request.volume_path, request.recorded_device
        )
    except _Failure as failure:
        return await _fail(session, request, failure, end)

    await session.send(
        ScanStarted(
            scan_id=request.scan_id,
            volume_id=request.volume_id,
            volume_path=request.volume_path,
        )
    )
    on_started()
    log.info(
        "scan %s of volume %s (%s) started", request.scan_id, request.volume_id, request.volume_path
    )

    prefix = scan_file_prefix(request.scan_id, request.volume_id, request.volume_path)
    progress_text = ProgressText(request.scan_id, request.volume_id)
    walker = _native.Walker(
        [request.volume_path],
        extensions=list(request.extensions),
        exclude=list(request.exclude),
        # §4: the totals cover exactly the scan.file messages; names json_records cannot
        # encode (not UTF-8) are counted apart, in skipped_files.
        utf8_totals=True,
    )
    files_sent = 0
    dirs_walked = 0
    skipped_names = 0
    last_progress = trio.current_time()
    try:
        while True:
            batch = await _next_batch(walker)
            if batch is None:
                break
            if batch.errors:
                walk_failure = _first_failure(batch.errors)
                if walk_failure is not None:
                    walker.cancel()
                    return await _fail(session, request, walk_failure, end)
            dirs_walked += batch.dirs_walked
            timestamp = utc_timestamp()
            head = scan_file_head(timestamp, prefix)
            if len(batch):
                marks_before = files_sent // PROGRESS_EVERY_FILES
                not_utf8 = await session.send_scan_files(
                    batch,
                    head,
                    "}}",
                    files_before=files_sent,
                    progress_every=PROGRESS_EVERY_FILES,
                    progress=functools.partial(progress_text, timestamp, dirs_walked),
                )
                if not_utf8:
                    if not skipped_names:
                        first = batch.files[not_utf8[0]].relative_path
                        log.warning(
                            "scan %s of volume %s: skipping files whose name is not valid "
                            "UTF-8 (it cannot be sent as JSON text), first: %s",
                            request.scan_id,
                            request.volume_id,
                            _text(first),
                        )
                    skipped_names += len(not_utf8)
                files_sent += len(batch) - len(not_utf8)
                if files_sent // PROGRESS_EVERY_FILES != marks_before:
                    last_progress = trio.current_time()
            if trio.current_time() - last_progress >= progress_interval:
                await session.send(
                    ScanProgress(
                        scan_id=request.scan_id,
                        volume_id=request.volume_id,
                        files_scanned=files_sent,
                        dirs_scanned=dirs_walked,
                    )
                )
                last_progress = trio.current_time()
        totals = walker.stats(0)
    finally:
        walker.cancel()

    try:
        end_status = await trio.to_thread.run_sync(
            _check_root, request.volume_path, root_status.st_dev
        )
        disk = await trio.to_thread.run_sync(os.statvfs, request.volume_path)
    except _Failure as failure:
        return await _fail(session, request, failure, end)
    except OSError as error:
        return await _fail(
            session,
            request,
            _Failure(
                f"volume root cannot be read: {request.volume_path}: {error.strerror}",
                unavailable=True,
            ),
            end,
        )
    if skipped_names:
        log.warning(
            "scan %s of volume %s: %d file(s) skipped because their name is not valid UTF-8",
            request.scan_id,
            request.volume_id,
            skipped_names,
        )
    if totals.skipped_mounts:
        log.info(
            "scan %s of volume %s: %d directories on other filesystems not entered "
            "(configure them as volumes of their own to scan them)",
            request.scan_id,
            request.volume_id,
            totals.skipped_mounts,
        )
    completed = ScanCompleted(
        scan_id=request.scan_id,
        volume_id=request.volume_id,
        total_files=files_sent,
        total_dirs=totals.dirs,
        total_size_bytes=totals.bytes_total,
        skipped_files=skipped_names,
        duration_ms=int((trio.current_time() - started) * 1000),
        disk_total_bytes=disk.f_blocks * disk.f_frsize,
        disk_free_bytes=disk.f_bavail * disk.f_frsize,
    )
    # What the walker's threads allocated is free now: give it back (see scanarr.heap), before
    # scan.completed, after which the outcome is recorded with no wait in between.
    await trio.to_thread.run_sync(heap.trim)
    await end.send_final(session, completed)
    log.info(
        "scan %s of volume %s completed: %d files, %d directories in %d ms",
        request.scan_id,
        request.volume_id,
        completed.total_files,
        completed.total_dirs,
        completed.duration_ms,
    )
    return ScanOutcome(completed=completed, root_device=end_status.st_dev)


async def _next_batch(walker: Walker) -> Batch | None:
    """The walk's next batch (None: the walk is over). One already waiting is taken on this
    thread (a poll that does not wait): the walker's threads are usually ahead of the socket,
    and a hop to a worker thread and back costs a thread wake-up and a GIL hand-over per batch.
    Only when none is ready does a worker thread wait for one."""
    batch = walker.next_batch(0.0)
    if batch is None or len(batch) or batch.errors or batch.dirs_walked:
        await trio.lowlevel.checkpoint()
        return batch
    return await trio.to_thread.run_sync(walker.next_batch, BATCH_WAIT)


def _first_failure(errors: Sequence[WalkError]) -> _Failure | None:
    for error in errors:
        kind, code, path, message = error.kind, error.errno, _text(error.path), error.message
        if kind == "root":
            return _Failure(f"volume root cannot be read: {path}: {message}", unavailable=True)
        if kind == "read_dir":
            if code in _VANISHED:
                log.debug("directory vanished during the walk: %s", path)
                continue
            return _Failure(f"unreadable directory: {path}: {message}")
        if kind == "stat":
            if code in _VANISHED:
                log.debug("file vanished during the walk: %s", path)
                continue
            return _Failure(f"cannot stat file: {path}: {message}")
        if kind == "fingerprint":
            # It leaves the file listed; the agent does not fingerprint anyway.
            log.debug("walk error %s on %s: %s", kind, path, message)
            continue
        _unhandled(kind)  # strict mypy: a new kind of error must be decided on here
    return None


def _unhandled(kind: typing.NoReturn) -> typing.NoReturn:
    raise AssertionError(f"walk error kind {kind!r} is not handled")


async def _fail(
    session: Session, request: ScanRequest, failure: _Failure, end: ScanEnd
) -> ScanOutcome:
    failed = ScanFailed(scan_id=request.scan_id, volume_id=request.volume_id, reason=failure.reason)
    log.error("scan %s of volume %s failed: %s", request.scan_id, request.volume_id, failure.reason)
    await end.send_final(session, failed)
    return ScanOutcome(failed=failed, unavailable=failure.unavailable)
