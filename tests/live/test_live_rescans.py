"""Rescan reasons are typed inside the watcher and reach the agent as plain text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from scanarr.live import RESCAN_ROOT_BACK, RescanReason
from test_live import Harness, tree

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends


async def test_a_lost_root_asks_for_a_rescan_with_its_reason_and_detail_as_text(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    harness = Harness(nursery)
    root = tree(tmp_path / "v", {"a/x.mkv": b"x"})
    await harness.start({"v": root}, watch_retry_delay=0.05, watch_retry_max_delay=0.1)
    shutil.rmtree(root)
    lost = f"{RescanReason.ROOT_LOST.value}: volume root deleted"
    await harness.wait_until(lambda: ("v", lost) in harness.rescans)
    tree(root, {"b/y.mkv": b"y"})
    await harness.wait_until(lambda: ("v", RESCAN_ROOT_BACK) in harness.rescans)
    assert all(type(reason) is str for _volume, reason in harness.rescans)
