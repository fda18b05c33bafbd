"""Scans and live events in the V1.5 dialect: absolute paths, totals, what the server keeps."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import trio

from scanarr.agent.volumes import normalise_root
from scanarr.offline_queue import queue_path_for
from v15_support import approved_watch, go_environment, serve_v15, stop_watch


async def test_scans_report_absolute_paths_and_totals_and_live_events_follow(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"Film (2020)/film.mkv": 5, "b.iso": 7, "notes.nfo": 1})
    torrents = make_volume("torrents", {"film.mkv": 5})
    missing = tmp_path / "unmounted"
    api = await serve_v15(nursery, watch_paths=[f"{movies}/", str(torrents), str(missing)])
    log = tmp_path / "watch.log"
    process = await approved_watch(nursery, api, go_environment(api.url, state_file), log)
    try:
        with trio.fail_after(20):
            completed = await api.wait_for_type("scan.completed", path=str(movies))
            await api.wait_for_type("scan.completed", path=str(torrents))
            failure = await api.wait_for_type("watcher.log", level="error")
        # The Go watcher's extensions, iso included; metadata is not media.
        assert set(api.files) == {
            f"{movies}/Film (2020)/film.mkv",
            f"{movies}/b.iso",
            f"{torrents}/film.mkv",
        }
        row = api.files[f"{movies}/Film (2020)/film.mkv"]
        status = os.lstat(movies / "Film (2020)" / "film.mkv")
        assert (row["name"], row["size_bytes"], row["inode"], row["device_id"]) == (
            "film.mkv",
            5,
            status.st_ino,
            status.st_dev,
        )
        assert row["is_dir"] is False
        assert completed.data["total_files"] == 2
        assert completed.data["total_size_bytes"] == 12
        assert (
            completed.data["scan_id"]
            == api.of_type("scan.started", path=str(movies))[0].data["scan_id"]
        )
        # A scan that cannot run reaches the operator as watcher.log (there is no scan.failed).
        assert str(missing) in failure.data["message"]
        assert api.of_type("scan.failed") == []
        for message in api.messages:
            if message.type == "watcher.hello":
                continue  # the first one is the V2 hello that found out the dialect
            assert "volume_id" not in message.data
            assert "timestamp" not in json.loads(message.raw)

        (movies / "new.mkv").write_bytes(b"abc")
        with trio.fail_after(20):
            created = await api.wait_for_type("file.created", path=f"{movies}/new.mkv")
        assert created.data["name"] == "new.mkv"
        assert created.data["size_bytes"] == 3
        os.rename(movies / "new.mkv", movies / "Film (2020)" / "renamed.mkv")
        with trio.fail_after(20):
            await api.wait_for_type("file.renamed", old_path=f"{movies}/new.mkv")
        (movies / "Film (2020)" / "renamed.mkv").unlink()
        with trio.fail_after(20):
            await api.wait_for_type("file.deleted", path=f"{movies}/Film (2020)/renamed.mkv")
        assert f"{movies}/Film (2020)/renamed.mkv" not in api.files

        with trio.fail_after(20):
            status_message = await api.wait_for_type("watcher.status")
        assert status_message.data["watcher_id"] == "nas-1"
        assert (
            status_message.data["config_hash"]
            == api._config_of(api.watchers["nas-1"])["config_hash"]
        )
        assert set(status_message.data["watched_paths"]) == {
            normalise_root(str(movies)),
            str(torrents),
            str(missing),
        }

        # command.scan names a path; a scan of a path inside a volume scans the whole volume,
        # so the scan.completed that follows wipes nothing the volume still has.
        scan_id = await api.scan(f"{movies}/Film (2020)")
        with trio.fail_after(20):
            rescan = await api.wait_for_type("scan.completed", scan_id=scan_id)
        assert rescan.data["path"] == str(movies)
        assert f"{movies}/b.iso" in api.files
    finally:
        await stop_watch(process)


async def test_live_events_while_the_server_is_away_arrive_after_reconnecting(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    api = await serve_v15(nursery, watch_paths=[str(movies)])
    log = tmp_path / "watch.log"
    process = await approved_watch(nursery, api, go_environment(api.url, state_file), log)
    try:
        with trio.fail_after(20):
            await api.wait_for_type("scan.completed", path=str(movies))
        api.accepting = False
        await api.drop_all()
        (movies / "offline.mkv").write_bytes(b"abcd")
        queue = queue_path_for(state_file)
        with trio.fail_after(20):
            while not (queue.exists() and "offline.mkv" in queue.read_text()):
                await trio.sleep(0.05)
        api.accepting = True
        with trio.fail_after(20):
            created = await api.wait_for_type("file.created", path=f"{movies}/offline.mkv")
    finally:
        await stop_watch(process)
    assert created.data["size_bytes"] == 4
    assert created.connection != api.of_type("watcher.hello")[0].connection
    assert f"{movies}/offline.mkv" in api.files
