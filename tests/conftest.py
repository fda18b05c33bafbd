"""Shared fixtures: a real API stand-in on 127.0.0.1, volumes made of real files, the agent.

- `dev_api`: a `scanarr.dev_api.DevApiServer` listening on 127.0.0.1, port 0, expecting
  `TOKEN`, with an empty config (set ``dev_api.config`` before the watcher connects);
- `make_volume`: ``make_volume("movies", {"A/a.mkv": b"...", ...})`` → a directory under
  tmp_path with those files (content bytes, or an int for a file of that many bytes);
- `live_backend`: parametrises a test over the live backends (inotify, fanotify);
- `start_watcher`: ``await start_watcher(**settings_overrides)`` → a running in-process
  `WatcherAgent` connected to `dev_api`, with test-sized timings (`helpers.agent`).

Helpers that are not fixtures live in `tests/helpers/` (`from helpers.agent import TOKEN`).
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

from helpers.agent import TOKEN, watcher_settings
from helpers.backends import LIVE_BACKENDS, VARIABLE, fanotify_unavailable
from helpers.trees import BIG_TREE_DIRECTORIES, BIG_TREE_FILES_PER_DIRECTORY
from scanarr import safefs
from scanarr.dev_api import DevApiServer

DevApiFactory = Callable[..., Awaitable[DevApiServer]]


@pytest.fixture(params=LIVE_BACKENDS)
def live_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each live test once per backend (``pytestmark = pytest.mark.usefixtures("live_backend")``):
    ``SCANARR_LIVE_BACKEND`` is set for the test (and the processes it starts); fanotify is
    skipped where this process may not use it."""
    backend: str = request.param
    if backend == "fanotify":
        why = fanotify_unavailable()
        if why is not None:
            pytest.skip(f"fanotify: {why}")
    monkeypatch.setenv(VARIABLE, backend)
    return backend


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


@pytest.fixture(params=["openat2", "component_walk"])
def walk_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the kernel's openat2 resolution and again with the fallback walk."""
    if request.param == "openat2":
        if not safefs.USE_OPENAT2:
            pytest.skip("openat2 is unavailable here (kernel older than 5.6 or blocked by seccomp)")
    else:
        monkeypatch.setattr(safefs, "USE_OPENAT2", False)
    return str(request.param)
