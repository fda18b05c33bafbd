"""Shared fixtures: a real API stand-in on 127.0.0.1, volumes made of real files, the agent.

- `dev_api`: a `scanarr.dev_api.DevApiServer` listening on 127.0.0.1, port 0, expecting
  `TOKEN`, with an empty config (set ``dev_api.config`` before the watcher connects);
- `make_volume`: ``make_volume("movies", {"A/a.mkv": b"...", ...})`` → a directory under
  tmp_path with those files (content bytes, or an int for a file of that many bytes);
- `start_watcher`: ``await start_watcher(**settings_overrides)`` → a running in-process
  `WatcherAgent` connected to `dev_api`, with test-sized timings; `watcher_settings` builds the
  same settings for a subprocess or a custom agent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from scanarr import safefs
from scanarr.config import Settings, parse_api_url
from scanarr.dev_api import DevApiServer

TOKEN = "test-token-3f1d9c"

# Timings short enough that no test waits for a production-sized period.
TEST_TIMINGS: dict[str, float] = {
    "reconnect_delay": 0.05,
    "reconnect_max_delay": 0.2,
    "rejected_max_delay": 0.2,
    "ping_interval": 5.0,
    "hello_timeout": 5.0,
    "status_interval": 30.0,
    "progress_interval": 5.0,
    "shutdown_timeout": 3.0,
}


def watcher_settings(url: str, state_file: Path | str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_url": parse_api_url(url),
        "auth_token": TOKEN,
        "state_file": str(state_file),
        "log_level": "debug",
        **TEST_TIMINGS,
    }
    values.update(overrides)
    return Settings(**values)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The SCANARR_* variables that give a `scanarr watch` subprocess these settings."""
    from scanarr.config import DURATION_VARIABLES

    environment = {
        "SCANARR_API_URL": settings.api_url.url,
        "SCANARR_AUTH_TOKEN": settings.auth_token,
        "SCANARR_STATE_FILE": settings.state_file,
        "SCANARR_LOG_LEVEL": settings.log_level,
    }
    for attribute, variable, _default in DURATION_VARIABLES:
        environment[variable] = f"{int(getattr(settings, attribute) * 1000)}ms"
    return environment


DevApiFactory = Callable[..., Awaitable[DevApiServer]]


@pytest.fixture
def serve_dev_api(nursery: trio.Nursery) -> DevApiFactory:
    """``await serve_dev_api(**DevApiServer_options)`` → another server, listening."""

    async def serve(**options: Any) -> DevApiServer:
        server = DevApiServer(**{"token": TOKEN, **options})
        await nursery.start(server.serve)
        return server

    return serve


@pytest.fixture
async def dev_api(serve_dev_api: DevApiFactory) -> DevApiServer:
    return await serve_dev_api()


# A server that pushes back after a few frames when paused (see DevApiServer.receive_buffer).
SMALL_RECEIVE_BUFFER = 64 * 1024


@pytest.fixture
async def tight_dev_api(serve_dev_api: DevApiFactory) -> DevApiServer:
    return await serve_dev_api(receive_buffer=SMALL_RECEIVE_BUFFER)


VolumeFactory = Callable[..., Path]


@pytest.fixture
def make_volume(tmp_path: Path) -> VolumeFactory:
    def make(name: str = "volume", files: Mapping[str, bytes | int] | None = None) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        for relative_path, content in (files or {}).items():
            path = root / relative_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(content) if isinstance(content, int) else content)
        return root

    return make


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "watcher-state.json"


@pytest.fixture
def start_watcher(
    nursery: trio.Nursery, dev_api: DevApiServer, state_file: Path
) -> Callable[..., Awaitable[Any]]:
    """``await start_watcher(server=dev_api, wait_connected=True, **settings_overrides)``."""

    async def start(
        *, server: DevApiServer | None = None, wait_connected: bool = True, **overrides: Any
    ) -> Any:
        from scanarr.agent import WatcherAgent

        server = server or dev_api
        settings = watcher_settings(server.url, state_file, **overrides)
        agent = WatcherAgent(settings)
        await nursery.start(agent.run)
        if wait_connected:
            with trio.fail_after(10):
                await server.wait_connected()
                await agent.link.wait_session()
        return agent

    return start


BIG_TREE_DIRECTORIES = 250
BIG_TREE_FILES_PER_DIRECTORY = 100


@pytest.fixture(scope="session")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """25,000 media files in 250 directories, shared read-only by the tests of a session.

    Enough frames (about 8 MB of scan.file) to fill the socket buffers between the watcher and a
    paused `tight_dev_api`, so a scan is reliably still running when a test acts on it. Built on
    tmpfs when there is one (creating 25k files on a loaded disk takes seconds).
    """
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp_path_factory.getbasetemp()
    root = Path(tempfile.mkdtemp(prefix="scanarr-big-tree-", dir=base))
    root.chmod(0o755)
    for directory in range(BIG_TREE_DIRECTORIES):
        folder = root / f"Movie Title {directory:04d} ({1950 + directory % 70})"
        folder.mkdir()
        for number in range(BIG_TREE_FILES_PER_DIRECTORY):
            name = f"Movie.Title.{directory:04d}.Part{number:03d}.1080p.BluRay.x264-GROUP.mkv"
            os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lstat_ground_truth(
    root: Path, extensions: tuple[str, ...] = ("mkv", "mp4", "avi", "m4v", "ts", "wmv")
) -> dict[str, dict[str, Any]]:
    """What a scan of `root` must report, computed with os.walk/os.lstat (no scanarr code).

    Skips what PROTOCOL.md §6 filters out: hidden names, temporary and metadata files, system
    directories, symlinks, names that are not UTF-8.
    """
    system_directories = {"@eaDir", "$RECYCLE.BIN", "System Volume Information"}
    temporary = (".part", ".tmp", ".download", ".!qb")
    expected: dict[str, dict[str, Any]] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            name
            for name in dirnames
            if not name.startswith(".")
            and name not in system_directories
            and not name.startswith(".Trash-")
            and not os.path.islink(os.path.join(directory, name))
        ]
        for name in filenames:
            path = os.path.join(directory, name)
            lower = name.lower()
            if name.startswith(".") or lower.endswith(temporary):
                continue
            if lower.rsplit(".", 1)[-1] not in extensions or "." not in lower:
                continue
            try:
                name.encode("utf-8")
                relative = os.path.relpath(path, root)
                relative.encode("utf-8")
            except UnicodeEncodeError:
                continue
            status = os.lstat(path)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            expected[relative] = {
                "relative_path": relative,
                "filename": name,
                "inode": status.st_ino,
                "device_id": status.st_dev,
                "size_bytes": status.st_size,
                "hardlink_count": status.st_nlink,
                "mtime_ns": status.st_mtime_ns,
            }
    return expected


async def start_stalled_big_scan(
    server: DevApiServer, start_watcher: Any, big_tree: Path, state_file: Path, scan_id: str
) -> Any:
    """A watcher (returned) whose scan of `big_tree`, volume "big", is under way while the API
    reads nothing: the walk is held up by back-pressure in the middle of the tree."""
    from scanarr.protocol import CommandScan, WatcherConfig, WatchPath
    from scanarr.state import WatcherState, save_state

    server.config = WatcherConfig(watch_paths=[WatchPath(id="big", path=str(big_tree))])
    save_state(str(state_file), WatcherState(last_config=server.config))
    agent = await start_watcher(server=server)
    server.pause_reading()
    await server.send(CommandScan(volume_id="big", scan_id=scan_id))
    with trio.fail_after(10):
        while agent.scans.live_scan("big") is None:
            await trio.sleep(0.01)
    return agent


@pytest.fixture(params=["openat2", "component_walk"])
def walk_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the kernel's openat2 resolution and again with the fallback walk."""
    if request.param == "openat2":
        if not safefs.USE_OPENAT2:
            pytest.skip("openat2 is unavailable here (kernel older than 5.6 or blocked by seccomp)")
    else:
        monkeypatch.setattr(safefs, "USE_OPENAT2", False)
    return str(request.param)
