"""Deletion and hardlink commands through the agent, on real files (PROTOCOL.md §7)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from helpers.agent import one_volume
from scanarr.agent.file_handlers import results_path_for
from scanarr.dev_api import DevApiServer
from scanarr.protocol import (
    CommandFilesDelete,
    CommandFilesHardlink,
    DeleteFile,
    DeletePath,
    WatcherConfig,
    WatchPath,
)


async def _library(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> tuple[Path, Path]:
    media = make_volume("media", {"Film (2001)/Film.2001.mkv": 4096, "Film (2001)/Film.nfo": 10})
    torrents = make_volume("torrents", {})
    os.link(media / "Film (2001)/Film.2001.mkv", torrents / "Film.2001.mkv")
    dev_api.config = WatcherConfig(
        watch_paths=[
            WatchPath(id="media", path=str(media)),
            WatchPath(id="torrents", path=str(torrents)),
        ],
        scan_on_start=True,
    )
    await start_watcher()
    with trio.fail_after(10):  # the new volumes are scanned: their devices are recorded
        await dev_api.wait_for_type("scan.completed", volume_id="media")
        await dev_api.wait_for_type("scan.completed", volume_id="torrents")
    return media, torrents


def _delete_command(media: Path, torrents: Path, request_id: str) -> CommandFilesDelete:
    film = media / "Film (2001)/Film.2001.mkv"
    status = os.stat(film)
    return CommandFilesDelete(
        request_id=request_id,
        deletion_id="del-1",
        files=[
            DeleteFile(
                media_file_id="film",
                paths=[
                    DeletePath(volume_path=str(media), relative_path="Film (2001)/Film.2001.mkv"),
                    DeletePath(volume_path=str(torrents), relative_path="Film.2001.mkv"),
                ],
                inode=status.st_ino,
                device_id=status.st_dev,
            )
        ],
    )


async def test_delete_every_path_of_a_media_file(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    media, torrents = await _library(dev_api, start_watcher, make_volume)
    command = _delete_command(media, torrents, "req-1")
    await dev_api.send(command)
    with trio.fail_after(10):
        completed = await dev_api.wait_for_type("files.delete.completed", request_id="req-1")
    progress = dev_api.of_type("files.delete.progress", request_id="req-1")
    assert [p.data["media_file_id"] for p in progress] == ["film"]
    assert progress[0].data["paths_deleted"] == 2
    assert completed.data["deleted"] == 1 and completed.data["failed"] == 0
    assert completed.data["total_paths_deleted"] == 2
    assert completed.data["freed_bytes"] == 4096
    assert completed.data["results"][0]["status"] == "deleted"
    # The companion .nfo and the emptied folder went too; the volume roots stay.
    assert not (media / "Film (2001)").exists()
    assert media.is_dir() and torrents.is_dir()
    assert list(torrents.iterdir()) == []
    # The API re-sends after a reconnect: the stored reply is replayed, nothing is redone.
    await dev_api.send(command)
    with trio.fail_after(10):
        again = await dev_api.wait_for_type("files.delete.completed", request_id="req-1", count=2)
    assert again.data == completed.data


async def test_deletion_disabled_by_config(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    media, torrents = await _library(dev_api, start_watcher, make_volume)
    await dev_api.send_config(attrs.evolve(dev_api.config, disable_deletion=True))
    await dev_api.send(_delete_command(media, torrents, "req-2"))
    with trio.fail_after(10):
        completed = await dev_api.wait_for_type("files.delete.completed", request_id="req-2")
    assert completed.data["deleted"] == 0
    assert completed.data["results"][0]["error"] == "deletion disabled by watcher config"
    assert not dev_api.of_type("files.delete.progress", request_id="req-2")
    assert (media / "Film (2001)/Film.2001.mkv").exists()


async def test_hardlink(dev_api: DevApiServer, start_watcher: Any, make_volume: Any) -> None:
    media, torrents = await _library(dev_api, start_watcher, make_volume)
    await dev_api.send(
        CommandFilesHardlink(
            request_id="req-3",
            deletion_id="d",
            source_volume_path=str(media),
            source_relative_path="Film (2001)/Film.2001.mkv",
            target_volume_path=str(torrents),
            target_relative_path="cross-seed/Film.2001.mkv",
        )
    )
    with trio.fail_after(10):
        reply = await dev_api.wait_for_type("files.hardlink.completed", request_id="req-3")
    assert reply.data["status"] == "created", reply.data
    source = os.stat(media / "Film (2001)/Film.2001.mkv")
    assert os.stat(torrents / "cross-seed/Film.2001.mkv").st_ino == source.st_ino
    assert reply.data["source_inode"] == reply.data["target_inode"] == source.st_ino


def _stored_reply(request_id: str, media_file_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "deletion_id": "old",
        "total_media_files": 1,
        "deleted": 1,
        "failed": 0,
        "total_paths_deleted": 1,
        "dirs_removed": 0,
        "freed_bytes": 7,
        "results": [
            {
                "media_file_id": media_file_id,
                "status": "deleted",
                "paths_deleted": 1,
                "dirs_removed": 0,
                "size_bytes": 7,
                "freed_bytes": 7,
                "error": None,
            }
        ],
    }


async def test_damaged_stored_results_are_dropped_not_replayed(
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
    state_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Results saved by an earlier run, some damaged (a crash, an editor, an older version).
    results = results_path_for(str(state_file))
    results.parent.mkdir(parents=True, exist_ok=True)
    delete = CommandFilesDelete.TYPE
    entries = [
        {"type": delete, "request_id": "no-progress", "reply": _stored_reply("no-progress", "x")},
        {"type": delete, "request_id": "no-reply", "progress": []},
        {"type": delete, "request_id": "bad-reply", "reply": {"deleted": "all"}, "progress": []},
        {"type": "command.files.hardlink", "request_id": "bad-link", "reply": {"status": 1}},
        {
            "type": delete,
            "request_id": "good",
            "reply": _stored_reply("good", "old"),
            "progress": [],
        },
    ]
    results.write_text(json.dumps({"results": entries}))
    caplog.set_level(logging.WARNING, logger="scanarr")
    names = {"no-progress": "a.mkv", "no-reply": "b.mkv", "bad-reply": "c.mkv", "good": "d.mkv"}
    media = make_volume("media", {name: 7 for name in names.values()})
    dev_api.config = one_volume("media", media, scan_on_start=True)
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="media")

    def command(request_id: str) -> CommandFilesDelete:
        path = DeletePath(volume_path=str(media), relative_path=names[request_id])
        return CommandFilesDelete(
            request_id=request_id,
            deletion_id="del",
            files=[DeleteFile(media_file_id=request_id, paths=[path])],
        )

    # A damaged entry is not replayed: the request is carried out.
    for request_id in ("no-progress", "no-reply", "bad-reply"):
        await dev_api.send(command(request_id))
        with trio.fail_after(10):
            completed = await dev_api.wait_for_type("files.delete.completed", request_id=request_id)
        assert completed.data["results"][0]["media_file_id"] == request_id, completed.data
        assert completed.data["results"][0]["status"] == "deleted", completed.data
        assert not (media / names[request_id]).exists()
    # The intact entry is still replayed as it was stored, without touching the disk.
    await dev_api.send(command("good"))
    with trio.fail_after(10):
        replayed = await dev_api.wait_for_type("files.delete.completed", request_id="good")
    assert replayed.data["results"][0]["media_file_id"] == "old"
    assert replayed.data["deletion_id"] == "old"
    assert (media / "d.mkv").exists()
    assert caplog.text.count("dropping stored command result") == 4  # one line each
