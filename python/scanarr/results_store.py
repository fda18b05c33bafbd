"""The replies of past file commands, kept so a re-sent ``request_id`` is replayed (PROTOCOL.md §7).

One JSON file beside the state file, ``{"results": [entry, ...]}`` oldest first, rewritten whole by
`scanarr.atomic.atomic_write` (mode 0600) after each command. An entry is
``{"type", "request_id", "reply"}`` plus, for a deletion, ``"progress"`` (the progress messages,
replayed before the reply).

Every entry is checked when the file is loaded: its reply (and progress) must be valid messages
of its command's reply type. A bad entry is dropped and logged — replaying it would fail on every
re-send — and the others stay. What is stored is what can be sent: strings that UTF-8 cannot carry
are replaced by U+FFFD before the entry is kept.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections import OrderedDict
from typing import Any

from scanarr.atomic import atomic_write
from scanarr.protocol import (
    CommandFilesDelete,
    CommandFilesHardlink,
    FilesDeleteCompleted,
    FilesDeleteProgress,
    FilesHardlinkCompleted,
    Message,
    as_text,
    converter,
    describe_error,
    storage_json,
)

log = logging.getLogger(__name__)

# Command type → (reply model, progress model or None).
_REPLY_MODELS: dict[str, tuple[type[Message], type[Message] | None]] = {
    CommandFilesDelete.TYPE: (FilesDeleteCompleted, FilesDeleteProgress),
    CommandFilesHardlink.TYPE: (FilesHardlinkCompleted, None),
}
_LOGGED_BAD_ENTRIES = 5  # a file full of bad entries is summarised, not logged line by line


def _as_text_everywhere(value: Any) -> Any:
    if isinstance(value, str):
        return as_text(value)
    if isinstance(value, list):
        return [_as_text_everywhere(item) for item in value]
    if isinstance(value, dict):
        return {as_text(str(key)): _as_text_everywhere(item) for key, item in value.items()}
    return value


def _entry_problem(entry: Any) -> str | None:
    """Why `entry` cannot be replayed, or None when it can."""
    if not isinstance(entry, dict):
        return "not an object"
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in _REPLY_MODELS:
        return f"unknown command type {kind!r}"
    if not isinstance(entry.get("request_id"), str):
        return "no request_id"
    reply_model, progress_model = _REPLY_MODELS[kind]
    try:
        converter.structure(entry.get("reply"), reply_model)
        if progress_model is not None:
            progress = entry.get("progress")
            if not isinstance(progress, list):
                return "no progress list"
            for message in progress:
                converter.structure(message, progress_model)
    except Exception as error:  # cattrs raises several kinds; all mean "cannot be replayed"
        return f"not a valid stored reply ({describe_error(error)})"
    return None


class ResultStore:
    """Replies by (command type, request_id), oldest first, persisted to `path` (None: memory)."""

    def __init__(self, path: pathlib.Path | None, max_results: int) -> None:
        self._path = path
        self._max_results = max_results
        self._entries: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        if path is not None:
            self._load(path)

    def _load(self, path: pathlib.Path) -> None:
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
            log.warning("ignoring unreadable command results %s: %s", path, error)
            return
        entries = document.get("results") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            log.warning("ignoring command results %s: no list of results", path)
            return
        dropped = 0
        for number, entry in enumerate(entries, 1):
            problem = _entry_problem(entry)
            if problem is not None:
                dropped += 1
                if dropped <= _LOGGED_BAD_ENTRIES:
                    log.warning(
                        "dropping stored command result %d of %s: %s", number, path, problem
                    )
                continue
            key = (entry["type"], as_text(entry["request_id"]))
            self._entries.pop(key, None)
            self._entries[key] = _as_text_everywhere(entry)
        if dropped:
            log.warning(
                "dropped %d of %d stored command results in %s: those requests, if re-sent, "
                "are carried out again",
                dropped,
                len(entries),
                path,
            )
        while len(self._entries) > self._max_results:
            self._entries.popitem(last=False)

    def get(self, kind: str, request_id: str) -> dict[str, Any] | None:
        return self._entries.get((kind, as_text(request_id)))

    def put(self, kind: str, request_id: str, entry: dict[str, Any]) -> None:
        stored = _as_text_everywhere({**entry, "type": kind, "request_id": request_id})
        key = (kind, stored["request_id"])
        self._entries[key] = stored
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_results:
            self._entries.popitem(last=False)
        if self._path is not None:
            try:
                atomic_write(
                    self._path,
                    storage_json({"results": list(self._entries.values())}, separators=(",", ":")),
                    0o600,
                )
            except OSError as error:
                log.error("cannot save command results to %s: %s", self._path, error)
