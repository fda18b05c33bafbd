"""The watcher's persisted state (PROTOCOL.md §8).

``{last_config, last_scan_timestamps: {volume_id: RFC3339}, volume_devices: {volume_id: st_dev}}``
as JSON at ``SCANARR_STATE_FILE``. Written atomically by `scanarr.atomic.atomic_write` (temporary
file beside it, ``fsync``, ``rename``, ``fsync`` of the directory; nothing left on failure) with
mode 0600, because the config names every volume on the host. Any string can be saved (a lone
surrogate is written as its JSON escape), so saving fails only on a file-system error. A
missing or unreadable file is not fatal: the watcher starts empty and says so.

Both functions block on disk I/O; the agent calls them through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs

from scanarr.atomic import atomic_write
from scanarr.protocol import MalformedMessage, WatcherConfig, converter, storage_json

log = logging.getLogger(__name__)


@attrs.define
class WatcherState:
    last_config: WatcherConfig | None = None
    last_scan_timestamps: dict[str, str] = attrs.field(factory=dict)
    volume_devices: dict[str, int] = attrs.field(factory=dict)
    # Top-level keys this module does not own (the V1.5 dialect's identity and token, a Go
    # watcher's own fields), kept as found so that rewriting the file loses none of them.
    extra: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "last_config": (
                None if self.last_config is None else converter.unstructure(self.last_config)
            ),
            "last_scan_timestamps": dict(self.last_scan_timestamps),
            "volume_devices": dict(self.volume_devices),
        }


def _state_from_json(document: Any) -> WatcherState:
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    config_data = document.get("last_config")
    last_config = None
    if config_data is not None:
        try:
            last_config = converter.structure(config_data, WatcherConfig)
        except Exception as error:
            raise ValueError(f"last_config is not a valid watcher.config: {error}") from None
    timestamps = document.get("last_scan_timestamps")
    devices = document.get("volume_devices")
    timestamps = {} if timestamps is None else timestamps
    devices = {} if devices is None else devices
    if not isinstance(timestamps, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in timestamps.items()
    ):
        raise ValueError("last_scan_timestamps is not an object of strings")
    if not isinstance(devices, dict) or not all(
        isinstance(key, str) and type(value) is int for key, value in devices.items()
    ):
        raise ValueError("volume_devices is not an object of integers")
    extra = {key: value for key, value in document.items() if key not in _OWN_KEYS}
    return WatcherState(last_config, dict(timestamps), dict(devices), extra)


_OWN_KEYS = frozenset(("last_config", "last_scan_timestamps", "volume_devices"))


def load_state(path: str) -> WatcherState:
    """The state at `path`, or an empty state (with a warning) when it is missing or corrupt."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        log.warning("state file %s does not exist yet; starting with an empty state", path)
        return WatcherState()
    except OSError as error:
        log.warning("cannot read state file %s (%s); starting with an empty state", path, error)
        return WatcherState()
    try:
        return _state_from_json(json.loads(raw))
    except (ValueError, UnicodeDecodeError, MalformedMessage) as error:
        log.warning("state file %s is corrupt (%s); starting with an empty state", path, error)
        return WatcherState()


def save_state(path: str, state: WatcherState) -> None:
    """Replace the file at `path` with `state`, atomically, mode 0600. Raises OSError; no
    string makes it fail."""
    data = storage_json(state.to_json(), indent=2, sort_keys=True) + b"\n"
    atomic_write(path, data, 0o600)
