"""The agent built with its services as constructor arguments (as `scanarr watch` builds it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from helpers.agent import watcher_settings
from helpers.events import created
from scanarr.agent import WatcherAgent
from scanarr.dev_api import DevApiServer
from scanarr.offline_queue import OfflineQueue
from scanarr.protocol import WatcherConfig, WatchPath


async def test_volumes_the_offline_queue_could_not_keep_are_rescanned_after_its_replay(
    nursery: trio.Nursery, dev_api: DevApiServer, make_volume: Any, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": b"1"})
    shows = make_volume("shows", {"b.mkv": b"2"})
    dev_api.config = WatcherConfig(
        watch_paths=[
            WatchPath(id="movies", path=str(movies)),
            WatchPath(id="shows", path=str(shows)),
        ],
        scan_on_start=False,  # only the queue's overflow asks for a scan
    )
    queue = OfflineQueue(tmp_path / "queue.jsonl", max_events=1)
    queue.put(created("movies", "a.mkv"))
    assert not queue.put(created("movies", "c.mkv"))  # overflow: movies needs a rescan
    queue.put(created("shows", "b.mkv"))
    agent = WatcherAgent(
        watcher_settings(dev_api.url, tmp_path / "state.json"), offline_store=queue
    )
    await nursery.start(agent.run)
    with trio.fail_after(10):
        completed = await dev_api.wait_for_type("scan.completed", volume_id="movies")
    assert completed.data["total_files"] == 1
    assert [m.data["relative_path"] for m in dev_api.of_type("file.created")] == ["b.mkv"]
    assert dev_api.of_type("scan.started", volume_id="shows") == []
    assert queue.pending == 0
