"""`watcher.log` in the V1.5 dialect: what the operator sees in the server's UI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from scanarr.agent.dialect import LogForwarder
from scanarr.dev_api import ReceivedMessage
from scanarr.dev_api_v15 import DevApiV15Server
from v15_support import approved_watch, go_environment, serve_v15, stop_watch

MALFORMED_SCAN = '{"type":"command.scan","data":{"path":5,"scan_id":"s"}}'


async def test_files_the_go_watcher_reported_and_scanarr_skips_are_announced_once(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1, ".hidden/b.mkv": 1, ".hidden/c.nfo": 1})
    (movies / "link.mkv").symlink_to(movies / "a.mkv")
    (Path(os.fsdecode(bytes(movies) + b"/caf\xe9.mkv"))).write_bytes(b"x")
    clean = make_volume("clean", {"d.mkv": 1})
    api = await serve_v15(nursery, watch_paths=[str(movies), str(clean)], log_level="warn")
    environment = go_environment(api.url, state_file)
    process = await approved_watch(nursery, api, environment, tmp_path / "watch.log")
    try:
        with trio.fail_after(20):
            await api.wait_until(lambda: bool(_announcements(api)))
            await api.wait_for_type("scan.completed", path=str(clean))
            scan_id = await api.scan(str(movies))
            await api.wait_for_type("scan.completed", scan_id=scan_id)
            # A later message shows the second scan was not announced again.
            await api.send_raw(MALFORMED_SCAN)
            await api.wait_until(
                lambda: any("malformed" in m.data["message"] for m in api.of_type("watcher.log"))
            )
    finally:
        await stop_watch(process)
    [warning] = _announcements(api)
    assert warning.data["level"] == "warning"
    assert str(movies) in warning.data["message"]
    assert "3 media files" in warning.data["message"]
    assert warning.data["context"]["hidden_folders"] == 1
    assert warning.data["context"]["symlinks"] == 1
    assert warning.data["context"]["not_utf8"] == 1
    assert set(api.files) == {f"{movies}/a.mkv", f"{clean}/d.mkv"}


def _announcements(api: DevApiV15Server) -> list[ReceivedMessage]:
    return [m for m in api.of_type("watcher.log") if "not reported" in m.data["message"]]


async def test_warnings_are_forwarded_rate_limited_and_redacted(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    api = await serve_v15(nursery, watch_paths=[str(movies)], log_level="warn")
    log = tmp_path / "watch.log"
    process = await approved_watch(nursery, api, go_environment(api.url, state_file), log)
    try:
        with trio.fail_after(20):
            await api.wait_for_type("scan.completed", path=str(movies))
        for _ in range(100):
            await api.send_raw(MALFORMED_SCAN)
        with trio.fail_after(20):
            await api.wait_for_type("watcher.log", level="warning")
        await trio.sleep(LogForwarder.BURST / LogForwarder.PER_SECOND / 8)
        # The token the server gave appears in what the server sends back to it.
        token = api.watchers["nas-1"].token
        assert token is not None
        api.watchers["nas-1"].watch_paths = [str(movies), f"relative/{token}"]
        await api.send_config("nas-1")
        with trio.fail_after(20):
            error = await api.wait_for_type("watcher.log", level="error")
    finally:
        await stop_watch(process)
    forwarded = [m for m in api.of_type("watcher.log") if "malformed" in m.data["message"]]
    assert 1 <= len(forwarded) <= LogForwarder.BURST + 5  # a few more refill meanwhile
    assert "not forwarded: rate limit" in error.data["message"]
    assert "[redacted]" in error.data["message"]
    assert all(
        token not in message.raw for message in api.messages if message.type != "watcher.auth"
    )
    text = log.read_text()
    assert text.count("malformed command.scan") == 100  # the local log keeps every line
    assert token not in text
    assert api.of_type("watcher.log", level="info") == []  # the config asked for warnings
