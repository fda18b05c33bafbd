"""Running the shipped `scanarr watch` process against the V1.5 dev API (`DevApiV15Server`)."""

from __future__ import annotations

import os
from pathlib import Path

import trio

import helpers.processes
from helpers.agent import TEST_TIMINGS
from scanarr.config import DURATION_VARIABLES
from scanarr.dev_api_v15 import DevApiV15Server


def go_environment(url: str, state_file: Path, **extra: str) -> dict[str, str]:
    """The variables a Go watcher's environment file has (its names), test-sized timings."""
    environment = {
        "SCANARR_WS_URL": url,
        "SCANARR_WATCHER_ID": "nas-1",
        "SCANARR_STATE_PATH": str(state_file),
        "SCANARR_LOG_LEVEL": "debug",
    }
    for attribute, variable, _default in DURATION_VARIABLES:
        if attribute in TEST_TIMINGS:
            environment[variable] = f"{int(TEST_TIMINGS[attribute] * 1000)}ms"
    environment.update(extra)
    keep = {key: value for key, value in os.environ.items() if not key.startswith("SCANARR_")}
    return {**keep, **environment}


async def start_watch(
    nursery: trio.Nursery, environment: dict[str, str], log: Path
) -> trio.Process:
    return await helpers.processes.start_watch(nursery, environment, log)


async def stop_watch(process: trio.Process) -> int:
    process.terminate()
    with trio.fail_after(15):
        return await process.wait()


async def serve_v15(nursery: trio.Nursery, **options: object) -> DevApiV15Server:
    server = DevApiV15Server(**options)  # type: ignore[arg-type]
    await nursery.start(server.serve)
    return server


async def approved_watch(
    nursery: trio.Nursery, api: DevApiV15Server, environment: dict[str, str], log: Path
) -> trio.Process:
    """A watch process, approved by the operator on first contact, its first scans done."""
    process = await start_watch(nursery, environment, log)
    with trio.fail_after(20):
        pending = await api.wait_pending()
        assert pending.watcher_id is not None
        await api.approve(pending.watcher_id)
        await api.wait_authenticated(1)
    return process


async def serve_volumes(
    nursery: trio.Nursery, state_file: Path, *volumes: Path, **extra: str
) -> tuple[DevApiV15Server, dict[str, str]]:
    """A V1.5 API configured with the watch paths `volumes`, and the environment (`extra`
    added) of a watcher pointed at it."""
    api = await serve_v15(nursery, watch_paths=[str(volume) for volume in volumes])
    return api, go_environment(api.url, state_file, **extra)
