"""Connection life (§9): reconnects, restarted scans, pings, status heartbeat, clean stop."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage

from helpers.agent import TOKEN, one_volume, serve_known, start_stalled_big_scan, watcher_settings
from helpers.trees import BIG_TREE_DIRECTORIES, BIG_TREE_FILES_PER_DIRECTORY
from scanarr.agent import WatcherAgent
from scanarr.dev_api import DevApiServer
from scanarr.protocol import CommandScan, WatcherAuth, WatcherConfig, encode
from scanarr.state import WatcherState, load_state, save_state


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.01)


async def test_connection_killed_mid_scan_restarts_the_scan(
    tight_dev_api: DevApiServer, start_watcher: Any, big_tree: Path, state_file: Path
) -> None:
    server = tight_dev_api
    await start_stalled_big_scan(server, start_watcher, big_tree, state_file, "k-1")
    await server.drop_connection()
    server.resume_reading()
    with trio.fail_after(60):
        completed = await server.wait_for_type("scan.completed", scan_id="k-1")
    assert completed.connection == 2
    total = BIG_TREE_DIRECTORIES * BIG_TREE_FILES_PER_DIRECTORY
    assert completed.data["total_files"] == total
    second_run = [
        m for m in server.messages if m.connection == 2 and m.data.get("scan_id") == "k-1"
    ]
    assert second_run[0].type == "scan.started"
    files = {m.data["relative_path"] for m in second_run if m.type == "scan.file"}
    assert len(files) == total
    assert len(server.of_type("scan.completed", scan_id="k-1")) == 1


async def test_status_after_config_on_change_and_periodically(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    serve_known(dev_api, state_file, one_volume("movies", movies))
    agent = await start_watcher(status_interval=0.2)
    with trio.fail_after(10):
        first = await dev_api.wait_for_type("watcher.status")
    assert first.data["status"] == "watching"
    assert first.data["volumes"] == [{"id": "movies", "path": str(movies), "status": "watching"}]
    assert isinstance(first.data["uptime_seconds"], int)
    # Periodic, without any change.
    with trio.fail_after(10):
        await dev_api.wait_for_type("watcher.status", count=4)
    # Set by another service: reported at once, with the top-level status derived from it.
    agent.status.set_volume_status("movies", "degraded")
    with trio.fail_after(10):
        degraded = await dev_api.wait_for(
            lambda m: m.type == "watcher.status" and m.data["status"] == "degraded"
        )
    assert degraded[0].data["volumes"][0]["status"] == "degraded"
    # A scan shows as scanning while it runs.
    agent.status.set_volume_status("movies", "watching")
    await dev_api.send(CommandScan(volume_id="movies", scan_id="st"))
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", scan_id="st")
        await dev_api.wait_for(
            lambda m: (
                m.type == "watcher.status"
                and m.data["volumes"][0]["status"] == "scanning"
                and m.data["status"] == "scanning"
            )
        )


async def _dead_api(
    listener: trio.SocketListener, config: WatcherConfig, connections: list[int]
) -> None:
    """An API that authenticates, sends the config, then never reads again (no pongs)."""
    streams: list[trio.SocketStream] = []
    try:
        while True:
            stream = await listener.accept()
            streams.append(stream)
            connections.append(1)
            connection = WSConnection(ConnectionType.SERVER)
            handshake_done = False
            while not handshake_done:
                connection.receive_data(await stream.receive_some(65536))
                for event in connection.events():
                    if isinstance(event, Request):
                        await stream.send_all(connection.send(AcceptConnection()))
                    elif isinstance(event, TextMessage) and json.loads(event.data)["type"] == (
                        "watcher.hello"
                    ):
                        auth = WatcherAuth(status="authenticated", watcher_id="w", watcher_name="w")
                        await stream.send_all(connection.send(TextMessage(data=encode(auth))))
                        await stream.send_all(connection.send(TextMessage(data=encode(config))))
                        handshake_done = True
                    elif isinstance(event, Ping):
                        pass
    finally:
        with trio.CancelScope(shield=True):
            for stream in streams:
                await stream.aclose()
            await listener.aclose()


async def test_no_pong_within_two_intervals_reconnects(
    nursery: trio.Nursery, state_file: Path
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    connections: list[int] = []
    nursery.start_soon(_dead_api, listeners[0], WatcherConfig(), connections)
    agent = WatcherAgent(
        watcher_settings(f"ws://127.0.0.1:{port}/ws", state_file, ping_interval=0.1)
    )
    await nursery.start(agent.run)
    with trio.fail_after(10):
        await wait_until(lambda: len(connections) >= 3)


async def test_api_unreachable_at_start_uses_the_last_config(
    nursery: trio.Nursery, serve_dev_api: Any, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    config = one_volume("movies", movies)
    save_state(str(state_file), WatcherState(last_config=config, volume_devices={"movies": 7}))
    with socket.socket() as probe:  # a port where nothing listens (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = WatcherAgent(watcher_settings(f"ws://127.0.0.1:{port}/ws/watcher", state_file))
    await nursery.start(agent.run)
    assert [volume.id for volume in agent.volumes.ordered()] == ["movies"]
    assert agent.status.volume_status("movies") == "watching"
    await trio.sleep(0.3)  # a few failed attempts
    server = DevApiServer(token=TOKEN, config=config)
    await nursery.start(server.serve, "127.0.0.1", port)
    with trio.fail_after(10):
        await server.wait_connected()
        await server.wait_for_type("watcher.status")
    # The state survived the failed attempts untouched.
    assert load_state(str(state_file)).volume_devices == {"movies": 7}


async def test_request_stop_closes_with_1000_and_saves_state(
    dev_api: DevApiServer, nursery: trio.Nursery, make_volume: Any, state_file: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    dev_api.config = one_volume("movies", movies, scan_on_start=True)
    agent = WatcherAgent(watcher_settings(dev_api.url, state_file))
    stopped = trio.Event()

    async def run_agent() -> None:
        await agent.run()
        stopped.set()

    nursery.start_soon(run_agent)
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="movies")
    state_file.unlink()
    agent.request_stop()
    with trio.fail_after(5):
        await stopped.wait()
        await dev_api.wait_closed(1)
    assert dev_api.close_codes == [1000]
    assert load_state(str(state_file)).last_config == dev_api.config
    assert len(dev_api.connections) == 1


def test_backoff_doubles_with_jitter_caps_and_resets() -> None:
    from scanarr.agent.backoff import Backoff

    backoff = Backoff(5.0, 60.0)
    ceilings = []
    for _ in range(8):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert ceiling <= delay <= min(ceiling * 1.25, 60.0)
        ceilings.append(ceiling)
    assert ceilings == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0]
    backoff.reset()
    assert backoff.ceiling() == 5.0
    rejected = Backoff(5.0, 300.0)
    for _ in range(20):
        rejected.next_delay()
    assert rejected.ceiling() == 300.0


@pytest.mark.parametrize(("configured", "expected_cap"), [(5.0, 60.0), (90.0, 90.0)])
def test_backoff_jitter_never_retries_sooner_than_the_configured_delay(
    configured: float, expected_cap: float
) -> None:
    """§9: jitter only lengthens a delay (by up to 25 %); the cap is 60 s, or the configured
    delay when that is longer. Many draws, as many watchers restarted together would make."""
    from scanarr.agent.backoff import Backoff

    rng = random.Random(1)
    first_delays = []
    for _ in range(2000):
        backoff = Backoff(configured, 60.0, rng=rng)
        first_delays.append(backoff.next_delay())
        delays = [backoff.next_delay() for _ in range(10)]
        assert all(configured <= delay <= expected_cap for delay in delays)
        assert max(delays) == expected_cap
    assert min(first_delays) >= configured
    assert max(first_delays) <= min(configured * 1.25, expected_cap)
    if configured * 1.25 <= expected_cap:
        # The draws spread over the range: not all watchers retry at the same moment.
        assert max(first_delays) - min(first_delays) > configured * 0.2
