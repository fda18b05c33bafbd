"""A big directory moved into a watched volume (PROTOCOL.md §6): every media file is reported
once, files created in it while it is being listed too, and the watcher's task lets the others
run while it lists and merges the tree (real inotify, real files)."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest
import trio

from scanarr.live import LiveEvent
from scanarr.protocol import FileCreated, FileModified
from test_live import WAIT, Harness, _path_of, tree, write

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends

DIRECTORIES = 20
SUBDIRECTORIES = 10
FILES = 100  # per subdirectory: 20,000 media files in all


class Watchdog:
    """A task that yields as often as it can and measures its own lateness: the longest time
    the trio loop spent elsewhere without letting it run (and, to tell them apart, the longest
    cyclic garbage collection of the test process meanwhile)."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest = 0.0
        self.longest_gc = 0.0
        self._gc_started = 0.0

    def gc_callback(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self.longest_gc = max(self.longest_gc, now - self._gc_started)

    async def run(self) -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(0)
            self.longest = max(self.longest, trio.current_time() - before)
            self.ticks += 1


class WatchedHarness(Harness):
    """Notes, for each event, how often the watchdog had run by then."""

    def __init__(self, nursery: trio.Nursery, watchdog: Watchdog) -> None:
        super().__init__(nursery)
        self.watchdog = watchdog
        self.ticks_at: list[int] = []
        self.created: set[str] = set()  # kept as events come: a wait condition costs O(1)

    async def emit(self, event: LiveEvent) -> None:
        self.ticks_at.append(self.watchdog.ticks)
        if isinstance(event, FileCreated):
            self.created.add(event.relative_path)
        await super().emit(event)


def make_library(top: Path) -> list[Path]:
    """DIRECTORIES × SUBDIRECTORIES folders of FILES media files (plus a sidecar each)."""
    files: list[Path] = []
    for first in range(DIRECTORIES):
        for second in range(SUBDIRECTORIES):
            folder = top / f"Movie {first:02d}" / f"Part {second}"
            folder.mkdir(parents=True)
            (folder / "info.nfo").write_bytes(b"")
            for number in range(FILES):
                path = folder / f"f{number:03d}.mkv"
                path.write_bytes(b"m")
                files.append(path)
    return files


def write_during_listing(top: Path, ready: threading.Event) -> list[str]:
    """Files created in the moved tree while the watcher lists it: in folders listed early and
    late, and in a folder made meanwhile. Returns their paths relative to `top`'s parent."""
    ready.wait(WAIT)
    made: list[str] = []
    for number in range(200):
        first = number % DIRECTORIES
        relative = f"Movie {first:02d}/Part {number % SUBDIRECTORIES}/late{number}.mkv"
        write(top / relative, b"late")
        made.append(f"{top.name}/{relative}")
        if number % 20 == 0:
            relative = f"New {number}/inner/new{number}.mkv"
            write(top / relative, b"new")
            made.append(f"{top.name}/{relative}")
    return made


async def test_20000_files_moved_in_are_created_once_and_the_loop_keeps_running(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    watchdog = Watchdog()
    harness = WatchedHarness(nursery, watchdog)
    root = tree(tmp_path / "v", {"old.mkv": b"old"})
    library = make_library(tmp_path / "outside" / "Library")
    watcher = await harness.start({"v": root})
    nursery.start_soon(watchdog.run)
    gc.callbacks.append(watchdog.gc_callback)
    moved = root / "Library"
    ready = threading.Event()
    async with trio.open_nursery() as writers:
        results: list[list[str]] = []

        async def writer() -> None:
            results.append(await trio.to_thread.run_sync(write_during_listing, moved, ready))

        writers.start_soon(writer)
        os.rename(tmp_path / "outside" / "Library", moved)
        ready.set()
    late = results[0]
    expected = {f"Library/{path.relative_to(tmp_path / 'outside' / 'Library')}" for path in library}
    expected.update(late)
    await harness.wait_until(lambda: expected <= harness.created)
    longest = watchdog.longest  # what follows is the test's own work over every event
    try:
        await harness.settle()
    finally:
        gc.callbacks.remove(watchdog.gc_callback)
    print(
        f"\n{len(expected)} media files moved in: longest trio loop lateness "
        f"{longest * 1000:.1f} ms (longest garbage collection "
        f"{watchdog.longest_gc * 1000:.1f} ms)"
    )

    about_library = [e for e in harness.changes() if _path_of(e).startswith("Library/")]
    created = [_path_of(e) for e in about_library if isinstance(e, FileCreated)]
    assert len(created) == len(set(created)), "a media file was reported created twice"
    assert set(created) == expected
    # Nothing else happened to them: a file listed while still being written may only be
    # told modified once it is complete.
    assert all(isinstance(e, FileCreated | FileModified) for e in about_library)
    # A file listed while being written is told modified once its debounce is over.
    on_disk = {("v", path): identity for path, identity in harness.volume_on_disk("v").items()}
    await harness.wait_until(lambda: harness.view == on_disk)
    watched = watcher.watched_paths("v")
    assert "Library/Movie 19/Part 9" in watched
    assert "Library/New 180/inner" in watched
    # The watchdog ran between the first and the last report of the moved tree: the listing
    # was merged and reported in slices, not in one step of the trio thread.
    listed = expected.difference(late)  # reported by the listing, not by their own events
    indexes = [index for index, event in enumerate(harness.events) if _path_of(event) in listed]
    assert harness.ticks_at[indexes[-1]] > harness.ticks_at[indexes[0]]

    # The new tree is watched like any other: later changes deep in it are reported.
    write(moved / "Movie 07" / "Part 3" / "after.mkv")
    await harness.wait_for(FileCreated, "Library/Movie 07/Part 3/after.mkv")


async def test_a_volume_removed_and_added_again_is_watched_afresh(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A dropped volume's tree is freed later: until then its events are ignored, and a volume
    added at the same path takes the same directories' watches."""
    harness = Harness(nursery)
    first = tree(tmp_path / "a", {f"D{n}/S/e{n}.mkv": b"" for n in range(50)})
    other = tree(tmp_path / "b", {"keep.mkv": b""})
    watcher = await harness.start({"a": first, "b": other})
    assert watcher.health()["a"].watches == 1 + 50 + 50
    await harness.configure({"b": other})
    write(first / "D1" / "S" / "gone.mkv")
    await harness.settle("b")
    assert not [e for e in harness.events if e.volume_id == "a"]
    assert watcher.stats().watches == 1
    await harness.configure({"b": other, "c": first})
    write(first / "D2" / "S" / "back.mkv")
    await harness.wait_for(FileCreated, "D2/S/back.mkv", "c")
    assert watcher.health()["c"].watches == 1 + 50 + 50
    assert watcher.stats().watches == 1 + 1 + 50 + 50
    harness.assert_view_matches_disk()


async def test_shutdown_while_a_moved_in_folder_is_listed_or_merged(tmp_path: Path) -> None:
    """Cancelled while it lists (in its thread) or merges a new folder, the watcher stops the
    listing through its stop flag, waits for it and returns; a new run watches it all."""
    root = tree(tmp_path / "v", {})
    library = make_library(tmp_path / "outside" / "Library")
    moved = root / "Library"
    for phase in ("listing", "merging"):
        with trio.fail_after(WAIT * 2):
            async with trio.open_nursery() as nursery:
                harness = Harness(nursery)
                watcher = await harness.start({"v": root})
                os.rename(tmp_path / "outside" / "Library", moved)
                if phase == "listing":
                    await trio.sleep(0)
                else:
                    events = harness.events
                    await harness.wait_until(lambda events=events: bool(events))  # type: ignore[misc]
                nursery.cancel_scope.cancel()
        assert watcher.stats().watches == 0  # its inotify instance is closed
        os.rename(moved, tmp_path / "outside" / "Library")
    os.rename(tmp_path / "outside" / "Library", moved)
    async with trio.open_nursery() as nursery:
        harness = Harness(nursery)
        watcher = await harness.start({"v": root})
        assert watcher.health()["v"].watches == 1 + 1 + DIRECTORIES * (1 + SUBDIRECTORIES)
        write(moved / "Movie 03" / "Part 1" / "after.mkv")
        await harness.wait_for(FileCreated, "Library/Movie 03/Part 1/after.mkv")
        assert len(library) == DIRECTORIES * SUBDIRECTORIES * FILES
        nursery.cancel_scope.cancel()
