"""The live watcher's name filters agree with the native walker's; mount table reading."""

from __future__ import annotations

import os
import random
from pathlib import Path

import inotify_simple
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


# --- one filter: the native filter, the scan walker and the live watcher over generated names ---

_PREFIXES = [b"", b"", b"", b".", b"..", b"@", b"$", b" "]
_STEMS = ["a", "Film.2020.1080p", "Amélie", "物語", "İstanbul", "ß", "ǅ", "Σ", "\u212a", "x y"]
_STEMS += ["", "e\u0301", "\u00a0", "ﬁ"]
_EXTENSIONS = ["mkv", "MKV", "Mkv", "mp4", "ts", "TS", "wmv", "m4v", "ép", "ÉP", "ＭＫＶ", "mk"]
_EXTENSIONS += ["iso", "mkv ", "part", "PART", "tmp", "download", "!qB", "!QB", "nfo", "JPG"]
_EXTENSIONS += ["png", "srt", "sub", "IDX", "", "σ", "ς"]
# A letter whose lower case is newer than some Unicode databases (U+A7CB, Unicode 16): one
# engine, one Unicode version, for scans and events alike.
_EXTENSIONS += ["\ua7cb", "\u0264"]
_NOT_UTF8 = [b"\xff", b"\xe9", b"\xc3", b"\xed\xa0\x80", b"\x80mkv"]


def _generated_names(rng: random.Random, count: int) -> list[bytes]:
    """Distinct, valid file names: prefixes, Unicode stems, several dots, extensions in any case,
    temporary and metadata suffixes, and bytes that are not UTF-8 in the stem or the extension."""
    names: set[bytes] = set()
    while len(names) < count:
        name = rng.choice(_PREFIXES) + rng.choice(_STEMS).encode()
        if rng.random() < 0.15:
            name += rng.choice(_NOT_UTF8)
        for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):
            name += b"." + rng.choice(_EXTENSIONS).encode()
            if rng.random() < 0.05:
                name += rng.choice(_NOT_UTF8)
        if name and name not in (b".", b"..") and len(name) < 200:
            names.add(name)
    return sorted(names)


def _walked(root: Path, extensions: list[str]) -> set[bytes]:
    walker = _native.Walker([str(root)], extensions=extensions)
    walked: set[bytes] = set()
    while (batch := walker.next_batch(1.0)) is not None:
        walked.update(os.fsencode(record.relative_path) for record in batch.files)
    return walked


def _live_listed(root: Path, extensions: list[str]) -> set[bytes]:
    """What the live watcher's native lister (a volume's first listing) finds below `root`."""
    with inotify_simple.INotify() as inotify:
        listing = _native.LiveLister().list(
            str(root),
            inotify_fd=inotify.fd,
            mask=inotify_simple.flags.CREATE,
            device=os.stat(root).st_dev,
            extensions=sorted(MediaFilter(extensions).extensions),
        )
    assert listing is not None and not listing.gone
    dirs = listing.dirs(0, listing.dir_count)
    paths = [b""] * len(dirs)
    for index, (parent, name, _wd, _errno) in enumerate(dirs):
        if parent >= 0:
            paths[index] = paths[parent] + name.encode() + b"/"
    return {
        paths[directory] + name.encode()
        for directory, name, *_ in listing.files(0, listing.file_count)
    }


@pytest.mark.parametrize(
    "extensions",
    [
        list(_native.DEFAULT_EXTENSIONS),
        ["ÉP", ".ISO", "jpg", "mkv", "part", "ＭＫＶ", "Σ", "\ua7cb"],
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_native_filter_walker_and_live_watcher_agree_on_generated_names(
    tmp_path: Path, extensions: list[str], seed: int
) -> None:
    rng = random.Random(seed)
    file_names = _generated_names(rng, 400)
    directory_names = [*_generated_names(rng, 80), b"@eaDir", b".Trash-0", b"$Recycle.Bin"]
    directory_names = [name for name in directory_names if name not in file_names]
    root = tmp_path / "volume"
    root.mkdir()
    root_bytes = os.fsencode(root)
    for name in file_names:
        open(os.path.join(root_bytes, name), "wb").close()
    for name in directory_names:
        os.mkdir(os.path.join(root_bytes, name))
        open(os.path.join(root_bytes, name, b"a.mkv"), "wb").close()
    native = _native.NameFilter(extensions)
    live = MediaFilter(extensions)

    by_native = {name for name in file_names if native.accepts_file(name)}
    by_native |= {name + b"/a.mkv" for name in directory_names if native.accepts_dir(name)}
    # The watcher sees names as os.fsdecode gives them (surrogate escapes for non-UTF-8 bytes).
    by_live = {name for name in file_names if live.accepts_file(os.fsdecode(name))}
    by_live |= {name + b"/a.mkv" for name in directory_names if live.accepts_dir(os.fsdecode(name))}
    walked = _walked(root, extensions)
    assert by_live == by_native == walked
    # The lister keeps only UTF-8 names (the watcher's events drop the others too).
    assert _live_listed(root, extensions) == {path for path in walked if _is_utf8(path)}

    # Every kind of name was really met: kept and skipped, in and out of UTF-8.
    assert any(not _is_utf8(path) for path in walked)
    assert any(not _is_utf8(name) for name in file_names if name not in walked)
    assert any(name.endswith((b".part", b".PART")) for name in file_names)
    assert any(b"/" in path for path in walked)
    assert any(name + b"/a.mkv" not in walked for name in directory_names)


def _is_utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_a_name_that_was_not_utf8_is_judged_on_its_bytes() -> None:
    live = MediaFilter(["mkv", "ép"])
    assert live.accepts_file(os.fsdecode(b"\xff\xfe.mkv"))
    assert not live.accepts_file(os.fsdecode(b"film.\xe9p"))  # "ép" in Latin-1 is not "ép"
    assert not live.accepts_file(os.fsdecode(b".\xff.mkv"))
    assert live.accepts_file(os.fsdecode("film.ÉP".encode()))
    assert not live.accepts_dir(os.fsdecode(b".\xff"))
    assert live.accepts_dir(os.fsdecode(b"\xff"))


def test_name_filter_options_and_extensions() -> None:
    assert _native.NameFilter().extensions == _native.DEFAULT_EXTENSIONS
    assert _native.NameFilter(None).extensions is None
    assert _native.NameFilter(None).accepts_file("README")
    assert _native.NameFilter([".MKV", "mkv", "ÉP"]).extensions == ("mkv", "ép")
    assert MediaFilter([".MKV", "ÉP"]).extensions == frozenset({"mkv", "ép"})
    assert not MediaFilter([]).accepts_file("a.mkv")
    assert _native.NameFilter(skip_hidden=False).accepts_file(".a.mkv")
    assert _native.NameFilter(["nfo"], skip_metadata=False).accepts_file("a.nfo")
    assert _native.NameFilter(skip_temp=False, extensions=["part"]).accepts_file("a.mkv.part")
    assert _native.NameFilter(skip_system_dirs=False).accepts_dir("@eaDir")
    with pytest.raises(TypeError):
        _native.NameFilter().accepts_file(1)
    with pytest.raises(TypeError):
        _native.NameFilter("mkv")
