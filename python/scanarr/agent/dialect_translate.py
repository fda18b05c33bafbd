"""V2 ↔ V1.5 message translation (PROTOCOL-V15.md): paths, ids and the pending commands a
reply needs. A volume's id is its path, so ``volume_id`` + ``relative_path`` is the absolute path;
an absolute path belongs to the longest configured volume that contains it, or to no one (another
watcher's: the command is not ours). See `scanarr.agent.dialect` for the rules."""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from scanarr.protocol import (
    CommandFilesDelete,
    CommandFilesHardlink,
    CommandScan,
    DeleteFile,
    DeletePath,
    FilesDeleteCompleted,
    FilesDeleteProgress,
    FilesHardlinkCompleted,
    ScanFailedReason,
    WatcherConfig,
    WatchPath,
    deletion_counts,
    utc_timestamp,
)
from scanarr.protocol_v15 import (
    GO_WATCHER_EXTENSIONS,
    CommandDelete15,
    CommandHardlink15,
    CommandScan15,
    Config15,
    DeleteCompleted15,
    DeleteProgress15,
    DeleteResult15,
    FileCreated15,
    FileDeleted15,
    FileModified15,
    FileRenamed15,
    HardlinkCompleted15,
    Id,
    Log15,
    Malformed15,
    Message15,
    ScanCompleted15,
    ScanFile15,
    ScanProgress15,
    ScanStarted15,
    Status15,
    encode15,
    envelope_of,
)
from scanarr.transport import WebSocket
from scanarr.volume_paths import normalise_root
from scanarr.wsframes import FrameWriter

from .volumes import VolumeSet, owning_volume

log = logging.getLogger(__name__)


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


def join_path(volume_path: str, relative_path: str) -> str:
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
        while len(self.scan_ids) > 1024:
            del self.scan_ids[next(iter(self.scan_ids))]
        return CommandScan(volume_id=volume.id, scan_id=str(command.scan_id))

    def delete(
        self, command: CommandDelete15, replayed: Mapping[tuple[str, str, str], dict[str, Any]]
    ) -> CommandFilesDelete | None:
        """The V2 command for our items, or None when no item is ours (no reply at all)."""
        files: list[DeleteFile] = []
        items: list[tuple[Id, str]] = []
        ready: list[DeleteResult15] = []
        for item in command.files:
            absolute = join_path(item.volume_path, item.file_path.lstrip("/"))
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
            key = (
                str(command.deletion_id),
                str(item.media_file_id),
                join_path(volume.path, relative),
            )
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
        reply = DeleteCompleted15(
            request_id=pending.request_id,
            deletion_id=pending.deletion_id,
            total=len(results),
            results=results,
            **deletion_counts(results),
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
                path=join_path(data["volume_id"], data["relative_path"]),
                name=data["filename"],
                **_stat_fields(data),
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
            refused = reason == ScanFailedReason.COALESCED.value
            return Log15(
                level="warning" if refused else "error",
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
                path=join_path(data["volume_id"], data["relative_path"]),
                name=data["filename"],
                **_stat_fields(data),
            )
        if message_type == "file.deleted":
            return FileDeleted15(
                path=join_path(data["volume_id"], data["relative_path"]), name=data["filename"]
            )
        if message_type == "file.renamed":
            return FileRenamed15(
                old_path=join_path(data["volume_id"], data["old_relative_path"]),
                new_path=join_path(data["volume_id"], data["new_relative_path"]),
                name=data["filename"],
                **_stat_fields(data),
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


def _stat_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """What every V1.5 file message carries of the file's stat, as the V2 message has it."""
    return {key: data[key] for key in ("size_bytes", "hardlink_count", "inode", "device_id")}


class TranslatingWriter(FrameWriter):
    """The session's writer in V1.5: every V2 text written becomes its V1.5 frame."""

    def __init__(self, connection: WebSocket, translator: Translator) -> None:
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
