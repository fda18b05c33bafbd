"""`scanarr watch` as a process: bad environment, signals, privileges, memory, the dev API CLI."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from helpers.agent import TOKEN, one_volume, serve_known, settings_environment, watcher_settings
from helpers.commands import delete_one
from helpers.processes import WATCH, start_watch
from privileges import NOBODY, is_root, world_traversable_tmp
from scanarr.dev_api import DevApiServer
from scanarr.protocol import (
    CommandScan,
)
from scanarr.state import load_state


def _environment(extra: dict[str, str]) -> dict[str, str]:
    keep = {key: value for key, value in os.environ.items() if not key.startswith("SCANARR_")}
    return {**keep, **extra}


async def _start_watch(
    nursery: trio.Nursery, environment: dict[str, str], log: Path, **options: Any
) -> trio.Process:
    return await start_watch(nursery, _environment(environment), log, **options)


async def _watch_scanned(
    nursery: trio.Nursery, server: DevApiServer, state_file: Path, movies: Path, log: Path
) -> trio.Process:
    """`scanarr watch` of the one volume "movies" at `movies`, scanned at start: returned once
    that scan is complete (20 s at most)."""
    server.config = one_volume("movies", movies, scan_on_start=True)
    environment = settings_environment(watcher_settings(server.url, state_file))
    process = await _start_watch(nursery, environment, log)
    with trio.fail_after(20):
        await server.wait_for_type("scan.completed", volume_id="movies")
    return process


async def _wait_exit(process: trio.Process, seconds: float) -> int:
    with trio.fail_after(seconds):
        return await process.wait()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCANARR_API_URL", None),
        ("SCANARR_AUTH_TOKEN", None),
        ("SCANARR_API_URL", "http://127.0.0.1:1/ws"),
        ("SCANARR_RECONNECT_DELAY", "5 seconds"),
        ("SCANARR_PING_INTERVAL", "-1s"),
        ("SCANARR_LOG_LEVEL", "verbose"),
        ("SCANARR_LIVE_WATCH", "sometimes"),
        ("SCANARR_LIVE_BACKEND", "fanotfy"),
        ("SCANARR_METRICS_ADDR", "everywhere"),
        ("SCANARR_LOG_FORMAT", "xml"),
    ],
)
async def test_bad_environment_exits_2_naming_the_variable(
    dev_api: DevApiServer, state_file: Path, variable: str, value: str | None
) -> None:
    environment = settings_environment(watcher_settings(dev_api.url, state_file))
    if value is None:
        del environment[variable]
    else:
        environment[variable] = value
    result = await trio.run_process(
        WATCH, env=_environment(environment), capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert variable in lines[0]
    assert TOKEN not in lines[0]
    assert dev_api.connections == []  # no connection attempted
    assert not state_file.exists()


async def test_flags_override_the_environment(
    dev_api: DevApiServer, nursery: trio.Nursery, state_file: Path, tmp_path: Path
) -> None:
    environment = settings_environment(watcher_settings(dev_api.url, state_file))
    environment["SCANARR_API_URL"] = "http://not-a-websocket-url"
    environment["SCANARR_STATE_FILE"] = "/nonexistent/unwritable/state.json"
    process = await start_watch(
        nursery,
        _environment(environment),
        tmp_path / "watch.log",
        arguments=["--api-url", dev_api.url, "--state-file", str(state_file)],
    )
    try:
        with trio.fail_after(20):
            await dev_api.wait_for_type("watcher.status")
    finally:
        process.terminate()
        assert await _wait_exit(process, 10) == 0
    assert load_state(str(state_file)).last_config == dev_api.config


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_with_1000_saves_state_and_exits_0(
    dev_api: DevApiServer,
    nursery: trio.Nursery,
    make_volume: Any,
    state_file: Path,
    tmp_path: Path,
    signal_number: int,
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    log = tmp_path / "watch.log"
    process = await _watch_scanned(nursery, dev_api, state_file, movies, log)
    state_file.unlink()
    process.send_signal(signal_number)
    assert await _wait_exit(process, 5) == 0, log.read_text()
    with trio.fail_after(5):
        await dev_api.wait_closed(1)
    assert dev_api.close_codes == [1000]
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert load_state(str(state_file)).last_config == dev_api.config
    text = log.read_text()
    assert TOKEN not in text  # even at log level debug
    assert "stopped" in text


class _StallingApi:
    """An API on 127.0.0.1 that accepts the TCP connection and then stalls: it holds the
    WebSocket upgrade back until `answer_upgrade` is set, and never answers the hello. It
    records the close code of the watcher's close frame, if one arrives."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.port: int = listener.socket.getsockname()[1]
        self.answer_upgrade = trio.Event()
        self.upgrade_requested = trio.Event()
        self.hello_received = trio.Event()
        self.close_codes: list[int] = []
        self.ended = trio.Event()

    async def serve(self) -> None:
        try:
            stream = await self.listener.accept()
        finally:
            with trio.CancelScope(shield=True):
                await self.listener.aclose()  # one connection is all it serves
        connection = WSConnection(ConnectionType.SERVER)
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, Request):
                        self.upgrade_requested.set()
                        await self.answer_upgrade.wait()
                        await stream.send_all(connection.send(AcceptConnection()))
                    elif isinstance(event, TextMessage):
                        if json.loads(event.data).get("type") == "watcher.hello":
                            self.hello_received.set()
                    elif isinstance(event, CloseConnection):
                        self.close_codes.append(event.code)
                        await stream.send_all(connection.send(event.response()))
                        return
        except trio.BrokenResourceError:
            return
        finally:
            self.ended.set()
            await stream.aclose()


@pytest.mark.parametrize("phase", ["handshake", "upgrade"])
async def test_sigterm_during_the_handshake_closes_with_1000(
    nursery: trio.Nursery, state_file: Path, tmp_path: Path, phase: str
) -> None:
    """§9: a clean shutdown closes with 1000 even before the API authenticated the watcher:
    while the hello waits for its answer, or while the WebSocket upgrade is still under way."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    api = _StallingApi(listeners[0])
    nursery.start_soon(api.serve)
    settings = watcher_settings(f"ws://127.0.0.1:{api.port}/ws/watcher", state_file)
    log = tmp_path / "watch.log"
    process = await _start_watch(nursery, settings_environment(settings), log)
    try:
        with trio.fail_after(20):
            if phase == "handshake":
                api.answer_upgrade.set()
                await api.hello_received.wait()
                process.send_signal(signal.SIGTERM)
            else:
                await api.upgrade_requested.wait()
                process.send_signal(signal.SIGTERM)
                # The upgrade completes after the signal: the watcher closes that socket
                # properly instead of dropping it.
                await trio.sleep(0.2)
                api.answer_upgrade.set()
            await api.ended.wait()
        assert await _wait_exit(process, 10) == 0, log.read_text()
    finally:
        if process.returncode is None:
            process.kill()
    assert api.close_codes == [1000], log.read_text()


async def test_live_events_from_the_shipped_watcher(
    dev_api: DevApiServer, nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    """`scanarr watch` as installed: after its scan, a new file is reported live."""
    movies = make_volume("movies", {"old.mkv": 1})
    process = await _watch_scanned(nursery, dev_api, state_file, movies, tmp_path / "watch.log")
    try:
        (movies / "new.mkv").write_bytes(b"new")
        with trio.fail_after(20):
            created = await dev_api.wait_for_type("file.created", relative_path="new.mkv")
    finally:
        process.terminate()
        await _wait_exit(process, 10)
    assert created.data["volume_id"] == "movies"
    assert created.data["size_bytes"] == 3


async def test_a_deletion_is_not_echoed_as_file_deleted(
    dev_api: DevApiServer, nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    """The command reports its deletion; the live watcher must not report it again."""
    movies = make_volume("movies", {"Gone/gone.mkv": 1, "kept.mkv": 1})
    process = await _watch_scanned(nursery, dev_api, state_file, movies, tmp_path / "watch.log")
    try:
        await dev_api.send(delete_one("r", str(movies), "Gone/gone.mkv"))
        with trio.fail_after(20):
            completed = await dev_api.wait_for_type("files.delete.completed", request_id="r")
        # inotify reports in order: an echo of the deletion would come before this creation.
        (movies / "later.mkv").write_bytes(b"x")
        with trio.fail_after(20):
            await dev_api.wait_for_type("file.created", relative_path="later.mkv")
    finally:
        process.terminate()
        await _wait_exit(process, 10)
    assert completed.data["deleted"] == 1
    assert not (movies / "Gone").exists()
    assert not dev_api.of_type("file.deleted")


def _unreadable_tree(base: Path) -> Path:
    root = base / "volume"
    (root / "open").mkdir(parents=True)
    (root / "open" / "a.mkv").write_bytes(b"a")
    (root / "locked").mkdir()
    (root / "locked" / "b.mkv").write_bytes(b"b")
    for directory, _dirs, files in os.walk(base):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    (root / "locked").chmod(0o311)  # traversable, not listable, by anyone but root
    return root


def _fork_watch_as_nobody(environment: dict[str, str], log: Path) -> int:
    """`scanarr watch` in a forked child running as `nobody` (root reads every directory, and
    `nobody` may not be able to read the interpreter's files, so no exec). Returns the pid."""
    # Everything the child runs is imported here, while the files are still readable.
    import encodings.idna  # noqa: F401  (host names are IDNA-encoded on connect)

    import scanarr.agent  # noqa: F401
    from scanarr.cli import build_parser

    build_parser()
    log_descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.dup2(log_descriptor, 2)
            if is_root():
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            os.environ.clear()
            os.environ.update(environment)
            from scanarr.cli import main

            code = main(["watch"])
        finally:
            os._exit(code)
    os.close(log_descriptor)
    return pid


def _wait_child(pid: int, timeout: float) -> int:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the watcher did not exit")


def test_unreadable_subdirectory_fails_the_scan(tmp_path: Path) -> None:
    """The locked directory's files would be wiped by a completed scan: the scan must fail."""
    record = tmp_path / "received.jsonl"
    with world_traversable_tmp() as base:
        root = _unreadable_tree(base)
        state_directory = base / "state"
        state_directory.mkdir()
        if is_root():
            os.chown(state_directory, NOBODY, NOBODY)
        api, api_lines = _start_dev_api(
            ["--scan-on-start", "--volume", f"v={root}", "--record", str(record)]
        )
        pid = None
        try:
            url = api_lines.wait_for(r"listening on (ws://\S+)").group(1)
            settings = watcher_settings(url, state_directory / "watcher-state.json")
            log = tmp_path / "watch.log"
            pid = _fork_watch_as_nobody(_environment(settings_environment(settings)), log)
            try:
                failed = api_lines.wait_for(r'"type":"scan.failed".*"reason":"([^"]*)"')
                # The status change travels in its own message, before or after the failure.
                error_status = r'"type":"watcher.status".*"status":"error"'
                if not any(re.search(error_status, line) for line in api_lines.seen):
                    api_lines.wait_for(error_status)
            except AssertionError:
                raise AssertionError(log.read_text()) from None
            os.kill(pid, signal.SIGTERM)
            assert _wait_child(pid, 10) == 0
            pid = None
        finally:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            _stop(api)
    assert str(root / "locked") in failed.group(1)
    recorded = [json.loads(line) for line in record.read_text().splitlines()]
    assert not [m for m in recorded if m["type"] == "scan.completed"]
    statuses = [m["data"] for m in recorded if m["type"] == "watcher.status"]
    assert statuses[-1]["volumes"][0]["status"] == "error"
    assert statuses[-1]["status"] == "degraded"


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


@pytest.fixture(scope="module")
def hundred_thousand_files() -> Iterator[Path]:
    with world_traversable_tmp() as base:
        shm = Path("/dev/shm")
        root = Path(__import__("tempfile").mkdtemp(dir=shm if os.access(shm, os.W_OK) else base))
        try:
            for directory in range(400):
                folder = root / f"Series {directory:03d}"
                folder.mkdir()
                for number in range(250):
                    name = f"Series.{directory:03d}.S01E{number:03d}.2160p.WEB-DL.DDP5.1.mkv"
                    os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))
            yield root
        finally:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


async def test_slow_server_keeps_memory_flat_and_loses_nothing(
    tight_dev_api: DevApiServer,
    nursery: trio.Nursery,
    hundred_thousand_files: Path,
    state_file: Path,
    tmp_path: Path,
) -> None:
    server = tight_dev_api
    serve_known(server, state_file, one_volume("v", hundred_thousand_files))
    environment = settings_environment(
        watcher_settings(server.url, state_file, log_level="info", ping_interval=600.0)
    )
    # The scan pipeline alone: the live watcher's index of every file is not what is measured.
    environment["SCANARR_LIVE_WATCH"] = "off"
    process = await _start_watch(nursery, environment, tmp_path / "watch.log")
    try:
        with trio.fail_after(20):
            await server.wait_connected()
            await server.wait_for_type("watcher.status")
        baseline = _status_kib(process.pid, "VmRSS")
        server.pause_reading()
        await server.send(CommandScan(volume_id="v", scan_id="slow"))
        # Unthrottled, the walk of 100,000 files takes well under this; here it must stall.
        await trio.sleep(3)
        peak_while_paused = _status_kib(process.pid, "VmHWM")
        server.resume_reading()
        with trio.fail_after(120):
            completed = await server.wait_for_type("scan.completed", scan_id="slow")
        peak = _status_kib(process.pid, "VmHWM")
    finally:
        process.terminate()
        await _wait_exit(process, 10)
    files = {m.data["relative_path"] for m in server.of_type("scan.file", scan_id="slow")}
    assert completed.data["total_files"] == 100_000
    assert len(files) == 100_000
    # Buffering the whole scan would take well over 60 MB (100,000 JSON strings and frames).
    assert peak_while_paused - baseline < 30 * 1024, (baseline, peak_while_paused)
    assert peak - baseline < 30 * 1024, (baseline, peak)


class _Lines:
    """Lines of a subprocess pipe, readable with a timeout."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: IO[bytes]) -> None:
        with pipe:  # closed at the end of the output (the process is gone)
            for line in pipe:
                self._queue.put(line.decode("utf-8", "replace").rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {self.seen[-20:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match


def _start_dev_api(arguments: list[str]) -> tuple[subprocess.Popen[bytes], _Lines]:
    api = subprocess.Popen(
        [sys.executable, "-m", "scanarr", "dev-api", "--port", "0", "--token", TOKEN, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_environment({}),
    )
    assert api.stdout is not None
    return api, _Lines(api.stdout)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill `process` if it still runs, reap it and close our end of its stdin (its stdout is
    closed by the `_Lines` reading it)."""
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()


def test_dev_api_and_watch_commands_end_to_end(make_volume: Any, tmp_path: Path) -> None:
    """The README's two commands: `scanarr dev-api` then `scanarr watch`, then `scan movies`."""
    movies = make_volume("movies", {"Heat (1995)/Heat.mkv": 10, "notes.txt": 1})
    record = tmp_path / "received.jsonl"
    api, api_lines = _start_dev_api(
        ["--scan-on-start", "--volume", f"movies={movies}", "--record", str(record)]
    )
    assert api.stdin is not None
    watch = None
    try:
        url = api_lines.wait_for(r"listening on (ws://\S+)").group(1)
        environment = settings_environment(watcher_settings(url, tmp_path / "state.json"))
        watch = subprocess.Popen(
            WATCH,
            env=_environment(environment),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api_lines.wait_for(r'"type":"scan.completed"')
        api.stdin.write(b"scan movies s-42\n")
        api.stdin.flush()
        api_lines.wait_for(r'"type":"scan.completed".*"s-42"')
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=10) == 0
        api.stdin.write(b"quit\n")
        api.stdin.flush()
        assert api.wait(timeout=10) == 0
    finally:
        for process in (watch, api):
            if process is not None:
                _stop(process)
    recorded = record.read_text().splitlines()
    assert any('"scan_id":"s-42"' in line and '"Heat (1995)/Heat.mkv"' in line for line in recorded)
    assert sum('"type":"watcher.hello"' in line for line in recorded) == 1
    assert TOKEN not in "\n".join(line for line in recorded if "watcher.hello" not in line)
