"""Handshake (PROTOCOL.md §2) against the dev API server, over real sockets."""

from __future__ import annotations

import logging
import platform
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.agent import TOKEN, one_volume
from scanarr import __version__
from scanarr.dev_api import DevApiServer
from scanarr.protocol import CommandScan, WatcherConfig
from scanarr.state import WatcherState, load_state, save_state


async def test_token_in_header_and_hello(dev_api: DevApiServer, start_watcher: Any) -> None:
    await start_watcher()
    record = dev_api.connections[0]
    assert record.authorization == f"Bearer {TOKEN}"
    assert record.hello is not None
    assert record.hello["token"] == TOKEN
    assert record.hello["hostname"] == socket.gethostname()
    assert record.hello["version"] == __version__
    assert record.hello["os"] == "linux"
    expected_arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())
    if expected_arch:
        assert record.hello["arch"] == expected_arch
    assert dev_api.messages[0].type == "watcher.hello"
    assert dev_api.messages[0].timestamp is not None and dev_api.messages[0].timestamp.endswith("Z")


async def test_the_header_alone_authenticates(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    """A server that only reads the header accepts the watcher too (and vice versa)."""
    root = make_volume("movies", {"a.mkv": b"1"})
    dev_api.config = one_volume("m", root, scan_on_start=True)
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="m")


async def test_nothing_but_hello_before_auth(dev_api: DevApiServer, start_watcher: Any) -> None:
    """An API that never answers: the watcher sends only its hello, then gives up and retries."""
    dev_api.silent = True
    await start_watcher(wait_connected=False, hello_timeout=0.3)
    with trio.fail_after(10):
        await dev_api.wait_for(lambda message: message.type == "watcher.hello", count=3)
    assert len(dev_api.connections) >= 3
    assert {message.type for message in dev_api.messages} == {"watcher.hello"}


async def test_rejected_token_executes_nothing_and_retries(
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
    state_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = make_volume("movies", {"a.mkv": b"1"})
    config = one_volume("m", root, scan_on_start=True)
    save_state(str(state_file), WatcherState(last_config=config, volume_devices={"m": 1}))
    before = state_file.read_bytes()
    dev_api.reject_reason = "revoked"
    dev_api.config = config
    caplog.set_level(logging.DEBUG)
    await start_watcher(wait_connected=False)
    with trio.fail_after(10):
        await dev_api.wait_closed(4)
    # Only hellos: no status, no scan, nothing executed.
    assert {message.type for message in dev_api.messages} == {"watcher.hello"}
    assert all(not record.authenticated for record in dev_api.connections)
    assert state_file.read_bytes() == before
    assert "revoked" in caplog.text
    assert TOKEN not in caplog.text


async def test_watcher_closes_a_rejected_connection_itself(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    """An API that rejects but keeps the socket open, then sends a command anyway."""
    root = make_volume("movies", {"a.mkv": b"1"})
    dev_api.config = one_volume("m", root)
    dev_api.reject_reason = "invalid_token"
    dev_api.hold_after_reject = True
    await start_watcher(wait_connected=False)
    with trio.fail_after(10):
        await dev_api.wait_closed(2)
    assert {message.type for message in dev_api.messages} == {"watcher.hello"}


async def test_accepted_after_the_token_is_re_enabled(
    dev_api: DevApiServer, start_watcher: Any
) -> None:
    dev_api.reject_reason = "revoked"
    await start_watcher(wait_connected=False)
    with trio.fail_after(10):
        await dev_api.wait_closed(2)
    dev_api.reject_reason = None
    with trio.fail_after(10):
        await dev_api.wait_connected()
        await dev_api.wait_for_type("watcher.status")


async def test_commands_sent_before_the_config_are_carried_out(
    nursery: trio.Nursery, start_watcher: Any, make_volume: Any
) -> None:
    """A command that overtakes the first config is kept and run once the config applies."""
    root = make_volume("movies", {"a.mkv": b"1"})
    early = DevApiServer(token=TOKEN, config=WatcherConfig())
    early.config = one_volume("m", root)
    original = early._send_on

    async def send_command_first(websocket: Any, message: Any) -> None:
        if isinstance(message, WatcherConfig):
            await original(websocket, CommandScan(volume_id="m", scan_id="early"))
        await original(websocket, message)

    early._send_on = send_command_first  # type: ignore[method-assign]
    await nursery.start(early.serve)
    from helpers.agent import watcher_settings
    from scanarr.agent import WatcherAgent

    agent = WatcherAgent(watcher_settings(early.url, Path(root.parent / "state.json")))
    await nursery.start(agent.run)
    with trio.fail_after(10):
        await early.wait_for_type("scan.completed", scan_id="early", volume_id="m")


async def test_state_kept_while_rejected(
    dev_api: DevApiServer, start_watcher: Any, state_file: Path
) -> None:
    dev_api.reject_reason = "invalid_token"
    await start_watcher(wait_connected=False)
    with trio.fail_after(10):
        await dev_api.wait_closed(2)
    assert load_state(str(state_file)) == WatcherState()
