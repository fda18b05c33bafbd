"""The wire contract with the Scanarr API (PROTOCOL.md): message models and their JSON form.

Every frame is one JSON object ``{"type", "timestamp", "data"}``. Each ``type`` maps to one attrs
class in `MESSAGE_TYPES`; one cattrs converter turns data dicts into those classes and back.
Unknown fields are ignored (forward compatibility); missing or mistyped fields raise
`MalformedMessage`, which carries the ``request_id`` when the message had one so the caller can
answer it.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, ClassVar, Literal

import attrs
import cattrs

DEFAULT_SCAN_EXTENSIONS: tuple[str, ...] = ("mkv", "mp4", "avi", "m4v", "ts", "wmv")


def utc_timestamp(moment: datetime.datetime | None = None) -> str:
    """RFC 3339 UTC with `Z` and milliseconds, as every watcher → API message carries."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Message:
    """Base of every message model; `TYPE` is the wire `type`."""

    TYPE: ClassVar[str]


# --- handshake and configuration (§2, §3) -------------------------------------------------


@attrs.frozen
class WatcherHello(Message):
    TYPE: ClassVar[str] = "watcher.hello"
    hostname: str
    version: str
    os: str
    arch: str
    token: str = attrs.field(repr=False)  # a secret: kept out of every repr, hence of logs


@attrs.frozen
class WatcherAuth(Message):
    TYPE: ClassVar[str] = "watcher.auth"
    status: str  # "authenticated" or "rejected"
    watcher_id: str | None = None
    watcher_name: str | None = None
    reason: str | None = None


@attrs.frozen
class WatchPath:
    id: str
    path: str
    name: str = ""


def _lower_extensions(values: list[str]) -> list[str]:
    return [value.lower().lstrip(".") for value in values]


@attrs.frozen
class WatcherConfig(Message):
    TYPE: ClassVar[str] = "watcher.config"
    watch_paths: list[WatchPath] = attrs.field(factory=list)
    scan_extensions: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_SCAN_EXTENSIONS), converter=_lower_extensions
    )
    scan_on_start: bool = False
    disable_deletion: bool = False


# --- scans (§4, §5) -----------------------------------------------------------------------


@attrs.frozen
class ScanStarted(Message):
    TYPE: ClassVar[str] = "scan.started"
    scan_id: str
    volume_id: str
    volume_path: str


@attrs.frozen
class ScanFile(Message):
    TYPE: ClassVar[str] = "scan.file"
    scan_id: str
    volume_id: str
    volume_path: str
    relative_path: str
    filename: str
    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int
    mod_time: str


@attrs.frozen
class ScanProgress(Message):
    TYPE: ClassVar[str] = "scan.progress"
    scan_id: str
    volume_id: str
    files_scanned: int
    dirs_scanned: int


@attrs.frozen
class ScanCompleted(Message):
    TYPE: ClassVar[str] = "scan.completed"
    scan_id: str
    volume_id: str
    total_files: int
    total_dirs: int
    total_size_bytes: int
    duration_ms: int
    disk_total_bytes: int
    disk_free_bytes: int
    # Extension (§4): files left out of the scan (and of its totals), their name not UTF-8.
    skipped_files: int = 0


@attrs.frozen
class ScanFailed(Message):
    TYPE: ClassVar[str] = "scan.failed"
    scan_id: str
    volume_id: str
    reason: str


# --- live events (§4, §6) -----------------------------------------------------------------


@attrs.frozen
class FileCreated(Message):
    TYPE: ClassVar[str] = "file.created"
    volume_id: str
    relative_path: str
    filename: str
    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int


@attrs.frozen
class FileModified(Message):
    TYPE: ClassVar[str] = "file.modified"
    volume_id: str
    relative_path: str
    filename: str
    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int


@attrs.frozen
class FileDeleted(Message):
    TYPE: ClassVar[str] = "file.deleted"
    volume_id: str
    relative_path: str
    filename: str


@attrs.frozen
class FileRenamed(Message):
    TYPE: ClassVar[str] = "file.renamed"
    volume_id: str
    old_relative_path: str
    new_relative_path: str
    filename: str
    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int


# --- status (§9) --------------------------------------------------------------------------

VolumeStatusName = Literal["watching", "scanning", "unavailable", "error", "degraded"]


@attrs.frozen
class VolumeStatus:
    id: str
    path: str
    status: str


@attrs.frozen
class WatcherStatus(Message):
    TYPE: ClassVar[str] = "watcher.status"
    status: str  # "watching", "scanning" or "degraded"
    volumes: list[VolumeStatus]
    uptime_seconds: int


# --- commands (§7) ------------------------------------------------------------------------


@attrs.frozen
class CommandScan(Message):
    TYPE: ClassVar[str] = "command.scan"
    volume_id: str
    scan_id: str


@attrs.frozen
class CommandScanAll(Message):
    TYPE: ClassVar[str] = "command.scan.all"
    scan_id: str


@attrs.frozen
class DeletePath:
    volume_path: str
    relative_path: str


@attrs.frozen
class DeleteFile:
    media_file_id: str
    paths: list[DeletePath]
    inode: int | None = None
    device_id: int | None = None


@attrs.frozen
class CommandFilesDelete(Message):
    TYPE: ClassVar[str] = "command.files.delete"
    request_id: str
    deletion_id: str
    files: list[DeleteFile]


@attrs.frozen
class FilesDeleteProgress(Message):
    TYPE: ClassVar[str] = "files.delete.progress"
    request_id: str
    deletion_id: str
    media_file_id: str
    paths_deleted: int
    paths_failed: int
    dirs_removed: int


@attrs.frozen
class DeleteResult:
    media_file_id: str
    status: str  # "deleted" or "failed"
    paths_deleted: int
    dirs_removed: int
    size_bytes: int
    freed_bytes: int
    error: str | None = None


@attrs.frozen
class FilesDeleteCompleted(Message):
    TYPE: ClassVar[str] = "files.delete.completed"
    request_id: str
    deletion_id: str
    total_media_files: int
    deleted: int
    failed: int
    total_paths_deleted: int
    dirs_removed: int
    freed_bytes: int
    results: list[DeleteResult]


@attrs.frozen
class CommandFilesHardlink(Message):
    TYPE: ClassVar[str] = "command.files.hardlink"
    request_id: str
    deletion_id: str
    source_volume_path: str
    source_relative_path: str
    target_volume_path: str
    target_relative_path: str


@attrs.frozen
class FilesHardlinkCompleted(Message):
    TYPE: ClassVar[str] = "files.hardlink.completed"
    request_id: str
    deletion_id: str
    status: str  # "created" or "failed"
    source_inode: int | None = None
    target_inode: int | None = None
    error: str | None = None


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        WatcherHello,
        WatcherAuth,
        WatcherConfig,
        ScanStarted,
        ScanFile,
        ScanProgress,
        ScanCompleted,
        ScanFailed,
        FileCreated,
        FileModified,
        FileDeleted,
        FileRenamed,
        WatcherStatus,
        CommandScan,
        CommandScanAll,
        CommandFilesDelete,
        FilesDeleteProgress,
        FilesDeleteCompleted,
        CommandFilesHardlink,
        FilesHardlinkCompleted,
    )
}


# --- (de)serialisation --------------------------------------------------------------------


def _strict_scalar(expected: type) -> Any:
    """Structure hook that refuses silent coercion ("12" is not an int, 1 is not a str)."""

    def hook(value: Any, _type: Any) -> Any:
        # bool is a subclass of int, but `true` is never a valid inode or count.
        if type(value) is not expected and not (expected is float and type(value) is int):
            raise TypeError(f"expected {expected.__name__}, got {type(value).__name__}")
        return value

    return hook


converter = cattrs.Converter(forbid_extra_keys=False)
for _scalar in (str, int, bool, float):
    converter.register_structure_hook(_scalar, _strict_scalar(_scalar))


class UnknownMessageType(Exception):
    """A message whose `type` is not in MESSAGE_TYPES: logged at debug and ignored."""

    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown message type {message_type!r}")
        self.message_type = message_type


class MalformedMessage(Exception):
    """A frame that is not a valid message; `request_id` is set when the frame carried one."""

    def __init__(
        self, reason: str, *, message_type: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_type = message_type
        self.request_id = request_id


def _describe(error: BaseException) -> str:
    if isinstance(error, cattrs.ClassValidationError):
        notes = cattrs.transform_error(error)
        return "; ".join(notes) if notes else str(error)
    return str(error)


def decode(text: str | bytes) -> Message:
    """Parse one frame. Raises UnknownMessageType or MalformedMessage."""
    try:
        envelope = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedMessage(f"not JSON: {error}") from None
    if not isinstance(envelope, dict):
        raise MalformedMessage("frame is not a JSON object")
    message_type = envelope.get("type")
    if not isinstance(message_type, str):
        raise MalformedMessage("missing or non-string 'type'")
    data = envelope.get("data", {})
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str):
        request_id = None
    cls = MESSAGE_TYPES.get(message_type)
    if cls is None:
        raise UnknownMessageType(message_type)
    if not isinstance(data, dict):
        raise MalformedMessage(
            "'data' is not an object", message_type=message_type, request_id=request_id
        )
    try:
        return converter.structure(data, cls)
    except Exception as error:  # cattrs raises several kinds; all mean "malformed"
        raise MalformedMessage(
            _describe(error), message_type=message_type, request_id=request_id
        ) from None


def unstructure(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = converter.unstructure(message)
    return data


def encode(message: Message, timestamp: str | None = None) -> str:
    """One frame's text for `message`, stamped now unless `timestamp` is given."""
    return json.dumps(
        {
            "type": message.TYPE,
            "timestamp": timestamp or utc_timestamp(),
            "data": unstructure(message),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
