"""The dialect the released Scanarr API speaks (PROTOCOL-V15.md): message models and JSON form.

Frames are ``{"type", "data"}`` without a timestamp. Paths are absolute strings; volumes have no
ids. The models here are only the wire shapes: `scanarr.agent.dialect` translates between them
and the V2 models (`scanarr.protocol`) the rest of scanarr speaks.

Ids the server sends (``request_id``, ``deletion_id``, ``media_file_id``, ``scan_id``) may be
JSON strings or integers; they are kept as given so a reply echoes them unchanged.
"""

from __future__ import annotations

import json
import typing
from typing import Any, ClassVar, Literal

import attrs
import cattrs

from scanarr.protocol import (
    MalformedMessage,
    WatcherStatusName,
    as_text,
    envelope_parts,
    strict_scalar,
)

# The media extensions of the Go watcher this dialect's server was built with.
GO_WATCHER_EXTENSIONS: tuple[str, ...] = ("mkv", "mp4", "avi", "m4v", "wmv", "ts", "iso")

# Answers to a hello that only a V1.5 server gives.
V15_HELLO_ANSWERS: frozenset[str] = frozenset(
    ("watcher.auth_required", "watcher.pending", "watcher.rejected")
)

Id = str | int


class Message15:
    """Base of every V1.5 message model; `TYPE` is the wire `type`."""

    TYPE: ClassVar[str]


# --- handshake and configuration (§2, §3) ---------------------------------------------------


@attrs.frozen
class Hello15(Message15):
    TYPE: ClassVar[str] = "watcher.hello"
    watcher_id: str
    hostname: str
    version: str


@attrs.frozen
class Auth15(Message15):
    TYPE: ClassVar[str] = "watcher.auth"
    token: str


@attrs.frozen
class Pending15(Message15):
    TYPE: ClassVar[str] = "watcher.pending"
    watcher_id: str = ""


@attrs.frozen
class AuthRequired15(Message15):
    TYPE: ClassVar[str] = "watcher.auth_required"
    watcher_id: str = ""


@attrs.frozen
class Rejected15(Message15):
    TYPE: ClassVar[str] = "watcher.rejected"
    reason: str = ""


@attrs.frozen
class Config15(Message15):
    TYPE: ClassVar[str] = "watcher.config"
    watch_paths: list[str] = attrs.field(factory=list)
    scan_on_start: bool = True
    log_level: str | None = None
    disable_deletion: bool = False
    config_hash: str | None = None
    auth_token: str | None = attrs.field(default=None, repr=False)


# --- watcher → server (§4) ------------------------------------------------------------------


@attrs.frozen
class ScanStarted15(Message15):
    TYPE: ClassVar[str] = "scan.started"
    scan_id: Id
    path: str


@attrs.frozen
class ScanFile15(Message15):
    TYPE: ClassVar[str] = "scan.file"
    scan_id: Id
    path: str
    name: str
    size_bytes: int
    hardlink_count: int
    inode: int
    device_id: int
    is_dir: bool
    mod_time: str


@attrs.frozen
class ScanProgress15(Message15):
    TYPE: ClassVar[str] = "scan.progress"
    scan_id: Id
    files_scanned: int
    dirs_scanned: int


@attrs.frozen
class ScanCompleted15(Message15):
    TYPE: ClassVar[str] = "scan.completed"
    scan_id: Id
    path: str
    total_files: int
    total_dirs: int
    total_size_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int
    duration_ms: int


@attrs.frozen
class FileState15(Message15):
    """The fields of `file.created`, which `file.modified` carries too (§4)."""

    path: str
    name: str
    size_bytes: int
    hardlink_count: int
    inode: int
    device_id: int


@attrs.frozen
class FileCreated15(FileState15):
    TYPE: ClassVar[str] = "file.created"


@attrs.frozen
class FileModified15(FileState15):
    TYPE: ClassVar[str] = "file.modified"


@attrs.frozen
class FileDeleted15(Message15):
    TYPE: ClassVar[str] = "file.deleted"
    path: str
    name: str


@attrs.frozen
class FileRenamed15(Message15):
    TYPE: ClassVar[str] = "file.renamed"
    old_path: str
    new_path: str
    name: str
    size_bytes: int
    hardlink_count: int
    inode: int
    device_id: int


@attrs.frozen
class Status15(Message15):
    TYPE: ClassVar[str] = "watcher.status"
    status: WatcherStatusName
    watcher_id: str
    config_hash: str | None
    watched_paths: list[str]
    uptime_seconds: int


@attrs.frozen
class Log15(Message15):
    TYPE: ClassVar[str] = "watcher.log"
    level: str
    message: str
    timestamp: str
    context: dict[str, Any] | None = None


@attrs.frozen
class Deletion15(Message15):
    """The fields every message of a deletion or hardlink request starts with: the request it
    is or answers, and the deletion it belongs to."""

    request_id: Id
    deletion_id: Id


@attrs.frozen
class DeleteProgress15(Deletion15):
    TYPE: ClassVar[str] = "files.delete.progress"
    media_file_id: Id
    status: Literal["deleted", "failed"]
    dirs_removed: int
    error: str | None = None


@attrs.frozen
class DeleteResult15:
    media_file_id: Id
    status: Literal["deleted", "failed"]
    dirs_removed: int
    size_bytes: int
    error: str | None = None


@attrs.frozen
class DeleteCompleted15(Deletion15):
    TYPE: ClassVar[str] = "files.delete.completed"
    total: int
    deleted: int
    failed: int
    dirs_removed: int
    results: list[DeleteResult15]


@attrs.frozen
class HardlinkCompleted15(Deletion15):
    TYPE: ClassVar[str] = "files.hardlink.completed"
    status: Literal["created", "failed"]
    source_path: str
    target_path: str
    error: str | None = None


# --- commands (§5) --------------------------------------------------------------------------


@attrs.frozen
class CommandScan15(Message15):
    TYPE: ClassVar[str] = "command.scan"
    path: str
    scan_id: Id


@attrs.frozen
class DeleteItem15:
    media_file_id: Id
    volume_path: str
    file_path: str


@attrs.frozen
class CommandDelete15(Deletion15):
    TYPE: ClassVar[str] = "command.files.delete"
    files: list[DeleteItem15]


@attrs.frozen
class CommandHardlink15(Deletion15):
    TYPE: ClassVar[str] = "command.files.hardlink"
    source_path: str
    target_path: str
    volume_path: str = ""


@attrs.frozen
class CommandWatchAdd15(Message15):
    TYPE: ClassVar[str] = "command.watch.add"
    path: str


@attrs.frozen
class CommandWatchRemove15(Message15):
    TYPE: ClassVar[str] = "command.watch.remove"
    path: str


# Messages a watcher receives, by type.
INCOMING_TYPES: dict[str, type[Message15]] = {
    cls.TYPE: cls
    for cls in (
        Pending15,
        AuthRequired15,
        Rejected15,
        Config15,
        CommandScan15,
        CommandDelete15,
        CommandHardlink15,
        CommandWatchAdd15,
        CommandWatchRemove15,
    )
}

# Messages a server receives, by type (the dev API parses with these).
OUTGOING_TYPES: dict[str, type[Message15]] = {
    cls.TYPE: cls
    for cls in (
        Hello15,
        Auth15,
        ScanStarted15,
        ScanFile15,
        ScanProgress15,
        ScanCompleted15,
        FileCreated15,
        FileModified15,
        FileDeleted15,
        FileRenamed15,
        Status15,
        Log15,
        DeleteProgress15,
        DeleteCompleted15,
        HardlinkCompleted15,
    )
}


# --- (de)serialisation ----------------------------------------------------------------------


def _id_hook(value: Any, _type: Any) -> Id:
    if type(value) is str or type(value) is int:
        return value
    raise TypeError(f"expected a string or integer id, got {type(value).__name__}")


converter = cattrs.Converter(forbid_extra_keys=False)
for _scalar in (str, int, bool):
    converter.register_structure_hook(_scalar, strict_scalar(_scalar))
converter.register_structure_hook(Id, _id_hook)


def _strict_list_factory(list_type: Any) -> Any:
    (item_type,) = typing.get_args(list_type) or (Any,)

    def hook(value: Any, _type: Any) -> list[Any]:
        # cattrs would take a string (or any iterable) as a list of its items.
        if type(value) is not list:
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return [converter.structure(item, item_type) for item in value]

    return hook


def _is_list_type(candidate: Any) -> bool:
    origin: Any = typing.get_origin(candidate)
    return origin is list


converter.register_structure_hook_factory(_is_list_type, _strict_list_factory)
converter.register_structure_hook(dict[str, Any] | None, lambda value, _type: value)


class Malformed15(Exception):
    """A frame that is not a valid V1.5 message of a known type."""

    def __init__(self, reason: str, message_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_type = message_type


class Unknown15(Exception):
    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown message type {message_type!r}")
        self.message_type = message_type


def _describe(error: BaseException) -> str:
    if isinstance(error, cattrs.ClassValidationError):
        notes = cattrs.transform_error(error)
        return "; ".join(notes) if notes else str(error)
    return str(error)


def envelope_of(text: str | bytes) -> tuple[str, dict[str, Any]]:
    """(type, data) of one frame. Raises Malformed15."""
    try:
        message_type, data = envelope_parts(text)
    except MalformedMessage as error:
        raise Malformed15(error.reason) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Malformed15("'data' is not an object", message_type)
    return message_type, data


def structure(message_type: str, data: dict[str, Any], table: dict[str, type[Message15]]) -> Any:
    cls = table.get(message_type)
    if cls is None:
        raise Unknown15(message_type)
    try:
        return converter.structure(data, cls)
    except Exception as error:  # cattrs raises several kinds; all mean "malformed"
        raise Malformed15(_describe(error), message_type) from None


def decode_incoming(text: str | bytes) -> Message15:
    """Parse a server → watcher frame. Raises Unknown15 or Malformed15."""
    message_type, data = envelope_of(text)
    message: Message15 = structure(message_type, data, INCOMING_TYPES)
    return message


def decode_outgoing(text: str | bytes) -> Message15:
    """Parse a watcher → server frame (for the dev API). Raises Unknown15 or Malformed15."""
    message_type, data = envelope_of(text)
    message: Message15 = structure(message_type, data, OUTGOING_TYPES)
    return message


def encode15(message: Message15) -> str:
    """One frame's text: ``{"type", "data"}``, optional fields that are None left out."""
    data = converter.unstructure(message)
    data = {key: value for key, value in data.items() if value is not None}
    text = json.dumps(
        {"type": message.TYPE, "data": data}, ensure_ascii=False, separators=(",", ":")
    )
    # A lone surrogate the server sent (valid in JSON, not in UTF-8) is echoed back as U+FFFD.
    return text if text.isascii() else as_text(text)
