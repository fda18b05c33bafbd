"""Warnings about conditions that last (watch limit, unwatchable folders) are logged when they
start and when they end, summarised at most once a minute in between, never once per retry."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from helpers.backends import inotify_only
from scanarr.live import RescanReason
from scanarr.logs import RepeatingCondition
from scanarr.protocol import FileCreated
from test_live import Harness, tree, write
from test_live import harness as harness

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends


@inotify_only
async def test_watch_limit_is_logged_once_over_many_retries_and_once_when_lifted(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scanarr.live")
    root = tree(tmp_path / "v", {f"D{number}/e.mkv": b"" for number in range(20)})
    watcher = await harness.start_short_of_watches({"v": root}, 0.01)
    # Every retry hits the limit again.
    await harness.wait_until(lambda: watcher.stats().watch_limit_hits >= 10)
    started = [record for record in caplog.records if "watch limit reached" in record.getMessage()]
    assert len(started) == 1
    assert started[0].levelno == logging.WARNING
    for number in range(3, 20):
        shutil.rmtree(root / f"D{number}")
    await harness.wait_until(lambda: ("v", RescanReason.WATCHES_RESTORED, None) in harness.rescans)
    write(root / "D2" / "new.mkv")
    await harness.wait_for(FileCreated, "D2/new.mkv")
    ended = [
        record for record in caplog.records if "every directory is watched again" in record.message
    ]
    assert len(ended) == 1
    assert len([r for r in caplog.records if "watch limit reached" in r.message]) == 1


def test_a_lasting_condition_is_summarised_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    warnings = RepeatingCondition(logging.getLogger("scanarr.test"), clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="scanarr.test")
    for second in range(0, 150):  # one retry a second for two and a half minutes
        now[0] = float(second)
        warnings.occurred("limit", "volume %s: watch limit reached", "v")
    assert warnings.ended("limit", "volume %s: every directory is watched again", "v")
    assert not warnings.ended("limit", "volume %s: every directory is watched again", "v")
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "volume v: watch limit reached",
        "still: volume v: watch limit reached (60 more times in the last 60 s, for 60 s now)",
        "still: volume v: watch limit reached (60 more times in the last 60 s, for 120 s now)",
        "volume v: every directory is watched again",
    ]
    # A new occurrence after the end starts it again.
    warnings.occurred("limit", "volume %s: watch limit reached", "v")
    assert caplog.records[-1].getMessage() == "volume v: watch limit reached"
