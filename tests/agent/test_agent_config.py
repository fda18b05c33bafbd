"""Config apply and hot reload (PROTOCOL.md §3), persisted in the state file (§8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio

from helpers.agent import one_volume, scan_completed, serve_known, start_stalled_big_scan
from scanarr.dev_api import DevApiServer, ReceivedMessage
from scanarr.protocol import CommandScan, WatcherConfig, WatchPath
from scanarr.state import load_state


def _files_of(server: DevApiServer, scan_id: str) -> set[str]:
    """The files of the last run of a scan (a restarted scan reuses its scan_id)."""
    messages = [m for m in server.messages if m.data.get("scan_id") == scan_id]
    last_start = max(i for i, m in enumerate(messages) if m.type == "scan.started")
    return {m.data["relative_path"] for m in messages[last_start:] if m.type == "scan.file"}


def _movies_and_series(movies: Path, series: Path, **options: Any) -> WatcherConfig:
    """A config of the volumes "movies" and "series" (`options`: its other fields)."""
    paths = [WatchPath(id="movies", path=str(movies)), WatchPath(id="series", path=str(series))]
    return WatcherConfig(watch_paths=paths, **options)


async def _added_volume_scanned(
    server: DevApiServer, volume_id: str, root: Path
) -> ReceivedMessage:
    """Send the config in force plus the volume `volume_id` at `root`, and wait (10 s at most)
    for the scan.completed of the scan that adding it starts."""
    added = WatchPath(id=volume_id, path=str(root))
    await server.send_config(
        attrs.evolve(server.config, watch_paths=[*server.config.watch_paths, added])
    )
    with trio.fail_after(10):
        return await server.wait_for_type("scan.completed", volume_id=volume_id)


async def test_first_config_with_scan_on_start_scans_and_is_persisted(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1, "b.mp4": 2})
    dev_api.config = WatcherConfig(
        watch_paths=[WatchPath(id="movies", path=str(movies), name="Films")],
        scan_extensions=["mkv"],
        scan_on_start=True,
    )
    await start_watcher()
    with trio.fail_after(10):
        completed = await dev_api.wait_for_type("scan.completed", volume_id="movies")
    assert _files_of(dev_api, completed.data["scan_id"]) == {"a.mkv"}
    assert load_state(str(state_file)).last_config == dev_api.config
    # Scanned once: by scan_on_start, not again as a volume new to the state file.
    await scan_completed(dev_api, "movies", "probe")
    assert len(dev_api.of_type("scan.started")) == 2


async def test_first_config_without_scan_on_start_scans_nothing_even_with_a_fresh_state(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    """§3: the first config after start is governed by scan_on_start alone, even for volumes
    the (here missing) state file never saw; a volume a later config adds is scanned."""
    movies = make_volume("movies", {"a.mkv": 1})
    series = make_volume("series", {"b.mkv": 1})
    dev_api.config = _movies_and_series(movies, series, scan_on_start=False)
    assert not state_file.exists()
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("watcher.status")
    await scan_completed(dev_api, "movies", "probe")
    assert [m.data["scan_id"] for m in dev_api.of_type("scan.started")] == ["probe"]
    assert load_state(str(state_file)).last_config == dev_api.config
    # A later config that adds a volume scans it, whatever scan_on_start says.
    added = make_volume("added", {"c.mkv": 1})
    completed = await _added_volume_scanned(dev_api, "added", added)
    assert _files_of(dev_api, completed.data["scan_id"]) == {"c.mkv"}
    assert {m.data["volume_id"] for m in dev_api.of_type("scan.started")} == {"movies", "added"}


async def test_known_volumes_are_not_rescanned_at_start(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    serve_known(dev_api, state_file, one_volume("movies", movies))
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("watcher.status")
    await scan_completed(dev_api, "movies", "probe")
    assert [m.data["scan_id"] for m in dev_api.of_type("scan.started")] == ["probe"]


async def test_scan_on_start(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    series = make_volume("series", {"b.mkv": 1})
    serve_known(dev_api, state_file, _movies_and_series(movies, series, scan_on_start=True))
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="movies")
        await dev_api.wait_for_type("scan.completed", volume_id="series")
    # A config pushed later with scan_on_start does not scan again: it applies at start only.
    await dev_api.send_config(attrs.evolve(dev_api.config, disable_deletion=True))
    await scan_completed(dev_api, "movies", "probe")
    assert len(dev_api.of_type("scan.started")) == 3


async def test_hot_reload_add_and_remove(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    series = make_volume("series", {"s/e1.mkv": 1, "s/e2.mkv": 1})
    dev_api.config = one_volume("movies", movies, scan_on_start=True)
    agent = await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="movies")
    # Add a volume: it is scanned.
    completed = await _added_volume_scanned(dev_api, "series", series)
    assert _files_of(dev_api, completed.data["scan_id"]) == {"s/e1.mkv", "s/e2.mkv"}
    # Remove the first: it disappears from the status, a scan of it is an unknown volume.
    await dev_api.send_config(
        attrs.evolve(dev_api.config, watch_paths=[WatchPath(id="series", path=str(series))])
    )
    with trio.fail_after(10):
        await dev_api.wait_for(
            lambda m: (
                m.type == "watcher.status" and [v["id"] for v in m.data["volumes"]] == ["series"]
            )
        )
    await dev_api.send(CommandScan(volume_id="movies", scan_id="gone"))
    with trio.fail_after(10):
        failed = await dev_api.wait_for_type("scan.failed", scan_id="gone")
    assert failed.data["reason"] == "unknown_volume"
    assert [v.id for v in agent.volumes.ordered()] == ["series"]
    state = load_state(str(state_file))
    assert state.last_config == dev_api.config
    assert set(state.volume_devices) == {"series"}


async def test_removing_a_volume_cancels_its_scan(
    tight_dev_api: DevApiServer, start_watcher: Any, big_tree: Path, state_file: Path
) -> None:
    server = tight_dev_api
    await start_stalled_big_scan(server, start_watcher, big_tree, state_file, "r-1")
    await server.send_config(attrs.evolve(server.config, watch_paths=[]))
    server.resume_reading()
    with trio.fail_after(30):
        failed = await server.wait_for_type("scan.failed", scan_id="r-1")
    assert "removed" in failed.data["reason"]
    assert not server.of_type("scan.completed", scan_id="r-1")
    # The cancelled walk stopped early: far fewer than the 25,000 files were sent.
    assert len(server.of_type("scan.file", scan_id="r-1")) < 25_000


async def test_extension_change_rescans_every_volume(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    movies = make_volume("movies", {"a.mkv": 1, "b.mp4": 1, "c.avi": 1})
    series = make_volume("series", {"d.mkv": 1, "e.mp4": 1})
    dev_api.config = _movies_and_series(movies, series, scan_on_start=True, scan_extensions=["mkv"])
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="movies")
        await dev_api.wait_for_type("scan.completed", volume_id="series")
    await dev_api.send_config(attrs.evolve(dev_api.config, scan_extensions=["MKV", "mp4"]))
    with trio.fail_after(10):
        movies_again = await dev_api.wait_for_type("scan.completed", volume_id="movies", count=2)
        series_again = await dev_api.wait_for_type("scan.completed", volume_id="series", count=2)
    assert _files_of(dev_api, movies_again.data["scan_id"]) == {"a.mkv", "b.mp4"}
    assert _files_of(dev_api, series_again.data["scan_id"]) == {"d.mkv", "e.mp4"}


async def test_path_change_rescans_the_new_path(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    old = make_volume("old", {"old.mkv": 1})
    new = make_volume("new", {"new.mkv": 1})
    dev_api.config = one_volume("v", old, scan_on_start=True)
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="v")
    await dev_api.send_config(one_volume("v", new))
    with trio.fail_after(10):
        again = await dev_api.wait_for_type("scan.completed", volume_id="v", count=2)
    assert _files_of(dev_api, again.data["scan_id"]) == {"new.mkv"}
    started = dev_api.of_type("scan.started", scan_id=again.data["scan_id"])
    assert started[-1].data["volume_path"] == str(new)


async def test_bad_config_keeps_the_previous_one(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    dev_api.config = one_volume("movies", movies, scan_on_start=True)
    agent = await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="movies")
    await dev_api.send({"type": "watcher.config", "data": {"watch_paths": "everything"}})
    await dev_api.send(
        WatcherConfig(watch_paths=[WatchPath(id="x", path="/a"), WatchPath(id="x", path="/b")])
    )
    await dev_api.send(WatcherConfig(watch_paths=[WatchPath(id="rel", path="relative/dir")]))
    await dev_api.send(WatcherConfig(watch_paths=[WatchPath(id="nul", path="/a\0b")]))
    await scan_completed(dev_api, "movies", "still")
    assert [volume.id for volume in agent.volumes.ordered()] == ["movies"]
    assert load_state(str(state_file)).last_config == dev_api.config
