"""The V1.5 dialect at the connection's boundary (PROTOCOL-V15.md), so nothing else learns it.

The scan, live and command machinery speaks V2 (PROTOCOL.md): volumes, ``volume_id``,
``relative_path``. When the API speaks V1.5, `Dialect` translates at three points only:

- the handshake (`Dialect.handshake`): the V1.5 hello, ``watcher.auth_required`` →
  ``watcher.auth``, ``watcher.pending`` (no timeout, the token arrives with the approval config),
  ``watcher.rejected``; in ``auto`` mode the V2 hello is sent first and a V1.5 answer switches the
  connection (and every later one: the choice is kept in the state file);
- outgoing frames (`TranslatingWriter`, the session's writer): every V2 frame the services write
  becomes its V1.5 shape — ``volume_id`` + ``relative_path`` → absolute ``path`` (a volume's id
  *is* its path), ``scan.failed`` → ``watcher.log`` at error level (the server has no
  ``scan.failed``), ``watcher.status`` with ``watcher_id`` and ``config_hash``;
- incoming frames (`Dialect.incoming`) and command replies (`Dialect.send_reply`): V1.5 commands
  become V2 commands for the paths that lie in this watcher's volumes, and their replies are
  translated back.

Rules of §6 on top of the server's: every watcher receives every command, so a command with
nothing in our volumes gets no reply at all, and a delete partly ours is answered for our items
only. Delete items carry no inode: each item becomes a V2 media file of one path (so its result
is the item's), and a path this watcher already deleted for a deletion is recognised by
``(deletion_id, media_file_id, path)`` — the server re-sends pending deletions with new request
ids — and answered ``deleted`` again without touching the disk. A reply that cannot be sent is
kept on disk (`ReplyStore`, beside the state file) and sent after the next handshake.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from scanarr import __version__
from scanarr.protocol import (
    CommandFilesDelete,
    CommandFilesHardlink,
    CommandScan,
    DeleteFile,
    DeletePath,
    FilesDeleteCompleted,
    FilesDeleteProgress,
    FilesHardlinkCompleted,
    Message,
    WatcherAuth,
    WatcherConfig,
    WatcherHello,
    WatchPath,
    encode,
    utc_timestamp,
)
from scanarr.protocol_v15 import (
    GO_WATCHER_EXTENSIONS,
    Auth15,
    AuthRequired15,
    CommandDelete15,
    CommandHardlink15,
    CommandScan15,
    CommandWatchAdd15,
    CommandWatchRemove15,
    Config15,
    DeleteCompleted15,
    DeleteProgress15,
    DeleteResult15,
    FileCreated15,
    FileDeleted15,
    FileModified15,
    FileRenamed15,
    HardlinkCompleted15,
    Hello15,
    Id,
    Log15,
    Malformed15,
    Message15,
    Pending15,
    Rejected15,
    ScanCompleted15,
    ScanFile15,
    ScanProgress15,
    ScanStarted15,
    Status15,
    Unknown15,
    decode_incoming,
    encode15,
    envelope_of,
)
from scanarr.wsframes import FrameWriter

from .filter_parity import count_unreported
from .session import (
    HandshakeClosed,
    HandshakeFailed,
    HandshakeRejected,
    HandshakeResult,
    Link,
    OtherDialect,
    Session,
    handshake,
    watcher_hello,
)
from .volumes import VolumeSet, normalise_root, owning_volume

if TYPE_CHECKING:
    from scanarr.config import Settings

    from .app import StateKeeper

log = logging.getLogger(__name__)

V15 = "v1.5"
V2 = "v2"
# Keys of the state file (top level). `auth_token` and `config_hash` are the Go watcher's own
# names: its state file is read as is, and it can read ours back.
TOKEN_KEY = "auth_token"
CONFIG_HASH_KEY = "config_hash"
WATCHER_ID_KEY = "watcher_id"
PROTOCOL_KEY = "protocol"

MAX_REPLAY_KEYS = 20000  # deleted (deletion, media file, path) remembered
MAX_OUTBOX = 1000  # unsent replies kept


class WatcherRevoked(HandshakeRejected):
    """The server revoked this watcher: final until an operator acts, so retry only slowly."""


@attrs.frozen
class HelloWithWatcherId(WatcherHello):
    """The V2 hello plus ``watcher_id``, so that a V1.5 server recognises the watcher."""

    watcher_id: str = ""


def replies_path_for(state_file: str) -> Path:
    state = Path(state_file)
    return state.with_name(f"{state.stem}.v15-replies.json")


# --- the replies kept on disk -----------------------------------------------------------------


class ReplyStore:
    """Deleted ``(deletion_id, media_file_id, path)`` keys with their results, and replies not
    yet sent, in one JSON file written atomically (mode 0600). Blocking: call in a thread."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.deleted: collections.OrderedDict[tuple[str, str, str], dict[str, Any]] = (
            collections.OrderedDict()
        )
        self.outbox: list[str] = []

    def load(self) -> None:
        if self.path is None:
            return
        try:
            document = json.loads(self.path.read_bytes())
            deleted = document["deleted"]
            outbox = document["outbox"]
            for deletion_id, media_file_id, path, result in deleted:
                self.deleted[(str(deletion_id), str(media_file_id), str(path))] = dict(result)
            self.outbox = [str(text) for text in outbox]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("cannot read %s (%s); starting without kept replies", self.path, error)

    def save(self) -> None:
        if self.path is None:
            return
        while len(self.deleted) > MAX_REPLAY_KEYS:
            self.deleted.popitem(last=False)
        del self.outbox[:-MAX_OUTBOX]
        document = {
            "deleted": [[*key, result] for key, result in self.deleted.items()],
            "outbox": self.outbox,
        }
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".v15-replies.")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(document, file, ensure_ascii=False)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


# --- translation ------------------------------------------------------------------------------


@attrs.define
class _PendingDelete:
    request_id: Id
    deletion_id: Id
    items: list[tuple[Id, str]]  # (media_file_id, absolute path), by V2 media file index
    ready: list[DeleteResult15]  # answered without the disk: replays, invalid paths


@attrs.define
class _PendingHardlink:
    request_id: Id
    deletion_id: Id
    source_path: str
    target_path: str


def _join(volume_path: str, relative_path: str) -> str:
    if not relative_path:
        return volume_path
    return volume_path.rstrip("/") + "/" + relative_path


def _original(ids: Mapping[str, Id], value: str) -> Id:
    return ids.get(value, value)


class Translator:
    """Stateless mapping of paths plus the few facts a reply needs (pending commands, ids)."""

    def __init__(self, volumes: VolumeSet) -> None:
        self.volumes = volumes
        self.watcher_id = ""
        self.config_hash: str | None = None
        self.log_level: str | None = None
        self.scan_ids: dict[str, Id] = {}
        self.deletes: collections.OrderedDict[str, _PendingDelete] = collections.OrderedDict()
        self.hardlinks: collections.OrderedDict[str, _PendingHardlink] = collections.OrderedDict()
        self.replayed: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.on_scan_completed: Callable[[str], None] = lambda _volume_id: None

    # --- paths -------------------------------------------------------------------------------

    def resolve(self, path: str) -> tuple[WatchPath, str] | None:
        """Our volume owning absolute `path` (the longest) and the path inside it."""
        if not path.startswith("/") or "\0" in path:
            return None
        return owning_volume(self.volumes.ordered(), path)

    # --- incoming ------------------------------------------------------------------------------

    def config(self, message: Config15) -> WatcherConfig:
        self.config_hash = message.config_hash
        self.log_level = message.log_level
        volumes: list[WatchPath] = []
        seen: set[str] = set()
        for path in message.watch_paths:
            if not path.startswith("/") or "\0" in path:
                log.error("ignoring watch path %r: not an absolute path", path)
                continue
            root = normalise_root(path)
            if root in seen:
                continue
            seen.add(root)
            volumes.append(WatchPath(id=root, path=root, name=os.path.basename(root) or root))
        return WatcherConfig(
            watch_paths=volumes,
            scan_extensions=list(GO_WATCHER_EXTENSIONS),
            scan_on_start=message.scan_on_start,
            disable_deletion=message.disable_deletion,
        )

    def scan(self, command: CommandScan15) -> CommandScan | None:
        owner = self.resolve(command.path)
        if owner is None:
            log.debug("command.scan of %s: not in this watcher's volumes; ignored", command.path)
            return None
        volume, relative = owner
        if relative:
            # A scan of part of a volume would end with scan.completed, which wipes the rest.
            log.info("command.scan of %s: scanning its whole volume %s", command.path, volume.id)
        self.scan_ids[str(command.scan_id)] = command.scan_id
        return CommandScan(volume_id=volume.id, scan_id=str(command.scan_id))

    def delete(
        self, command: CommandDelete15, replayed: Mapping[tuple[str, str, str], dict[str, Any]]
    ) -> CommandFilesDelete | None:
        """The V2 command for our items, or None when no item is ours (no reply at all)."""
        files: list[DeleteFile] = []
        items: list[tuple[Id, str]] = []
        ready: list[DeleteResult15] = []
        for item in command.files:
            absolute = _join(item.volume_path, item.file_path.lstrip("/"))
            if not absolute.startswith("/") or "\0" in absolute:
                continue
            owner = self.resolve(normalise_root(absolute))
            if owner is None:
                continue  # another watcher's item
            volume, relative = owner
            parts = absolute.split("/")
            if ".." in parts or not relative:
                ready.append(
                    DeleteResult15(
                        media_file_id=item.media_file_id,
                        status="failed",
                        dirs_removed=0,
                        size_bytes=0,
                        error=f"invalid_path (not a file path inside the volume): {absolute}",
                    )
                )
                continue
            key = (str(command.deletion_id), str(item.media_file_id), _join(volume.path, relative))
            stored = replayed.get(key)
            if stored is not None:
                log.info(
                    "deletion %s: %s was already deleted by this watcher; answered again",
                    command.deletion_id,
                    key[2],
                )
                ready.append(DeleteResult15(**{**stored, "media_file_id": item.media_file_id}))
                continue
            files.append(
                DeleteFile(
                    media_file_id=str(len(items)),
                    paths=[DeletePath(volume_path=volume.path, relative_path=relative)],
                )
            )
            items.append((item.media_file_id, key[2]))
        if not items and not ready:
            log.debug("deletion %s: no item in this watcher's volumes", command.deletion_id)
            return None
        log.debug(
            "deletion %s: items carry no inode; the file at each path now is deleted",
            command.deletion_id,
        )
        request_id = str(command.request_id)
        self.deletes[request_id] = _PendingDelete(
            command.request_id, command.deletion_id, items, ready
        )
        while len(self.deletes) > 256:
            self.deletes.popitem(last=False)
        return CommandFilesDelete(
            request_id=request_id, deletion_id=str(command.deletion_id), files=files
        )

    def hardlink(
        self, command: CommandHardlink15
    ) -> CommandFilesHardlink | HardlinkCompleted15 | None:
        source = self.resolve(normalise_root(command.source_path))
        target = self.resolve(normalise_root(command.target_path))
        if source is None and target is None:
            log.debug("hardlink %s: not in this watcher's volumes; ignored", command.request_id)
            return None
        invalid = [
            path
            for path in (command.source_path, command.target_path)
            if ".." in path.split("/") or not path.startswith("/")
        ]
        if source is None or target is None or invalid:
            outside = command.source_path if source is None else command.target_path
            error = (
                f"invalid_path: {invalid[0]}"
                if invalid
                else f"unknown_volume: {outside} is in none of this watcher's volumes"
            )
            return HardlinkCompleted15(
                request_id=command.request_id,
                deletion_id=command.deletion_id,
                status="failed",
                source_path=command.source_path,
                target_path=command.target_path,
                error=error,
            )
        request_id = str(command.request_id)
        self.hardlinks[request_id] = _PendingHardlink(
            command.request_id, command.deletion_id, command.source_path, command.target_path
        )
        while len(self.hardlinks) > 256:
            self.hardlinks.popitem(last=False)
        return CommandFilesHardlink(
            request_id=request_id,
            deletion_id=str(command.deletion_id),
            source_volume_path=source[0].path,
            source_relative_path=source[1],
            target_volume_path=target[0].path,
            target_relative_path=target[1],
        )

    # --- replies -------------------------------------------------------------------------------

    def delete_progress(self, message: FilesDeleteProgress) -> DeleteProgress15 | None:
        pending = self.deletes.get(message.request_id)
        if pending is None or not message.media_file_id.isdigit():
            return None
        index = int(message.media_file_id)
        if index >= len(pending.items):
            return None
        return DeleteProgress15(
            request_id=pending.request_id,
            deletion_id=pending.deletion_id,
            media_file_id=pending.items[index][0],
            status="deleted" if message.paths_failed == 0 else "failed",
            dirs_removed=message.dirs_removed,
        )

    def delete_completed(
        self, message: FilesDeleteCompleted
    ) -> tuple[DeleteCompleted15, list[tuple[tuple[str, str, str], dict[str, Any]]]] | None:
        """The V1.5 reply and the (key, result) pairs to remember as deleted."""
        pending = self.deletes.get(message.request_id)
        if pending is None:
            log.warning("no pending deletion for reply %s; not sent", message.request_id)
            return None
        results = list(pending.ready)
        remember: list[tuple[tuple[str, str, str], dict[str, Any]]] = []
        for result in message.results:
            if not result.media_file_id.isdigit() or int(result.media_file_id) >= len(
                pending.items
            ):
                continue
            media_file_id, path = pending.items[int(result.media_file_id)]
            translated = DeleteResult15(
                media_file_id=media_file_id,
                status=result.status,
                dirs_removed=result.dirs_removed,
                size_bytes=result.size_bytes,
                error=result.error,
            )
            results.append(translated)
            if result.status == "deleted":
                key = (str(pending.deletion_id), str(media_file_id), path)
                remember.append(
                    (
                        key,
                        {
                            # The same answer as the first time.
                            "status": "deleted",
                            "dirs_removed": result.dirs_removed,
                            "size_bytes": result.size_bytes,
                            "error": None,
                        },
                    )
                )
        deleted = sum(1 for result in results if result.status == "deleted")
        reply = DeleteCompleted15(
            request_id=pending.request_id,
            deletion_id=pending.deletion_id,
            total=len(results),
            deleted=deleted,
            failed=len(results) - deleted,
            dirs_removed=sum(result.dirs_removed for result in results),
            results=results,
        )
        return reply, remember

    def hardlink_completed(self, message: FilesHardlinkCompleted) -> HardlinkCompleted15 | None:
        pending = self.hardlinks.get(message.request_id)
        if pending is None:
            log.warning("no pending hardlink for reply %s; not sent", message.request_id)
            return None
        return HardlinkCompleted15(
            request_id=pending.request_id,
            deletion_id=pending.deletion_id,
            status=message.status,
            source_path=pending.source_path,
            target_path=pending.target_path,
            error=message.error,
        )

    # --- outgoing ------------------------------------------------------------------------------

    def outgoing(self, text: str) -> Message15 | None:
        """The V1.5 message for one V2 frame, None when it has none."""
        try:
            message_type, data = envelope_of(text)
        except Malformed15:
            return None
        try:
            return self._outgoing(message_type, data)
        except (KeyError, TypeError, ValueError) as error:
            log.debug("cannot translate %s to V1.5: %s", message_type, error)
            return None

    def _scan_id(self, data: Mapping[str, Any]) -> Id:
        return _original(self.scan_ids, data["scan_id"])

    def _outgoing(self, message_type: str, data: dict[str, Any]) -> Message15 | None:
        if message_type == "scan.file":
            return ScanFile15(
                scan_id=self._scan_id(data),
                path=_join(data["volume_id"], data["relative_path"]),
                name=data["filename"],
                size_bytes=data["size_bytes"],
                hardlink_count=data["hardlink_count"],
                inode=data["inode"],
                device_id=data["device_id"],
                is_dir=False,
                mod_time=data["mod_time"],
            )
        if message_type == "scan.progress":
            return ScanProgress15(
                scan_id=self._scan_id(data),
                files_scanned=data["files_scanned"],
                dirs_scanned=data["dirs_scanned"],
            )
        if message_type == "scan.started":
            return ScanStarted15(scan_id=self._scan_id(data), path=data["volume_id"])
        if message_type == "scan.completed":
            self.on_scan_completed(data["volume_id"])
            return ScanCompleted15(
                scan_id=self._scan_id(data),
                path=data["volume_id"],
                total_files=data["total_files"],
                total_dirs=data["total_dirs"],
                total_size_bytes=data["total_size_bytes"],
                disk_total_bytes=data["disk_total_bytes"],
                disk_free_bytes=data["disk_free_bytes"],
                duration_ms=data["duration_ms"],
            )
        if message_type == "scan.failed":
            reason = data["reason"]
            coalesced = reason.startswith("coalesced")
            return Log15(
                level="warning" if coalesced else "error",
                message=f"scan {data['scan_id']} of {data['volume_id']} failed: {reason}",
                timestamp=utc_timestamp(),
                context={
                    "scan_id": self._scan_id(data),
                    "path": data["volume_id"],
                    "reason": reason,
                },
            )
        if message_type in ("file.created", "file.modified"):
            cls = FileCreated15 if message_type == "file.created" else FileModified15
            return cls(
                path=_join(data["volume_id"], data["relative_path"]),
                name=data["filename"],
                size_bytes=data["size_bytes"],
                hardlink_count=data["hardlink_count"],
                inode=data["inode"],
                device_id=data["device_id"],
            )
        if message_type == "file.deleted":
            return FileDeleted15(
                path=_join(data["volume_id"], data["relative_path"]), name=data["filename"]
            )
        if message_type == "file.renamed":
            return FileRenamed15(
                old_path=_join(data["volume_id"], data["old_relative_path"]),
                new_path=_join(data["volume_id"], data["new_relative_path"]),
                name=data["filename"],
                size_bytes=data["size_bytes"],
                hardlink_count=data["hardlink_count"],
                inode=data["inode"],
                device_id=data["device_id"],
            )
        if message_type == "watcher.status":
            return Status15(
                status=data["status"],
                watcher_id=self.watcher_id,
                config_hash=self.config_hash,
                watched_paths=[volume["path"] for volume in data["volumes"]],
                uptime_seconds=data["uptime_seconds"],
            )
        log.debug("no V1.5 form for %s; not sent", message_type)
        return None


class TranslatingWriter(FrameWriter):
    """The session's writer in V1.5: every V2 text written becomes its V1.5 frame."""

    def __init__(self, connection: WebSocketConnection, translator: Translator) -> None:
        super().__init__(connection)
        self.translator = translator

    def encode(self, texts: Sequence[str]) -> bytes:
        translated = []
        for text in texts:
            message = self.translator.outgoing(text)
            if message is not None:
                translated.append(encode15(message))
        return super().encode(translated)

    async def send_raw(self, texts: Sequence[str]) -> None:
        """Send V1.5 texts as they are. Raises ConnectionClosed."""
        if texts:
            self._check_open()
            await self.send_encoded(super().encode(texts))


# --- watcher.log ----------------------------------------------------------------------------

_LEVEL_NAMES = {logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}
_CONFIG_LEVELS = {
    "debug": logging.INFO,  # never debug: one line per file would flood the server
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# A record carrying this extra field was already sent as its own watcher.log.
FORWARDED = "forwarded_to_server"


class LogForwarder(logging.Handler):
    """Keeps scanarr's warnings and errors (info too when the config's ``log_level`` asks) as
    ``watcher.log`` messages, redacted and rate-limited, for the session to send."""

    BURST = 20
    PER_SECOND = 0.5
    MAX_KEPT = 200
    MAX_MESSAGE = 4000

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__(logging.INFO)
        self.redact = redact
        self.threshold = logging.WARNING
        self.kept: collections.deque[Log15] = collections.deque(maxlen=self.MAX_KEPT)
        self.suppressed = 0
        self._allowance = float(self.BURST)
        self._last = time.monotonic()
        self._trio_token = trio.lowlevel.current_trio_token()
        self.wakeup = trio.Event()

    def set_level_name(self, name: str | None) -> None:
        self.threshold = _CONFIG_LEVELS.get((name or "").lower(), logging.WARNING)

    def keep(self, entry: Log15) -> None:
        """Forward `entry` as it is (no rate limit)."""
        self.kept.append(entry)
        self.wakeup.set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < self.threshold or not record.name.startswith("scanarr"):
            return
        if getattr(record, FORWARDED, False):
            return
        now = time.monotonic()
        self._allowance = min(self.BURST, self._allowance + (now - self._last) * self.PER_SECOND)
        self._last = now
        if self._allowance < 1:
            self.suppressed += 1
            return
        self._allowance -= 1
        try:
            text = self.redact(record.getMessage())
        except Exception:
            text = self.redact(str(record.msg))
        if self.suppressed:
            text += f" ({self.suppressed} earlier messages not forwarded: rate limit)"
            self.suppressed = 0
        context: dict[str, Any] = {"logger": record.name}
        volume_id = getattr(record, "volume_id", None)
        if isinstance(volume_id, str):
            context["path"] = volume_id
        level = _LEVEL_NAMES.get(min(record.levelno, logging.ERROR), "warning")
        self.kept.append(
            Log15(
                level=level,
                message=text[: self.MAX_MESSAGE],
                timestamp=utc_timestamp(),
                context=context,
            )
        )
        with contextlib.suppress(trio.RunFinishedError):
            self._trio_token.run_sync_soon(self.wakeup.set)


# --- the dialect of the connection ----------------------------------------------------------


class Dialect:
    """Which dialect the connection speaks, and the V1.5 side of it. See the module docstring."""

    def __init__(
        self, settings: Settings, state_keeper: StateKeeper, volumes: VolumeSet, link: Link
    ) -> None:
        self.settings = settings
        self.state_keeper = state_keeper
        self.link = link
        self.translator = Translator(volumes)
        self.store = ReplyStore(replies_path_for(settings.state_file))
        self.forwarder: LogForwarder | None = None
        self._stored_token_refused = False
        self._store_loaded = False
        self._parity_due: set[str] = set()
        self._parity_done: set[str] = set()
        self._parity_wakeup = trio.Event()
        self.translator.on_scan_completed = self._scan_completed

    # --- choice ----------------------------------------------------------------------------

    @property
    def _extra(self) -> dict[str, Any]:
        return self.state_keeper.state.extra

    @property
    def speaks_v15(self) -> bool:
        if self.settings.protocol != "auto":
            return self.settings.protocol == V15
        return self._extra.get(PROTOCOL_KEY) == V15

    async def on_state_loaded(self) -> None:
        """After the state file is read: a Go watcher's state means a V1.5 server."""
        extra = self._extra
        if isinstance(extra.get(TOKEN_KEY), str) and PROTOCOL_KEY not in extra:
            log.info(
                "the state file holds a Go watcher's token: this watcher uses it "
                "(no new approval needed)"
            )
            if self.settings.protocol == "auto":
                extra[PROTOCOL_KEY] = V15
        self._refresh_redaction()
        if self.speaks_v15 or self.settings.protocol == V15:
            await self._load_store()

    async def _load_store(self) -> None:
        if not self._store_loaded:
            self._store_loaded = True
            await trio.to_thread.run_sync(self.store.load)

    async def _remember(self, protocol: str) -> None:
        if self.settings.protocol == "auto" and self._extra.get(PROTOCOL_KEY) != protocol:
            self._extra[PROTOCOL_KEY] = protocol
            await self.state_keeper.save()

    def headers(self) -> list[tuple[bytes, bytes]]:
        token = self.settings.auth_token
        if self.speaks_v15 or not token:
            return []
        return [(b"Authorization", b"Bearer " + token.encode("utf-8"))]

    # --- identity and token ----------------------------------------------------------------

    async def _watcher_id(self) -> str:
        watcher_id = self.settings.watcher_id or self._extra.get(WATCHER_ID_KEY)
        if not isinstance(watcher_id, str) or not watcher_id:
            watcher_id = str(uuid.uuid4())
            log.info("this watcher's id is %s (kept in the state file)", watcher_id)
        if self._extra.get(WATCHER_ID_KEY) != watcher_id:
            self._extra[WATCHER_ID_KEY] = watcher_id
            await self.state_keeper.save()
        self.translator.watcher_id = watcher_id
        return watcher_id

    def _token(self) -> str:
        stored = self._extra.get(TOKEN_KEY)
        if isinstance(stored, str) and stored and not self._stored_token_refused:
            return stored
        return self.settings.auth_token

    async def _keep_token(self, token: str) -> None:
        if self._extra.get(TOKEN_KEY) == token:
            return
        self._extra[TOKEN_KEY] = token
        self._stored_token_refused = False
        if await self.state_keeper.save():
            log.info("the token from the approval is kept in the state file")
        self._refresh_redaction()

    def _secrets(self) -> list[str]:
        stored = self._extra.get(TOKEN_KEY)
        return [secret for secret in (self.settings.auth_token, stored) if isinstance(secret, str)]

    def _refresh_redaction(self) -> None:
        from scanarr.logs import RedactSecrets

        # The token from the approval is a secret too, in every log line from now on: the
        # handlers' redaction filters (scanarr.logs) learn it.
        for handler in logging.getLogger().handlers:
            for candidate in list(handler.filters):
                if isinstance(candidate, RedactSecrets):
                    missing = [s for s in self._secrets() if s not in candidate.secrets]
                    if missing:
                        handler.removeFilter(candidate)
                        handler.addFilter(RedactSecrets([*candidate.secrets, *missing]))
        if self.forwarder is not None:
            self.forwarder.redact = RedactSecrets(self._secrets()).redact

    # --- handshake -------------------------------------------------------------------------

    async def handshake(
        self, websocket: WebSocketConnection, *, timeout: float
    ) -> tuple[HandshakeResult, FrameWriter]:
        """§2 of the dialect in force; raises HandshakeRejected or HandshakeFailed."""
        if self.speaks_v15:
            return await self._handshake15(websocket, timeout)
        writer = FrameWriter(websocket)
        hello = watcher_hello(self.settings.auth_token)
        watcher_id = self.settings.watcher_id
        if watcher_id:
            # Lets `auto` tell the dialects apart on first contact; a V2 API ignores it.
            hello = HelloWithWatcherId(**attrs.asdict(hello), watcher_id=watcher_id)
        try:
            return await handshake(websocket, writer, hello, timeout=timeout), writer
        except OtherDialect as other:
            if self.settings.protocol != "auto":
                raise HandshakeFailed(
                    "the API answers in the V1.5 dialect (the released Scanarr API); "
                    "set SCANARR_PROTOCOL=v1.5 or auto"
                ) from None
            log.info("the API speaks the V1.5 dialect (the released Scanarr API); using it")
            await self._remember(V15)
            await self._load_store()
            return await self._handshake15(websocket, timeout, first=other.answer)
        except HandshakeClosed:
            if self.settings.protocol == "auto" and not watcher_id:
                # A V1.5 server closes on a hello without watcher_id (PROTOCOL-V15.md §2).
                log.info("the API closed on the V2 hello: trying the V1.5 dialect next")
                await self._remember(V15)
            raise

    async def _handshake15(
        self, websocket: WebSocketConnection, timeout: float, *, first: str | None = None
    ) -> tuple[HandshakeResult, FrameWriter]:
        writer = TranslatingWriter(websocket, self.translator)
        watcher_id = await self._watcher_id()
        hostname = socket.gethostname()
        token_used: str | None = None
        try:
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                if first is None:
                    hello = Hello15(watcher_id=watcher_id, hostname=hostname, version=__version__)
                    await writer.send_raw([encode15(hello)])
                while True:
                    text = first if first is not None else await websocket.get_message()
                    first = None
                    if isinstance(text, bytes):
                        continue
                    try:
                        message = decode_incoming(text)
                    except Unknown15 as unknown:
                        if unknown.message_type == "watcher.auth" and self.settings.protocol == (
                            "auto"
                        ):
                            await self._remember(V2)
                            raise HandshakeFailed(
                                "the API answered in the V2 dialect; using it from now on"
                            ) from None
                        log.debug("ignoring %s during the handshake", unknown.message_type)
                        continue
                    except Malformed15 as error:
                        if error.message_type == "watcher.config":
                            log.error("malformed watcher.config (%s)", error.reason)
                            return self._result(watcher_id, hostname, None), writer
                        log.warning("ignoring a malformed message: %s", error.reason)
                        continue
                    if isinstance(message, AuthRequired15):
                        token = self._token()
                        if not token:
                            raise HandshakeRejected(
                                "the server knows this watcher but it has no token (set "
                                "SCANARR_AUTH_TOKEN, or revoke and approve it again in the UI)"
                            )
                        token_used = token
                        await writer.send_raw([encode15(Auth15(token=token))])
                    elif isinstance(message, Pending15):
                        log.warning(
                            "watcher %s is waiting for approval: an operator must approve it "
                            "in the Scanarr UI (waiting on this connection)",
                            watcher_id,
                        )
                        scope.deadline = math.inf
                    elif isinstance(message, Rejected15):
                        await self._rejected(websocket, message.reason or "no reason", token_used)
                    elif isinstance(message, Config15):
                        if message.auth_token:
                            await self._keep_token(message.auth_token)
                        return self._result(watcher_id, hostname, message), writer
                    else:
                        log.debug("ignoring %s before the first watcher.config", message.TYPE)
        except ConnectionClosed as closed:
            raise HandshakeClosed(
                f"connection closed during the handshake ({closed.reason})"
            ) from None
        raise HandshakeFailed(f"no answer to the hello within {timeout:g} s")

    async def _rejected(
        self, websocket: WebSocketConnection, reason: str, token_used: str | None
    ) -> None:
        with trio.move_on_after(1.0):
            try:
                while True:
                    await websocket.get_message()
            except ConnectionClosed:
                pass
        if reason == "revoked":
            log.error(
                "the Scanarr server revoked this watcher: it cannot be approved again; "
                "retrying only every %g s",
                self.settings.rejected_max_delay,
            )
            raise WatcherRevoked(reason)
        stored = self._extra.get(TOKEN_KEY)
        fallback = self.settings.auth_token
        if reason == "invalid_token" and token_used == stored and fallback and fallback != stored:
            log.warning("the kept token was refused; trying SCANARR_AUTH_TOKEN next")
            self._stored_token_refused = True
        raise HandshakeRejected(reason)

    def _result(self, watcher_id: str, hostname: str, message: Config15 | None) -> HandshakeResult:
        config = None
        if message is not None:
            config = self.translator.config(message)
            self._follow_config(message)
        self._install_forwarder()
        return HandshakeResult(
            auth=WatcherAuth(status="authenticated", watcher_id=watcher_id, watcher_name=hostname),
            config=config,
            early_messages=[],
        )

    def _follow_config(self, message: Config15) -> None:
        if self.forwarder is not None:
            self.forwarder.set_level_name(message.log_level)
        if message.config_hash is not None:
            self._extra[CONFIG_HASH_KEY] = message.config_hash

    def _install_forwarder(self) -> None:
        if self.forwarder is not None:
            return
        from scanarr.logs import RedactSecrets

        self.forwarder = LogForwarder(RedactSecrets(self._secrets()).redact)
        self.forwarder.set_level_name(self.translator.log_level)
        logging.getLogger().addHandler(self.forwarder)

    # --- incoming --------------------------------------------------------------------------

    async def incoming(self, text: str | bytes) -> list[str | bytes]:
        """The V2 frames to dispatch for one frame from the API."""
        if not self.speaks_v15:
            return [text]
        try:
            message = decode_incoming(text)
        except Unknown15 as unknown:
            log.debug("ignoring message of unknown type %r", unknown.message_type)
            return []
        except Malformed15 as error:
            log.warning("malformed %s message: %s", error.message_type or "(untyped)", error.reason)
            if error.message_type == CommandDelete15.TYPE:
                await self._answer_malformed_delete(text, error.reason)
            return []
        converted: Message | None = None
        if isinstance(message, Config15):
            if message.auth_token:
                await self._keep_token(message.auth_token)
            converted = self.translator.config(message)
            self._follow_config(message)
        elif isinstance(message, CommandScan15):
            converted = self.translator.scan(message)
        elif isinstance(message, CommandDelete15):
            converted = self.translator.delete(message, self.store.deleted)
        elif isinstance(message, CommandHardlink15):
            result = self.translator.hardlink(message)
            if isinstance(result, HardlinkCompleted15):
                await self._send_kept(encode15(result))
            else:
                converted = result
        elif isinstance(message, (CommandWatchAdd15, CommandWatchRemove15)):
            log.debug("ignoring %s %s: volumes come from watcher.config", message.TYPE, message)
        elif isinstance(message, Rejected15):
            log.error("the server rejected this watcher: %s", message.reason)
        else:
            log.debug("ignoring %s after the handshake", message.TYPE)
        return [] if converted is None else [encode(converted)]

    async def _answer_malformed_delete(self, text: str | bytes, reason: str) -> None:
        """A malformed delete is answered only for the items that are visibly ours."""
        try:
            _type, data = envelope_of(text)
        except Malformed15:
            return
        request_id, deletion_id = data.get("request_id"), data.get("deletion_id")
        if not all(type(value) in (str, int) for value in (request_id, deletion_id)):
            return
        results = []
        files = data.get("files")
        for item in files if isinstance(files, list) else []:
            if not isinstance(item, dict):
                continue
            media_file_id = item.get("media_file_id")
            volume_path, file_path = item.get("volume_path"), item.get("file_path")
            if not isinstance(media_file_id, (str, int)) or isinstance(media_file_id, bool):
                continue
            if not isinstance(volume_path, str) or not isinstance(file_path, str):
                continue
            if self.translator.resolve(normalise_root(_join(volume_path, file_path))) is None:
                continue
            results.append(
                DeleteResult15(
                    media_file_id=media_file_id,
                    status="failed",
                    dirs_removed=0,
                    size_bytes=0,
                    error=f"malformed command: {reason}",
                )
            )
        if results:
            reply = DeleteCompleted15(
                request_id=request_id,  # type: ignore[arg-type]
                deletion_id=deletion_id,  # type: ignore[arg-type]
                total=len(results),
                deleted=0,
                failed=len(results),
                dirs_removed=0,
                results=results,
            )
            await self._send_kept(encode15(reply))

    # --- replies ---------------------------------------------------------------------------

    async def send_reply(self, message: Message) -> bool:
        """Send a command reply in V1.5; False when the message is not one (or V2 is spoken)."""
        if not self.speaks_v15:
            return False
        if isinstance(message, FilesDeleteProgress):
            progress = self.translator.delete_progress(message)
            if progress is not None:
                await self._send_now(encode15(progress))
            return True
        if isinstance(message, FilesDeleteCompleted):
            translated = self.translator.delete_completed(message)
            if translated is None:
                return True
            reply, remember = translated
            self.store.deleted.update(remember)
            await self._send_kept(encode15(reply), save=bool(remember))
            return True
        if isinstance(message, FilesHardlinkCompleted):
            hardlink = self.translator.hardlink_completed(message)
            if hardlink is not None:
                await self._send_kept(encode15(hardlink))
            return True
        return False

    async def _send_now(self, text: str) -> bool:
        session = self.link.current
        writer = session.writer if session is not None else None
        if not isinstance(writer, TranslatingWriter) or not session or not session.alive:
            return False
        try:
            await writer.send_raw([text])
        except ConnectionClosed:
            return False
        return True

    async def _send_kept(self, text: str, *, save: bool = False) -> None:
        """Send a reply, or keep it on disk for the next session (`save`: the replay keys
        changed, write the store even when the reply went out)."""
        if await self._send_now(text):
            if save:
                await self._save_store()
            return
        log.warning("not connected: the reply is kept and sent after the next handshake")
        self.store.outbox.append(text)
        await self._save_store()

    async def _save_store(self) -> None:
        try:
            await trio.to_thread.run_sync(self.store.save)
        except OSError as error:
            log.error("cannot save %s: %s", self.store.path, error)

    # --- per session -----------------------------------------------------------------------

    async def run_session(self, session: Session) -> None:
        """While `session` lives: send the kept replies, then forward log lines."""
        if not self.speaks_v15 or not isinstance(session.writer, TranslatingWriter):
            return
        writer = session.writer
        if self.store.outbox:
            texts = list(self.store.outbox)
            try:
                await writer.send_raw(texts)
            except ConnectionClosed:
                return
            log.info("sent %d replies kept while disconnected", len(texts))
            del self.store.outbox[: len(texts)]
            await self._save_store()
        forwarder = self.forwarder
        if forwarder is None:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._check_parity, forwarder)
            await self._forward_logs(session, writer, forwarder)
            nursery.cancel_scope.cancel()

    async def _forward_logs(
        self, session: Session, writer: TranslatingWriter, forwarder: LogForwarder
    ) -> None:
        while session.alive:
            while forwarder.kept:
                entry = forwarder.kept[0]
                try:
                    await writer.send_raw([encode15(entry)])
                except ConnectionClosed:
                    return
                if forwarder.kept and forwarder.kept[0] is entry:
                    forwarder.kept.popleft()
            forwarder.wakeup = trio.Event()
            if not forwarder.kept:
                await forwarder.wakeup.wait()

    def _scan_completed(self, volume_id: str) -> None:
        if volume_id not in self._parity_done:
            self._parity_due.add(volume_id)
            self._parity_wakeup.set()

    async def _check_parity(self, forwarder: LogForwarder) -> None:
        """After the first completed scan of each volume: say what the server will drop."""
        while True:
            while not self._parity_due:
                self._parity_wakeup = trio.Event()
                await self._parity_wakeup.wait()
            volume_id = min(self._parity_due)
            volume = self.translator.volumes.get(volume_id)
            if volume is not None:
                unreported = await trio.to_thread.run_sync(
                    count_unreported,
                    volume.path,
                    self.translator.volumes.nested_roots(volume_id),
                    self.translator.volumes.scan_extensions,
                )
                if unreported.total:
                    message = (
                        f"{unreported.total} media files under {volume.path} are not reported "
                        f"by scanarr where the Go watcher reported them ({unreported.describe()});"
                        " the server drops their rows after each scan"
                    )
                    log.warning(message, extra={FORWARDED: True})
                    forwarder.keep(
                        Log15(
                            level="warning",
                            message=message,
                            timestamp=utc_timestamp(),
                            context={"path": volume.path, **attrs.asdict(unreported)},
                        )
                    )
            self._parity_due.discard(volume_id)
            self._parity_done.add(volume_id)


__all__ = [
    "Dialect",
    "HelloWithWatcherId",
    "LogForwarder",
    "ReplyStore",
    "TranslatingWriter",
    "Translator",
    "WatcherRevoked",
    "replies_path_for",
]
