"""Live watching through the real agent and a real WebSocket API on 127.0.0.1.

The agent runs as the shipped `scanarr watch` process (so it can be stopped with SIGSTOP and
killed with SIGKILL), configured through its environment as a user would.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
from pathlib import Path

import pytest
import trio

from helpers.agent import TOKEN, one_volume
from scanarr.dev_api import DevApiServer
from test_live import disk_view

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends


def watcher_command(url: str, state_file: Path) -> tuple[list[str], dict[str, str]]:
    """The shipped `scanarr watch`, configured as a user would, with short reconnect delays."""
    environment = {
        **os.environ,
        "SCANARR_API_URL": url,
        "SCANARR_AUTH_TOKEN": TOKEN,
        "SCANARR_STATE_FILE": str(state_file),
        "SCANARR_RECONNECT_DELAY": "50ms",
        "SCANARR_RECONNECT_MAX_DELAY": "200ms",
        "SCANARR_LOG_LEVEL": "info",
    }
    return [sys.executable, "-m", "scanarr", "watch"], environment


async def test_agent_stopped_by_sigstop_overflows_rescans_and_the_api_matches_the_disk(
    dev_api: DevApiServer, tmp_path: Path
) -> None:
    root = tmp_path / "volume"
    (root / "Burst").mkdir(parents=True)
    (root / "Old").mkdir()
    (root / "Old" / "old.mkv").write_bytes(b"old")
    dev_api.config = one_volume("v", root, scan_on_start=True)
    command, environment = watcher_command(dev_api.url, tmp_path / "s")
    agent = await trio.lowlevel.open_process(command, env=environment)
    try:
        with trio.fail_after(120):
            await dev_api.wait_connected()
            await dev_api.wait_for_type("scan.completed", volume_id="v")
            (root / "live.mkv").write_bytes(b"live")
            await dev_api.wait_for_type("file.created", volume_id="v", relative_path="live.mkv")
            agent.send_signal(signal.SIGSTOP)
            try:
                # 40,000 events while nobody reads: more than fs.inotify.max_queued_events.
                for number in range(20_000):
                    path = root / "Burst" / f"{number}.mkv"
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            finally:
                agent.send_signal(signal.SIGCONT)
            rescan = await dev_api.wait_for_type("scan.completed", volume_id="v", count=2)
        scanned = dev_api.of_type("scan.file", volume_id="v", scan_id=rescan.data["scan_id"])
        api_view = {message.data["relative_path"]: message.data["inode"] for message in scanned}
        assert api_view == {path: inode for path, (inode, _size) in disk_view(root).items()}
        assert len(api_view) == 20_002  # the burst, Old/old.mkv and live.mkv
    finally:
        agent.kill()
        await agent.wait()


async def start_agent(api: DevApiServer, state_file: Path) -> trio.Process:
    command, environment = watcher_command(api.url, state_file)
    return await trio.lowlevel.open_process(command, env=environment)


async def test_events_while_disconnected_survive_kill_9_and_are_replayed_after_reconnect(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    (root / "old.mkv").write_bytes(b"old")
    config = one_volume("v", root, scan_on_start=True)
    state_file = tmp_path / "state" / "watcher-state.json"
    queue_file = state_file.with_name("watcher-state.queue.jsonl")
    first_api = DevApiServer(token=TOKEN, config=config)
    await nursery.start(first_api.serve)
    agent = await start_agent(first_api, state_file)
    try:
        with trio.fail_after(60):
            await first_api.wait_connected()
            await first_api.wait_for_type("scan.completed", volume_id="v")
            first_api.stop()  # the API goes away
            while first_api.connected:
                await trio.sleep(0.01)
            (root / "new.mkv").write_bytes(b"new")
            (root / "old.mkv").unlink()
            while not queue_file.exists() or len(queue_file.read_bytes().splitlines()) < 2:
                await trio.sleep(0.01)
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        agent = await start_agent(first_api, state_file)
        second_api = DevApiServer(token=TOKEN, config=config)
        await nursery.start(second_api.serve, "127.0.0.1", first_api.port)
        reconnected = datetime.datetime.now(datetime.timezone.utc)
        with trio.fail_after(60):
            await second_api.wait_connected()
            created = await second_api.wait_for_type("file.created", relative_path="new.mkv")
            deleted = await second_api.wait_for_type("file.deleted", relative_path="old.mkv")
        assert second_api.messages.index(created) < second_api.messages.index(deleted)
        for message in (created, deleted):  # stamped when they happened, not when replayed
            assert message.timestamp is not None
            happened = datetime.datetime.fromisoformat(message.timestamp.replace("Z", "+00:00"))
            assert happened < reconnected
        assert created.data["inode"] == os.lstat(root / "new.mkv").st_ino
        with trio.fail_after(30):
            while queue_file.read_bytes():
                await trio.sleep(0.01)  # emptied once replayed
    finally:
        agent.kill()
        await agent.wait()
