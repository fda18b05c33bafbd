"""The live watcher's name filters agree with the native walker's; mount table reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scanarr import _native
from scanarr.live.filters import MediaFilter
from scanarr.live.mounts import filesystem_of, is_network_filesystem, mount_of, parse_mountinfo

pytestmark = pytest.mark.usefixtures("live_backend")  # each test under both backends

FILE_NAMES = [
    "a.mkv",
    "A.MKV",
    "b.Mp4",
    "x.y.mkv",
    "a.mkv.bak",
    "mkv",
    "a.",
    "noextension",
    ".hidden.mkv",
    ".mkv",
    "a.mkv.part",
    "a.PART",
    "c.mkv.!qB",
    "d.!QB",
    "e.download",
    "f.mkv.TMP",
    "poster.JPG",
    "movie.nfo",
    "movie.en.srt",
    "x.idx",
    "x.sub",
    "Amélie.mkv",
    "物語.mp4",
    "film.ÉP",
    "film.ép",
    "film.iso",
    "episode.ts",
]
DIRECTORY_NAMES = [
    "@eaDir",
    "@eadir",
    "eaDir",
    ".Trash-1000",
    ".Trash",
    "Trash-1000",
    "$RECYCLE.BIN",
    "$Recycle.Bin",
    "System Volume Information",
    "system volume information",
    ".git",
    "Normal",
    "Crème",
]


@pytest.mark.parametrize(
    "extensions", [["mkv", "mp4", "avi", "m4v", "ts", "wmv"], ["ÉP", ".ISO", "jpg", "mkv"]]
)
def test_same_decisions_as_the_native_walker(tmp_path: Path, extensions: list[str]) -> None:
    root = tmp_path / "volume"
    for directory in ["", *DIRECTORY_NAMES]:
        (root / directory).mkdir(parents=True, exist_ok=True)
        for name in FILE_NAMES:
            (root / directory / name).write_bytes(b"")
    walker = _native.Walker([str(root)], extensions=extensions)
    native: set[str] = set()
    while (batch := walker.next_batch(1.0)) is not None:
        native.update(str(record.relative_path) for record in batch.files)
    media_filter = MediaFilter(extensions)
    live = {
        f"{directory}/{name}" if directory else name
        for directory in ["", *DIRECTORY_NAMES]
        if not directory or media_filter.accepts_dir(directory)
        for name in FILE_NAMES
        if media_filter.accepts_file(name)
    }
    assert live == native
    assert "a.mkv" in live and "@eaDir/a.mkv" not in live


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:45 / /mnt/nas rw,relatime shared:5 - nfs4 nas:/volume1 rw,vers=4.2
31 30 0:46 / /mnt/nas/media rw,relatime shared:6 - cifs //nas/media rw
40 22 0:50 / /mnt/pool\\040with\\040spaces rw shared:7 - fuse.mergerfs a:b rw
41 22 8:17 / /mnt/usb rw shared:8 - fuseblk /dev/sdb1 rw
this line is not a mount
"""


def test_mount_table_lines_are_parsed_with_their_escapes() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [(m.mount_point, m.filesystem_type) for m in mounts] == [
        ("/", "ext4"),
        ("/mnt/nas", "nfs4"),
        ("/mnt/nas/media", "cifs"),
        ("/mnt/pool with spaces", "fuse.mergerfs"),
        ("/mnt/usb", "fuseblk"),
    ]
    assert mounts[1].source == "nas:/volume1" and mounts[1].device == os.makedev(0, 45)


def test_the_longest_mount_point_holding_a_path_is_its_mount() -> None:
    mounts = parse_mountinfo(MOUNTINFO)

    def filesystem(path: str, device: int | None = None) -> str | None:
        mount = mount_of(path, mounts, device)
        return mount.filesystem_type if mount else None

    assert filesystem("/mnt/nas/media/Movies") == "cifs"
    assert filesystem("/mnt/nas/mediathek") == "nfs4"
    assert filesystem("/mnt/nas") == "nfs4"
    assert filesystem("/home/user") == "ext4"
    assert filesystem("/mnt/pool with spaces/tv") == "fuse.mergerfs"
    # A device that matches picks the right mount even when paths alone would not.
    assert filesystem("/mnt/nas/media/x", os.makedev(0, 45)) == "nfs4"


@pytest.mark.parametrize(
    ("filesystem", "network"),
    [
        ("nfs", True),
        ("nfs4", True),
        ("cifs", True),
        ("smb3", True),
        ("fuse.sshfs", True),
        ("fuse.mergerfs", True),
        ("fuse", True),
        ("fuseblk", False),
        ("ext4", False),
        ("btrfs", False),
        ("zfs", False),
        ("tmpfs", False),
    ],
)
def test_network_and_fuse_filesystems(filesystem: str, network: bool) -> None:
    assert is_network_filesystem(filesystem) is network


def test_the_mount_of_a_real_directory_is_found(tmp_path: Path) -> None:
    mount = filesystem_of(str(tmp_path))
    assert mount is not None
    assert mount.device == os.stat(tmp_path).st_dev
    assert str(tmp_path).startswith(mount.mount_point)
