"""Settings and starts of the watcher for tests: the token the dev API expects, test-sized
timings, the environment of a `scanarr watch` subprocess, a scan held up mid-walk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from scanarr.config import Settings, parse_api_url
from scanarr.dev_api import DevApiServer, ReceivedMessage
from scanarr.protocol import WatcherConfig

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


async def start_stalled_big_scan(
    server: DevApiServer, start_watcher: Any, big_tree: Path, state_file: Path, scan_id: str
) -> Any:
    """A watcher (returned) whose scan of `big_tree`, volume "big", is under way while the API
    reads nothing: the walk is held up by back-pressure in the middle of the tree."""
    from scanarr.protocol import CommandScan, WatchPath

    serve_known(
        server, state_file, WatcherConfig(watch_paths=[WatchPath(id="big", path=str(big_tree))])
    )
    agent = await start_watcher(server=server)
    server.pause_reading()
    await server.send(CommandScan(volume_id="big", scan_id=scan_id))
    with trio.fail_after(10):
        while agent.scans.live_scan("big") is None:
            await trio.sleep(0.01)
    return agent


async def scan_completed(server: DevApiServer, volume_id: str, scan_id: str) -> ReceivedMessage:
    """Ask for a scan of `volume_id` and wait (10 s at most) for its ``scan.completed``: also
    the way to know the watcher has handled everything the API sent before."""
    from scanarr.protocol import CommandScan

    await server.send(CommandScan(volume_id=volume_id, scan_id=scan_id))
    with trio.fail_after(10):
        return await server.wait_for_type("scan.completed", scan_id=scan_id)


def one_volume(volume_id: str, path: Path, **options: Any) -> WatcherConfig:
    """A config with the one volume `volume_id` at `path` (`options`: the config's other fields)."""
    from scanarr.protocol import WatchPath

    return WatcherConfig(watch_paths=[WatchPath(id=volume_id, path=str(path))], **options)


def serve_known(server: DevApiServer, state_file: Path, config: WatcherConfig) -> None:
    """`server` sends `config`, which an earlier run already received and saved: the watcher
    starts knowing those volumes, so it scans none of them at start unless `scan_on_start`."""
    from scanarr.state import WatcherState, save_state

    server.config = config
    save_state(str(state_file), WatcherState(last_config=config))
