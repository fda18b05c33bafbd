"""The state file (PROTOCOL.md §8): atomic, private, and never fatal when damaged."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from scanarr.protocol import WatcherConfig, WatchPath
from scanarr.state import WatcherState, load_state, save_state


def _state() -> WatcherState:
    return WatcherState(
        last_config=WatcherConfig(
            watch_paths=[WatchPath(id="v1", path="/data/movies", name="Films")],
            scan_extensions=["mkv", "MP4"],
            scan_on_start=True,
        ),
        last_scan_timestamps={"v1": "2026-02-28T10:00:00.000Z"},
        volume_devices={"v1": 2049},
    )


def test_round_trip_and_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "watcher-state.json"
    save_state(str(path), _state())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_state(str(path))
    assert loaded == _state()
    assert loaded.last_config is not None
    assert loaded.last_config.scan_extensions == ["mkv", "mp4"]
    document = json.loads(path.read_text())
    assert set(document) == {"last_config", "last_scan_timestamps", "volume_devices"}
    assert document["volume_devices"] == {"v1": 2049}


def test_save_replaces_without_leaving_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "watcher-state.json"
    path.write_text("old content")
    path.chmod(0o644)
    inode_before = path.stat().st_ino
    save_state(str(path), _state())
    assert load_state(str(path)) == _state()
    # A new file renamed over the old one (atomic), not the old one rewritten in place.
    assert path.stat().st_ino != inode_before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["watcher-state.json"]


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "watcher-state.json"
    save_state(str(path), _state())
    broken = WatcherState(last_scan_timestamps={"v1": object()})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        save_state(str(path), broken)
    assert load_state(str(path)) == _state()
    assert sorted(os.listdir(tmp_path)) == ["watcher-state.json"]


def test_missing_file_gives_empty_state_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        state = load_state(str(tmp_path / "absent.json"))
    assert state == WatcherState()
    assert "does not exist" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b"\xff\xfe",
        b'{"last_config": {"watch_paths": "nope"}}',
        b'{"volume_devices": {"v1": "2049"}}',
        b'{"last_scan_timestamps": []}',
    ],
)
def test_corrupt_file_gives_empty_state_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "watcher-state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        state = load_state(str(path))
    assert state == WatcherState()
    assert "corrupt" in caplog.text


def test_any_string_is_saved_and_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "watcher-state.json"
    state = WatcherState(
        last_config=WatcherConfig(watch_paths=[WatchPath(id="v\ud800", path="/data/é")]),
        last_scan_timestamps={"v\ud800": "2026-02-28T10:00:00.000Z"},
        volume_devices={"v\udc80\0": 1},
    )
    save_state(str(path), state)
    raw = path.read_bytes()
    raw.decode("utf-8")  # strict: a valid UTF-8 file
    assert "/data/é".encode() in raw
    loaded = load_state(str(path))
    assert loaded.volume_devices == {"v\udc80\0": 1}
    assert loaded.last_scan_timestamps == {"v\ud800": "2026-02-28T10:00:00.000Z"}
