"""The real inotify watch limit (ENOSPC from inotify_add_watch), lowered for one process only.

Since Linux 5.11 the inotify limits are counted per user namespace: a child run under
``unshare --user --map-root-user`` may lower ``/proc/sys/user/max_inotify_watches`` for itself
without touching the machine's ``fs.inotify.max_user_watches``. Where that is not allowed, the
test is skipped (the in-process `max_watches` cap covers the same code in test_live.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scanarr.live import RESCAN_WATCH_LIMIT

CHILD = r"""
import json, os, sys
import attrs, trio
from scanarr.live import LiveWatcher
from scanarr.protocol import WatchPath

root, limit = sys.argv[1], sys.argv[2]
with open("/proc/sys/user/max_inotify_watches", "w") as file:
    file.write(limit)

async def main():
    events, rescans = [], []
    async def emit(event):
        events.append(event)
    watcher = LiveWatcher(emit, lambda volume_id, reason: rescans.append(reason),
                          debounce=0.05, fallback_rescan_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        watcher.set_volumes([WatchPath(id="v", path=root)], ["mkv"])
        await watcher.wait_applied()
        with open(os.path.join(root, "new.mkv"), "wb"):
            pass
        with trio.fail_after(20):
            while not events or not rescans:
                await trio.sleep(0.01)
        print(json.dumps({
            "health": attrs.asdict(watcher.health()["v"]),
            "events": [event.relative_path for event in events],
            "rescans": rescans,
        }))
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def _user_namespace_with_own_limits() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 100 > /proc/sys/user/max_inotify_watches",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _user_namespace_with_own_limits(),
    reason="no user namespace with its own inotify limits here",
)
def test_watch_limit_of_the_kernel_degrades_the_volume_and_says_which_sysctl(
    tmp_path: Path,
) -> None:
    root = tmp_path / "volume"
    for number in range(20):
        (root / f"D{number}").mkdir(parents=True)
    child = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", CHILD, str(root), "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    health = report["health"]
    assert health["degraded"] is True
    assert (health["watches"], health["unwatched_directories"]) == (5, 16)
    assert "watch limit" in health["reason"]
    assert report["events"] == ["new.mkv"]  # the watched part still reports live
    assert RESCAN_WATCH_LIMIT in report["rescans"]
    assert "fs.inotify.max_user_watches" in child.stderr
    assert "No space left on device" in child.stderr
