"""Rescan reasons reach the agent typed, the detail apart from the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from scanarr.live import RescanReason
from test_live import Harness, tree

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends


async def test_a_lost_root_asks_for_a_rescan_with_its_reason_and_its_detail_apart(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    harness = Harness(nursery)
    root = tree(tmp_path / "v", {"a/x.mkv": b"x"})
    await harness.start({"v": root}, watch_retry_delay=0.05, watch_retry_max_delay=0.1)
    shutil.rmtree(root)
    await harness.wait_until(
        lambda: ("v", RescanReason.ROOT_LOST, "volume root deleted") in harness.rescans
    )
    tree(root, {"b/y.mkv": b"y"})
    await harness.wait_until(lambda: ("v", RescanReason.ROOT_BACK, None) in harness.rescans)
    assert all(type(reason) is RescanReason for _volume, reason, _detail in harness.rescans)
