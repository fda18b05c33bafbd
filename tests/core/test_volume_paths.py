"""Nested volumes with a root reached through a symlink: scans and live watching agree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from scanarr.dev_api import DevApiServer
from scanarr.protocol import CommandScanAll, WatcherConfig, WatchPath
from scanarr.volume_paths import nested_roots


def test_a_root_through_a_symlink_contains_the_target_s_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "media" / "tv").mkdir(parents=True)
    os.symlink(tmp_path / "media", tmp_path / "link")
    os.symlink(tmp_path / "media" / "tv", tmp_path / "tv-link")
    link, media = str(tmp_path / "link"), str(tmp_path / "media")
    # Spelled under the root as given, so a walk from that root meets it.
    assert nested_roots(link, [str(tmp_path / "media" / "tv")]) == [f"{link}/tv"]
    assert nested_roots(media, [str(tmp_path / "tv-link")]) == [f"{media}/tv"]
    # One directory by two names is not nested in itself; siblings are not nested.
    assert nested_roots(link, [media, str(tmp_path / "other")]) == []


async def test_a_nested_volume_under_a_symlinked_root_is_scanned_once(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, tmp_path: Path
) -> None:
    root = make_volume("media", {"movie.mkv": 1, "tv/show.mkv": 1, "tv/s1/e1.mkv": 1})
    os.symlink(root, tmp_path / "media-link")
    dev_api.config = WatcherConfig(
        watch_paths=[
            WatchPath(id="media", path=str(tmp_path / "media-link")),
            WatchPath(id="tv", path=str(root / "tv")),
        ]
    )
    await start_watcher()
    await dev_api.send(CommandScanAll(scan_id="n"))
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", scan_id="n", volume_id="media")
        await dev_api.wait_for_type("scan.completed", scan_id="n", volume_id="tv")
    by_volume: dict[str, set[str]] = {"media": set(), "tv": set()}
    for message in dev_api.of_type("scan.file", scan_id="n"):
        by_volume[message.data["volume_id"]].add(message.data["relative_path"])
    assert by_volume == {"media": {"movie.mkv"}, "tv": {"show.mkv", "s1/e1.mkv"}}
