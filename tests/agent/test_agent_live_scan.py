"""Live events while a volume is being scanned (PROTOCOL.md §5), through the real agent.

A live event of a scanned volume goes out as itself and, for a file that exists, also as
``scan.file`` of the running scan — and never as a message of a scan that already ended.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from helpers.agent import one_volume, serve_known, start_stalled_big_scan
from helpers.events import created_on_disk
from scanarr.dev_api import DevApiServer, ReceivedMessage
from scanarr.protocol import CommandScan, FileCreated, FileDeleted


def _created(root: Path, relative_path: str, volume_id: str = "big") -> FileCreated:
    return created_on_disk(root, relative_path, volume_id)


def _index(server: DevApiServer, message: ReceivedMessage) -> int:
    return next(i for i, seen in enumerate(server.messages) if seen is message)


async def test_a_live_event_during_a_scan_is_sent_as_itself_and_as_scan_file(
    tight_dev_api: DevApiServer, start_watcher: Any, big_tree: Path, state_file: Path
) -> None:
    server = tight_dev_api
    agent = await start_stalled_big_scan(server, start_watcher, big_tree, state_file, "l-1")
    relative_path = sorted(os.listdir(big_tree))[-1]
    relative_path += "/" + sorted(os.listdir(big_tree / relative_path))[-1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.live.submit, _created(big_tree, relative_path))
        await trio.sleep(0)
        server.resume_reading()
    with trio.fail_after(60):
        completed = await server.wait_for_type("scan.completed", scan_id="l-1")
    live = server.of_type("file.created", relative_path=relative_path)
    assert len(live) == 1 and live[0].data["volume_id"] == "big"
    copies = server.of_type("scan.file", scan_id="l-1", relative_path=relative_path)
    # One from the walk, one from the live event; both before the scan's end.
    assert len(copies) == 2
    assert all(_index(server, copy) < _index(server, completed) for copy in copies)


async def test_no_scan_file_of_a_scan_after_its_scan_completed(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    """A live event that comes while a completed scan's state is still being saved (here: the
    state file is busy with another save) is sent as itself only: the API has closed the scan
    and a scan.file of it would be a file outside any scan."""
    root = make_volume("movies", {"a.mkv": 1, "B/b.mkv": 2})
    serve_known(dev_api, state_file, one_volume("movies", root))
    agent = await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("watcher.status")
    async with agent.state_keeper._lock:  # a save in progress: the scan's own save waits
        await dev_api.send(CommandScan(volume_id="movies", scan_id="e-1"))
        with trio.fail_after(10):
            completed = await dev_api.wait_for_type("scan.completed", scan_id="e-1")
            await agent.live.submit(_created(root, "B/b.mkv", "movies"))
            # A marker behind it: once it arrived, whatever the event produced has arrived.
            await agent.live.submit(
                FileDeleted(volume_id="movies", relative_path="gone.mkv", filename="gone.mkv")
            )
            await dev_api.wait_for_type("file.deleted", relative_path="gone.mkv")
    assert dev_api.of_type("file.created", relative_path="B/b.mkv")
    after_end = dev_api.messages[_index(dev_api, completed) + 1 :]
    assert not [m for m in after_end if m.data.get("scan_id") == "e-1"]
    with trio.fail_after(10):  # the scan's state is saved once the other save is done
        while "movies" not in agent.state_keeper.state.volume_devices:
            await trio.sleep(0.01)
