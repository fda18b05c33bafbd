"""Live watching against real inotify on real files (PROTOCOL.md §6).

Each test starts a `LiveWatcher` on directories under tmp_path, changes files, and looks at the
protocol events it emits. "Everything so far was handled" is established without timing: a
sentinel media file is written and removed after the changes, and its events can only come out
after theirs, because events are processed in order.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.backends import inotify_only, live_backend_option
from helpers.ground_truth import walk_entered
from scanarr.live import LiveEvent, LiveWatcher, RescanReason
from scanarr.protocol import FileCreated, FileDeleted, FileModified, FileRenamed, WatchPath

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends

EXTENSIONS = ["mkv", "mp4", "avi", "m4v", "ts", "wmv"]
WAIT = 30.0  # generous ceiling for a wait to fail rather than hang; not a measurement
GiB = 1 << 30

# --- the oracle: what a fresh scan of the disk reports (independent of scanarr's code) -------

SYSTEM_DIRECTORIES = {"@eaDir", "$recycle.bin", "system volume information"}
SKIPPED_SUFFIXES = (".part", ".tmp", ".download", ".!qb", ".nfo", ".jpg", ".png", ".srt", ".sub")
SKIPPED_SUFFIXES += (".idx",)


def disk_view(root: Path, extensions: list[str] = EXTENSIONS) -> dict[str, tuple[int, int]]:
    """relative_path → (inode, size) of every media file a scan of `root` reports."""

    def entered(name: str) -> bool:
        return (
            not name.startswith(".") and name.lower() not in SYSTEM_DIRECTORIES and name != "@eaDir"
        )

    found: dict[str, tuple[int, int]] = {}
    for directory, filenames in walk_entered(root, entered):
        for name in filenames:
            lower = name.lower()
            if name.startswith(".") or lower.endswith(SKIPPED_SUFFIXES) or "." not in name:
                continue
            if lower.rsplit(".", 1)[1] not in extensions:
                continue
            path = os.path.join(directory, name)
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                found[os.path.relpath(path, root)] = (status.st_ino, status.st_size)
    return found


# --- the harness ----------------------------------------------------------------------------


class Harness:
    """A running LiveWatcher, what it emitted, and the view of the API those events build."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.events: list[LiveEvent] = []
        # (volume_id, reason, detail) of each rescan asked for
        self.rescans: list[tuple[str, RescanReason, str | None]] = []
        self.roots: dict[str, Path] = {}
        self.extensions = list(EXTENSIONS)
        # What the API would hold: (volume_id, relative_path) → (inode, size).
        self.view: dict[tuple[str, str], tuple[int, int]] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._sentinels = 0
        self.watcher: LiveWatcher | None = None

    async def emit(self, event: LiveEvent) -> None:
        self.events.append(event)
        if isinstance(event, FileCreated | FileModified):
            self.view[(event.volume_id, event.relative_path)] = (event.inode, event.size_bytes)
        elif isinstance(event, FileDeleted):
            self.view.pop((event.volume_id, event.relative_path), None)
        else:
            self.view.pop((event.volume_id, event.old_relative_path), None)
            self.view[(event.volume_id, event.new_relative_path)] = (
                event.inode,
                event.size_bytes,
            )
        self._lot.unpark_all()

    def request_rescan(self, volume_id: str, reason: RescanReason, detail: str | None) -> None:
        """A rescan replaces the volume's view by the disk, as the API does on scan.completed."""
        self.rescans.append((volume_id, reason, detail))
        self.rescan_view(volume_id)
        self._lot.unpark_all()

    def volume_on_disk(self, volume_id: str) -> dict[str, tuple[int, int]]:
        """disk_view of a volume without what nested volumes own (the longest root wins)."""
        root = self.roots.get(volume_id)
        if root is None or not root.is_dir():
            return {}
        nested = [
            str(other.relative_to(root)) + "/"
            for other in self.roots.values()
            if other != root and other.is_relative_to(root)
        ]
        return {
            relative_path: identity
            for relative_path, identity in disk_view(root, self.extensions).items()
            if not relative_path.startswith(tuple(nested))
        }

    def rescan_view(self, volume_id: str) -> None:
        for key in [key for key in self.view if key[0] == volume_id]:
            del self.view[key]
        for relative_path, identity in self.volume_on_disk(volume_id).items():
            self.view[(volume_id, relative_path)] = identity

    async def start(self, volumes: dict[str, Path], **options: Any) -> LiveWatcher:
        options.setdefault("debounce", 0.05)
        options.setdefault("rename_wait", 0.2)
        options.setdefault("backend", live_backend_option())
        watcher = self.watcher = LiveWatcher(self.emit, self.request_rescan, **options)
        await self.nursery.start(watcher.run)
        await self.configure(volumes)
        return watcher

    async def start_short_of_watches(
        self, volumes: dict[str, Path], retry_delay: float, **options: Any
    ) -> LiveWatcher:
        """`start` with room for 4 watches: what is left unwatched is rescanned every 0.05 s,
        and watching it is retried after `retry_delay`, backing off up to twice that."""
        return await self.start(
            volumes,
            max_watches=4,
            fallback_rescan_interval=0.05,
            watch_retry_delay=retry_delay,
            watch_retry_max_delay=2 * retry_delay,
            **options,
        )

    async def configure(
        self, volumes: dict[str, Path], extensions: list[str] | None = None
    ) -> None:
        """Apply a config; like the agent, scan new volumes (here: take the disk as the view)."""
        assert self.watcher is not None
        new = [volume_id for volume_id in volumes if volume_id not in self.roots]
        for volume_id in [volume_id for volume_id in self.roots if volume_id not in volumes]:
            del self.roots[volume_id]
            self.rescan_view(volume_id)
        self.roots.update(volumes)
        if extensions is not None:
            self.extensions = extensions
            new = list(volumes)
        self.watcher.set_volumes(
            [WatchPath(id=volume_id, path=str(root)) for volume_id, root in volumes.items()],
            self.extensions,
        )
        with trio.fail_after(WAIT):
            await self.watcher.wait_applied()
        for volume_id in new:
            self.rescan_view(volume_id)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT):
            while not condition():
                await self._lot.park()

    async def wait_for(self, kind: type[LiveEvent], path: str, volume_id: str = "v") -> LiveEvent:
        def wanted(event: LiveEvent) -> bool:
            return isinstance(event, kind) and (event.volume_id, _path_of(event)) == (
                volume_id,
                path,
            )

        await self.wait_until(lambda: any(map(wanted, self.events)))
        return next(filter(wanted, self.events))  # the first one

    async def settle(self, volume_id: str = "v") -> None:
        """Return once every change made on disk before the call has been handled."""
        self._sentinels += 1
        name = f"zz-settle-{self._sentinels}.{self.extensions[0]}"
        path = self.roots[volume_id] / name
        path.write_bytes(b"")
        await self.wait_for(FileCreated, name, volume_id)
        path.unlink()
        await self.wait_for(FileDeleted, name, volume_id)

    def changes(self) -> list[LiveEvent]:
        """Emitted events, without the sentinels'."""
        return [event for event in self.events if "zz-settle-" not in _path_of(event)]

    def about(self, path: str) -> list[LiveEvent]:
        return [
            event
            for event in self.changes()
            if _path_of(event) == path
            or (isinstance(event, FileRenamed) and event.old_relative_path == path)
        ]

    async def wait_modified(self, size_bytes: int, paths: list[str]) -> None:
        """Until file.modified to `size_bytes` was reported of exactly `paths` (say, every link
        of a file written through one of them)."""
        await self.wait_until(
            lambda: (
                sorted(
                    _path_of(event)
                    for event in self.changes()
                    if isinstance(event, FileModified) and event.size_bytes == size_bytes
                )
                == sorted(paths)
            )
        )

    async def wait_hardlink_count(self, path: str, hardlink_count: int) -> None:
        """Until a file.modified told `path` it has `hardlink_count` links."""
        await self.wait_until(
            lambda: any(
                isinstance(event, FileModified) and event.hardlink_count == hardlink_count
                for event in self.about(path)
            )
        )

    def assert_view_matches_disk(self) -> None:
        expected = {
            (volume_id, relative_path): identity
            for volume_id in self.roots
            for relative_path, identity in self.volume_on_disk(volume_id).items()
        }
        assert self.view == expected


def _path_of(event: LiveEvent) -> str:
    return event.new_relative_path if isinstance(event, FileRenamed) else event.relative_path


@pytest.fixture
async def harness(nursery: trio.Nursery) -> Harness:
    return Harness(nursery)


def write(path: Path, content: bytes = b"media") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for relative_path, content in files.items():
        write(root / relative_path, content)
    return root


# --- file.created --------------------------------------------------------------------------


async def test_new_file_is_created_once_after_close_not_while_written(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {})
    await harness.start({"v": root})
    with open(root / "big.mkv", "wb") as file:
        # A 5 GiB sparse file written slowly: the watcher runs between the writes.
        for gib in range(5):
            file.seek(gib * GiB)
            file.write(b"x" * 4096)
            file.flush()
            await trio.sleep(0.01)
        await harness.settle()
        assert harness.about("big.mkv") == []  # being written: not a file yet
        file.seek(5 * GiB - 1)
        file.write(b"x")
    created = await harness.wait_for(FileCreated, "big.mkv")
    await harness.settle()
    assert harness.about("big.mkv") == [created]
    assert isinstance(created, FileCreated)
    status = os.lstat(root / "big.mkv")
    assert (created.size_bytes, created.inode, created.device_id) == (
        5 * GiB,
        status.st_ino,
        status.st_dev,
    )
    assert created.hardlink_count == 1 and created.filename == "big.mkv"


async def test_file_moved_in_from_outside_is_created(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {"Movie": b""})
    (root / "Movie").unlink()
    (root / "Movie").mkdir()
    outside = write(tmp_path / "outside" / "film.mkv", b"0123456789")
    await harness.start({"v": root})
    os.rename(outside, root / "Movie" / "film.mkv")
    created = await harness.wait_for(FileCreated, "Movie/film.mkv")
    assert isinstance(created, FileCreated) and created.size_bytes == 10
    await harness.settle()
    assert harness.about("Movie/film.mkv") == [created]
    harness.assert_view_matches_disk()


async def test_part_file_renamed_to_media_name_is_created(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {})
    await harness.start({"v": root})
    write(root / "film.mkv.part", b"downloading")
    os.rename(root / "film.mkv.part", root / "film.mkv")
    created = await harness.wait_for(FileCreated, "film.mkv")
    await harness.settle()
    assert harness.changes() == [created]


async def test_media_renamed_to_non_media_name_is_deleted(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {"film.mkv": b"x"})
    await harness.start({"v": root})
    os.rename(root / "film.mkv", root / "film.mkv.bak")
    await harness.wait_for(FileDeleted, "film.mkv")
    await harness.settle()
    assert [type(event) for event in harness.changes()] == [FileDeleted]
    harness.assert_view_matches_disk()


async def test_hidden_temp_metadata_and_system_directories_make_no_event_and_no_watch(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(
        tmp_path / "v",
        {"@eaDir/old.mkv": b"", ".hidden/old.mkv": b"", "Show/@eaDir/thumb.mkv": b""},
    )
    watcher = await harness.start({"v": root})
    for relative_path in [
        "@eaDir/a.mkv",
        ".hidden/b.mkv",
        "$RECYCLE.BIN/c.mkv",
        ".Trash-1000/d.mkv",
        "System Volume Information/e.mkv",
        "Show/@eaDir/f.mkv",
        ".g.mkv",
        "h.mkv.part",
        "i.TMP",
        "j.mkv.!qB",
        "k.download",
        "l.nfo",
        "poster.jpg",
        "m.en.srt",
        "notes.txt",
    ]:
        write(root / relative_path)
    os.mkdir(root / "@eaDir" / "deeper")
    write(root / "@eaDir" / "deeper" / "n.mkv")
    await harness.settle()
    assert harness.changes() == []
    assert watcher.watched_paths("v") == ["", "Show"]


async def test_name_that_is_not_utf8_is_skipped_and_counted(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {})
    watcher = await harness.start({"v": root})
    fd = os.open(os.fsencode(root) + b"/caf\xe9.mkv", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    await harness.settle()
    assert harness.changes() == []
    assert watcher.stats().skipped_names == 1


# --- file.modified -------------------------------------------------------------------------


async def test_modified_only_when_size_or_mtime_changed_debounced(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b"0123456789", "b.mkv": b"0123"})
    await harness.start({"v": root})
    # Three writes in a row: one file.modified, with the size after the last one.
    for _ in range(3):
        with open(root / "a.mkv", "ab") as file:
            file.write(b"more")
    modified = await harness.wait_for(FileModified, "a.mkv")
    assert isinstance(modified, FileModified) and modified.size_bytes == 22
    # Metadata only (mode) and a write that changes nothing: no file.modified for a.mkv. The
    # check for b.mkv is scheduled after a.mkv's, so once b.mkv's arrives a.mkv's was made.
    os.chmod(root / "a.mkv", 0o600)
    status = os.stat(root / "a.mkv")
    with open(root / "a.mkv", "r+b"):
        pass
    os.utime(root / "a.mkv", ns=(status.st_atime_ns, status.st_mtime_ns))
    with open(root / "b.mkv", "ab") as file:
        file.write(b"!")
    await harness.wait_for(FileModified, "b.mkv")
    assert [type(event) for event in harness.about("a.mkv")] == [FileModified]
    # A new mtime with the same size is a modification.
    os.utime(root / "a.mkv", ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    await harness.wait_until(lambda: len(harness.about("a.mkv")) == 2)
    harness.assert_view_matches_disk()


# --- file.deleted / file.renamed ----------------------------------------------------------


async def test_deleted_and_renamed_files(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b"a", "b.mkv": b"bb", "Old/c.mkv": b"ccc"})
    inode_b = os.lstat(root / "b.mkv").st_ino
    await harness.start({"v": root})
    os.unlink(root / "a.mkv")
    os.mkdir(root / "New")
    os.rename(root / "b.mkv", root / "New" / "b2.mkv")
    await harness.settle()
    deleted, renamed = harness.changes()
    assert deleted == FileDeleted(volume_id="v", relative_path="a.mkv", filename="a.mkv")
    assert isinstance(renamed, FileRenamed)
    assert (renamed.old_relative_path, renamed.new_relative_path, renamed.filename) == (
        "b.mkv",
        "New/b2.mkv",
        "b2.mkv",
    )
    assert (renamed.inode, renamed.size_bytes, renamed.hardlink_count) == (inode_b, 2, 1)
    harness.assert_view_matches_disk()


async def test_rename_whose_pair_never_comes_is_a_delete(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b"a"})
    (tmp_path / "elsewhere").mkdir()
    await harness.start({"v": root})
    os.rename(root / "a.mkv", tmp_path / "elsewhere" / "a.mkv")
    await harness.wait_for(FileDeleted, "a.mkv")
    await harness.settle()
    assert [type(event) for event in harness.changes()] == [FileDeleted]


async def test_file_replaced_by_rename_is_deleted_then_renamed(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"old.mkv": b"old", "new.mkv": b"newer"})
    await harness.start({"v": root})
    os.rename(root / "new.mkv", root / "old.mkv")
    await harness.settle()
    assert [(type(event), _path_of(event)) for event in harness.changes()] == [
        (FileDeleted, "old.mkv"),
        (FileRenamed, "old.mkv"),
    ]
    harness.assert_view_matches_disk()


async def test_move_across_volumes_is_deleted_plus_created(
    harness: Harness, tmp_path: Path
) -> None:
    torrents = tree(tmp_path / "torrents", {"film.mkv": b"x", "Pack/e1.mkv": b"1"})
    media = tree(tmp_path / "media", {})
    await harness.start({"t": torrents, "m": media})
    os.rename(torrents / "film.mkv", media / "film.mkv")
    os.rename(torrents / "Pack", media / "Pack")
    await harness.wait_for(FileCreated, "Pack/e1.mkv", "m")
    await harness.settle("m")
    assert sorted((type(e).__name__, e.volume_id, _path_of(e)) for e in harness.changes()) == [
        ("FileCreated", "m", "Pack/e1.mkv"),
        ("FileCreated", "m", "film.mkv"),
        ("FileDeleted", "t", "Pack/e1.mkv"),
        ("FileDeleted", "t", "film.mkv"),
    ]
    harness.assert_view_matches_disk()


async def test_rename_storm_every_rename_reported_with_its_inode(
    harness: Harness, tmp_path: Path
) -> None:
    count = 10_000
    root = tmp_path / "v"
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    for number in range(count):
        (root / "in" / f"{number}.mkv").write_bytes(b"")
    inodes = {number: os.lstat(root / "in" / f"{number}.mkv").st_ino for number in range(count)}
    await harness.start({"v": root})
    # In chunks, each drained before the next: 10,000 renames at once would overflow the
    # kernel queue (20,000 events > fs.inotify.max_queued_events), which has its own test.
    for start in range(0, count, 2_000):
        for number in range(start, start + 2_000):
            os.rename(root / "in" / f"{number}.mkv", root / "out" / f"{number}.mkv")
        await harness.wait_until(lambda end=start + 2_000: len(harness.events) >= end)
    await harness.settle()
    renamed = harness.changes()
    assert len(renamed) == count and all(isinstance(event, FileRenamed) for event in renamed)
    seen = {}
    for event in renamed:
        assert isinstance(event, FileRenamed)
        number = int(event.filename.removesuffix(".mkv"))
        assert event.old_relative_path == f"in/{number}.mkv"
        assert event.new_relative_path == f"out/{number}.mkv"
        seen[number] = event.inode
    assert seen == inodes
    assert harness.rescans == []
    harness.assert_view_matches_disk()


# --- directories ---------------------------------------------------------------------------


async def test_directory_moved_within_volume_renames_each_media_file(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(
        tmp_path / "v",
        {"Show/S1/e1.mkv": b"1", "Show/S1/e2.mkv": b"2", "Show/S2/e3.mkv": b"3", "Show/a.nfo": b""},
    )
    inodes = {path: os.lstat(root / path).st_ino for path in disk_view(root)}
    await harness.start({"v": root})
    os.mkdir(root / "Archive")
    os.rename(root / "Show", root / "Archive" / "Show (2020)")
    await harness.settle()
    renamed = sorted(
        (e.old_relative_path, e.new_relative_path, e.inode)
        for e in harness.changes()
        if isinstance(e, FileRenamed)
    )
    assert renamed == [
        (old, "Archive/Show (2020)/" + old.removeprefix("Show/"), inodes[old])
        for old in sorted(inodes)
    ]
    assert len(harness.changes()) == 3
    # The moved directories are still watched under their new names.
    write(root / "Archive" / "Show (2020)" / "S2" / "e4.mkv")
    await harness.wait_for(FileCreated, "Archive/Show (2020)/S2/e4.mkv")
    harness.assert_view_matches_disk()


async def test_directory_of_1000_files_three_levels_deep_moved_in(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {})
    outside = tmp_path / "outside" / "Show"
    for number in range(1000):
        write(outside / f"S{number // 100}" / f"D{number // 10 % 10}" / f"e{number}.mkv", b"e")
    await harness.start({"v": root})
    os.rename(outside, root / "Show")
    # Created right after the move, before the watcher has even seen it: not missed.
    write(root / "Show" / "S0" / "D0" / "late.mkv")
    await harness.wait_for(FileCreated, "Show/S0/D0/late.mkv")
    await harness.settle()
    created = [_path_of(event) for event in harness.changes()]
    assert all(isinstance(event, FileCreated) for event in harness.changes())
    assert len(created) == len(set(created)) == 1001
    harness.assert_view_matches_disk()
    assert len(harness.watcher.watched_paths("v")) == 1 + 1 + 10 + 100  # type: ignore[union-attr]


async def test_directory_moved_out_or_deleted_deletes_each_media_file(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(
        tmp_path / "v",
        {"A/x/1.mkv": b"", "A/2.mkv": b"", "B/y/3.mkv": b"", "B/4.mkv": b"", "keep.mkv": b""},
    )
    (tmp_path / "elsewhere").mkdir()
    watcher = await harness.start({"v": root})
    os.rename(root / "A", tmp_path / "elsewhere" / "A")
    shutil.rmtree(root / "B")
    await harness.settle()
    assert sorted(_path_of(e) for e in harness.changes() if isinstance(e, FileDeleted)) == [
        "A/2.mkv",
        "A/x/1.mkv",
        "B/4.mkv",
        "B/y/3.mkv",
    ]
    assert len(harness.changes()) == 4
    # The moved-out directory is no longer watched: changes there are not this volume's.
    write(tmp_path / "elsewhere" / "A" / "x" / "5.mkv")
    await harness.settle()
    assert len(harness.changes()) == 4
    assert watcher.watched_paths("v") == [""]
    harness.assert_view_matches_disk()


async def test_new_directory_tree_is_watched(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {})
    await harness.start({"v": root})
    os.makedirs(root / "a" / "b" / "c")
    write(root / "a" / "b" / "c" / "deep.mkv")
    await harness.wait_for(FileCreated, "a/b/c/deep.mkv")
    await harness.settle()
    assert len(harness.about("a/b/c/deep.mkv")) == 1
    assert harness.watcher is not None
    assert harness.watcher.watched_paths("v") == ["", "a", "a/b", "a/b/c"]


@pytest.mark.parametrize("interleaved", [False, True], ids=["at-once", "one-by-one"])
async def test_tricky_sequences_leave_the_view_equal_to_a_fresh_scan(
    harness: Harness, tmp_path: Path, interleaved: bool
) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b"aaa", "x.mkv": b"xx"})
    await harness.start({"v": root})
    steps: list[Callable[[], None]] = [
        lambda: os.rename(root / "a.mkv", root / "b.mkv"),
        lambda: os.symlink("b.mkv", root / "a.mkv"),
        lambda: os.mkdir(root / "d1"),
        lambda: os.mkdir(root / "d2"),
        lambda: os.rename(root / "d1", root / "d2" / "d1"),
        lambda: os.rename(root / "d2" / "d1", root / "d1"),
        lambda: os.rename(root / "x.mkv", root / "d1" / "x.mkv"),
    ]
    for step in steps:
        step()
        if interleaved:
            await harness.settle()
    await harness.settle()
    harness.assert_view_matches_disk()
    assert ("v", "d1/x.mkv") in harness.view and ("v", "b.mkv") in harness.view


# --- hard links ----------------------------------------------------------------------------


async def test_new_and_removed_links_update_the_other_paths_hardlink_count(
    harness: Harness, tmp_path: Path
) -> None:
    torrents = tree(tmp_path / "torrents", {"film.mkv": b"film"})
    media = tree(tmp_path / "media", {})
    await harness.start({"t": torrents, "m": media})
    os.mkdir(media / "Film (2020)")
    os.link(torrents / "film.mkv", media / "Film (2020)" / "Film.mkv")
    created = await harness.wait_for(FileCreated, "Film (2020)/Film.mkv", "m")
    modified = await harness.wait_for(FileModified, "film.mkv", "t")
    assert isinstance(created, FileCreated) and isinstance(modified, FileModified)
    assert created.hardlink_count == modified.hardlink_count == 2
    assert created.inode == modified.inode == os.lstat(torrents / "film.mkv").st_ino
    os.link(torrents / "film.mkv", torrents / "film-copy.mkv")
    await harness.wait_until(
        lambda: (
            [
                (e.volume_id, e.relative_path, e.hardlink_count)
                for e in harness.changes()[2:]
                if isinstance(e, FileModified)
            ]
            == [("t", "film.mkv", 3), ("m", "Film (2020)/Film.mkv", 3)]
        )
    )
    os.unlink(torrents / "film-copy.mkv")
    os.unlink(torrents / "film.mkv")
    await harness.wait_hardlink_count("Film (2020)/Film.mkv", 1)
    await harness.settle("m")
    last = harness.changes()[-3:]
    assert [(type(e).__name__, e.volume_id, _path_of(e)) for e in last] == [
        ("FileDeleted", "t", "film-copy.mkv"),
        ("FileDeleted", "t", "film.mkv"),
        ("FileModified", "m", "Film (2020)/Film.mkv"),
    ]
    harness.assert_view_matches_disk()


async def test_removal_announced_by_the_delete_command_is_not_reported(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b"", "Dir/b.mkv": b"", "c.mkv": b""})
    watcher = await harness.start({"v": root})
    watcher.expect_removal("v", "a.mkv")
    watcher.expect_removal("v", "Dir/b.mkv")
    os.unlink(root / "a.mkv")
    os.unlink(root / "Dir" / "b.mkv")
    os.rmdir(root / "Dir")
    os.unlink(root / "c.mkv")
    await harness.settle()
    assert harness.changes() == [
        FileDeleted(volume_id="v", relative_path="c.mkv", filename="c.mkv")
    ]


# --- configuration -------------------------------------------------------------------------


async def test_hot_reload_adds_removes_volumes_and_follows_extensions(
    harness: Harness, tmp_path: Path
) -> None:
    first = tree(tmp_path / "first", {})
    second = tree(tmp_path / "second", {"old.iso": b"iso"})
    watcher = await harness.start({"a": first})
    await harness.configure({"a": first, "b": second})
    write(second / "new.mkv")
    await harness.wait_for(FileCreated, "new.mkv", "b")
    await harness.configure({"b": second})
    assert set(watcher.health()) == {"b"}
    write(first / "ignored.mkv")
    await harness.configure({"b": second}, extensions=["iso"])
    write(second / "more.iso")
    write(second / "more.mkv")
    await harness.wait_for(FileCreated, "more.iso", "b")
    await harness.settle("b")
    assert [(e.volume_id, _path_of(e)) for e in harness.changes()] == [
        ("b", "new.mkv"),
        ("b", "more.iso"),
    ]
    assert watcher.stats().watches == 1


async def test_nested_volume_owns_its_files(harness: Harness, tmp_path: Path) -> None:
    outer = tree(tmp_path / "outer", {"Sub/inner.mkv": b"", "top.mkv": b""})
    inner = outer / "Sub"
    watcher = await harness.start({"outer": outer})
    await harness.configure({"outer": outer, "inner": inner})
    assert ("outer", RescanReason.NESTED, None) in harness.rescans
    write(inner / "new.mkv")
    await harness.wait_for(FileCreated, "new.mkv", "inner")
    os.rename(outer / "top.mkv", inner / "top.mkv")
    await harness.wait_for(FileCreated, "top.mkv", "inner")
    await harness.settle("outer")
    assert [(type(e).__name__, e.volume_id, _path_of(e)) for e in harness.changes()] == [
        ("FileCreated", "inner", "new.mkv"),
        ("FileDeleted", "outer", "top.mkv"),
        ("FileCreated", "inner", "top.mkv"),
    ]
    assert "Sub" not in watcher.watched_paths("outer")
    harness.assert_view_matches_disk()


# --- failures: overflow, lost roots, watch limit, network filesystems ---------------------


async def test_queue_overflow_rescans_and_the_view_converges(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"Old/old.mkv": b"old", "Burst/first.mkv": b""})
    watcher = await harness.start({"v": root})
    # 20,000 files created without letting the watcher read: 40,000 events, more than the
    # kernel queues (fs.inotify.max_queued_events, 16384 by default).
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    count = max(20_000, queued // 2 + 1000)
    for number in range(count):
        os.close(os.open(root / "Burst" / f"{number}.mkv", os.O_CREAT | os.O_WRONLY, 0o644))
    await harness.wait_until(lambda: ("v", RescanReason.OVERFLOW, None) in harness.rescans)
    assert watcher.stats().overflows >= 1
    await harness.settle()
    harness.assert_view_matches_disk()
    # The watcher knows the files the overflow hid: their deletion is reported.
    os.unlink(root / "Burst" / "7.mkv")
    await harness.wait_for(FileDeleted, "Burst/7.mkv")
    harness.assert_view_matches_disk()


async def test_lost_volume_root_is_rescanned_and_watched_again_when_back(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"a.mkv": b""})
    watcher = await harness.start({"v": root}, watch_retry_delay=0.05, watch_retry_max_delay=0.2)
    shutil.rmtree(root)
    await harness.wait_until(
        lambda: ("v", RescanReason.ROOT_LOST, "volume root deleted") in harness.rescans
    )
    health = watcher.health()["v"]
    assert health.degraded and health.reason is not None and health.watches == 0
    tree(root, {"b.mkv": b"b"})
    await harness.wait_until(lambda: ("v", RescanReason.ROOT_BACK, None) in harness.rescans)
    assert not watcher.health()["v"].degraded
    write(root / "c.mkv")
    await harness.wait_for(FileCreated, "c.mkv")
    harness.assert_view_matches_disk()


@inotify_only
async def test_watch_limit_degrades_rescans_and_recovers(harness: Harness, tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {f"D{number}/e.mkv": b"" for number in range(10)})
    changed: list[bool] = []
    watcher = await harness.start_short_of_watches(
        {"v": root}, 0.05, health_changed=lambda: changed.append(True)
    )
    health = watcher.health()["v"]
    assert health.degraded and health.watches == 4 and health.unwatched_directories == 7
    assert health.reason is not None and "watch limit" in health.reason
    await harness.wait_until(lambda: ("v", RescanReason.WATCH_LIMIT, None) in harness.rescans)
    # The watched part still reports live.
    write(root / "top.mkv")
    await harness.wait_for(FileCreated, "top.mkv")
    # Directories removed: every remaining one fits, the retry watches them all.
    for number in range(1, 8):
        shutil.rmtree(root / f"D{number}")
    await harness.wait_until(lambda: ("v", RescanReason.WATCHES_RESTORED, None) in harness.rescans)
    health = watcher.health()["v"]
    assert not health.degraded and health.unwatched_directories == 0 and health.watches == 4
    assert changed  # the agent was told, to send watcher.status
    write(root / "D9" / "new.mkv")
    await harness.wait_for(FileCreated, "D9/new.mkv")
    harness.assert_view_matches_disk()


async def test_network_filesystem_is_detected_and_rescanned_periodically(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {})
    device = os.stat(root).st_dev
    mount_table = tmp_path / "mountinfo"
    mount_table.write_text(
        "1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"50 1 {os.major(device)}:{os.minor(device)} / {str(root).replace(' ', chr(92) + '040')}"
        " rw,nosuid,nodev shared:7 - fuse.sshfs seedbox:/downloads rw,user_id=0\n"
    )
    watcher = await harness.start(
        {"v": root}, mount_table=str(mount_table), network_rescan_interval=0.05
    )
    assert watcher.health()["v"].network_filesystem == "fuse.sshfs"
    await harness.wait_until(lambda: harness.rescans.count(("v", RescanReason.NETWORK, None)) >= 2)
    # Local changes are still reported live.
    write(root / "a.mkv")
    await harness.wait_for(FileCreated, "a.mkv")


async def test_directory_renamed_to_an_ignored_name_and_back(
    harness: Harness, tmp_path: Path
) -> None:
    root = tree(tmp_path / "v", {"Show/e1.mkv": b"1", "Show/S2/e2.mkv": b"2"})
    watcher = await harness.start({"v": root})
    os.rename(root / "Show", root / ".Show")
    await harness.settle()
    assert sorted((type(e).__name__, _path_of(e)) for e in harness.changes()) == [
        ("FileDeleted", "Show/S2/e2.mkv"),
        ("FileDeleted", "Show/e1.mkv"),
    ]
    assert watcher.watched_paths("v") == [""]
    os.rename(root / ".Show", root / "Show (2021)")
    await harness.settle()
    assert sorted((type(e).__name__, _path_of(e)) for e in harness.changes()[2:]) == [
        ("FileCreated", "Show (2021)/S2/e2.mkv"),
        ("FileCreated", "Show (2021)/e1.mkv"),
    ]
    harness.assert_view_matches_disk()


async def test_symlinked_directory_is_neither_followed_nor_watched(
    harness: Harness, tmp_path: Path
) -> None:
    target = tree(tmp_path / "elsewhere", {"far.mkv": b""})
    root = tree(tmp_path / "v", {})
    watcher = await harness.start({"v": root})
    os.symlink(target, root / "link")
    write(target / "new.mkv")
    await harness.settle()
    assert harness.changes() == []
    assert watcher.watched_paths("v") == [""]


async def test_a_restarted_run_watches_the_volumes_again(tmp_path: Path) -> None:
    root = tree(tmp_path / "v", {"Dir/a.mkv": b""})
    created: list[str] = []

    async def emit(event: LiveEvent) -> None:
        if isinstance(event, FileCreated):
            created.append(event.relative_path)

    watcher = LiveWatcher(emit, lambda *_rescan: None, backend=live_backend_option())
    watcher.set_volumes([WatchPath(id="v", path=str(root))], EXTENSIONS)
    for number in range(2):  # the agent may stop its services and start them again
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            with trio.fail_after(WAIT):
                await watcher.wait_applied()
                write(root / "Dir" / f"new{number}.mkv")
                while f"Dir/new{number}.mkv" not in created:
                    await trio.sleep(0.01)
            assert watcher.watched_paths("v") == ["", "Dir"]
            nursery.cancel_scope.cancel()
    assert created == ["Dir/new0.mkv", "Dir/new1.mkv"]


async def test_event_for_an_unknown_watch_rescans_every_volume(
    harness: Harness, tmp_path: Path
) -> None:
    first = tree(tmp_path / "first", {"a.mkv": b""})
    second = tree(tmp_path / "second", {})
    watcher = await harness.start({"first": first, "second": second})
    stray = tree(tmp_path / "stray", {})
    # A watch on the same inotify instance that the bookkeeping knows nothing of.
    assert watcher._inotify is not None
    watcher._inotify.add_watch(str(stray))
    write(stray / "x.mkv")
    await harness.wait_until(
        lambda: (
            {volume for volume, why, _ in harness.rescans if why is RescanReason.UNKNOWN_WATCH}
            == {"first", "second"}
        )
    )
    assert watcher.stats().unknown_watch_events == 1
    write(stray / "y.mkv")  # the stray watch was removed: no second round of rescans
    write(first / "b.mkv")
    await harness.wait_for(FileCreated, "b.mkv", "first")
    assert watcher.stats().unknown_watch_events == 1
    harness.assert_view_matches_disk()
