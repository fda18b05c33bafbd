"""The live watcher's compact per-directory file tables, through real inotify on real files:
directories that grow past the packed form and shrink back, links of one inode in the same
directory, and names beyond ASCII keep reporting what a scan of the disk would see."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio

from helpers.backends import live_backend_option
from scanarr.live import LiveWatcher
from scanarr.protocol import FileCreated, FileDeleted, FileModified, FileRenamed, WatchPath
from test_live import Harness, tree, write

SMALL_TABLE = 16  # a directory of a few media files, and one of many

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends


@pytest.fixture
async def harness(nursery: trio.Nursery) -> Harness:
    return Harness(nursery)


@pytest.mark.parametrize("files", [4, SMALL_TABLE * 3])
async def test_links_in_one_directory_small_or_large_update_each_other(
    harness: Harness, tmp_path: Path, files: int
) -> None:
    names = {f"Épisode {number:02d} – 東京.mkv": b"e" * number for number in range(files)}
    root = tree(tmp_path / "v", {f"Show/{name}": content for name, content in names.items()})
    await harness.start({"v": root})
    show = root / "Show"
    first = next(iter(names))
    os.link(show / first, show / "link of first.mkv")
    created = await harness.wait_for(FileCreated, "Show/link of first.mkv")
    modified = await harness.wait_for(FileModified, f"Show/{first}")
    assert isinstance(created, FileCreated) and isinstance(modified, FileModified)
    assert created.hardlink_count == modified.hardlink_count == 2
    # Written through one link: both paths are modified, with the new size.
    with open(show / "link of first.mkv", "ab") as media:
        media.write(b"more")
    await harness.wait_modified(4, ["Show/link of first.mkv", f"Show/{first}"])
    os.rename(show / first, show / "renamed.mkv")
    renamed = await harness.wait_for(FileRenamed, "Show/renamed.mkv")
    assert isinstance(renamed, FileRenamed) and renamed.old_relative_path == f"Show/{first}"
    # Shrink the directory to a handful of files (the table goes back to its packed form).
    for name in list(names)[1:-2]:
        os.unlink(show / name)
    await harness.wait_for(FileDeleted, f"Show/{list(names)[-3]}")
    os.unlink(show / "renamed.mkv")
    # The last other link gone: the remaining path is told its new hardlink_count.
    await harness.wait_hardlink_count("Show/link of first.mkv", 1)
    await harness.settle()
    harness.assert_view_matches_disk()
    write(show / "after.mkv")
    await harness.wait_for(FileCreated, "Show/after.mkv")
    harness.assert_view_matches_disk()


async def test_directory_of_many_files_moved_keeps_every_inode(
    harness: Harness, tmp_path: Path
) -> None:
    names = [f"{number:03d} ünïcode.mkv" for number in range(SMALL_TABLE * 2 + 1)]
    root = tree(tmp_path / "v", {f"Season 1/{name}": b"" for name in names})
    await harness.start({"v": root})
    os.rename(root / "Season 1", root / "Season 01")
    await harness.settle()
    renamed = {
        event.new_relative_path: event.inode
        for event in harness.changes()
        if isinstance(event, FileRenamed)
    }
    assert renamed == {
        f"Season 01/{name}": os.lstat(root / "Season 01" / name).st_ino for name in names
    }
    harness.assert_view_matches_disk()


async def test_listing_thread_is_stopped_and_waited_for_when_the_watcher_is_cancelled(
    tmp_path: Path,
) -> None:
    root = tmp_path / "v"
    root.mkdir()
    for number in range(30_000):  # a long listing of the root: one lstat per media file
        os.close(os.open(root / f"{number}.mkv", os.O_CREAT | os.O_WRONLY, 0o644))

    async def emit(event: object) -> None:
        pass

    watcher = LiveWatcher(emit, lambda *_rescan: None, backend=live_backend_option())
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        watcher.set_volumes([WatchPath(id="v", path=str(root))], ["mkv"])
        with trio.fail_after(30):
            while watcher.stats().watches < 1:  # the listing thread has started
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    # run() has returned: its listing thread is over, it cannot touch the closed inotify fd
    # (or a new instance that got the same number).
    listing = [thread.name for thread in threading.enumerate() if "list_volumes" in thread.name]
    assert listing == []
