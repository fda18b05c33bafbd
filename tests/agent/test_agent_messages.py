"""Bad input from the API never kills the agent (§7); live events reach the API (§5)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.agent import one_volume, scan_completed, serve_known, start_stalled_big_scan
from helpers.commands import delete_one
from helpers.events import created_on_disk
from scanarr.dev_api import DevApiServer
from scanarr.protocol import (
    CommandFilesHardlink,
    FileDeleted,
)


async def test_unknown_and_malformed_messages_are_survived(
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scanarr")
    movies = make_volume("movies", {"a.mkv": 1})
    dev_api.config = one_volume("movies", movies)
    await start_watcher()
    for frame in [
        "this is not JSON",
        "[1, 2, 3]",
        '{"no": "type"}',
        '{"type": "command.reboot", "data": {"now": true}}',
        '{"type": "command.scan", "data": {"volume_id": 42}}',
        '{"type": "command.scan", "data": "everything"}',
        '{"type": "watcher.auth", "data": {"status": "authenticated"}}',
        '{"type": "scan.file", "data": {}}',
        "\ud800 lone surrogate".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    ]:
        await dev_api.send(frame)
    await scan_completed(dev_api, "movies", "alive")
    assert "command.reboot" in caplog.text
    assert "malformed" in caplog.text
    assert len(dev_api.connections) == 1  # never reconnected: nothing broke


async def test_malformed_command_with_request_id_is_answered(
    dev_api: DevApiServer, start_watcher: Any
) -> None:
    await start_watcher()
    await dev_api.send(
        {
            "type": "command.files.delete",
            "data": {
                "request_id": "req-1",
                "deletion_id": "del-1",
                "files": [{"media_file_id": "m1", "paths": "not a list"}],
            },
        }
    )
    await dev_api.send(
        {
            "type": "command.files.hardlink",
            "data": {"request_id": "req-2", "deletion_id": "del-2"},
        }
    )
    with trio.fail_after(10):
        delete = await dev_api.wait_for_type("files.delete.completed", request_id="req-1")
        hardlink = await dev_api.wait_for_type("files.hardlink.completed", request_id="req-2")
    assert delete.data["deletion_id"] == "del-1"
    assert delete.data["deleted"] == 0
    assert delete.data["status"] == "failed"
    assert [r["status"] for r in delete.data["results"]] == ["failed"]
    assert "malformed" in delete.data["results"][0]["error"]
    assert hardlink.data["status"] == "failed"
    assert hardlink.data["source_inode"] is None
    assert "malformed" in hardlink.data["error"]


@pytest.mark.parametrize("files", ["oops", "", {}, None, 0, [[]], [{"media_file_id": "m1"}]])
async def test_malformed_delete_is_answered_failed_not_as_an_empty_success(
    dev_api: DevApiServer, start_watcher: Any, files: Any
) -> None:
    await start_watcher()
    await dev_api.send(
        {
            "type": "command.files.delete",
            "data": {"request_id": "req-oops", "deletion_id": "del-oops", "files": files},
        }
    )
    with trio.fail_after(10):
        reply = await dev_api.wait_for_type("files.delete.completed", request_id="req-oops")
    assert reply.data["status"] == "failed"
    assert reply.data["error"].startswith("malformed command: ")
    assert reply.data["deletion_id"] == "del-oops"
    assert reply.data["deleted"] == 0 and reply.data["total_paths_deleted"] == 0
    # Any media file the API can recognise is reported failed too.
    assert reply.data["failed"] == len(reply.data["results"])
    assert all(result["status"] == "failed" for result in reply.data["results"])
    assert len(dev_api.of_type("files.delete.completed")) == 1


async def test_delete_replies_carry_status_completed(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    dev_api.config = one_volume("movies", movies)
    await start_watcher()
    await dev_api.send(delete_one("req-ok", str(movies), "missing.mkv"))
    with trio.fail_after(10):
        reply = await dev_api.wait_for_type("files.delete.completed", request_id="req-ok")
    assert reply.data["status"] == "completed"
    assert reply.data["error"] is None


async def test_command_without_a_handler_is_answered(
    dev_api: DevApiServer, nursery: trio.Nursery, state_file: Path
) -> None:
    from helpers.agent import watcher_settings
    from scanarr.agent import WatcherAgent

    agent = WatcherAgent(watcher_settings(dev_api.url, state_file), file_commands=False)
    await nursery.start(agent.run)
    with trio.fail_after(10):
        await dev_api.wait_connected()
    await dev_api.send(
        CommandFilesHardlink(
            request_id="req-3",
            deletion_id="d",
            source_volume_path="/a",
            source_relative_path="x.mkv",
            target_volume_path="/b",
            target_relative_path="x.mkv",
        )
    )
    with trio.fail_after(10):
        reply = await dev_api.wait_for_type("files.hardlink.completed", request_id="req-3")
    assert reply.data["status"] == "failed"
    assert reply.data["error"] == "not supported by this watcher"


async def test_live_events_are_sent_and_mirrored_into_a_running_scan(
    tight_dev_api: DevApiServer, start_watcher: Any, big_tree: Path, state_file: Path
) -> None:
    server = tight_dev_api
    agent = await start_stalled_big_scan(server, start_watcher, big_tree, state_file, "live")
    # A file appears in a directory the walk may already have passed.
    relative_path = "Movie Title 0000 (1950)/Arrived.During.Scan.mkv"
    created = big_tree / relative_path
    created.write_bytes(b"new film")
    try:
        event = created_on_disk(big_tree, relative_path, "big")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.live.submit, event)
            server.resume_reading()
        with trio.fail_after(30):
            completed = await server.wait_for_type("scan.completed", scan_id="live")
    finally:
        created.unlink()
    live = server.of_type("file.created", volume_id="big", relative_path=relative_path)
    assert len(live) == 1
    mirrored = server.of_type("scan.file", scan_id="live", relative_path=relative_path)
    assert mirrored, "the live event was not sent as scan.file of the running scan"
    assert mirrored[-1].data["inode"] == event.inode
    assert mirrored[-1].data["size_bytes"] == len(b"new film")
    assert server.messages.index(mirrored[0]) < server.messages.index(completed)


async def test_live_event_outside_a_scan_is_sent_alone(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    serve_known(dev_api, state_file, one_volume("movies", movies))
    agent = await start_watcher()
    await agent.live.submit(
        FileDeleted(volume_id="movies", relative_path="a.mkv", filename="a.mkv")
    )
    with trio.fail_after(10):
        await dev_api.wait_for_type("file.deleted", relative_path="a.mkv")
    assert not dev_api.of_type("scan.file")


async def test_live_event_while_disconnected_rescans_the_volume(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    serve_known(dev_api, state_file, one_volume("movies", movies))
    dev_api.reject_reason = "invalid_token"
    agent = await start_watcher(wait_connected=False)
    await agent.live.submit(
        FileDeleted(volume_id="movies", relative_path="b.mkv", filename="b.mkv")
    )
    dev_api.reject_reason = None
    with trio.fail_after(10):
        completed = await dev_api.wait_for_type("scan.completed", volume_id="movies")
    assert completed.data["total_files"] == 1
