"""What only the fanotify backend does, and how the backend is chosen and reported.

The rest of the live suite runs under both backends (the `live_backend` fixture); these tests
are about the differences: no watch limit, events of the rest of the filesystem dropped, the
choice (``SCANARR_LIVE_BACKEND``), and where the choice is shown.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.agent import watcher_settings
from helpers.backends import fanotify_unavailable
from helpers.http import free_port, get_text
from helpers.mounts import PRIVATE_MOUNTS, private_mounts_allowed
from scanarr.agent.runtime import run_watcher
from scanarr.dev_api import DevApiServer
from scanarr.doctor import check_live_backend
from scanarr.live import LiveWatcher
from scanarr.live.backend import choose_backend
from scanarr.live.fanotify import Fanotify
from scanarr.protocol import FileCreated, FileDeleted, WatcherConfig, WatchPath
from test_live import Harness, tree, write
from test_live import harness as harness

needs_fanotify = pytest.mark.skipif(
    fanotify_unavailable() is not None, reason=f"fanotify: {fanotify_unavailable()}"
)


UNSHARED_WATCH = ["unshare", "--user", "--map-root-user", sys.executable, "-m", "scanarr", "watch"]


def _user_namespace() -> bool:
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


@needs_fanotify
async def test_a_tree_bigger_than_the_watch_cap_is_wholly_watched_under_fanotify(
    harness: Harness, tmp_path: Path
) -> None:
    # Under inotify this cap leaves 17 of these 21 directories unwatched (test_live.py).
    root = tree(tmp_path / "v", {f"D{number}/e.mkv": b"" for number in range(20)})
    watcher = await harness.start({"v": root}, max_watches=4, backend="fanotify")
    health = watcher.health()["v"]
    assert (health.watches, health.unwatched_directories, health.degraded) == (21, 0, False)
    for number in range(20):
        write(root / f"D{number}" / "new.mkv")
    for number in range(20):
        await harness.wait_for(FileCreated, f"D{number}/new.mkv")
    assert watcher.stats().watch_limit_hits == 0
    assert not harness.rescans
    harness.assert_view_matches_disk()


@needs_fanotify
async def test_events_of_the_same_filesystem_outside_the_volumes_are_dropped(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"Movie/a.mkv": b"a"})
    outside = tree(tmp_path / "outside", {"Other/x.mkv": b"x"})
    watcher = await harness.start({"v": root}, backend="fanotify")
    # Creations, writes, renames and deletions next to the volume, on its filesystem.
    for number in range(200):
        write(outside / "Other" / f"n{number}.mkv")
    (outside / "Other").rename(outside / "Renamed")
    for number in range(200):
        (outside / "Renamed" / f"n{number}.mkv").unlink()
    write(root / "Movie" / "b.mkv")  # then one change inside
    await harness.wait_for(FileCreated, "Movie/b.mkv")
    assert [(type(event), event.relative_path) for event in harness.events] == [
        (FileCreated, "Movie/b.mkv")
    ]
    stats = watcher.stats()
    assert (stats.unknown_watch_events, stats.overflows) == (0, 0)
    assert not harness.rescans


@needs_fanotify
async def test_writes_elsewhere_on_the_filesystem_do_not_wake_the_watcher_per_event(
    tmp_path: Path,
) -> None:
    watched = tree(tmp_path / "v", {})
    busy = tree(tmp_path / "busy", {})
    group = Fanotify()
    group.add_watch(str(watched))
    noise_events = 0

    def noise() -> None:
        nonlocal noise_events
        for number in range(3000):  # create, close-write, delete: 9,000 events
            path = busy / f"n{number}"
            path.write_bytes(b"x")
            path.unlink()
            noise_events += 3

    wakeups = 0
    async with trio.open_nursery() as nursery:

        async def writer() -> None:
            await trio.to_thread.run_sync(noise)
            write(watched / "a.mkv")  # then one change in the volume
            nursery.cancel_scope.deadline = trio.current_time() + 5

        nursery.start_soon(writer)
        seen: list[str] = []
        while "a.mkv" not in seen:
            await group.wait_readable()
            wakeups += 1
            seen += [event.name for event in group.read_pending()]
        nursery.cancel_scope.cancel()
    group.close()
    assert "a.mkv" in seen
    # Without the pause after an empty read: about one wakeup per two events.
    assert wakeups * 10 < noise_events, (wakeups, noise_events)


@needs_fanotify
async def test_a_move_from_outside_into_the_volume_reports_the_files_moved_in(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b"a"})
    outside = tree(tmp_path / "outside", {"Show/S01/e01.mkv": b"1", "loose.mkv": b"2"})
    await harness.start({"v": root}, backend="fanotify")
    (outside / "Show").rename(root / "Show")
    (outside / "loose.mkv").rename(root / "loose.mkv")
    await harness.wait_for(FileCreated, "Show/S01/e01.mkv")
    await harness.wait_for(FileCreated, "loose.mkv")
    write(root / "Show" / "S01" / "e02.mkv")  # the moved-in tree is watched
    await harness.wait_for(FileCreated, "Show/S01/e02.mkv")
    harness.assert_view_matches_disk()


@needs_fanotify
async def test_a_folder_moved_out_is_forgotten_by_the_handle_map(
    harness: Harness, tmp_path: Path
) -> None:
    # A moved-out folder's directories leave the index; their keys must leave the handle map
    # too, or every later event there would still be read, matched and counted as a watch.
    root = tree(tmp_path / "v", {f"Show/S{number}/e.mkv": b"" for number in range(30)})
    outside = tmp_path / "outside"
    outside.mkdir()
    watcher = await harness.start({"v": root}, backend="fanotify")
    before = watcher.health()["v"].watches
    assert before == 32
    (root / "Show").rename(outside / "Show")
    for number in range(30):
        await harness.wait_for(FileDeleted, f"Show/S{number}/e.mkv")
    write(root / "after.mkv")
    await harness.wait_for(FileCreated, "after.mkv")
    assert watcher.health()["v"].watches == 1
    assert watcher.stats().watches == 1  # the handle map
    write(outside / "Show" / "S0" / "late.mkv")  # nothing of it is reported any more
    write(root / "last.mkv")
    await harness.wait_for(FileCreated, "last.mkv")
    assert not [event for event in harness.events if "late" in event.relative_path]
    assert (watcher.stats().unknown_watch_events, watcher.stats().overflows) == (0, 0)
    harness.assert_view_matches_disk()


@needs_fanotify
async def test_the_filesystem_mark_goes_with_the_last_volume_on_it(
    harness: Harness, tmp_path: Path
) -> None:
    # A mark left behind would keep every event of the filesystem coming, to be dropped.
    first = tree(tmp_path / "a", {"x.mkv": b"x"})
    second = tree(tmp_path / "b", {"y.mkv": b"y"})
    watcher = await harness.start({"a": first, "b": second}, backend="fanotify")
    assert watcher.stats().filesystems_marked == 1
    await harness.configure({"b": second})
    assert (watcher.stats().watches, watcher.stats().filesystems_marked) == (1, 1)
    await harness.configure({})
    await harness.wait_until(lambda: watcher.stats().watches == 0)
    assert watcher.stats().filesystems_marked == 0
    write(second / "while-unwatched.mkv")
    await harness.configure({"b": second})
    assert watcher.stats().filesystems_marked == 1
    write(second / "z.mkv")
    await harness.wait_for(FileCreated, "z.mkv", volume_id="b")
    assert (watcher.stats().unknown_watch_events, watcher.stats().overflows) == (0, 0)


def test_the_backend_choice_follows_the_request() -> None:
    inotify = choose_backend("inotify")
    assert (inotify.name, inotify.requested) == ("inotify", "inotify")
    auto = choose_backend("auto")
    expected = "inotify" if fanotify_unavailable() else "fanotify"
    assert auto.name == expected
    if fanotify_unavailable():
        assert fanotify_unavailable() in auto.reason


@pytest.mark.skipif(not _user_namespace(), reason="no user namespaces here")
def test_without_cap_sys_admin_auto_falls_back_and_fanotify_refuses_to_start(
    tmp_path: Path,
) -> None:
    """In a user namespace root has no CAP_SYS_ADMIN over the machine's filesystems."""
    child = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            sys.executable,
            "-c",
            "import json; from scanarr.live.backend import choose_backend; "
            "c = choose_backend('auto'); print(json.dumps([c.name, c.reason]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    name, reason = json.loads(child.stdout)
    assert name == "inotify"
    assert "CAP_SYS_ADMIN" in reason
    environment = {
        "PATH": "/usr/bin:/bin",
        "SCANARR_API_URL": "ws://127.0.0.1:1/ws",
        "SCANARR_AUTH_TOKEN": "token",
        "SCANARR_STATE_FILE": str(tmp_path / "state.json"),
        "SCANARR_LIVE_BACKEND": "fanotify",
    }

    def watch(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*UNSHARED_WATCH, *arguments],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    watched = watch()
    assert watched.returncode == 2
    lines = watched.stderr.strip().splitlines()
    assert len(lines) == 1, watched.stderr
    assert "SCANARR_LIVE_BACKEND" in lines[0]
    assert "CAP_SYS_ADMIN" in lines[0]
    # The flag says the same as the variable.
    del environment["SCANARR_LIVE_BACKEND"]
    flagged = watch("--live-backend", "fanotify")
    assert flagged.returncode == 2
    assert "SCANARR_LIVE_BACKEND" in flagged.stderr


def test_doctor_names_the_backend_and_why(tmp_path: Path) -> None:
    volume = WatchPath(id="v", path=str(tree(tmp_path / "v", {"a.mkv": b"a"})))
    verdict, backend = check_live_backend([volume], {"SCANARR_LIVE_BACKEND": "inotify"})
    assert (backend, verdict.status) == ("inotify", "ok")
    verdict, backend = check_live_backend([volume], {"SCANARR_LIVE_BACKEND": "sometimes"})
    assert (backend, verdict.status) == (None, "action")
    assert "SCANARR_LIVE_BACKEND" in verdict.summary
    verdict, backend = check_live_backend([volume], {})
    if fanotify_unavailable() is None:
        assert (backend, verdict.status) == ("fanotify", "ok")
    else:
        assert (backend, verdict.status) == ("inotify", "note")
        assert verdict.action is not None and "CAP_SYS_ADMIN" in verdict.action


@needs_fanotify
@pytest.mark.parametrize("requested", ["fanotify", "inotify"])
async def test_readyz_and_metrics_say_which_backend_watches(
    nursery: trio.Nursery, dev_api: DevApiServer, tmp_path: Path, requested: str
) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b"a"})
    dev_api.config = WatcherConfig(watch_paths=[WatchPath(id="v", path=str(root))])
    port = free_port()
    environ = {"SCANARR_METRICS_ADDR": f"127.0.0.1:{port}", "SCANARR_LIVE_BACKEND": requested}
    settings = watcher_settings(dev_api.url, tmp_path / "state.json")
    agent: Any = await nursery.start(
        lambda task_status: run_watcher(
            settings, environ, handle_signals=False, task_status=task_status
        )
    )
    with trio.fail_after(20):
        await dev_api.wait_for_type("watcher.status")
    readyz = await trio.to_thread.run_sync(get_text, f"http://127.0.0.1:{port}/readyz")
    assert f"live watching with {requested}" in readyz
    metrics = await trio.to_thread.run_sync(get_text, f"http://127.0.0.1:{port}/metrics")
    other = "inotify" if requested == "fanotify" else "fanotify"
    assert f'scanarr_live_backend{{backend="{requested}"}} 1.0' in metrics
    assert f'scanarr_live_backend{{backend="{other}"}} 0.0' in metrics
    agent.request_stop()


@needs_fanotify
async def test_a_watcher_run_again_registers_again(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A new run opens a new fanotify group: what the earlier one registered is listed again."""
    root = tree(tmp_path / "v", {"D/a.mkv": b"a"})
    created: list[str] = []

    async def emit(event: Any) -> None:
        created.append(event.relative_path)

    watcher = LiveWatcher(emit, lambda *_rescan: None, backend="fanotify", debounce=0.05)
    watcher.set_volumes([WatchPath(id="v", path=str(root))], ["mkv"])
    for number in range(2):
        async with trio.open_nursery() as inner:
            await inner.start(watcher.run)
            await watcher.wait_applied()
            assert watcher.backend is not None and watcher.backend.name == "fanotify"
            write(root / "D" / f"new{number}.mkv")
            with trio.fail_after(20):
                while f"D/new{number}.mkv" not in created:
                    await trio.sleep(0.02)
            inner.cancel_scope.cancel()


NO_HANDLES_CHILD = r"""
import json, logging, os, subprocess, sys
import attrs, trio
from scanarr.live import LiveWatcher
from scanarr.protocol import WatchPath

root, backend = sys.argv[1], sys.argv[2]
records = []
handler = logging.Handler()
handler.emit = lambda record: records.append(record.getMessage())
logging.getLogger("scanarr.live").addHandler(handler)
logging.getLogger("scanarr.live").setLevel(logging.INFO)

async def main():
    # ramfs: no file handles, no filesystem id: fanotify cannot watch it.
    subprocess.run(["mount", "-t", "ramfs", "ramfs", root], check=True)
    os.makedirs(f"{root}/Movie")
    events = []
    async def emit(event):
        events.append(event.relative_path)
    watcher = LiveWatcher(emit, lambda *_rescan: None, debounce=0.05, backend=backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        watcher.set_volumes([WatchPath(id="v", path=root)], ["mkv"])
        await watcher.wait_applied()
        open(f"{root}/Movie/a.mkv", "wb").close()
        with trio.move_on_after(3):
            while "Movie/a.mkv" not in events:
                await trio.sleep(0.02)
        print(json.dumps({"events": events, "health": attrs.asdict(watcher.health()["v"]),
                          "backend": watcher.backend.name, "log": records}))
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def _private_mounts_allowed() -> bool:
    return private_mounts_allowed("ramfs")


def _no_handles_run(tmp_path: Path, backend: str) -> dict[str, Any]:
    root = tmp_path / "ramfs"
    root.mkdir()
    child = subprocess.run(
        [*PRIVATE_MOUNTS, sys.executable, "-c", NO_HANDLES_CHILD, str(root), backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    report: dict[str, Any] = json.loads(child.stdout)
    return report


@needs_fanotify
@pytest.mark.skipif(not _private_mounts_allowed(), reason="cannot mount in a private namespace")
def test_auto_watches_a_filesystem_without_file_handles_with_inotify(tmp_path: Path) -> None:
    report = _no_handles_run(tmp_path, "auto")
    assert report["backend"] == "fanotify"
    assert report["events"] == ["Movie/a.mkv"]
    health = report["health"]
    assert (health["degraded"], health["watches"], health["unwatched_directories"]) == (False, 2, 0)
    fallbacks = [line for line in report["log"] if "cannot be watched by fanotify" in line]
    assert len(fallbacks) == 1, report["log"]
    assert "name_to_handle_at" in fallbacks[0]


@needs_fanotify
@pytest.mark.skipif(not _private_mounts_allowed(), reason="cannot mount in a private namespace")
def test_explicit_fanotify_degrades_a_filesystem_it_cannot_watch(tmp_path: Path) -> None:
    report = _no_handles_run(tmp_path, "fanotify")
    assert report["events"] == []  # not silently watched some other way
    health = report["health"]
    assert health["degraded"] is True
    assert "could not be watched" in health["reason"]
    assert "Operation not supported" in health["reason"]  # name_to_handle_at's EOPNOTSUPP
