"""Metrics and health endpoints, scraped over real HTTP on 127.0.0.1 (scanarr.metrics)."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from helpers.agent import one_volume
from helpers.messages import completed_scan
from scanarr import __version__
from scanarr.config import SettingsError, parse_api_url
from scanarr.dev_api import DevApiServer
from scanarr.metrics import (
    LABEL_VALUES_LIMIT,
    Metrics,
    MetricsServer,
    metrics_address_from_env,
    parse_metrics_address,
)
from scanarr.protocol import CommandScan, WatcherConfig, WatchPath
from scanarr.reasons import DroppedEvents, RescanReason

ISSUE_METRICS = (
    "scanarr_build_info",
    "scanarr_connected",
    "scanarr_messages_sent_total",
    "scanarr_commands_total",
    "scanarr_scan_duration_seconds",
    "scanarr_scanned_files_total",
    "scanarr_inotify_watches",
    "scanarr_inotify_watch_limit",
    "scanarr_rescans_total",
    "scanarr_queue_events",
    "scanarr_events_dropped_total",
)


def _get(url: str, method: str = "GET", accept: str | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) with the standard library's HTTP client."""
    request = urllib.request.Request(url, method=method)
    if accept is not None:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


async def get(url: str, method: str = "GET", accept: str | None = None) -> tuple[int, str, bytes]:
    return await trio.to_thread.run_sync(_get, url, method, accept)


async def scrape(server: MetricsServer) -> dict[str, float]:
    """Every sample of /metrics as ``name{label="value",...}`` → value."""
    status, _content_type, body = await get(server.url + "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class Switch:
    """A readiness provider a test flips."""

    def __init__(self) -> None:
        self.ready = False
        self.why = "not connected to the API"

    def __call__(self) -> tuple[bool, str]:
        return self.ready, self.why


@pytest.fixture
async def served(nursery: trio.Nursery) -> tuple[MetricsServer, Metrics, Switch]:
    metrics = Metrics()
    switch = Switch()
    server = MetricsServer(("127.0.0.1", 0), metrics, switch)
    await nursery.start(server.serve)
    return server, metrics, switch


# --- address ---------------------------------------------------------------------------------


def test_metrics_address_forms() -> None:
    assert parse_metrics_address("127.0.0.1:9469") == ("127.0.0.1", 9469)
    assert parse_metrics_address(":9469") == (None, 9469)
    assert parse_metrics_address("[::1]:9469") == ("::1", 9469)
    assert parse_metrics_address("nas.local:0") == ("nas.local", 0)
    for bad in ("9469", "127.0.0.1", "127.0.0.1:http", "::1:9469", "[::1]", "host:70000"):
        with pytest.raises(ValueError):
            parse_metrics_address(bad)


def test_metrics_are_off_unless_the_variable_is_set() -> None:
    assert metrics_address_from_env({}) is None
    assert metrics_address_from_env({"SCANARR_METRICS_ADDR": " "}) is None
    assert metrics_address_from_env({"SCANARR_METRICS_ADDR": "127.0.0.1:9469"}) == (
        "127.0.0.1",
        9469,
    )
    with pytest.raises(SettingsError) as error:
        metrics_address_from_env({"SCANARR_METRICS_ADDR": "everywhere"})
    assert error.value.variable == "SCANARR_METRICS_ADDR"


# --- endpoints -------------------------------------------------------------------------------


async def test_every_metric_of_the_issue_is_exposed(
    served: tuple[MetricsServer, Metrics, Switch],
) -> None:
    server, _metrics, _switch = served
    status, content_type, body = await get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in ISSUE_METRICS:
        assert re.search(rf"^# TYPE {name} ", text, re.MULTILINE), name
    samples = await scrape(server)
    build = [key for key in samples if key.startswith("scanarr_build_info{")]
    assert len(build) == 1 and f'version="{__version__}"' in build[0]
    assert samples[build[0]] == 1
    assert samples["scanarr_connected"] == 0
    # Read from the kernel at each scrape.
    with open("/proc/sys/fs/inotify/max_user_watches") as file:
        assert samples["scanarr_inotify_watch_limit"] == int(file.read())
    # Process metrics: what an operator watches over months of uptime.
    assert samples["process_resident_memory_bytes"] > 0


async def test_openmetrics_when_asked(served: tuple[MetricsServer, Metrics, Switch]) -> None:
    server, _metrics, _switch = served
    status, content_type, body = await get(
        server.url + "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


async def test_values_move_with_what_the_agent_reports(
    served: tuple[MetricsServer, Metrics, Switch],
) -> None:
    server, metrics, _switch = served
    before = await scrape(server)
    metrics.set_connected(True)
    metrics.message_sent("scan.file", 250)
    metrics.record_sent(completed_scan("movies", total_files=250, duration_ms=1500))
    metrics.command_done("command.scan", "ok")
    metrics.command_done("command.files.delete", "error")
    metrics.rescan_requested(RescanReason.WATCH_LIMIT)
    metrics.rescan_requested(RescanReason.OVERFLOW)
    metrics.event_dropped(DroppedEvents.STORE_FULL, 7)
    metrics.set_inotify_watches(42)
    queue = [1, 2, 3]
    metrics.count_queue_events(lambda: len(queue))
    after = await scrape(server)

    assert after["scanarr_connected"] == 1
    assert after['scanarr_messages_sent_total{type="scan.file"}'] == 250
    assert after['scanarr_messages_sent_total{type="scan.completed"}'] == 1
    assert (
        after["scanarr_scan_duration_seconds_count"]
        == before.get("scanarr_scan_duration_seconds_count", 0) + 1
    )
    assert after["scanarr_scan_duration_seconds_sum"] == 1.5
    assert after["scanarr_scanned_files_total"] == 250
    assert after['scanarr_commands_total{result="ok",type="command.scan"}'] == 1
    assert after['scanarr_commands_total{result="error",type="command.files.delete"}'] == 1
    assert after['scanarr_rescans_total{reason="watch_limit"}'] == 1
    assert after['scanarr_rescans_total{reason="event_queue_overflow"}'] == 1
    assert after['scanarr_events_dropped_total{reason="offline_queue_full"}'] == 7
    assert after["scanarr_inotify_watches"] == 42
    assert after["scanarr_queue_events"] == 3
    queue.append(4)
    assert (await scrape(server))["scanarr_queue_events"] == 4


# The label of each reason, as alerts and dashboards name it (README.md, "Metrics").
RESCAN_LABELS = {
    RescanReason.OVERFLOW: "event_queue_overflow",
    RescanReason.UNKNOWN_WATCH: "event_for_an_unknown_watch",
    RescanReason.ROOT_LOST: "volume_root_lost",
    RescanReason.ROOT_BACK: "volume_root_available_again",
    RescanReason.WATCH_LIMIT: "watch_limit",
    RescanReason.WATCHES_RESTORED: "every_directory_watched_again",
    RescanReason.NETWORK: "network_filesystem",
    RescanReason.NESTED: "nested_volumes_changed",
    RescanReason.DISCONNECTED: "live_events_while_disconnected",
    RescanReason.STORE_FULL: "the_offline_event_queue_overflowed",
    RescanReason.STORE_OVERFLOWED: "the_offline_event_queue_overflowed_while_disconnected",
}


async def test_a_rescan_is_counted_under_its_reasons_label_whatever_its_text_and_detail(
    nursery: trio.Nursery,
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The label is the reason's own: neither the wording of its message nor a detail (which
    may hold a colon, a path...) moves the series an alert is written against."""
    dev_api.config = one_volume("movies", make_volume("movies", {"a.mkv": b"a"}))
    agent = await start_watcher()
    server = MetricsServer(("127.0.0.1", 0), agent.metrics, agent.readiness)
    await nursery.start(server.serve)
    detail = "moved to: /volume1/Films: old"
    for reason in RescanReason:
        agent.live.request_rescan("movies", reason, detail)
    samples = await scrape(server)
    rescans = {
        key: value for key, value in samples.items() if key.startswith("scanarr_rescans_total{")
    }
    assert rescans == {
        f'scanarr_rescans_total{{reason="{label}"}}': 1 for label in RESCAN_LABELS.values()
    }
    logged = [record.getMessage() for record in caplog.records]
    for reason in RescanReason:
        assert f"rescanning volume movies: {reason.text}: {detail}" in logged


async def test_free_text_labels_stay_bounded(
    served: tuple[MetricsServer, Metrics, Switch],
) -> None:
    """An API sending ever new message types cannot grow the registry without bound."""
    server, metrics, _switch = served
    for number in range(LABEL_VALUES_LIMIT * 3):
        metrics.command_done(f"made.up.type{number}", "unsupported")
    samples = await scrape(server)
    series = [key for key in samples if key.startswith("scanarr_commands_total{")]
    assert len(series) == LABEL_VALUES_LIMIT + 1
    assert samples['scanarr_commands_total{result="unsupported",type="other"}'] == (
        LABEL_VALUES_LIMIT * 2
    )


async def test_livez_readyz_and_errors(served: tuple[MetricsServer, Metrics, Switch]) -> None:
    server, _metrics, switch = served
    assert await get(server.url + "/livez") == (200, "text/plain; charset=utf-8", b"alive\n")
    status, _, body = await get(server.url + "/readyz")
    assert (status, body) == (503, b"not connected to the API\n")
    switch.ready, switch.why = True, "ready: connected"
    status, _, body = await get(server.url + "/readyz?verbose=1")
    assert (status, body) == (200, b"ready: connected\n")
    status, _, body = await get(server.url + "/readyz", method="HEAD")
    assert (status, body) == (200, b"")
    assert (await get(server.url + "/"))[0] == 404
    assert (await get(server.url + "/metrics", method="POST"))[0] == 405


async def test_a_bad_or_vanishing_client_does_not_stop_the_server(
    served: tuple[MetricsServer, Metrics, Switch],
) -> None:
    server, _metrics, _switch = served

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(request)
            client.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
            return answer

    assert (await trio.to_thread.run_sync(raw, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    assert (await trio.to_thread.run_sync(raw, b"GET /metr")).startswith(b"HTTP/1.1 400 ")
    assert (await trio.to_thread.run_sync(raw, b"X" * 20000)).startswith(b"HTTP/1.1 400 ")
    assert (await get(server.url + "/livez"))[0] == 200


async def test_a_readiness_provider_that_raises_answers_503(nursery: trio.Nursery) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = MetricsServer(("127.0.0.1", 0), Metrics(process_metrics=False), broken)
    await nursery.start(server.serve)
    status, _, body = await get(server.url + "/readyz")
    assert status == 503 and b"boom" in body
    assert (await get(server.url + "/livez"))[0] == 200


async def test_two_registries_do_not_share_values() -> None:
    first, second = Metrics(process_metrics=False), Metrics(process_metrics=False)
    first.message_sent("scan.file", 5)
    assert b'scanarr_messages_sent_total{type="scan.file"} 5.0' in first.render()[0]
    assert b"scan.file" not in second.render()[0]


# --- with the watcher agent ------------------------------------------------------------------


async def _wait_until(check: Callable[[], Any], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.02)


async def test_readyz_follows_the_agent_and_flips_when_the_api_goes_away(
    nursery: trio.Nursery,
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
) -> None:
    root = make_volume("movies", {"A/a.mkv": b"1", "b.mkv": b"22"})
    dev_api.config = one_volume("movies", root)
    agent = await start_watcher()
    server = MetricsServer(("127.0.0.1", 0), agent.metrics, agent.readiness)
    await nursery.start(server.serve)

    async def ready() -> bool:
        return (await get(server.url + "/readyz"))[0] == 200

    await _wait_until(ready)
    _status, _, body = await get(server.url + "/readyz")
    assert b"movies" in body
    assert (await scrape(server))["scanarr_connected"] == 1

    dev_api.stop()  # the API goes away and does not come back

    async def not_ready() -> bool:
        return (await get(server.url + "/readyz"))[0] == 503

    await _wait_until(not_ready)
    _status, _, body = await get(server.url + "/readyz")
    assert body.decode().startswith("not connected to the API at ws://127.0.0.1:")
    assert (await scrape(server))["scanarr_connected"] == 0
    assert (await get(server.url + "/livez"))[0] == 200


async def test_readyz_names_an_unavailable_volume(
    nursery: trio.Nursery,
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
    tmp_path: Path,
) -> None:
    present = make_volume("movies", {"a.mkv": b"1"})
    missing = tmp_path / "unmounted"
    dev_api.config = WatcherConfig(
        watch_paths=[
            WatchPath(id="movies", path=str(present)),
            WatchPath(id="tv", path=str(missing)),
        ],
        scan_on_start=True,
    )
    agent = await start_watcher()
    server = MetricsServer(("127.0.0.1", 0), Metrics(process_metrics=False), agent.readiness)
    await nursery.start(server.serve)
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.failed", volume_id="tv")

    async def unavailable() -> bool:
        status, _, body = await get(server.url + "/readyz")
        return status == 503 and f"tv ({missing})".encode() in body

    await _wait_until(unavailable)

    missing.mkdir()
    await dev_api.send(CommandScan(volume_id="tv", scan_id="again"))
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="tv")

    async def ready() -> bool:
        return (await get(server.url + "/readyz"))[0] == 200

    await _wait_until(ready)


async def test_readyz_without_any_volume(
    nursery: trio.Nursery, dev_api: DevApiServer, start_watcher: Any
) -> None:
    agent = await start_watcher()
    server = MetricsServer(("127.0.0.1", 0), Metrics(process_metrics=False), agent.readiness)
    await nursery.start(server.serve)
    status, _, body = await get(server.url + "/readyz")
    assert status == 503
    assert b"no volume" in body


async def test_values_move_when_scans_and_commands_run(
    nursery: trio.Nursery,
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
) -> None:
    files = {f"Film {number}/film.mkv": b"x" * number for number in range(1, 8)}
    root = make_volume("movies", files)
    dev_api.config = one_volume("movies", root, scan_on_start=True)
    agent = await start_watcher()
    server = MetricsServer(("127.0.0.1", 0), agent.metrics, agent.readiness)
    await nursery.start(server.serve)
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="movies")
    before = await scrape(server)
    assert before['scanarr_messages_sent_total{type="scan.file"}'] == len(files)
    assert before["scanarr_scanned_files_total"] == len(files)

    await dev_api.send(CommandScan(volume_id="movies", scan_id="metrics-scan"))
    await dev_api.send({"type": "command.from.the.future", "data": {}})
    await dev_api.send({"type": "command.scan", "data": {"volume_id": 7}})
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", scan_id="metrics-scan")
    after = await scrape(server)

    def moved(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert moved('scanarr_messages_sent_total{type="scan.started"}') == 1
    assert moved('scanarr_messages_sent_total{type="scan.file"}') == len(files)
    assert moved('scanarr_messages_sent_total{type="scan.completed"}') == 1
    assert moved("scanarr_scan_duration_seconds_count") == 1
    assert moved("scanarr_scanned_files_total") == len(files)
    assert moved('scanarr_commands_total{result="ok",type="command.scan"}') == 1
    assert moved('scanarr_commands_total{result="unknown",type="command.from.the.future"}') == 1
    assert moved('scanarr_commands_total{result="malformed",type="command.scan"}') == 1
    assert after["scanarr_connected"] == 1


async def test_readyz_keeps_a_secret_in_the_api_url_out(
    nursery: trio.Nursery, start_watcher: Any
) -> None:
    # Nothing listens on port 9: the watcher stays disconnected and /readyz says where it tries.
    url = "ws://127.0.0.1:9/ws/watcher?token=s3cr3t-in-query"
    agent = await start_watcher(
        server=_UrlOnly(url), wait_connected=False, api_url=parse_api_url(url)
    )
    server = MetricsServer(("127.0.0.1", 0), agent.metrics, agent.readiness)
    await nursery.start(server.serve)
    status, _, body = await get(server.url + "/readyz")
    assert status == 503
    text = body.decode()
    assert text.startswith("not connected to the API at ws://127.0.0.1:9/ws/watcher?token=")
    assert "s3cr3t-in-query" not in text


class _UrlOnly:
    def __init__(self, url: str) -> None:
        self.url = url
