"""`scanarr dev-api --dialect v1.5` as a user runs it: a watcher waits, `approve` lets it in."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from v15_support import go_environment, start_watch, stop_watch

DEV_API = [sys.executable, "-m", "scanarr", "dev-api", "--dialect", "v1.5"]


class _Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.seen: list[str] = []

    async def wait_for(self, pattern: str) -> re.Match[str]:
        compiled = re.compile(pattern)
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                self.seen.append(text)
                match = compiled.search(text)
                if match:
                    return match
            chunk = await self.stream.receive_some(65536)
            assert chunk, "dev-api exited; it printed:\n" + "\n".join(self.seen)
            self.buffer += chunk


async def test_dev_api_console_approves_a_waiting_watcher(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 2})
    api_process = await trio.lowlevel.open_process(
        [*DEV_API, "--port", "0", "--volume", str(movies)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert api_process.stdin is not None and api_process.stdout is not None
    lines = _Lines(api_process.stdout)
    watch: trio.Process | None = None
    try:
        with trio.fail_after(20):
            url = (await lines.wait_for(r"listening on (ws://\S+)")).group(1)
        environment = go_environment(url, state_file)
        watch = await start_watch(nursery, environment, tmp_path / "watch.log")
        with trio.fail_after(20):
            await lines.wait_for(r"watcher nas-1 is new: pending approval")
        await api_process.stdin.send_all(b"approve nas-1\n")
        with trio.fail_after(20):
            completed = await lines.wait_for(r'^<- (\{"type":"scan\.completed".*)$')
        assert json.loads(completed.group(1))["data"]["path"] == str(movies)
        token = json.loads(state_file.read_text())["auth_token"]
        assert re.fullmatch("[0-9a-f]{64}", token)
        assert token not in "\n".join(lines.seen)  # the console does not show it either
        await api_process.stdin.send_all(b"quit\n")
        with trio.fail_after(10):
            assert await api_process.wait() == 0
    finally:
        if watch is not None:
            await stop_watch(watch)
        if api_process.returncode is None:
            api_process.kill()
            await api_process.wait()
        await api_process.stdin.aclose()  # the pipes too, not only the process
        await api_process.stdout.aclose()
