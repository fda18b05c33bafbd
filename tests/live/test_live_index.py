"""The native live index seen from the outside, through real inotify on real files: hard links
keep telling each other their changes after the directory holding one of them is moved (a link
names its directory, not a path), and a directory moved twice, then removed, reports each of its
files at its latest path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from scanarr.protocol import FileCreated, FileDeleted, FileRenamed
from test_live import Harness, _path_of, tree


@pytest.fixture
async def harness(nursery: trio.Nursery) -> Harness:
    return Harness(nursery)


async def test_links_follow_a_moved_directory(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {"movies/Film/film.mkv": b"film", "Show/S1/e1.mkv": b"e1"})
    os.makedirs(root / "torrents" / "release")
    os.link(root / "movies/Film/film.mkv", root / "torrents/release/film.mkv")
    await harness.start({"v": root})
    os.makedirs(root / "movies" / "Archive")
    os.rename(root / "movies" / "Film", root / "movies" / "Archive" / "Film (2001)")
    renamed = await harness.wait_for(FileRenamed, "movies/Archive/Film (2001)/film.mkv")
    assert isinstance(renamed, FileRenamed) and renamed.old_relative_path == "movies/Film/film.mkv"
    # Written through the other link: both paths are modified, the moved one at its new path.
    with open(root / "torrents/release/film.mkv", "ab") as media:
        media.write(b" and more")
    await harness.wait_modified(
        len(b"film and more"),
        ["movies/Archive/Film (2001)/film.mkv", "torrents/release/film.mkv"],
    )
    # The last other link gone: the moved path is told its new link count.
    os.unlink(root / "torrents/release/film.mkv")
    await harness.wait_hardlink_count("movies/Archive/Film (2001)/film.mkv", 1)
    await harness.settle()
    harness.assert_view_matches_disk()


async def test_directory_moved_twice_then_removed_deletes_at_the_latest_path(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"Show/S1/e1.mkv": b"1", "Show/S2/e2.mkv": b"2"})
    await harness.start({"v": root})
    os.rename(root / "Show", root / "Show (2020)")
    await harness.wait_for(FileRenamed, "Show (2020)/S2/e2.mkv")
    os.rename(root / "Show (2020)" / "S1", root / "Show (2020)" / "Season 01")
    await harness.wait_for(FileRenamed, "Show (2020)/Season 01/e1.mkv")
    os.unlink(root / "Show (2020)" / "Season 01" / "e1.mkv")
    os.unlink(root / "Show (2020)" / "S2" / "e2.mkv")
    for directory in ("Season 01", "S2"):
        os.rmdir(root / "Show (2020)" / directory)
    os.rmdir(root / "Show (2020)")
    await harness.settle()
    deleted = sorted(_path_of(e) for e in harness.changes() if isinstance(e, FileDeleted))
    assert deleted == ["Show (2020)/S2/e2.mkv", "Show (2020)/Season 01/e1.mkv"]
    harness.assert_view_matches_disk()
    # The watches of the removed directories went with them.
    assert harness.watcher is not None
    assert harness.watcher.watched_paths("v") == [""]


async def _wait_count(harness: Harness, kind: type, path: str, expected: int) -> None:
    """Until `expected` events of `kind` at `path` were emitted."""
    await harness.wait_until(
        lambda: (
            sum(isinstance(event, kind) and _path_of(event) == path for event in harness.changes())
            == expected
        )
    )


async def test_directory_made_again_under_a_removed_ones_name_is_watched_afresh(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"Film/film.mkv": b"1", "Other/other.mkv": b"2"})
    await harness.start({"v": root})
    for round_number in range(3):
        os.unlink(root / "Film" / "film.mkv")
        os.rmdir(root / "Film")
        await _wait_count(harness, FileDeleted, "Film/film.mkv", round_number + 1)
        os.mkdir(root / "Film")
        (root / "Film" / "film.mkv").write_bytes(b"again")
        await harness.settle()
        # The new directory is watched (its slot may be the old one's: the old handle is
        # stale, the kernel's IN_IGNORED for the old watch touches nothing of the new one).
        (root / "Film" / "late.mkv").write_bytes(b"late")
        await _wait_count(harness, FileCreated, "Film/late.mkv", round_number + 1)
        os.unlink(root / "Film" / "late.mkv")
        await harness.settle()
        harness.assert_view_matches_disk()
    assert harness.watcher is not None
    assert harness.watcher.watched_paths("v") == ["", "Film", "Other"]
