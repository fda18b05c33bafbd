"""A volume whose filesystem is unmounted and mounted again (IN_UNMOUNT), for real.

The child process runs in a private mount namespace (``unshare --mount``), so the tmpfs it
mounts on the volume root is invisible to every other process. Skipped where that is not allowed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.mounts import PRIVATE_MOUNTS, private_mounts_allowed
from scanarr.live import RescanReason

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends

CHILD = r"""
import json, os, subprocess, sys
import attrs, trio
from scanarr.live import LiveWatcher, RescanReason
from scanarr.protocol import WatchPath


root = sys.argv[1]

def mount():
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", root], check=True)

async def main():
    events, rescans = [], []
    lot = trio.lowlevel.ParkingLot()
    async def emit(event):
        events.append(event.relative_path)
        lot.unpark_all()
    def rescan(volume_id, reason, detail):
        rescans.append((reason, detail))
        lot.unpark_all()
    async def until(condition):
        with trio.fail_after(20):
            while not condition():
                await lot.park()
    watcher = LiveWatcher(emit, rescan, debounce=0.05,
                          watch_retry_delay=0.05, watch_retry_max_delay=0.1,
                          backend=os.environ.get("SCANARR_LIVE_BACKEND", "inotify"))
    mount()
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        watcher.set_volumes([WatchPath(id="v", path=root)], ["mkv"])
        await watcher.wait_applied()
        open(f"{root}/before.mkv", "wb").close()
        await until(lambda: "before.mkv" in events)
        subprocess.run(["umount", root], check=True)
        await until(lambda: any(reason is RescanReason.ROOT_LOST for reason, _ in rescans))
        unmounted = attrs.asdict(watcher.health()["v"])
        # The empty directory under the mount point is not the volume: written there, unseen.
        open(f"{root}/underneath.mkv", "wb").close()
        await trio.sleep(0.3)  # several retries happen meanwhile
        still_unmounted = attrs.asdict(watcher.health()["v"])
        mount()
        await until(lambda: (RescanReason.ROOT_BACK, None) in rescans)
        open(f"{root}/after.mkv", "wb").close()
        await until(lambda: "after.mkv" in events)
        rescans = [[reason.name, detail] for reason, detail in rescans]
        print(json.dumps({"events": events, "rescans": rescans, "unmounted": unmounted,
                          "still_unmounted": still_unmounted,
                          "remounted": attrs.asdict(watcher.health()["v"])}))
        nursery.cancel_scope.cancel()

trio.run(main)
"""


@pytest.mark.skipif(not private_mounts_allowed("tmpfs"), reason="cannot mount privately")
def test_unmounted_volume_is_rescanned_and_watched_again_once_mounted(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    child = subprocess.run(
        [*PRIVATE_MOUNTS, sys.executable, "-c", CHILD, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["events"] == ["before.mkv", "after.mkv"]
    lost = [rescan for rescan in report["rescans"] if rescan[0] == RescanReason.ROOT_LOST.name]
    assert lost == [[RescanReason.ROOT_LOST.name, "filesystem unmounted"]]
    assert report["rescans"][-1] == [RescanReason.ROOT_BACK.name, None]
    for state in ("unmounted", "still_unmounted"):
        assert report[state]["degraded"] is True and report[state]["watches"] == 0
    assert report["still_unmounted"]["reason"] == "no filesystem mounted on the volume root"
    assert report["remounted"]["degraded"] is False
    assert report["remounted"]["watches"] == 1


LIST_CHILD = r"""
import json, os, subprocess, sys
from inotify_simple import INotify
from scanarr import _native

root = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", f"{root}/Folder 50/other"],
               check=True)
open(f"{root}/Folder 50/other/elsewhere.mkv", "wb").close()
os.mkdir(f"{root}/Folder 50/other/sub")
# A bind mount of the same filesystem: another mount, the same device; entered, as a scan does.
subprocess.run(["mount", "--bind", f"{root}/Folder 7", f"{root}/Folder 60/other"], check=True)
fanotify = os.environ.get("SCANARR_LIVE_BACKEND") == "fanotify"
found = {}
for threads in (1, 4):
    source = _native.Fanotify() if fanotify else INotify()
    listing = _native.LiveLister().list(
        root, inotify_fd=source.fd, mask=0x100, device=os.stat(root).st_dev,
        extensions=["mkv"], threads=threads)
    dirs = listing.dirs(0, listing.dir_count)
    paths = []
    for parent, name, _wd, _error in dirs:
        paths.append(name if parent < 0 else f"{paths[parent]}/{name}".lstrip("/"))
    files = [f"{paths[d]}/{name}".lstrip("/") for d, name, *_ in
             listing.files(0, listing.file_count)]
    found[threads] = {"dirs": sorted(paths), "files": sorted(files)}
print(json.dumps(found))
"""


@pytest.mark.skipif(not private_mounts_allowed("tmpfs"), reason="cannot mount privately")
def test_a_filesystem_mounted_inside_a_volume_is_not_listed_a_bind_mount_is(tmp_path: Path) -> None:
    # 120 folders: enough for the listing to be shared between threads.
    root = tmp_path / "share"
    for number in range(120):
        folder = root / f"Folder {number}"
        (folder / "other").mkdir(parents=True)
        (folder / f"f{number}.mkv").write_bytes(b"")
    done = subprocess.run(
        [*PRIVATE_MOUNTS, sys.executable, "-c", LIST_CHILD, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    expected_dirs = sorted(
        ["", *(f"Folder {n}" for n in range(120)), *(f"Folder {n}/other" for n in range(120))]
    )
    expected_dirs.remove("Folder 50/other")  # the mount point: another filesystem
    expected_dirs = sorted([*expected_dirs, "Folder 60/other/other"])  # Folder 7, bound
    expected_files = sorted(
        [*(f"Folder {n}/f{n}.mkv" for n in range(120)), "Folder 60/other/f7.mkv"]
    )
    for threads in ("1", "4"):
        assert found[threads] == {"dirs": expected_dirs, "files": expected_files}
