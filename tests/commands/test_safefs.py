"""safefs against real directories, symlinks and mounts: nothing outside a volume is reachable."""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Callable

import pytest

from fsfixtures import immutable, mounted
from scanarr import safefs


@pytest.fixture
def volume(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "volume"
    root.mkdir()
    return root


@pytest.fixture
def outside(tmp_path: pathlib.Path) -> pathlib.Path:
    """A directory outside the volume holding a canary that must survive every test."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "canary.mkv").write_bytes(b"canary")
    return directory


def open_root(volume: pathlib.Path) -> safefs.VolumeRoot:
    return safefs.VolumeRoot(str(volume), os.stat(volume).st_dev)


def identity(path: pathlib.Path) -> tuple[int, int]:
    status = os.stat(path, follow_symlinks=False)
    return (status.st_dev, status.st_ino)


# --- lexical checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative_path", "why"),
    [
        ("", "empty path"),
        ("../x", "'..' component"),
        ("a/../../x", "'..' component"),
        ("a/..", "'..' component"),
        ("..", "'..' component"),
        ("/abs/x.mkv", "absolute path"),
        ("//x.mkv", "absolute path"),
        ("a//b.mkv", "empty component"),
        ("a/", "empty component"),
        ("./a.mkv", "'.' component"),
        ("a/./b.mkv", "'.' component"),
        (".", "'.' component"),
        ("a\x00b.mkv", "NUL character in path"),
        ("n" * 4096, "path longer than 4095 bytes"),
        ("n" * 256, "name longer than 255 bytes"),
        ("é" * 128, "name longer than 255 bytes"),  # 256 bytes in UTF-8
        ("/".join(["d" * 200] * 21), "path longer than 4095 bytes"),
        ("\ud800.mkv", "path cannot be encoded for the file system"),
    ],
)
def test_unsafe_relative_paths_are_rejected(relative_path: str, why: str) -> None:
    with pytest.raises(safefs.UnsafePath) as raised:
        safefs.split_relative_path(relative_path)
    assert str(raised.value) == why


@pytest.mark.parametrize(
    ("relative_path", "components"),
    [
        ("film.mkv", ["film.mkv"]),
        ("Inception (2010)/Inception.mkv", ["Inception (2010)", "Inception.mkv"]),
        ("...", ["..."]),
        ("..a/b..", ["..a", "b.."]),
        (".hidden/x.mkv", [".hidden", "x.mkv"]),
        ("n" * 255, ["n" * 255]),
        ("Amélie/Amélie.mkv", ["Amélie", "Amélie.mkv"]),
    ],
)
def test_plain_relative_paths_are_split(relative_path: str, components: list[str]) -> None:
    assert safefs.split_relative_path(relative_path) == components


# --- walking directories ------------------------------------------------------------------


def test_openat2_refuses_symlinks_mounts_and_escapes(volume: pathlib.Path) -> None:
    if not safefs.USE_OPENAT2:
        pytest.skip("openat2 is unavailable here (kernel older than 5.6 or blocked by seccomp)")
    (volume / "real").mkdir()
    (volume / "link").symlink_to(volume / "real")
    root_fd = os.open(volume, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(safefs._openat2_directory(root_fd, "real"))
        with pytest.raises(OSError) as raised:
            safefs._openat2_directory(root_fd, "link")
        assert raised.value.errno == errno.ELOOP
        with pytest.raises(OSError) as raised:
            safefs._openat2_directory(root_fd, "..")
        assert raised.value.errno == errno.EXDEV  # RESOLVE_BENEATH
    finally:
        os.close(root_fd)


def test_walk_refuses_a_symlinked_directory(
    walk_mode: str, volume: pathlib.Path, outside: pathlib.Path
) -> None:
    (volume / "evil").symlink_to(outside)
    root = open_root(volume)
    try:
        with pytest.raises(OSError) as raised:
            safefs.ParentDirectories(root, ["evil"])
        assert raised.value.errno == errno.ELOOP
        with pytest.raises(OSError) as raised:
            safefs.ParentDirectories(root, ["evil", "new"], create=True)
        assert raised.value.errno == errno.ELOOP
    finally:
        root.close()
    assert sorted(os.listdir(outside)) == ["canary.mkv"]


def test_walk_refuses_a_file_in_place_of_a_directory(walk_mode: str, volume: pathlib.Path) -> None:
    (volume / "plain.mkv").write_bytes(b"x")
    root = open_root(volume)
    try:
        with pytest.raises(NotADirectoryError):
            safefs.ParentDirectories(root, ["plain.mkv", "below"], create=True)
    finally:
        root.close()


def test_walk_creates_missing_directories(walk_mode: str, volume: pathlib.Path) -> None:
    (volume / "a").mkdir()
    root = open_root(volume)
    try:
        parents = safefs.ParentDirectories(root, ["a", "b", "c"], create=True)
        assert len(parents.fds) == 4
        os.mkdir("d", dir_fd=parents.fd)
        parents.close()
    finally:
        root.close()
    assert (volume / "a" / "b" / "c" / "d").is_dir()


def test_walk_refuses_a_tmpfs_mount_inside_the_volume(walk_mode: str, volume: pathlib.Path) -> None:
    with mounted(volume / "mnt"):
        (volume / "mnt" / "film.mkv").write_bytes(b"film")
        root = open_root(volume)
        try:
            with pytest.raises(OSError) as raised:
                safefs.ParentDirectories(root, ["mnt"])
            assert raised.value.errno == errno.EXDEV
        finally:
            root.close()
        assert (volume / "mnt" / "film.mkv").exists()


def test_walk_refuses_a_bind_mount_of_the_same_filesystem(
    walk_mode: str, volume: pathlib.Path, outside: pathlib.Path
) -> None:
    """Same st_dev on both sides: only openat2 or the mount id can tell."""
    with mounted(volume / "bind", bind_source=outside):
        assert os.stat(volume / "bind").st_dev == os.stat(volume).st_dev
        root = open_root(volume)
        try:
            if root.mount is None and walk_mode == "component_walk":
                pytest.skip("no /proc/self/fdinfo: the fallback walk cannot see same-device mounts")
            with pytest.raises(OSError) as raised:
                safefs.ParentDirectories(root, ["bind"])
            assert raised.value.errno == errno.EXDEV
        finally:
            root.close()
    assert (outside / "canary.mkv").read_bytes() == b"canary"


# --- volume roots -------------------------------------------------------------------------


def test_missing_root_is_unavailable(tmp_path: pathlib.Path) -> None:
    with pytest.raises(safefs.Refused) as raised:
        safefs.VolumeRoot(str(tmp_path / "absent"), None)
    assert raised.value.reason == "volume_unavailable"


def test_root_on_another_device_than_recorded_is_unavailable(volume: pathlib.Path) -> None:
    other_device = os.stat("/proc").st_dev
    assert other_device != os.stat(volume).st_dev
    with pytest.raises(safefs.Refused) as raised:
        safefs.VolumeRoot(str(volume), other_device)
    assert raised.value.reason == "volume_unavailable"
    assert "not mounted?" in raised.value.detail


def test_root_moved_away_is_no_longer_present(volume: pathlib.Path) -> None:
    root = open_root(volume)
    try:
        assert root.still_present()
        volume.rename(volume.with_name("moved"))
        volume.mkdir()  # an empty directory now stands where the root was
        assert not root.still_present()
    finally:
        root.close()


# --- the operations -----------------------------------------------------------------------


def test_only_regular_files_on_the_volume_device_pass(
    volume: pathlib.Path, outside: pathlib.Path
) -> None:
    (volume / "film.mkv").write_bytes(b"film")
    (volume / "link.mkv").symlink_to(outside / "canary.mkv")
    (volume / "dir.mkv").mkdir()
    os.mkfifo(volume / "fifo.mkv")
    root = open_root(volume)
    try:
        assert safefs.lstat_regular_file(root.fd, "film.mkv", root.device).st_size == 4
        for name, detail in [
            ("link.mkv", "symbolic link"),
            ("dir.mkv", "directory or special file"),
            ("fifo.mkv", "directory or special file"),
        ]:
            with pytest.raises(safefs.Refused) as raised:
                safefs.lstat_regular_file(root.fd, name, root.device)
            assert (raised.value.reason, raised.value.detail) == ("not_a_regular_file", detail)
        with pytest.raises(safefs.Refused) as raised:
            safefs.lstat_regular_file(root.fd, "film.mkv", root.device + 1)
        assert raised.value.reason == "cross_device"
    finally:
        root.close()


def test_remove_empty_directory_only_removes_empty_unprotected_directories(
    volume: pathlib.Path, outside: pathlib.Path
) -> None:
    (volume / "empty").mkdir()
    (volume / "full").mkdir()
    (volume / "full" / "x.nfo").write_bytes(b"x")
    (volume / "nested_root").mkdir()
    (volume / "to_outside").symlink_to(outside)
    nested = os.stat(volume / "nested_root")
    root = open_root(volume)
    try:
        protected = {(nested.st_dev, nested.st_ino)}
        remove = safefs.remove_empty_directory
        assert remove(root.fd, "empty", root.device, protected) is True
        assert remove(root.fd, "full", root.device, protected) is False
        assert remove(root.fd, "nested_root", root.device, protected) is False
        assert remove(root.fd, "to_outside", root.device, protected) is False
        assert remove(root.fd, "absent", root.device, protected) is False
    finally:
        root.close()
    assert sorted(os.listdir(volume)) == ["full", "nested_root", "to_outside"]
    assert (outside / "canary.mkv").exists()


def replace_target(volume: pathlib.Path, before_rename: Callable[[], None] | None = None) -> None:
    """`safefs.link_replace` of the volume's source.mkv over its target.mkv."""
    root = open_root(volume)
    try:
        safefs.link_replace(
            root.fd,
            "source.mkv",
            root.fd,
            "target.mkv",
            source=identity(volume / "source.mkv"),
            before_rename=before_rename,
        )
    finally:
        root.close()


def test_link_replace_swaps_the_target_atomically(volume: pathlib.Path) -> None:
    (volume / "source.mkv").write_bytes(b"new")
    (volume / "target.mkv").write_bytes(b"old")
    replace_target(volume)
    assert os.stat(volume / "target.mkv").st_ino == os.stat(volume / "source.mkv").st_ino
    assert sorted(os.listdir(volume)) == ["source.mkv", "target.mkv"]


def test_link_replace_failure_keeps_the_old_target(volume: pathlib.Path) -> None:
    (volume / "source.mkv").write_bytes(b"new")
    (volume / "target.mkv").write_bytes(b"old")
    with immutable(volume / "target.mkv"), pytest.raises(PermissionError):
        replace_target(volume)
    assert (volume / "target.mkv").read_bytes() == b"old"
    assert sorted(os.listdir(volume)) == ["source.mkv", "target.mkv"]  # no temporary left


def test_link_replace_last_check_can_cancel_and_keeps_the_old_target(
    volume: pathlib.Path,
) -> None:
    (volume / "source.mkv").write_bytes(b"new")
    (volume / "target.mkv").write_bytes(b"old")
    seen_while_checking: list[str] = []

    def last_check() -> None:
        # The temporary link exists while the check runs; the target is still the old file.
        seen_while_checking.extend(sorted(os.listdir(volume)))
        assert (volume / "target.mkv").read_bytes() == b"old"
        raise RuntimeError("content changed")

    with pytest.raises(RuntimeError, match="content changed"):
        replace_target(volume, before_rename=last_check)
    assert len(seen_while_checking) == 3
    assert seen_while_checking[0].startswith(".scanarr-link-")
    assert (volume / "target.mkv").read_bytes() == b"old"
    assert sorted(os.listdir(volume)) == ["source.mkv", "target.mkv"]  # temporary removed
    assert os.stat(volume / "source.mkv").st_nlink == 1


def test_link_new_never_overwrites(volume: pathlib.Path) -> None:
    (volume / "source.mkv").write_bytes(b"new")
    (volume / "target.mkv").write_bytes(b"old")
    root = open_root(volume)
    try:
        with pytest.raises(FileExistsError):
            safefs.link_new(root.fd, "source.mkv", root.fd, "target.mkv")
    finally:
        root.close()
    assert (volume / "target.mkv").read_bytes() == b"old"


def test_link_replace_refuses_a_source_swapped_before_the_link(volume: pathlib.Path) -> None:
    (volume / "source.mkv").write_bytes(b"checked")
    checked = identity(volume / "source.mkv")
    (volume / "other.mkv").write_bytes(b"other")
    os.rename(volume / "other.mkv", volume / "source.mkv")  # after the caller's check
    (volume / "target.mkv").write_bytes(b"old")
    root = open_root(volume)
    try:
        with pytest.raises(safefs.Refused) as refused:
            safefs.link_replace(root.fd, "source.mkv", root.fd, "target.mkv", source=checked)
    finally:
        root.close()
    assert refused.value.reason == "source_changed"
    assert (volume / "target.mkv").read_bytes() == b"old"
    assert sorted(os.listdir(volume)) == ["source.mkv", "target.mkv"]
    assert os.stat(volume / "source.mkv").st_nlink == 1


def test_link_replace_onto_a_link_of_the_source_leaves_no_temporary_name(
    volume: pathlib.Path,
) -> None:
    """rename(2) between two names of one inode does nothing and reports success."""
    (volume / "source.mkv").write_bytes(b"new")
    (volume / "target.mkv").write_bytes(b"old")

    def link_target_meanwhile() -> None:
        (volume / "target.mkv").unlink()
        os.link(volume / "source.mkv", volume / "target.mkv")

    replace_target(volume, before_rename=link_target_meanwhile)
    assert sorted(os.listdir(volume)) == ["source.mkv", "target.mkv"]
    assert os.stat(volume / "source.mkv").st_nlink == 2


@pytest.mark.parametrize("use_renameat2", [True, False])
def test_link_create_never_overwrites_and_leaves_no_temporary_name(
    volume: pathlib.Path, monkeypatch: pytest.MonkeyPatch, use_renameat2: bool
) -> None:
    if use_renameat2 and not safefs.USE_RENAMEAT2:
        pytest.skip("no renameat2 in this C library")
    monkeypatch.setattr(safefs, "USE_RENAMEAT2", use_renameat2)
    (volume / "source.mkv").write_bytes(b"new")
    (volume / "taken.mkv").write_bytes(b"old")
    source = identity(volume / "source.mkv")
    root = open_root(volume)
    try:
        safefs.link_create(root.fd, "source.mkv", root.fd, "new.mkv", source=source)
        with pytest.raises(FileExistsError):
            safefs.link_create(root.fd, "source.mkv", root.fd, "taken.mkv", source=source)
    finally:
        root.close()
    assert sorted(os.listdir(volume)) == ["new.mkv", "source.mkv", "taken.mkv"]
    assert identity(volume / "new.mkv") == source and (volume / "taken.mkv").read_bytes() == b"old"


def test_remove_temporary_links_removes_only_the_exact_pattern_with_another_link(
    volume: pathlib.Path, outside: pathlib.Path
) -> None:
    (volume / "film.mkv").write_bytes(b"film")
    left = ".scanarr-link-0123456789abcdef.tmp"
    os.link(volume / "film.mkv", volume / left)
    lookalikes = [".scanarr-link-0123456789ABCDEF.tmp", ".scanarr-link-01234.tmp", "x" + left]
    for name in lookalikes:
        os.link(volume / "film.mkv", volume / name)
    only_name = ".scanarr-link-fedcba9876543210.tmp"
    (volume / only_name).write_bytes(b"the only name of a file")
    symlink = ".scanarr-link-00000000000000ff.tmp"
    (volume / symlink).symlink_to(outside / "canary.mkv")
    root = open_root(volume)
    try:
        assert safefs.remove_temporary_links(root.fd, root.device) == [left]
    finally:
        root.close()
    assert sorted(os.listdir(volume)) == sorted(["film.mkv", only_name, symlink, *lookalikes])
    assert (outside / "canary.mkv").read_bytes() == b"canary"


def test_remove_created_removes_only_the_directories_the_walk_made_while_empty(
    walk_mode: str, volume: pathlib.Path
) -> None:
    (volume / "a").mkdir()
    root = open_root(volume)
    try:
        walk = safefs.ParentDirectories(root, ["a", "b", "c", "d"], create=True)
        (volume / "a" / "b" / "in-use.nfo").write_bytes(b"")  # someone else writes there now
        walk.remove_created()
        walk.close()
        swapped = safefs.ParentDirectories(root, ["e", "f"], create=True)
        (volume / "e" / "f").rmdir()
        (volume / "e" / "f").mkdir()  # another process's directory under the same name
        swapped.remove_created()
        swapped.close()
    finally:
        root.close()
    assert sorted(os.listdir(volume / "a" / "b")) == ["in-use.nfo"]  # c and d went
    assert os.listdir(volume / "e") == ["f"]
