"""The real inotify watch limit (ENOSPC from inotify_add_watch), lowered for one process only.

Since Linux 5.11 the inotify limits are counted per user namespace: a child run under
``unshare --user --map-root-user`` may lower ``/proc/sys/user/max_inotify_watches`` for itself
without touching the machine's ``fs.inotify.max_user_watches``. Where that is not allowed, the
test is skipped (the in-process `max_watches` cap covers the same code in test_live.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from helpers.agent import one_volume
from scanarr.dev_api import DevApiServer
from scanarr.live import RescanReason
from test_live import disk_view
from test_live_agent import watcher_command

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
    watcher = LiveWatcher(emit, lambda volume_id, reason, detail: rescans.append(reason.name),
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
    assert RescanReason.WATCH_LIMIT.name in report["rescans"]
    assert "fs.inotify.max_user_watches" in child.stderr
    assert "No space left on device" in child.stderr


def _fallback_rescans(log_path: Path) -> int:
    lines = log_path.read_text().splitlines()
    return sum("rescan of volume v" in line and "watch limit" in line for line in lines)


def _watched_inodes(pid: int) -> set[int]:
    """Inodes of the directories the process's inotify instances watch (from fdinfo)."""
    inodes: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            fields = dict(field.split(":", 1) for field in line.split()[1:] if ":" in field)
            if line.startswith("inotify") and "ino" in fields:
                inodes.add(int(fields["ino"], 16))
    return inodes


@pytest.mark.skipif(
    not _user_namespace_with_own_limits(),
    reason="no user namespace with its own inotify limits here",
)
async def test_agent_below_the_watch_limit_answers_logs_once_and_converges(
    dev_api: DevApiServer, tmp_path: Path
) -> None:
    # 3,001 directories, 1,000 watches: two thirds of the volume is covered by rescans only.
    root = tmp_path / "volume"
    for number in range(1500):
        movie = root / f"M{number:04d}"
        (movie / "Featurettes").mkdir(parents=True)
        (movie / "movie.mkv").write_bytes(b"movie")
        (movie / "Featurettes" / "extra.mkv").write_bytes(b"extra")
    dev_api.config = one_volume("v", root)
    command, environment = watcher_command(dev_api.url, tmp_path / "state.json")
    environment |= {
        "SCANARR_FALLBACK_RESCAN_INTERVAL": "1s",
        "SCANARR_WATCH_RETRY_DELAY": "50ms",
        "SCANARR_WATCH_RETRY_MAX_DELAY": "100ms",
    }
    limited = 'echo "$1" > /proc/sys/user/max_inotify_watches && shift && exec "$@"'
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log_file:
        agent = await trio.lowlevel.open_process(
            ["unshare", "--user", "--map-root-user", "sh", "-c", limited, "-", "1000", *command],
            env=environment,
            stderr=log_file,
        )
    try:
        with trio.fail_after(120):
            await dev_api.wait_connected()
            await dev_api.wait_for_type("scan.completed", volume_id="v")
            await dev_api.wait_for(
                lambda message: (
                    message.type == "watcher.status"
                    and message.data["volumes"][0]["status"] == "degraded"
                )
            )
            watched = _watched_inodes(agent.pid)
            assert len(watched) == 1000
            movies = sorted(root.iterdir())
            in_watched = [movie for movie in movies if movie.stat().st_ino in watched][:3]
            in_unwatched = [movie for movie in movies if movie.stat().st_ino not in watched][:3]
            assert len(in_watched) == len(in_unwatched) == 3
            changes_at = len(dev_api.messages)
            for movies_here in (in_watched, in_unwatched):
                (movies_here[0] / "new.mkv").write_bytes(b"new")
                (movies_here[1] / "movie.mkv").unlink()
                (movies_here[2] / "movie.mkv").rename(movies_here[2] / "renamed.mkv")
            # The watched part reports live...
            watched_new = f"{in_watched[0].name}/new.mkv"
            await dev_api.wait_for_type("file.created", relative_path=watched_new)
            # ...and a fallback rescan started after the changes reports the whole disk.
            rescan = await dev_api.wait_for(
                lambda message: (
                    message.type == "scan.started" and dev_api.messages.index(message) >= changes_at
                )
            )
            scan_id = rescan[0].data["scan_id"]
            await dev_api.wait_for_type("scan.completed", scan_id=scan_id)
            scanned = dev_api.of_type("scan.file", scan_id=scan_id)
            api_view = {message.data["relative_path"]: message.data["inode"] for message in scanned}
            assert api_view == {path: inode for path, (inode, _size) in disk_view(root).items()}
            # Still answering commands, over the limit.
            await dev_api.send(
                {"type": "command.scan", "data": {"volume_id": "v", "scan_id": "asked"}}
            )
            await dev_api.wait_for_type("scan.completed", scan_id="asked")
            # Two fallback rescans: the watches were retried (every 50-100 ms) for over a second.
            while _fallback_rescans(log_path) < 2:
                await trio.sleep(0.05)
            agent.send_signal(signal.SIGTERM)
            assert await agent.wait() == 0
        await dev_api.wait_closed()
        assert dev_api.close_codes[-1] == 1000
    finally:
        agent.kill()
        await agent.wait()
    lines = log_path.read_text().splitlines()
    started = [line for line in lines if "fs.inotify.max_user_watches=" in line]
    assert len(started) == 1, started  # not once per retry
    assert "No space left on device" in started[0]
