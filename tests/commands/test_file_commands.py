"""Deletion and hardlink commands against real files: what the operator's disk looks like after.

Every test keeps canaries outside every volume and checks they survive.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence

import pytest

from fsfixtures import immutable, mounted
from scanarr import safefs
from scanarr.file_commands import DELETION_DISABLED, FileCommands
from scanarr.protocol import (
    CommandFilesDelete,
    CommandFilesHardlink,
    DeleteFile,
    DeletePath,
    FilesDeleteCompleted,
    FilesDeleteProgress,
    FilesHardlinkCompleted,
    WatchPath,
)

# --- helpers ------------------------------------------------------------------------------


class Library:
    """Volumes in a tmp dir, canaries outside them, and a FileCommands with its replay store."""

    def __init__(self, base: pathlib.Path, names: Sequence[str] = ("media", "torrents")) -> None:
        self.base = base
        self.outside = base / "outside"
        self.outside.mkdir()
        self.canaries = {"canary.mkv": b"canary", "a/canary.mkv": b"deep canary"}
        for relative, content in self.canaries.items():
            self.write(self.outside / relative, content)
        self.volumes: list[WatchPath] = []
        self.devices: dict[str, int] = {}  # as recorded by completed scans
        for name in names:
            self.add_volume(name, base / name)
        self.results_path = base / "state" / "command-results.json"
        self.removed: list[tuple[str, str]] = []
        self.commands = FileCommands(
            self.results_path, on_removing=lambda *entry: self.removed.append(entry)
        )
        self.progress: list[FilesDeleteProgress] = []

    def add_volume(self, volume_id: str, path: pathlib.Path) -> pathlib.Path:
        path.mkdir(parents=True, exist_ok=True)
        self.volumes.append(WatchPath(id=volume_id, path=str(path), name=volume_id))
        self.devices[volume_id] = os.stat(path).st_dev
        return path

    def root(self, volume_id: str) -> pathlib.Path:
        return pathlib.Path(next(v.path for v in self.volumes if v.id == volume_id))

    @staticmethod
    def write(path: pathlib.Path, content: bytes = b"film") -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def delete(
        self,
        *files: DeleteFile,
        request_id: str = "req-1",
        disable_deletion: bool = False,
        devices: Mapping[str, int] | None = None,
    ) -> FilesDeleteCompleted:
        self.progress = []
        command = CommandFilesDelete(request_id=request_id, deletion_id="del-1", files=list(files))
        completed = self.commands.delete(
            command,
            self.volumes,
            self.devices if devices is None else devices,
            disable_deletion,
            self.progress.append,
        )
        check_consistent(completed, self.progress, command)
        return completed

    def hardlink(
        self,
        source: tuple[str, str],
        target: tuple[str, str],
        *,
        request_id: str = "link-1",
        disable_deletion: bool = False,
    ) -> FilesHardlinkCompleted:
        command = CommandFilesHardlink(
            request_id=request_id,
            deletion_id="del-1",
            source_volume_path=self.path_of(source[0]),
            source_relative_path=source[1],
            target_volume_path=self.path_of(target[0]),
            target_relative_path=target[1],
        )
        return self.commands.hardlink(command, self.volumes, self.devices, disable_deletion)

    def path_of(self, volume_id: str) -> str:
        return next((v.path for v in self.volumes if v.id == volume_id), volume_id)

    def media_file(
        self, *paths: tuple[str, str], media_file_id: str = "mf-1", **identity: int
    ) -> DeleteFile:
        return DeleteFile(
            media_file_id=media_file_id,
            paths=[DeletePath(volume_path=self.path_of(v), relative_path=r) for v, r in paths],
            **identity,
        )

    def assert_canaries_intact(self) -> None:
        for relative, content in self.canaries.items():
            assert (self.outside / relative).read_bytes() == content


def check_consistent(
    completed: FilesDeleteCompleted,
    progress: list[FilesDeleteProgress],
    command: CommandFilesDelete,
) -> None:
    """The totals of a completed reply agree with its results and its progress messages."""
    results = completed.results
    assert [r.media_file_id for r in results] == [f.media_file_id for f in command.files]
    assert completed.total_media_files == len(results)
    assert completed.deleted == sum(r.status == "deleted" for r in results)
    assert completed.failed == sum(r.status == "failed" for r in results)
    assert completed.deleted + completed.failed == len(results)
    assert completed.total_paths_deleted == sum(r.paths_deleted for r in results)
    assert completed.dirs_removed == sum(r.dirs_removed for r in results)
    assert completed.freed_bytes == sum(r.freed_bytes for r in results)
    for result in results:
        assert (result.status == "failed") == (result.error is not None)
    if any(r.error == DELETION_DISABLED for r in results):
        assert progress == []
        return
    assert [p.media_file_id for p in progress] == [r.media_file_id for r in results]
    for message, result, file in zip(progress, results, command.files, strict=True):
        assert message.paths_deleted == result.paths_deleted
        assert message.paths_failed == len(file.paths) - result.paths_deleted
        assert message.dirs_removed == result.dirs_removed


@pytest.fixture
def library(tmp_path: pathlib.Path) -> Iterator[Library]:
    library = Library(tmp_path)
    yield library
    library.assert_canaries_intact()


# --- deletion: the ordinary case ----------------------------------------------------------


def test_one_film_hardlinked_across_two_volumes_is_deleted(library: Library) -> None:
    film = library.write(library.root("torrents") / "Inception.2010.mkv", b"x" * 1000)
    link = library.root("media") / "Inception (2010)" / "Inception.mkv"
    link.parent.mkdir()
    os.link(film, link)
    status = os.stat(film)

    completed = library.delete(
        library.media_file(
            ("torrents", "Inception.2010.mkv"),
            ("media", "Inception (2010)/Inception.mkv"),
            inode=status.st_ino,
            device_id=status.st_dev,
        )
    )

    [result] = completed.results
    assert (result.status, result.paths_deleted, result.error) == ("deleted", 2, None)
    assert (result.size_bytes, result.freed_bytes, result.dirs_removed) == (1000, 1000, 1)
    assert not film.exists() and not link.parent.exists()
    assert library.root("media").is_dir() and library.root("torrents").is_dir()
    assert library.removed == [
        ("torrents", "Inception.2010.mkv"),
        ("media", "Inception (2010)/Inception.mkv"),
    ]


def test_nothing_is_freed_while_a_link_outside_the_command_remains(library: Library) -> None:
    film = library.write(library.root("torrents") / "film.mkv", b"x" * 500)
    os.link(film, library.root("media") / "cross-seed.mkv")

    [result] = library.delete(library.media_file(("torrents", "film.mkv"))).results

    assert (result.status, result.size_bytes, result.freed_bytes) == ("deleted", 500, 0)
    assert (library.root("media") / "cross-seed.mkv").read_bytes() == b"x" * 500


def test_files_already_gone_count_as_deleted_on_a_present_volume(library: Library) -> None:
    [result] = library.delete(
        library.media_file(("media", "gone.mkv"), ("media", "no/such/dir/gone.mkv"))
    ).results
    assert (result.status, result.paths_deleted, result.size_bytes) == ("deleted", 2, 0)


def test_a_media_file_without_paths_fails(library: Library) -> None:
    [result] = library.delete(library.media_file()).results
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith("no_paths")


# --- deletion: paths that must not be followed --------------------------------------------


def test_traversal_strings_are_refused(library: Library) -> None:
    library.write(library.root("media") / "a" / "b.mkv")
    library.write(library.root("media") / "canary.mkv", b"inside")
    absolute = str(library.outside / "canary.mkv")
    unsafe = [
        "../outside/canary.mkv",
        "a/../../outside/canary.mkv",
        absolute,
        "a//b.mkv",
        "./canary.mkv",
        "canary.mkv\x00",
        "n" * 4096,
        "",
        "a/",
        "..",
    ]
    files = [
        library.media_file(("media", path), media_file_id=f"mf-{index}")
        for index, path in enumerate(unsafe)
    ]

    completed = library.delete(*files)

    assert completed.failed == len(unsafe) and completed.total_paths_deleted == 0
    for result in completed.results:
        assert result.error is not None and result.error.startswith("invalid_path ("), result
    assert (library.root("media") / "a" / "b.mkv").exists()
    assert (library.root("media") / "canary.mkv").read_bytes() == b"inside"
    assert library.removed == []


def test_unknown_volume_fails_that_path_only(library: Library) -> None:
    film = library.write(library.root("media") / "film.mkv")
    [result] = library.delete(
        DeleteFile(
            media_file_id="mf-1",
            paths=[
                DeletePath(volume_path=str(library.outside), relative_path="canary.mkv"),
                DeletePath(volume_path=library.path_of("media"), relative_path="film.mkv"),
            ],
        )
    ).results
    assert (result.status, result.paths_deleted) == ("failed", 1)
    assert result.error == f"unknown_volume (not a configured volume): {library.outside}/canary.mkv"
    assert not film.exists()


def test_symlinked_directory_inside_a_volume_is_not_followed(
    walk_mode: str, library: Library
) -> None:
    (library.root("media") / "evil").symlink_to(library.outside)
    [result] = library.delete(
        library.media_file(("media", "evil/canary.mkv"), ("media", "evil/a/canary.mkv"))
    ).results
    assert (result.status, result.paths_deleted) == ("failed", 0)
    assert result.error is not None and result.error.count("symlink_on_path") == 2
    assert (library.root("media") / "evil").is_symlink()


def test_symlink_named_like_a_media_file_is_refused(walk_mode: str, library: Library) -> None:
    link = library.root("media") / "film.mkv"
    link.symlink_to(library.outside / "canary.mkv")
    [result] = library.delete(library.media_file(("media", "film.mkv"))).results
    assert result.status == "failed"
    assert (
        result.error == f"not_a_regular_file (symbolic link): {library.path_of('media')}/film.mkv"
    )
    assert link.is_symlink()


SWAP_PARENT_FOR_SYMLINK = """
import ctypes, os, sys
deep, evil, stop = sys.argv[1:]
libc = ctypes.CDLL(None, use_errno=True)

def exchange():
    # renameat2(RENAME_EXCHANGE): the name is always the directory or the symlink, never absent.
    if libc.renameat2(-100, deep.encode(), -100, evil.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

swaps = 0
while not os.path.exists(stop):
    exchange()
    exchange()
    swaps += 1
    if swaps == 1:
        print("swapping", flush=True)
print(swaps)
"""


def test_parent_swapped_for_a_symlink_during_a_thousand_deletes(
    walk_mode: str, library: Library
) -> None:
    """Another process swaps the parent directory with a symlink to outside while deletes run."""
    count = 1000
    volume = library.root("media")
    real = volume / "deep" / "a"
    # Hardlinks of one file each side: creating 2,000 inodes would dominate the test's time.
    inside = library.write(volume / "inside.bin", b"inside")
    outside = library.write(library.outside / "outside.bin", b"outside")
    real.mkdir(parents=True)
    for index in range(count):
        os.link(inside, real / f"f{index:04d}.mkv")
        os.link(outside, library.outside / "a" / f"f{index:04d}.mkv")
    library.write(real / "keep.txt")  # keeps the directories from being cleaned up
    (volume / "evil").symlink_to(library.outside)
    stop = library.base / "stop-swapping"
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAP_PARENT_FOR_SYMLINK, volume / "deep", volume / "evil", stop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert swapper.stdout is not None
        swapping = swapper.stdout.readline() == "swapping\n"
        if swapping:
            completed = library.delete(
                *(
                    library.media_file(("media", f"deep/a/f{i:04d}.mkv"), media_file_id=f"mf-{i}")
                    for i in range(count)
                )
            )
    finally:
        stop.touch()
        output, errors = swapper.communicate(timeout=60)
    if not swapping:
        pytest.skip(f"renameat2(RENAME_EXCHANGE) unavailable here: {errors.strip()[-200:]}")
    assert swapper.returncode == 0, errors
    assert int(output) > 1
    assert (volume / "evil").is_symlink() and real.is_dir()

    for index in range(count):
        assert (library.outside / "a" / f"f{index:04d}.mkv").read_bytes() == b"outside"
    gone = [index for index in range(count) if not (real / f"f{index:04d}.mkv").exists()]
    assert gone, "the deletes never met the real directory"
    for index, result in enumerate(completed.results):
        if result.status == "failed":
            assert result.error is not None and "symlink_on_path" in result.error, result
            assert index not in gone
        else:
            assert index in gone


def test_tmpfs_mounted_inside_a_volume_is_not_entered(walk_mode: str, library: Library) -> None:
    mount_point = library.root("media") / "mnt"
    with mounted(mount_point):
        film = library.write(mount_point / "film.mkv")
        [result] = library.delete(library.media_file(("media", "mnt/film.mkv"))).results
        assert result.status == "failed"
        assert result.error is not None and result.error.startswith("cross_device")
        assert film.exists()


def test_bind_mount_of_outside_inside_a_volume_is_not_entered(
    walk_mode: str, library: Library
) -> None:
    mount_point = library.root("media") / "bind"
    with mounted(mount_point, bind_source=library.outside):
        [result] = library.delete(library.media_file(("media", "bind/canary.mkv"))).results
        assert result.status == "failed"
        assert result.error is not None and result.error.startswith("cross_device")


# --- deletion: the file or the volume is not what the API thinks --------------------------


def test_file_replaced_under_the_same_name_is_left_alone(library: Library) -> None:
    film = library.write(library.root("media") / "film.mkv", b"old")
    old = os.stat(film)
    replacement = library.write(library.root("media") / ".film.mkv.new", b"re-downloaded")
    os.rename(replacement, film)

    [result] = library.delete(
        library.media_file(("media", "film.mkv"), inode=old.st_ino, device_id=old.st_dev)
    ).results

    assert (result.status, result.paths_deleted, result.size_bytes) == ("failed", 0, 0)
    assert result.error is not None and result.error.startswith("inode_mismatch (found inode")
    assert film.read_bytes() == b"re-downloaded"
    assert library.removed == []


def test_device_id_mismatch_alone_is_a_mismatch(library: Library) -> None:
    film = library.write(library.root("media") / "film.mkv")
    status = os.stat(film)
    [result] = library.delete(
        library.media_file(("media", "film.mkv"), inode=status.st_ino, device_id=status.st_dev + 1)
    ).results
    assert result.status == "failed" and film.exists()


def test_removed_volume_root_reports_no_deletion(library: Library) -> None:
    shutil.rmtree(library.root("media"))
    [result] = library.delete(library.media_file(("media", "film.mkv"))).results
    assert (result.status, result.paths_deleted) == ("failed", 0)
    assert result.error is not None and result.error.startswith("volume_unavailable (")


def test_volume_on_another_device_than_recorded_is_untouched(library: Library) -> None:
    """An unmounted mount point is a directory of the parent filesystem: never delete there."""
    film = library.write(library.root("media") / "film.mkv")
    library.devices["media"] = os.stat("/proc").st_dev
    [result] = library.delete(
        library.media_file(("media", "film.mkv"), ("media", "gone.mkv"))
    ).results
    assert (result.status, result.paths_deleted) == ("failed", 0)
    assert result.error is not None and result.error.count("volume_unavailable") == 2
    assert film.exists()


def test_unmounted_volume_reports_no_deletion(library: Library) -> None:
    root = library.root("media")
    with mounted(root):
        library.devices["media"] = os.stat(root).st_dev
    [result] = library.delete(library.media_file(("media", "film.mkv"))).results
    assert (result.status, result.paths_deleted) == ("failed", 0)
    assert result.error is not None and result.error.startswith("volume_unavailable (")


def test_volume_root_moved_during_the_command_stops_counting_missing_files(
    library: Library,
) -> None:
    root = library.root("media")
    library.write(root / "first.mkv")

    def move_root_away(volume_id: str, relative_path: str) -> None:
        root.rename(root.with_name("media.moved"))

    library.commands.on_removing = move_root_away
    [result] = library.delete(
        library.media_file(("media", "first.mkv"), ("media", "missing.mkv"))
    ).results
    assert (result.status, result.paths_deleted) == ("failed", 1)
    assert result.error is not None and result.error.startswith("volume_unavailable (")


def delete_locked_film_as_nobody(volume: pathlib.Path) -> list[list[str | None]]:
    """Delete ``locked/film.mkv`` in a forked child with uid/gid 65534 (root ignores modes)."""
    command = CommandFilesDelete(
        "req-1",
        "del-1",
        [
            DeleteFile(
                "mf-1", [DeletePath(volume_path=str(volume), relative_path="locked/film.mkv")]
            )
        ],
    )

    def delete() -> list[list[str | None]]:
        reply = FileCommands(None).delete(
            command, [WatchPath(id="media", path=str(volume))], {}, False, lambda _p: None
        )
        return [[result.status, result.error] for result in reply.results]

    if os.geteuid() != 0:
        return delete()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root for good, run, report, and leave without cleanup
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            report = json.dumps(delete())
        except BaseException as error:
            report = json.dumps(f"child failed: {error!r}")
        os.write(write_end, report.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert isinstance(report, list), report
    return report


def test_permission_denied_fails_with_the_errno_text() -> None:
    # Outside pytest's tmp dir, whose 0700 parents an unprivileged user cannot cross.
    base = pathlib.Path(tempfile.mkdtemp(prefix="scanarr-permission-"))
    locked = base / "media" / "locked"
    try:
        Library.write(locked / "film.mkv")
        for directory in (base, base / "media"):
            directory.chmod(0o755)
        locked.chmod(0o555)
        results = delete_locked_film_as_nobody(base / "media")
        assert results == [["failed", f"Permission denied: {base}/media/locked/film.mkv"]]
        assert (locked / "film.mkv").exists()
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)


def test_immutable_file_fails_with_the_errno_text(library: Library) -> None:
    film = library.write(library.root("media") / "film.mkv")
    with immutable(film):
        [result] = library.delete(library.media_file(("media", "film.mkv"))).results
        assert film.exists()
    assert result.status == "failed"
    assert result.error == f"Operation not permitted: {library.path_of('media')}/film.mkv"


# --- deletion: companions and empty directories -------------------------------------------


def test_companions_and_empty_directories_go_with_the_last_media_file(library: Library) -> None:
    movies = library.root("media") / "Movies"
    film_dir = movies / "Inception (2010)"
    film = library.write(film_dir / "Inception.mkv", b"x" * 10)
    for companion in ("Inception.nfo", "poster.jpg", "fanart.JPG", "Inception.en.srt", "a.idx"):
        library.write(film_dir / companion, b"meta")
    library.write(movies / "Other (2011)" / "Other.mkv")

    [result] = library.delete(
        library.media_file(("media", "Movies/Inception (2010)/Inception.mkv"))
    ).results

    assert (result.status, result.dirs_removed, result.size_bytes) == ("deleted", 1, 10)
    assert not film.exists() and not film_dir.exists()
    assert sorted(os.listdir(movies)) == ["Other (2011)"]
    assert ("media", "Movies/Inception (2010)/poster.jpg") in library.removed


def test_companions_stay_while_another_media_file_remains(library: Library) -> None:
    season = library.root("media") / "Show" / "Season 01"
    library.write(season / "e01.mkv")
    library.write(season / "e02.mp4")
    for companion in ("e01.nfo", "e02.nfo", "folder.jpg"):
        library.write(season / companion)

    [result] = library.delete(library.media_file(("media", "Show/Season 01/e01.mkv"))).results

    assert (result.status, result.dirs_removed) == ("deleted", 0)
    assert sorted(os.listdir(season)) == ["e01.nfo", "e02.mp4", "e02.nfo", "folder.jpg"]


def test_a_download_in_progress_counts_as_a_remaining_media_file(library: Library) -> None:
    directory = library.root("media") / "film"
    library.write(directory / "film.mkv")
    library.write(directory / "film.2160p.mkv.part")
    library.write(directory / "film.srt")
    library.delete(library.media_file(("media", "film/film.mkv")))
    assert sorted(os.listdir(directory)) == ["film.2160p.mkv.part", "film.srt"]


def test_cleanup_is_never_recursive_and_never_follows_links(library: Library) -> None:
    directory = library.root("media") / "film"
    library.write(directory / "film.mkv")
    library.write(directory / "film.nfo")
    library.write(directory / "notes.txt")
    library.write(directory / "nfo")  # no extension: not metadata
    library.write(directory / ".hidden.nfo")
    library.write(directory / "Extras" / "behind.jpg")
    (directory / "poster.jpg").symlink_to(library.outside / "canary.mkv")
    (directory / "fanart.jpg").mkdir()

    [result] = library.delete(library.media_file(("media", "film/film.mkv"))).results

    assert (result.status, result.dirs_removed) == ("deleted", 0)
    assert sorted(os.listdir(directory)) == [
        ".hidden.nfo",
        "Extras",
        "fanart.jpg",
        "nfo",
        "notes.txt",
        "poster.jpg",
    ]
    assert (directory / "Extras" / "behind.jpg").exists()


def test_empty_parents_are_removed_up_to_but_not_including_the_root(library: Library) -> None:
    library.write(library.root("media") / "a" / "b" / "c" / "film.mkv")
    [result] = library.delete(library.media_file(("media", "a/b/c/film.mkv"))).results
    assert (result.status, result.dirs_removed) == ("deleted", 3)
    assert library.root("media").is_dir() and os.listdir(library.root("media")) == []


def test_nested_volume_root_is_kept_and_owns_the_deleted_path(library: Library) -> None:
    nested = library.add_volume("movies", library.root("media") / "movies")
    library.write(nested / "Film (2001)" / "Film.mkv")

    [result] = library.delete(library.media_file(("media", "movies/Film (2001)/Film.mkv"))).results

    assert (result.status, result.dirs_removed) == ("deleted", 1)
    assert nested.is_dir() and os.listdir(nested) == []
    assert library.removed == [("movies", "Film (2001)/Film.mkv")]


# --- replay and disable_deletion ----------------------------------------------------------


def test_repeated_request_id_replays_without_touching_the_disk(library: Library) -> None:
    film = library.write(library.root("media") / "film" / "film.mkv", b"first")
    first = library.delete(library.media_file(("media", "film/film.mkv")))
    first_progress = library.progress
    assert first.deleted == 1 and not film.exists()
    library.write(film, b"re-downloaded")

    again = library.delete(library.media_file(("media", "film/film.mkv")))
    assert (again, library.progress) == (first, first_progress)
    after_restart = FileCommands(library.results_path).delete(
        CommandFilesDelete("req-1", "del-1", [library.media_file(("media", "film/film.mkv"))]),
        library.volumes,
        {},
        False,
        lambda _progress: None,
    )
    assert after_restart == first
    assert film.read_bytes() == b"re-downloaded"
    assert os.stat(library.results_path).st_mode & 0o777 == 0o600


def test_only_the_last_results_are_kept(library: Library) -> None:
    commands = FileCommands(library.results_path, max_results=2)
    film = library.write(library.root("media") / "film.mkv")

    def delete(request_id: str) -> FilesDeleteCompleted:
        command = CommandFilesDelete(
            request_id, "del-1", [library.media_file(("media", "film.mkv"))]
        )
        return commands.delete(
            command, library.volumes, library.devices, False, lambda _progress: None
        )

    for request_id in ("req-1", "req-2", "req-3"):
        delete(request_id)
    library.write(film)
    assert delete("req-3").results[0].paths_deleted == 1 and film.exists()  # replayed
    delete("req-1")  # forgotten: carried out again
    assert not film.exists()
    stored = json.loads(library.results_path.read_text())["results"]
    assert [entry["request_id"] for entry in stored] == ["req-3", "req-1"]


def test_unreadable_results_file_is_logged_and_ignored(
    library: Library, caplog: pytest.LogCaptureFixture
) -> None:
    library.results_path.parent.mkdir(parents=True, exist_ok=True)
    library.results_path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        commands = FileCommands(library.results_path)
    assert "ignoring unreadable command results" in caplog.text
    film = library.write(library.root("media") / "film.mkv")
    command = CommandFilesDelete("req-1", "del-1", [library.media_file(("media", "film.mkv"))])
    assert commands.delete(command, library.volumes, {}, False, lambda _p: None).deleted == 1
    assert not film.exists()
    assert json.loads(library.results_path.read_text())["results"][0]["request_id"] == "req-1"


def test_disable_deletion_refuses_the_whole_command(library: Library) -> None:
    film = library.write(library.root("media") / "film.mkv")
    files = [
        library.media_file(("media", "film.mkv")),
        library.media_file(("media", "gone.mkv"), media_file_id="mf-2"),
    ]
    refused = library.delete(*files, disable_deletion=True)
    assert library.progress == []
    assert [(r.status, r.error) for r in refused.results] == [("failed", DELETION_DISABLED)] * 2
    assert film.exists()

    allowed = library.delete(*files)  # the refusal was not stored as the request's answer
    assert allowed.deleted == 2 and not film.exists()


# --- hardlink -----------------------------------------------------------------------------


def test_hardlink_creates_the_target_and_its_directories(library: Library) -> None:
    source = library.write(library.root("torrents") / "film.mkv")
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "Film (2001)/Film.mkv"))
    target = library.root("media") / "Film (2001)" / "Film.mkv"
    inode = os.stat(source).st_ino
    assert (reply.status, reply.source_inode, reply.target_inode, reply.error) == (
        "created",
        inode,
        inode,
        None,
    )
    assert os.stat(target).st_ino == inode and os.stat(source).st_nlink == 2


def test_hardlink_to_an_existing_link_succeeds_without_change(library: Library) -> None:
    source = library.write(library.root("torrents") / "film.mkv")
    os.link(source, library.root("media") / "film.mkv")
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"), disable_deletion=True)
    assert reply.status == "created" and reply.target_inode == os.stat(source).st_ino
    assert os.stat(source).st_nlink == 2 and library.removed == []


def test_hardlink_replaces_another_file(library: Library) -> None:
    source = library.write(library.root("torrents") / "film.mkv", b"new")
    target = library.write(library.root("media") / "film.mkv", b"old")
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))
    assert reply.status == "created"
    assert target.read_bytes() == b"new" and os.stat(target).st_ino == os.stat(source).st_ino
    assert os.listdir(library.root("media")) == ["film.mkv"]
    assert library.removed == [("media", "film.mkv")]


def test_hardlink_replacement_is_refused_when_deletion_is_disabled(library: Library) -> None:
    library.write(library.root("torrents") / "film.mkv", b"new")
    target = library.write(library.root("media") / "film.mkv", b"old")
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"), disable_deletion=True)
    assert (reply.status, reply.source_inode, reply.target_inode) == ("failed", None, None)
    assert reply.error is not None and reply.error.startswith(DELETION_DISABLED)
    assert target.read_bytes() == b"old"
    assert library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv")).status == "created"


def test_hardlink_across_devices_fails_before_writing(library: Library) -> None:
    with mounted(library.root("torrents")):
        library.write(library.root("torrents") / "film.mkv")
        library.devices["torrents"] = os.stat(library.root("torrents")).st_dev
        reply = library.hardlink(("torrents", "film.mkv"), ("media", "new/dir/film.mkv"))
    assert reply.status == "failed" and reply.source_inode is None
    assert reply.error is not None and reply.error.startswith("cross_device (")
    assert os.listdir(library.root("media")) == []


def test_hardlink_across_two_bind_mounts_of_one_filesystem_fails_before_writing(
    library: Library,
) -> None:
    """Docker-style separate mounts share st_dev, yet link() between them is EXDEV."""
    real = library.base / "media-real"
    real.mkdir()
    library.write(library.root("torrents") / "film.mkv")
    with mounted(library.root("media"), bind_source=real):
        reply = library.hardlink(("torrents", "film.mkv"), ("media", "new/film.mkv"))
    assert reply.status == "failed"
    assert reply.error is not None and reply.error.startswith("cross_device (")
    assert os.listdir(real) == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("../outside/film.mkv", "invalid_path ("),
        ("evil/film.mkv", "symlink_on_path"),
        ("evil/a/new/film.mkv", "symlink_on_path"),
        ("link.mkv", "not_a_regular_file ("),
    ],
)
def test_hardlink_target_outside_the_volume_is_refused(
    walk_mode: str, library: Library, target: str, reason: str
) -> None:
    library.write(library.root("torrents") / "film.mkv", b"new")
    (library.root("media") / "evil").symlink_to(library.outside)
    (library.root("media") / "link.mkv").symlink_to(library.outside / "canary.mkv")
    reply = library.hardlink(("torrents", "film.mkv"), ("media", target))
    assert reply.status == "failed"
    assert reply.error is not None and reply.error.startswith(reason), reply.error
    assert sorted(os.listdir(library.outside)) == ["a", "canary.mkv"]
    assert os.listdir(library.outside / "a") == ["canary.mkv"]


def test_hardlink_source_must_be_a_regular_file_in_a_configured_volume(library: Library) -> None:
    (library.root("torrents") / "link.mkv").symlink_to(library.outside / "canary.mkv")
    symlink = library.hardlink(("torrents", "link.mkv"), ("media", "film.mkv"))
    missing = library.hardlink(("torrents", "none.mkv"), ("media", "film.mkv"), request_id="2")
    unknown = library.hardlink(
        (str(library.outside), "canary.mkv"), ("media", "x.mkv"), request_id="3"
    )
    assert symlink.error is not None and symlink.error.startswith("not_a_regular_file (")
    assert missing.error is not None and missing.error.startswith("No such file or directory: ")
    assert unknown.error is not None and unknown.error.startswith("unknown_volume (")
    assert os.listdir(library.root("media")) == []


def test_failed_rename_keeps_the_old_target(library: Library) -> None:
    library.write(library.root("torrents") / "film.mkv", b"new")
    target = library.write(library.root("media") / "film.mkv", b"old")
    with immutable(target):
        reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))
    assert reply.status == "failed"
    assert reply.error == f"Operation not permitted: {library.path_of('media')}/film.mkv"
    assert target.read_bytes() == b"old"
    assert os.listdir(library.root("media")) == ["film.mkv"]


def test_failed_link_keeps_the_old_target(library: Library) -> None:
    library.write(library.root("torrents") / "film.mkv", b"new")
    target = library.write(library.root("media") / "dir" / "film.mkv", b"old")
    with immutable(target.parent):
        reply = library.hardlink(("torrents", "film.mkv"), ("media", "dir/film.mkv"))
    assert reply.status == "failed" and target.read_bytes() == b"old"
    assert os.listdir(target.parent) == ["film.mkv"]


def test_repeated_hardlink_request_is_replayed(library: Library) -> None:
    library.write(library.root("torrents") / "film.mkv", b"new")
    first = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))
    target = library.root("media") / "film.mkv"
    target.unlink()
    library.write(target, b"the operator's own file")
    assert library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv")) == first
    assert target.read_bytes() == b"the operator's own file"


# --- the name changes between the check and the destructive step --------------------------
# The observer runs between the first check and the step (it is a round trip to the live
# watcher in the agent), so it is where another process's change lands in these tests.


def replace_file(path: pathlib.Path, content: bytes) -> None:
    """Put a new file (a new inode) at `path`, as a finished download does."""
    fresh = Library.write(path.with_name(f".{path.name}.download"), content)
    os.rename(fresh, path)


def test_file_replaced_while_the_watcher_is_told_is_left_alone(library: Library) -> None:
    film = library.write(library.root("media") / "film.mkv", b"old" * 10)

    def redownload(volume_id: str, relative_path: str) -> None:
        replace_file(film, b"new download")

    library.commands.on_removing = redownload
    [result] = library.delete(library.media_file(("media", "film.mkv"))).results

    assert (result.status, result.paths_deleted) == ("failed", 0)
    assert result.error is not None and result.error.startswith("inode_mismatch (")
    assert (result.size_bytes, result.freed_bytes) == (0, 0)
    assert film.read_bytes() == b"new download"


def test_companion_rewritten_while_the_watcher_is_told_is_left_alone(library: Library) -> None:
    directory = library.root("media") / "film"
    library.write(directory / "film.mkv")
    nfo = library.write(directory / "film.nfo", b"old")
    poster = library.write(directory / "poster.jpg", b"old")

    def rewrite_nfo(volume_id: str, relative_path: str) -> None:
        if relative_path == "film/film.nfo":
            replace_file(nfo, b"rewritten")

    library.commands.on_removing = rewrite_nfo
    [result] = library.delete(library.media_file(("media", "film/film.mkv"))).results

    assert (result.status, result.dirs_removed) == ("deleted", 0)
    assert nfo.read_bytes() == b"rewritten" and not poster.exists()
    assert os.listdir(directory) == ["film.nfo"]


@pytest.mark.parametrize("swapped_for", ["another file", "a symlink to outside"])
def test_source_swapped_before_the_link_keeps_the_old_target(
    library: Library, swapped_for: str
) -> None:
    source = library.write(library.root("torrents") / "film.mkv", b"checked")
    target = library.write(library.root("media") / "film.mkv", b"old")
    other = library.root("torrents") / "other.mkv"
    if swapped_for == "another file":
        library.write(other, b"another file")
    else:
        other.symlink_to(library.outside / "canary.mkv")

    def swap_source(volume_id: str, relative_path: str) -> None:
        os.rename(other, source)

    library.commands.on_removing = swap_source
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))

    assert (reply.status, reply.source_inode, reply.target_inode) == ("failed", None, None)
    assert reply.error is not None and reply.error.startswith("source_changed ("), reply.error
    assert target.read_bytes() == b"old" and os.stat(target, follow_symlinks=False).st_nlink == 1
    assert os.listdir(library.root("media")) == ["film.mkv"]
    assert os.lstat(source).st_nlink == 1
    assert os.stat(library.outside / "canary.mkv").st_nlink == 1


@pytest.fixture(params=["renameat2", "link"])
def new_name_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new target name placed with renameat2(RENAME_NOREPLACE), and with its fallback."""
    if request.param == "renameat2":
        if not getattr(safefs, "USE_RENAMEAT2", False):
            pytest.skip("no renameat2 in this C library")
    else:
        monkeypatch.setattr(safefs, "USE_RENAMEAT2", False, raising=False)
    return str(request.param)


def test_source_swapped_before_a_new_link_leaves_no_target_name(
    new_name_mode: str, library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = library.write(library.root("torrents") / "film.mkv", b"checked")
    other = library.write(library.root("torrents") / "other.mkv", b"another file")
    checked = safefs.lstat_regular_file

    def check_then_swap(dir_fd: int, name: str, device: int) -> os.stat_result:
        # Another process renames a file over the source right after its check.
        status = checked(dir_fd, name, device)
        if name == "film.mkv" and other.exists():
            os.rename(other, source)
        return status

    monkeypatch.setattr(safefs, "lstat_regular_file", check_then_swap)
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))

    assert reply.status == "failed"
    assert reply.error is not None and reply.error.startswith("source_changed ("), reply.error
    assert os.listdir(library.root("media")) == []
    assert source.read_bytes() == b"another file" and os.stat(source).st_nlink == 1


def test_new_link_is_made_in_both_modes(new_name_mode: str, library: Library) -> None:
    source = library.write(library.root("torrents") / "film.mkv")
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))
    assert reply.status == "created"
    assert os.listdir(library.root("media")) == ["film.mkv"]
    assert os.stat(library.root("media") / "film.mkv").st_ino == os.stat(source).st_ino
    assert os.stat(source).st_nlink == 2


def test_target_linked_to_the_source_meanwhile_leaves_no_temporary_name(library: Library) -> None:
    """rename(2) between two names of one inode does nothing and reports success."""
    source = library.write(library.root("torrents") / "film.mkv", b"new")
    target = library.write(library.root("media") / "film.mkv", b"old")

    def link_it_first(volume_id: str, relative_path: str) -> None:
        target.unlink()
        os.link(source, target)

    library.commands.on_removing = link_it_first
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))

    assert reply.status == "created" and reply.target_inode == os.stat(source).st_ino
    assert os.listdir(library.root("media")) == ["film.mkv"]
    assert os.stat(source).st_nlink == 2


def test_target_replaced_while_the_watcher_is_told_is_not_overwritten(library: Library) -> None:
    source = library.write(library.root("torrents") / "film.mkv", b"new")
    target = library.write(library.root("media") / "film.mkv", b"old")

    def redownload(volume_id: str, relative_path: str) -> None:
        replace_file(target, b"a fresh download")

    library.commands.on_removing = redownload
    reply = library.hardlink(("torrents", "film.mkv"), ("media", "film.mkv"))

    assert reply.status == "failed"
    assert reply.error is not None and reply.error.startswith("target_changed ("), reply.error
    assert target.read_bytes() == b"a fresh download"
    assert os.listdir(library.root("media")) == ["film.mkv"]
    assert os.stat(source).st_nlink == 1


# --- volumes that cannot prove a path is gone ---------------------------------------------


def test_missing_paths_of_a_volume_without_a_recorded_device_are_unverified(
    library: Library,
) -> None:
    """An empty unmounted mount point looks like a volume whose files are all gone."""
    del library.devices["media"]
    film = library.write(library.root("media") / "film.mkv")

    [result] = library.delete(
        library.media_file(
            ("media", "gone.mkv"), ("media", "no/dir/gone.mkv"), ("media", "film.mkv")
        )
    ).results

    assert (result.status, result.paths_deleted) == ("failed", 1)  # the file that was there
    assert result.error is not None and result.error.count("volume_unverified (") == 2
    assert not film.exists()


def test_unmounted_nested_volume_addressed_through_the_outer_one_is_unavailable(
    library: Library,
) -> None:
    nested = library.add_volume("movies", library.root("media") / "movies")
    with mounted(nested):
        library.devices["movies"] = os.stat(nested).st_dev
    # Unmounted: media/movies is an empty directory of the outer volume's filesystem.

    [result] = library.delete(library.media_file(("media", "movies/Film/Film.mkv"))).results

    assert (result.status, result.paths_deleted) == ("failed", 0)
    assert result.error is not None and result.error.startswith("volume_unavailable (")
    assert nested.is_dir()


def test_missing_path_through_a_nested_volume_without_a_recorded_device_is_unverified(
    library: Library,
) -> None:
    library.add_volume("movies", library.root("media") / "movies")
    del library.devices["movies"]

    [result] = library.delete(library.media_file(("media", "movies/Film/Film.mkv"))).results

    assert (result.status, result.paths_deleted) == ("failed", 0)
    assert result.error is not None and result.error.startswith("volume_unverified ("), result.error


# --- a failed hardlink leaves nothing behind ----------------------------------------------


def test_failed_hardlink_removes_the_directories_it_made(library: Library) -> None:
    source = library.write(library.root("torrents") / "film.mkv")
    library.write(library.root("media") / "Films" / "keep.nfo")
    with immutable(source):  # link(2) of an immutable file is EPERM, even for root
        reply = library.hardlink(
            ("torrents", "film.mkv"), ("media", "Films/Film (2001)/Extras/film.mkv")
        )
    assert reply.status == "failed"
    assert reply.error is not None and reply.error.startswith("Operation not permitted: ")
    assert os.listdir(library.root("media") / "Films") == ["keep.nfo"]
    assert os.stat(source).st_nlink == 1


def test_a_megabyte_path_fails_with_a_bounded_error_and_store(library: Library) -> None:
    film = library.write(library.root("media") / "film.mkv")
    huge = "a/" * 500_000 + "film.mkv"
    completed = library.delete(
        library.media_file(("media", huge), media_file_id="mf-huge"),
        library.media_file(("media", "film.mkv"), media_file_id="mf-film"),
    )
    huge_result, film_result = completed.results
    assert huge_result.status == "failed" and film_result.status == "deleted"
    assert huge_result.error is not None and huge_result.error.startswith("invalid_path (")
    assert len(huge_result.error) < 3 * 4096
    assert not film.exists()
    # Stored for replays, and the whole store is rewritten after each command: it stays small.
    assert library.results_path.stat().st_size < 64 * 1024
