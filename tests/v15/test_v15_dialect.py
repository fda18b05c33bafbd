"""The V1.5 translation on hostile input, the settings of the dialect, and auto detection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.agent import one_volume, watcher_settings
from scanarr.agent.app import StateKeeper
from scanarr.agent.dialect import Dialect, Translator
from scanarr.agent.session import Link
from scanarr.agent.volumes import VolumeSet
from scanarr.config import SettingsError, load_settings
from scanarr.dev_api import DevApiServer
from scanarr.protocol import (
    CommandFilesDelete,
    CommandScan,
    DeleteResult,
    FilesDeleteCompleted,
    ScanFailed,
    ScanFailedReason,
    WatcherConfig,
    WatchPath,
    decode,
    encode,
)
from scanarr.protocol_v15 import CommandDelete15, DeleteItem15, Log15, encode15
from v15_support import go_environment, serve_volumes, start_watch, stop_watch


def _volumes(*paths: str) -> VolumeSet:
    volumes = VolumeSet()
    volumes.apply(WatcherConfig(watch_paths=[WatchPath(id=p, path=p) for p in paths]))
    return volumes


def _frame(message_type: str, data: Any) -> str:
    return json.dumps({"type": message_type, "data": data})


async def _dialect(tmp_path: Path, *paths: str) -> Dialect:
    settings = watcher_settings("ws://127.0.0.1:1/ws/watcher", tmp_path / "s.json", protocol="v1.5")
    keeper = StateKeeper(settings.state_file)
    dialect = Dialect(settings, keeper, _volumes(*paths), Link())
    await dialect.on_state_loaded()
    return dialect


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        "[" * 100_000,  # nested deeper than the JSON parser's stack
        '{"type": 3}',
        _frame("command.files.delete", {"request_id": True, "deletion_id": "d", "files": []}),
        _frame("command.files.delete", {"request_id": "r", "deletion_id": "d", "files": "x"}),
        _frame("command.files.delete", {"request_id": "r", "deletion_id": "d", "files": [None]}),
        _frame("command.files.hardlink", {"request_id": "r", "deletion_id": "d"}),
        _frame("command.scan", {"path": None, "scan_id": "s"}),
        _frame("command.scan", {"path": "\ud800", "scan_id": "s"}),
        _frame("command.scan", {"path": "/data/media/\0", "scan_id": "s"}),
        _frame("watcher.config", {"watch_paths": "/data/media"}),
        _frame("watcher.config", {"watch_paths": [1]}),
        _frame("command.watch.add", {"path": "/x"}),
        _frame("something.else", {}),
        _frame("command.scan", {"path": "/data/media-old", "scan_id": "s"}),
        _frame("command.scan", {"path": "/data/media/../other", "scan_id": "s"}),
    ],
)
async def test_hostile_frames_translate_to_nothing_and_never_raise(
    tmp_path: Path, frame: str
) -> None:
    dialect = await _dialect(tmp_path, "/data/media")
    assert await dialect.incoming(frame) == []


async def test_a_config_becomes_volumes_named_by_their_paths(tmp_path: Path) -> None:
    dialect = await _dialect(tmp_path)
    frame = _frame(
        "watcher.config",
        {"watch_paths": ["/data/media/", "/data/media", "relative", "/data/torrents"]},
    )
    [text] = await dialect.incoming(frame)
    config = decode(text)
    assert isinstance(config, WatcherConfig)
    assert [(v.id, v.path) for v in config.watch_paths] == [
        ("/data/media", "/data/media"),
        ("/data/torrents", "/data/torrents"),
    ]
    assert "iso" in config.scan_extensions
    assert config.scan_on_start is True  # the server's default


async def test_scan_of_a_path_inside_a_volume_scans_the_longest_volume(tmp_path: Path) -> None:
    dialect = await _dialect(tmp_path, "/data", "/data/media")
    [text] = await dialect.incoming(_frame("command.scan", {"path": "/data/media/x", "scan_id": 5}))
    command = decode(text)
    assert command == CommandScan(volume_id="/data/media", scan_id="5")


def test_delete_items_resolve_against_the_longest_volume_and_skip_others() -> None:
    translator = Translator(_volumes("/data", "/data/media"))
    command = CommandDelete15(
        request_id=1,
        deletion_id=2,
        files=[
            DeleteItem15(media_file_id=3, volume_path="/data", file_path="media/a.mkv"),
            DeleteItem15(media_file_id=3, volume_path="/data/torrents", file_path="/a.mkv"),
            DeleteItem15(media_file_id=3, volume_path="/elsewhere", file_path="a.mkv"),
            DeleteItem15(media_file_id=4, volume_path="/data/media", file_path="../x/../b.mkv"),
            DeleteItem15(media_file_id=5, volume_path="/data/media", file_path=""),
        ],
    )
    v2 = translator.delete(command, {})
    assert isinstance(v2, CommandFilesDelete)
    assert [(f.paths[0].volume_path, f.paths[0].relative_path) for f in v2.files] == [
        ("/data/media", "a.mkv"),
        ("/data", "torrents/a.mkv"),
    ]
    reply = FilesDeleteCompleted(
        request_id="1",
        deletion_id="2",
        total_media_files=2,
        deleted=1,
        failed=1,
        total_paths_deleted=1,
        dirs_removed=0,
        freed_bytes=0,
        results=[
            DeleteResult("0", "deleted", 1, 0, 9, 9),
            DeleteResult("1", "failed", 0, 0, 0, 0, "Permission denied: /data/torrents/a.mkv"),
            DeleteResult("7", "deleted", 1, 0, 9, 9),  # not one we asked for: left out
        ],
    )
    translated = translator.delete_completed(reply)
    assert translated is not None
    completed, remember = translated
    # Ids echoed as the server sent them; invalid paths answered without the disk.
    assert (completed.request_id, completed.deletion_id) == (1, 2)
    assert [(r.media_file_id, r.status) for r in completed.results] == [
        (4, "failed"),
        (5, "failed"),
        (3, "deleted"),
        (3, "failed"),
    ]
    assert (completed.total, completed.deleted, completed.failed) == (4, 1, 3)
    assert [key for key, _result in remember] == [("2", "3", "/data/media/a.mkv")]


def test_echoed_strings_that_utf8_cannot_carry_are_replaced() -> None:
    translator = Translator(_volumes("/data"))
    command = CommandDelete15(
        request_id="r\ud800",
        deletion_id="d",
        files=[DeleteItem15(media_file_id="m\udfff", volume_path="/data", file_path="a.mkv")],
    )
    assert translator.delete(command, {}) is not None
    reply = FilesDeleteCompleted(
        "r\ud800", "d", 1, 1, 0, 1, 0, 0, [DeleteResult("0", "deleted", 1, 0, 0, 0)]
    )
    translated = translator.delete_completed(reply)
    assert translated is not None
    text = encode15(translated[0])
    text.encode("utf-8")
    assert json.loads(text)["data"]["request_id"] == "r\ufffd"


def test_settings_of_the_dialect() -> None:
    base = {"SCANARR_WS_URL": "ws://h:8081/ws/watcher", "SCANARR_WATCHER_ID": "nas-1"}
    settings = load_settings({**base, "SCANARR_STATE_PATH": "/tmp/go-state.json"})
    assert settings.api_url.url == "ws://h:8081/ws/watcher"
    assert settings.state_file == "/tmp/go-state.json"
    assert (settings.protocol, settings.watcher_id, settings.auth_token) == ("auto", "nas-1", "")
    explicit = {**base, "SCANARR_API_URL": "ws://other/ws", "SCANARR_STATE_FILE": "/s.json"}
    assert load_settings(explicit).api_url.url == "ws://other/ws"
    assert load_settings(explicit).state_file == "/s.json"
    url_only = {"SCANARR_API_URL": "ws://h/ws"}
    assert load_settings({**url_only, "SCANARR_PROTOCOL": "v1.5"}).auth_token == ""
    for environ, variable in [
        ({**base, "SCANARR_PROTOCOL": "v3"}, "SCANARR_PROTOCOL"),
        ({**url_only, "SCANARR_PROTOCOL": "v2", "SCANARR_WATCHER_ID": "x"}, "SCANARR_AUTH_TOKEN"),
        (url_only, "SCANARR_AUTH_TOKEN"),  # V2 by default: the token stays required
        ({**base, "SCANARR_WATCHER_ID": "a\nb"}, "SCANARR_WATCHER_ID"),
    ]:
        with pytest.raises(SettingsError) as raised:
            load_settings(environ)
        assert raised.value.variable == variable


async def test_auto_detects_a_server_that_closes_on_a_hello_without_watcher_id(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    api, environment = await serve_volumes(nursery, state_file, movies)
    del environment["SCANARR_WATCHER_ID"]
    environment["SCANARR_AUTH_TOKEN"] = "unused"
    process = await start_watch(nursery, environment, tmp_path / "watch.log")
    try:
        with trio.fail_after(20):
            pending = await api.wait_pending()
    finally:
        await stop_watch(process)
    first, second = api.connections[0], pending
    assert first.hello is not None and "watcher_id" not in first.hello
    assert second.watcher_id == json.loads(state_file.read_text())["watcher_id"]
    assert json.loads(state_file.read_text())["protocol"] == "v1.5"


async def test_auto_with_a_watcher_id_still_speaks_v2_to_a_v2_api(
    nursery: trio.Nursery, dev_api: DevApiServer, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    from helpers.agent import TOKEN

    movies = make_volume("movies", {"a.mkv": 1})
    dev_api.config = one_volume("movies", movies, scan_on_start=True)
    environment = go_environment(dev_api.url, state_file, SCANARR_AUTH_TOKEN=TOKEN)
    process = await start_watch(nursery, environment, tmp_path / "watch.log")
    try:
        with trio.fail_after(20):
            completed = await dev_api.wait_for_type("scan.completed", volume_id="movies")
    finally:
        await stop_watch(process)
    assert completed.data["total_files"] == 1
    assert dev_api.connections[0].hello is not None
    assert dev_api.connections[0].hello["watcher_id"] == "nas-1"
    assert "protocol" not in json.loads(state_file.read_text())


async def test_a_remembered_v15_api_upgraded_to_v2_is_spoken_to_in_v2_again(
    nursery: trio.Nursery, dev_api: DevApiServer, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    from helpers.agent import TOKEN

    movies = make_volume("movies", {"a.mkv": 1})
    dev_api.config = one_volume("movies", movies, scan_on_start=True)
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps({"protocol": "v1.5", "watcher_id": "nas-1"}))
    environment = go_environment(dev_api.url, state_file, SCANARR_AUTH_TOKEN=TOKEN)
    process = await start_watch(nursery, environment, tmp_path / "watch.log")
    try:
        with trio.fail_after(20):
            await dev_api.wait_for_type("scan.completed", volume_id="movies")
    finally:
        await stop_watch(process)
    first, second = dev_api.connections[:2]
    assert first.hello is not None and "os" not in first.hello  # the V1.5 hello, refused
    assert second.authenticated
    assert json.loads(state_file.read_text())["protocol"] == "v2"


def test_a_refused_scan_request_is_a_warning_and_a_failed_scan_an_error() -> None:
    """The V1.5 log level of a `scan.failed` follows the reason the agent sent it with."""
    translator = Translator(_volumes("/data"))

    def level(reason: str) -> str:
        text = encode(ScanFailed(scan_id="s", volume_id="/data", reason=reason))
        message = translator.outgoing(text)
        assert isinstance(message, Log15) and message.context is not None
        assert message.context["reason"] == reason
        return message.level

    assert level(ScanFailedReason.COALESCED.value) == "warning"
    # A failure whose text merely starts like the refusal is still a failure.
    assert level("coalesced files unreadable: Input/output error") == "error"
    assert level(ScanFailedReason.UNKNOWN_VOLUME.value) == "error"
