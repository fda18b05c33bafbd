"""Strings from the API that UTF-8 cannot carry, NULs, huge text (PROTOCOL.md §7).

JSON can carry a lone surrogate (``"\\ud800"``). The frames here are written by hand with
`json.dumps` (which escapes it), sent over a real WebSocket to a running agent; the agent must stay
connected, answer, delete exactly what was validly addressed and echo nothing it cannot encode.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.agent import one_volume
from helpers.text import assert_all_text
from scanarr.dev_api import DevApiServer, ReceivedMessage
from scanarr.state import WatcherState, load_state, save_state

LONE = "\ud800"  # a high surrogate with no partner
ESCAPED = "\udc80"  # what surrogateescape makes of the byte 0x80


def _frame(message_type: str, data: Any) -> str:
    # ensure_ascii (the default) writes a surrogate as the escape \ud800: valid JSON text.
    return json.dumps({"type": message_type, "timestamp": "2026-01-01T00:00:00Z", "data": data})


def _sent_cleanly(server: DevApiServer) -> None:
    for message in server.messages:
        assert_all_text(json.loads(message.raw))


async def _connected_agent(
    server: DevApiServer, start_watcher: Any, make_volume: Any, files: dict[str, bytes | int]
) -> tuple[Any, Path]:
    media = make_volume("media", files)
    server.config = one_volume("media", media, scan_on_start=True)
    agent = await start_watcher()
    with trio.fail_after(10):
        await server.wait_for_type("scan.completed", volume_id="media")
    return agent, media


@pytest.fixture
async def connected(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> tuple[Any, Path]:
    """A watcher connected to `dev_api`, of the volume "media" holding a.mkv (3 bytes), once its
    first scan is done; with the volume's path."""
    return await _connected_agent(dev_api, start_watcher, make_volume, {"a.mkv": 3})


async def _still_alive(server: DevApiServer, media: Path, probe: str) -> None:
    """The same connection still answers a well-formed command, and all the watcher sent so far
    is text a strict JSON peer can read."""
    await server.send(_frame("command.scan", {"volume_id": "media", "scan_id": probe}))
    with trio.fail_after(10):
        await server.wait_for_type("scan.completed", scan_id=probe)
    assert len(server.connections) == 1, "the watcher reconnected: something broke"
    assert server.connected
    _sent_cleanly(server)


def _delete(request_id: str, files: list[dict[str, Any]]) -> str:
    return _frame(
        "command.files.delete", {"request_id": request_id, "deletion_id": "d", "files": files}
    )


def _item(media_file_id: str, volume: Path, *relative_paths: str) -> dict[str, Any]:
    return {
        "media_file_id": media_file_id,
        "paths": [{"volume_path": str(volume), "relative_path": path} for path in relative_paths],
    }


async def _completed(server: DevApiServer, request_id: str, count: int = 1) -> ReceivedMessage:
    with trio.fail_after(10):
        return await server.wait_for_type(
            "files.delete.completed", request_id=request_id, count=count
        )


async def _replayed(server: DevApiServer, command: str, completed: ReceivedMessage) -> None:
    """The command sent again is answered with the same reply as `completed` (stored, replayed)."""
    await server.send(command)
    again = await _completed(server, completed.data["request_id"], count=2)
    assert again.data == completed.data


async def test_unencodable_request_id_is_answered_with_replacement(
    dev_api: DevApiServer, connected: tuple[Any, Path]
) -> None:
    _agent, media = connected
    command = _delete(f"req-{LONE}", [_item(f"film-{LONE}", media, "a.mkv")])
    await dev_api.send(command)
    completed = await _completed(dev_api, "req-\ufffd")
    assert completed.data["results"][0]["media_file_id"] == "film-\ufffd"
    assert completed.data["results"][0]["status"] == "deleted"
    assert not (media / "a.mkv").exists()
    progress = dev_api.of_type("files.delete.progress", request_id="req-\ufffd")
    assert [p.data["media_file_id"] for p in progress] == ["film-\ufffd"]
    # A re-send replays the stored reply, which can be sent too.
    await _replayed(dev_api, command, completed)
    await _still_alive(dev_api, media, "alive")


async def test_unencodable_path_fails_alone_and_the_rest_of_the_command_runs(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    _agent, media = await _connected_agent(
        dev_api, start_watcher, make_volume, {"good.mkv": 5, "bad.mkv": 7, "both/x.mkv": 9}
    )
    # surrogateescape would turn \udc80 into the byte 0x80: a name the API was never told about.
    raw_name = Path(os.fsdecode(os.path.join(os.fsencode(media), b"\x80.mkv")))
    raw_name.write_bytes(b"not valid UTF-8 name")
    command = _delete(
        "req-paths",
        [
            _item("good", media, "good.mkv"),
            _item("lone", media, f"bad{LONE}.mkv"),
            _item("escaped", media, f"{ESCAPED}.mkv"),
            _item("half", media, "both/x.mkv", f"both/{LONE}"),
        ],
    )
    await dev_api.send(command)
    completed = await _completed(dev_api, "req-paths")
    results = {result["media_file_id"]: result for result in completed.data["results"]}
    assert results["good"]["status"] == "deleted"
    assert not (media / "good.mkv").exists()
    for media_file_id in ("lone", "escaped"):
        assert results[media_file_id]["status"] == "failed"
        assert results[media_file_id]["paths_deleted"] == 0
        assert "invalid_path" in results[media_file_id]["error"]
    assert "\ufffd" in results["lone"]["error"]  # the path is shown, replaced
    # The valid path of a media file is deleted; the file fails because one path did.
    assert results["half"]["status"] == "failed"
    assert results["half"]["paths_deleted"] == 1
    assert not (media / "both/x.mkv").exists()
    assert completed.data["deleted"] == 1 and completed.data["failed"] == 3
    # Nothing that was not validly addressed was touched.
    assert (media / "bad.mkv").read_bytes() == bytes(7)
    assert raw_name.read_bytes() == b"not valid UTF-8 name"
    progress = dev_api.of_type("files.delete.progress", request_id="req-paths")
    assert [p.data["paths_failed"] for p in progress] == [0, 1, 1, 1]
    await _replayed(dev_api, command, completed)
    await _still_alive(dev_api, media, "alive")


async def test_unencodable_hardlink_paths_fail_the_command(
    dev_api: DevApiServer, connected: tuple[Any, Path]
) -> None:
    _agent, media = connected
    for number, (source, target) in enumerate(
        [(f"a{LONE}.mkv", "b.mkv"), ("a.mkv", f"{ESCAPED}.mkv"), ("a.mkv", f"d/{LONE}/b.mkv")]
    ):
        request_id = f"link-{number}-{LONE}"
        await dev_api.send(
            _frame(
                "command.files.hardlink",
                {
                    "request_id": request_id,
                    "deletion_id": LONE,
                    "source_volume_path": str(media),
                    "source_relative_path": source,
                    "target_volume_path": str(media),
                    "target_relative_path": target,
                },
            )
        )
        with trio.fail_after(10):
            reply = await dev_api.wait_for_type(
                "files.hardlink.completed", request_id=f"link-{number}-\ufffd"
            )
        assert reply.data["status"] == "failed"
        assert "invalid_path" in reply.data["error"]
        assert reply.data["deletion_id"] == "\ufffd"
    assert sorted(os.listdir(media)) == ["a.mkv"]
    assert os.stat(media / "a.mkv").st_nlink == 1
    await _still_alive(dev_api, media, "alive")


async def test_config_with_an_unencodable_path_is_refused_and_the_previous_one_stays(
    dev_api: DevApiServer,
    connected: tuple[Any, Path],
    state_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent, media = connected
    caplog.set_level(logging.WARNING, logger="scanarr")
    config = {
        "watch_paths": [
            {"id": "media", "path": str(media)},
            {"id": "other", "path": f"{media}-{LONE}"},
        ]
    }
    await dev_api.send(_frame("watcher.config", config))
    await _still_alive(dev_api, media, "after-config")
    assert "previous config stays in force" in caplog.text
    assert agent.volumes.get("other") is None
    assert load_state(str(state_file)).last_config == dev_api.config
    # Commands still run against the config in force, to the end.
    await dev_api.send(_delete("req-after", [_item("a", media, "a.mkv")]))
    completed = await _completed(dev_api, "req-after")
    assert completed.data["results"][0]["status"] == "deleted", completed.data
    assert not (media / "a.mkv").exists() and media.is_dir()
    _sent_cleanly(dev_api)


async def test_unencodable_ids_in_config_and_scans_are_sent_replaced(
    dev_api: DevApiServer, connected: tuple[Any, Path], state_file: Path
) -> None:
    _agent, media = connected
    config = {
        "watch_paths": [{"id": f"v{LONE}", "path": str(media), "name": f"N\0{LONE}"}],
        "scan_extensions": [f"mkv{LONE}", "mkv"],
    }
    await dev_api.send(_frame("watcher.config", config))
    with trio.fail_after(10):  # a new volume id: the volume is scanned under it
        await dev_api.wait_for_type("scan.completed", volume_id="v\ufffd")
    await dev_api.send(_frame("command.scan", {"volume_id": f"v{LONE}", "scan_id": f"s{LONE}"}))
    with trio.fail_after(10):
        completed = await dev_api.wait_for_type("scan.completed", scan_id="s\ufffd")
    assert completed.data["volume_id"] == "v\ufffd"
    assert dev_api.of_type("scan.file", scan_id="s\ufffd", relative_path="a.mkv")
    state = load_state(str(state_file))  # saved, and readable again
    assert state.last_config is not None
    assert [volume.id for volume in state.last_config.watch_paths] == ["v\ufffd"]
    assert state.volume_devices.get("v\ufffd") == os.stat(media).st_dev
    assert len(dev_api.connections) == 1
    _sent_cleanly(dev_api)


async def test_nul_huge_and_unencodable_junk_is_survived(
    dev_api: DevApiServer, connected: tuple[Any, Path]
) -> None:
    _agent, media = connected
    huge = "x" * 1_000_000
    for frame in [
        _frame(f"command.{LONE}", {"request_id": LONE}),
        _frame("command.files.delete", {"request_id": f"{LONE}\0", "files": LONE}),
        _frame("command.files.hardlink", {"request_id": huge, "deletion_id": 5}),
        _frame("command.scan", {"volume_id": f"\0{LONE}", "scan_id": f"s{LONE}"}),
        _frame("command.scan.all", {"scan_id": [LONE]}),
        _frame("watcher.config", {"watch_paths": [{"id": "media", "path": f"{media}\0"}]}),
        '{"type": "command.files.delete", "data": {"request_id": "\\udfff"',
    ]:
        await dev_api.send(frame)
    with trio.fail_after(10):
        malformed = await dev_api.wait_for_type("files.delete.completed", request_id="\ufffd\0")
        hardlink = await dev_api.wait_for_type("files.hardlink.completed", request_id=huge)
        unknown = await dev_api.wait_for_type("scan.failed", scan_id="s\ufffd")
    assert malformed.data["status"] == "failed" and "malformed" in malformed.data["error"]
    assert hardlink.data["status"] == "failed"
    assert unknown.data["reason"] == "unknown_volume"
    assert unknown.data["volume_id"] == "\0\ufffd"
    await _still_alive(dev_api, media, "alive")
    assert (media / "a.mkv").exists()
    _sent_cleanly(dev_api)


async def test_deeply_nested_frame_is_survived(
    dev_api: DevApiServer, connected: tuple[Any, Path]
) -> None:
    _agent, media = connected
    await dev_api.send("[" * 100_000)
    await dev_api.send('{"type": "command.files.delete", "data": ' + "[" * 100_000)
    await _still_alive(dev_api, media, "alive")


async def test_first_config_with_an_unencodable_path_keeps_the_saved_config(
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
    state_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    media = make_volume("media", {"a.mkv": 3})
    saved = one_volume("media", media)
    save_state(str(state_file), WatcherState(last_config=saved))
    caplog.set_level(logging.WARNING, logger="scanarr")
    # The config of the handshake itself, as the API sends it (the server takes raw text too).
    first = {"watch_paths": [{"id": "media", "path": f"{media}{LONE}"}]}
    dev_api.config = _frame("watcher.config", first)  # type: ignore[assignment]
    agent = await start_watcher()
    await _still_alive(dev_api, media, "alive")
    assert "previous config stays in force" in caplog.text
    assert agent.volumes.config == saved
    assert load_state(str(state_file)).last_config == saved
    _sent_cleanly(dev_api)
