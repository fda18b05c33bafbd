"""The bounded on-disk queue of live events kept while the API is unreachable (PROTOCOL.md §9).

It lives beside the state file (``watcher-state.json`` → ``watcher-state.queue.jsonl``): one
protocol frame per line (``{"type", "timestamp", "data"}``, the timestamp of when the event
happened). Each event is handed to the kernel with one ``write`` as it is appended, so a
``kill -9`` loses nothing appended (a power cut may lose what the kernel had not written back;
`flush` and `close` also ``fsync``). It survives restarts.

Bounded by `max_events`: when an event does not fit, the whole queue is dropped and the volumes it
held events for (and the volume of the event that did not fit) are recorded as needing a rescan,
in ``<queue>.rescan.json``; later events of those volumes are not queued (the rescan covers them),
events of other volumes are. Both are logged.

Use by the agent (it matches ``scanarr.agent.live.OfflineStore``)::

    queue = OfflineQueue(queue_path_for(state_file))
    queue.put(event)              # while disconnected; False: not kept, rescan the volume
    rescan = await queue.replay(session)  # after the next watcher.config: send all, in order,
                                  # with their original timestamps; clear; the volumes to rescan

An interrupted replay (SessionLost) leaves the queue whole, to be replayed again next time:
created/deleted/renamed events are idempotent for the API. Lower level: `append`, `events`,
`volumes_to_rescan`, `clear`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from scanarr.atomic import atomic_write
from scanarr.live.events import LiveEvent
from scanarr.protocol import (
    FileCreated,
    FileDeleted,
    FileModified,
    FileRenamed,
    MalformedMessage,
    UnknownMessageType,
    decode,
    encode,
    storage_json,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS = 100_000
LIVE_EVENT_TYPES = (FileCreated, FileModified, FileDeleted, FileRenamed)
REPLAY_CHUNK = 256  # frames per write while replaying


class FrameSender(Protocol):
    """What `replay` sends with: the agent's session."""

    async def send_texts(self, texts: Sequence[str]) -> None: ...


def queue_path_for(state_file: str | os.PathLike[str]) -> Path:
    """Where the queue of a given state file lives: beside it, same stem."""
    state = Path(state_file)
    return state.with_name(f"{state.stem}.queue.jsonl")


class OfflineQueue:
    """Append, replay in order, clear; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.path = Path(path)
        self.rescan_path = self.path.with_name(f"{self.path.name}.rescan.json")
        self.max_events = max_events
        self.dropped_events = 0  # events not queued because their volume will be rescanned
        self.overflows = 0
        self._volumes: collections.Counter[str] = collections.Counter()  # queued events by volume
        self._rescan: set[str] = set()
        self._fd: int | None = None
        self._load()

    # --- state ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events queued."""
        return self._volumes.total()

    @property
    def volumes_to_rescan(self) -> frozenset[str]:
        return frozenset(self._rescan)

    def _load(self) -> None:
        try:
            text = self.rescan_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            pass
        else:
            try:
                record = json.loads(text)
                self._rescan = {str(volume) for volume in record["volumes"]}
                self.dropped_events = int(record.get("dropped_events", 0))
            except (ValueError, KeyError, TypeError) as error:
                # What it said is lost; the safe answer is unknown, so it is logged loudly.
                log.error(
                    "%s is damaged (%s): the volumes it listed are unknown", self.rescan_path, error
                )
        for event, _timestamp in self._read():
            self._volumes[event.volume_id] += 1
        if self.pending or self._rescan:
            log.info(
                "offline queue %s: %d events to replay, %d volumes to rescan",
                self.path,
                self.pending,
                len(self._rescan),
            )

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o600)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")  # a line cut by a crash must not swallow the next one
            self._fd = fd
        return self._fd

    # --- append --------------------------------------------------------------------------

    def put(self, event: LiveEvent) -> bool:
        """Queue one event stamped now; False when it was not kept (its volume is rescanned)."""
        return self.append(event)

    def append(self, event: LiveEvent, timestamp: str | None = None) -> bool:
        """Queue one event (stamped now unless `timestamp` is given); False when it was not
        kept because the queue is full (it is then dropped) or its volume awaits a rescan."""
        volume_id = event.volume_id
        if volume_id in self._rescan:
            self.dropped_events += 1
            return False
        if self.pending >= self.max_events:
            self._overflow(volume_id)
            return False
        line = encode(event, timestamp) + "\n"
        data = line.encode("utf-8")
        fd = self._open()
        written = os.write(fd, data)
        while written < len(data):  # a short write on a full disk raises next time round
            written += os.write(fd, data[written:])
        self._volumes[volume_id] += 1
        return True

    def _overflow(self, volume_id: str) -> None:
        volumes = set(self._volumes) | {volume_id}
        dropped = self.pending + 1
        self.overflows += 1
        self.dropped_events += dropped
        self._rescan |= volumes
        self._write_rescan()
        self._truncate()
        log.warning(
            "offline queue full (%d events): dropped %d events; volumes %s will be rescanned "
            "after reconnecting instead",
            self.max_events,
            dropped,
            ", ".join(sorted(volumes)),
        )

    def _write_rescan(self) -> None:
        if not self._rescan:
            with contextlib.suppress(FileNotFoundError):
                self.rescan_path.unlink()
            return
        record = {"volumes": sorted(self._rescan), "dropped_events": self.dropped_events}
        atomic_write(self.rescan_path, storage_json(record), 0o600)

    def _truncate(self) -> None:
        fd = self._open()
        os.ftruncate(fd, 0)
        self._volumes.clear()

    def flush(self) -> None:
        """Force what was appended to stable storage."""
        if self._fd is not None:
            os.fsync(self._fd)

    # --- replay --------------------------------------------------------------------------

    def _read(self) -> list[tuple[LiveEvent, str]]:
        try:
            with open(self.path, "rb") as file:
                lines = file.read().split(b"\n")
        except FileNotFoundError:
            return []
        events: list[tuple[LiveEvent, str]] = []
        damaged = 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                envelope = json.loads(line)
                message = decode(line)
                timestamp = envelope["timestamp"]
                if not isinstance(timestamp, str) or not isinstance(message, LIVE_EVENT_TYPES):
                    raise MalformedMessage("not a live event")
            except (ValueError, KeyError, TypeError, MalformedMessage, UnknownMessageType) as error:
                damaged += 1
                if damaged <= 5:
                    log.warning("%s line %d is damaged, skipped: %s", self.path, number, error)
                continue
            events.append((message, timestamp))
        if damaged:
            log.warning("%s: %d damaged lines skipped", self.path, damaged)
        return events

    def events(self) -> list[tuple[LiveEvent, str]]:
        """Every queued event with its timestamp, oldest first. The queue is left as is."""
        return self._read()

    async def replay(self, session: FrameSender) -> list[str]:
        """Send every queued event in order with its original timestamp, clear the queue and
        return the volumes it recorded as needing a rescan (the caller asks for them). A failed
        send propagates and keeps the queue whole."""
        events = self._read()
        for start in range(0, len(events), REPLAY_CHUNK):
            chunk = events[start : start + REPLAY_CHUNK]
            await session.send_texts([encode(event, timestamp) for event, timestamp in chunk])
        if events:
            log.info("replayed %d events kept while disconnected", len(events))
        rescan = sorted(self._rescan)
        self.clear()
        return rescan

    def clear(self) -> None:
        """Forget every queued event and every volume to rescan (after they were handled)."""
        self._truncate()
        self._rescan.clear()
        self.dropped_events = 0
        self._write_rescan()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
