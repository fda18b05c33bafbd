"""The wire contract with the Scanarr API (PROTOCOL.md): message models and their JSON form.

Every frame is one JSON object ``{"type", "timestamp", "data"}``. Each ``type`` maps to one attrs
class in `MESSAGE_TYPES`; one cattrs converter turns data dicts into those classes and back.
Unknown fields are ignored (forward compatibility); missing or mistyped fields raise
`MalformedMessage`, which carries the ``request_id`` when the message had one so the caller can
answer it.

Untrusted strings (§7). JSON can carry a lone surrogate (``"\\ud800"``), which no UTF-8 text
can; this module is the one place that decides what becomes of such a string:

- *text* (ids, names, extensions, every other string): each surrogate becomes U+FFFD while
  decoding, so nothing past `decode` — replies, scan frames, logs, the state file, stored
  results — ever holds one;
- *a volume path of* ``watcher.config``: not valid text → the config is malformed (logged, the
  previous one stays in force);
- *a path of a command* (``volume_path``, ``relative_path``): never rewritten into another
  name (``a\ufffd.mkv`` may exist and is not what the API named). Its surrogates are pinned to
  U+D800, which no file-system encoding accepts, so the path names no file: the file layer
  refuses that path alone (``invalid_path``) and the rest of the command goes on;
- `encode` replaces whatever surrogate is still in a message (e.g. a pinned path echoed in an
  ``error``) with U+FFFD: every frame the watcher sends is valid UTF-8.

NULs and long strings are valid text: ids keep them (JSON escapes NUL), the path checks refuse
them where they matter.
"""

from __future__ import annotations

import enum
import json
import re
import typing
from typing import Any, ClassVar, Literal

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception

from scanarr import _native
from scanarr.rfc3339 import utc_timestamp as utc_timestamp  # re-exported: the protocol's clock

# The scanner's own list (rust/lib.rs), so a config without scan_extensions scans what
# `scanarr scan` does.
DEFAULT_SCAN_EXTENSIONS: tuple[str, ...] = tuple(_native.DEFAULT_EXTENSIONS)

# --- untrusted strings (see the module docstring) ---------------------------------------------

REPLACEMENT_CHARACTER = "\ufffd"
# A code point no file-system encoding accepts (not even surrogateescape, which maps
# U+DC80–U+DCFF to raw bytes): a path holding it can name no file.
_UNNAMEABLE = "\ud800"
_SURROGATES = re.compile("[\ud800-\udfff]")

# attrs metadata key: how `decode` treats a string field ("config_path" or "command_path").
_STRING_KIND = "scanarr_string_kind"


def is_text(value: str) -> bool:
    """True when `value` is valid Unicode text (it can be encoded as UTF-8: no surrogate)."""
    return _SURROGATES.search(value) is None


def as_text(value: str) -> str:
    """`value` with every surrogate replaced by U+FFFD: always encodable as UTF-8."""
    return _SURROGATES.sub(REPLACEMENT_CHARACTER, value)


def shown(text: str, limit: int = 200) -> str:
    """`text` for a log line: encodable, and cut after `limit` characters (the API may send a
    megabyte)."""
    text = as_text(text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def storage_json(value: Any, **dumps_options: Any) -> bytes:
    """`value` as UTF-8 JSON for a file scanarr keeps, readable (non-ASCII as is) and exact: a
    surrogate is written as its ``\\uXXXX`` escape, which `json.loads` turns back into it."""
    text = json.dumps(value, ensure_ascii=False, **dumps_options)
    return _SURROGATES.sub(lambda match: f"\\u{ord(match.group()):04x}", text).encode("utf-8")


def _config_path() -> Any:
    return attrs.field(metadata={_STRING_KIND: "config_path"})


def _command_path() -> Any:
    return attrs.field(metadata={_STRING_KIND: "command_path"})


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


AuthStatus = Literal["authenticated", "rejected"]


@attrs.frozen
class WatcherAuth(Message):
    TYPE: ClassVar[str] = "watcher.auth"
    status: AuthStatus
    watcher_id: str | None = None
    watcher_name: str | None = None
    reason: str | None = None


@attrs.frozen
class WatchPath:
    id: str
    path: str = _config_path()
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
    """One media file of a scan. The scan's fast path renders it natively: the fields of
    `SCAN_FILE_SCAN_FIELDS` once per scan in Python, the rest per file in Rust
    (``_native.SCAN_FILE_FIELDS``); a test checks that both lists make these fields, in order."""

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


# The members of a scan.file's data that are the same for every file of a scan.
SCAN_FILE_SCAN_FIELDS: tuple[str, ...] = ("scan_id", "volume_id", "volume_path")


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


class ScanFailedReason(str, enum.Enum):
    """The fixed `scan.failed` reasons (the others are a failure's own text, ``summary: detail``);
    the V1.5 dialect tells a refused request (a warning) from a failed scan by them."""

    UNKNOWN_VOLUME = "unknown_volume"
    COALESCED = "coalesced: another scan of this volume is already waiting to run"


@attrs.frozen
class ScanFailed(Message):
    TYPE: ClassVar[str] = "scan.failed"
    scan_id: str
    volume_id: str
    reason: str


# --- live events (§4, §6) -----------------------------------------------------------------


@attrs.frozen
class FileState(Message):
    """The fields of `file.created`, which `file.modified` carries too (§4)."""

    volume_id: str
    relative_path: str
    filename: str
    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int


@attrs.frozen
class FileCreated(FileState):
    TYPE: ClassVar[str] = "file.created"


@attrs.frozen
class FileModified(FileState):
    TYPE: ClassVar[str] = "file.modified"


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
WatcherStatusName = Literal["watching", "scanning", "degraded"]


@attrs.frozen
class VolumeStatus:
    id: str
    path: str
    status: VolumeStatusName


@attrs.frozen
class WatcherStatus(Message):
    TYPE: ClassVar[str] = "watcher.status"
    status: WatcherStatusName
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
class DeletionMessage(Message):
    """The fields every message of a deletion or hardlink request starts with (§7): the request
    it is or answers, and the deletion it belongs to."""

    request_id: str
    deletion_id: str


@attrs.frozen
class DeletePath:
    volume_path: str = _command_path()
    relative_path: str = _command_path()


@attrs.frozen
class DeleteFile:
    media_file_id: str
    paths: list[DeletePath]
    inode: int | None = None
    device_id: int | None = None


@attrs.frozen
class CommandFilesDelete(DeletionMessage):
    TYPE: ClassVar[str] = "command.files.delete"
    files: list[DeleteFile]


@attrs.frozen
class FilesDeleteProgress(DeletionMessage):
    TYPE: ClassVar[str] = "files.delete.progress"
    media_file_id: str
    paths_deleted: int
    paths_failed: int
    dirs_removed: int


@attrs.frozen
class DeleteResult:
    media_file_id: str
    status: Literal["deleted", "failed"]
    paths_deleted: int
    dirs_removed: int
    size_bytes: int
    freed_bytes: int
    error: str | None = None


class MediaFileOutcome(typing.Protocol):
    """One media file's result in a deletion's completion, in either dialect."""

    @property
    def status(self) -> Literal["deleted", "failed"]: ...

    @property
    def dirs_removed(self) -> int: ...


class DeletionCounts(typing.TypedDict):
    """The counts both dialects' deletion completions carry (keyword arguments of either)."""

    deleted: int
    failed: int
    dirs_removed: int


def deletion_counts(results: typing.Sequence[MediaFileOutcome]) -> DeletionCounts:
    """Every media file of a completion is deleted or failed; what is not deleted failed."""
    deleted = sum(1 for result in results if result.status == "deleted")
    return DeletionCounts(
        deleted=deleted,
        failed=len(results) - deleted,
        dirs_removed=sum(result.dirs_removed for result in results),
    )


@attrs.frozen
class FilesDeleteCompleted(DeletionMessage):
    TYPE: ClassVar[str] = "files.delete.completed"
    total_media_files: int
    deleted: int
    failed: int
    total_paths_deleted: int
    dirs_removed: int
    freed_bytes: int
    results: list[DeleteResult]
    # "completed": the command was carried out and `results` says how each media file went
    # (refusals included); "failed": it could not be carried out at all (malformed, not
    # supported, internal error) and `error` says why.
    status: Literal["completed", "failed"] = "completed"
    error: str | None = None


@attrs.frozen
class CommandFilesHardlink(DeletionMessage):
    TYPE: ClassVar[str] = "command.files.hardlink"
    source_volume_path: str = _command_path()
    source_relative_path: str = _command_path()
    target_volume_path: str = _command_path()
    target_relative_path: str = _command_path()


@attrs.frozen
class FilesHardlinkCompleted(DeletionMessage):
    TYPE: ClassVar[str] = "files.hardlink.completed"
    status: Literal["created", "failed"]
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


def strict_scalar(expected: type) -> Any:
    """Structure hook that refuses silent coercion ("12" is not an int, 1 is not a str)."""

    def hook(value: Any, _type: Any) -> Any:
        # bool is a subclass of int, but `true` is never a valid inode or count.
        if type(value) is not expected and not (expected is float and type(value) is int):
            raise TypeError(f"expected {expected.__name__}, got {type(value).__name__}")
        return value

    return hook


_check_str = strict_scalar(str)


def _structure_text(value: Any, _type: Any) -> str:
    text: str = _check_str(value, str)
    return as_text(text)


def _structure_config_path(value: Any, _type: Any) -> str:
    path: str = _check_str(value, str)
    if not is_text(path):
        raise ValueError("the path is not valid Unicode text (it holds a lone surrogate)")
    return path


def _structure_command_path(value: Any, _type: Any) -> str:
    path: str = _check_str(value, str)
    return path if is_text(path) else _SURROGATES.sub(_UNNAMEABLE, path)


_PATH_HOOKS = {"config_path": _structure_config_path, "command_path": _structure_command_path}


def _path_fields(cls: Any) -> dict[str, str]:
    if not attrs.has(cls):
        return {}
    return {
        field.name: field.metadata[_STRING_KIND]
        for field in attrs.fields(cls)
        if _STRING_KIND in field.metadata
    }


def _structure_object(cls: Any) -> Any:
    """Models only from a JSON object, with the path fields' own hooks."""
    overrides: dict[str, Any] = {
        name: override(struct_hook=_PATH_HOOKS[kind]) for name, kind in _path_fields(cls).items()
    }
    fields = make_dict_structure_fn(cls, converter, **overrides)

    def hook(value: Any, _type: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return fields(value, _type)

    return hook


def _is_list_type(type_: Any) -> bool:
    return typing.get_origin(type_) is list


def _strict_list(type_: Any) -> Any:
    """A list only from a JSON array: cattrs would take any iterable, and ``"files": ""`` or
    ``{}`` would read as "no files", a silent success."""
    items = list_structure_factory(type_, converter)

    def hook(value: Any, _type: Any) -> Any:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return items(value, _type)

    return hook


converter = cattrs.Converter(forbid_extra_keys=False)
for _scalar in (int, bool, float):
    converter.register_structure_hook(_scalar, strict_scalar(_scalar))
converter.register_structure_hook(str, _structure_text)
converter.register_structure_hook_factory(_is_list_type, _strict_list)
converter.register_structure_hook_factory(attrs.has, _structure_object)


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


def _format_error(error: BaseException, type_: Any) -> str:
    # The hooks above say what is wrong in their own words ("expected int, got str").
    if isinstance(error, (TypeError, ValueError)) and not isinstance(
        error, cattrs.BaseValidationError
    ):
        text = str(error)
        if text:
            return text
    return format_exception(error, type_)


def describe_error(error: BaseException) -> str:
    """Readable text for a structuring error (one note per bad field, with its path)."""
    if isinstance(error, cattrs.ClassValidationError):
        notes = cattrs.transform_error(error, format_exception=_format_error)
        return "; ".join(notes) if notes else str(error)
    return str(error)


def envelope_parts(text: str | bytes) -> tuple[str, Any]:
    """(type, data) of one frame of either dialect, ``data`` as sent (``{}`` when absent).
    Raises MalformedMessage when the frame is not a JSON object with a string ``type``."""
    try:
        envelope = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedMessage(f"not JSON: {error}") from None
    except RecursionError:  # "[[[[…" nested deeper than the parser's stack
        raise MalformedMessage("not JSON: nested too deeply") from None
    if not isinstance(envelope, dict):
        raise MalformedMessage("frame is not a JSON object")
    message_type = envelope.get("type")
    if not isinstance(message_type, str):
        raise MalformedMessage("missing or non-string 'type'")
    return message_type, envelope.get("data", {})


def decode(text: str | bytes) -> Message:
    """Parse one frame. Raises UnknownMessageType or MalformedMessage."""
    message_type, data = envelope_parts(text)
    message_type = as_text(message_type)
    request_id = data.get("request_id") if isinstance(data, dict) else None
    request_id = as_text(request_id) if isinstance(request_id, str) else None
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
            describe_error(error), message_type=message_type, request_id=request_id
        ) from None


def unstructure(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = converter.unstructure(message)
    return data


def encode(message: Message, timestamp: str | None = None) -> str:
    """One frame's text for `message`, stamped now unless `timestamp` is given. Always valid
    UTF-8: a surrogate still in the message (an echoed command path) goes out as U+FFFD."""
    text = json.dumps(
        {
            "type": message.TYPE,
            "timestamp": timestamp or utc_timestamp(),
            "data": unstructure(message),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return text if text.isascii() else as_text(text)


# `encode`'s envelope, for texts rendered without it (the scan's native frames) and read back
# (metrics counts frames by type): {"type":"…","timestamp":"…","data":{…}}.
_TYPE_HEAD = '{"type":"'


def frame_head(message_type: str, timestamp: str) -> str:
    """What `encode` writes before the data object of a `message_type` stamped `timestamp`
    (both plain ASCII: a ``TYPE`` and a `utc_timestamp`); the frame then ends with ``}``."""
    return _TYPE_HEAD + message_type + '","timestamp":"' + timestamp + '","data":'


def frame_type(text: str) -> str:
    """The type of a frame rendered by `encode` or after `frame_head`; "unknown" otherwise."""
    if text.startswith(_TYPE_HEAD):
        end = text.find('"', len(_TYPE_HEAD))
        if end > 0:
            return text[len(_TYPE_HEAD) : end]
    return "unknown"
