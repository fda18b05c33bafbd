"""A rescan the watcher asks for itself, as the V1.5 server's UI and the metrics show it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.http import free_port, get_text
from scanarr.dev_api import ReceivedMessage
from scanarr.dev_api_v15 import DevApiV15Server
from v15_support import approved_watch, go_environment, serve_v15, stop_watch


def _rescans(api: DevApiV15Server) -> list[ReceivedMessage]:
    return [m for m in api.of_type("watcher.log") if "rescanning volume" in m.data["message"]]


@pytest.mark.usefixtures("live_backend")
async def test_a_lost_root_is_told_to_the_ui_in_words_and_counted_under_its_label(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path, live_backend: str
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    api = await serve_v15(nursery, watch_paths=[str(movies)], log_level="warn")
    port = free_port()
    environment = go_environment(
        api.url,
        state_file,
        SCANARR_METRICS_ADDR=f"127.0.0.1:{port}",
        SCANARR_LIVE_BACKEND=live_backend,
    )
    process = await approved_watch(nursery, api, environment, tmp_path / "watch.log")
    try:
        with trio.fail_after(20):
            await api.wait_for_type("scan.completed", path=str(movies))
            shutil.rmtree(movies)
            await api.wait_until(lambda: bool(_rescans(api)))
        metrics = await trio.to_thread.run_sync(get_text, f"http://127.0.0.1:{port}/metrics")
    finally:
        await stop_watch(process)
    [rescan] = _rescans(api)
    assert rescan.data["level"] == "warning"
    assert rescan.data["message"].endswith(": volume root lost: volume root deleted")
    assert 'scanarr_rescans_total{reason="volume_root_lost"} 1.0' in metrics
