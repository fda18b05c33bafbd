"""`scanarr dupes`: identical files that are separate inodes, and `--relink` replacing them with
hardlinks safely."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash

from helpers.cli import cli_json, run_cli
from scanarr.dupes import DuplicateReport, find_duplicates, relink
from scanarr.links import collect

SAMPLE = 4096  # small sample so that test files are "large" for the sampled stage
SIZE = 64 * 1024


def dupes_json(*args: str) -> dict[str, Any]:
    return cli_json("dupes", "--json", *args)


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def find(*roots: Path, sample_size: int = SAMPLE) -> DuplicateReport:
    table, errors = collect([str(root) for root in roots])
    assert errors == []
    return find_duplicates(table, sample_size=sample_size)


def group_names(report: DuplicateReport) -> list[list[str]]:
    return [
        sorted(
            os.fsdecode(report.path(root, relative)).rsplit("/", 1)[1]
            for copy in group.copies
            for root, relative in copy.paths
        )
        for group in report.groups
    ]


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file under `root`: (inode, link count, mtime, content hash)."""
    state = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            status = os.lstat(path)
            with open(path, "rb") as file:
                digest = xxhash.xxh3_128_hexdigest(file.read())
            state[path] = (status.st_ino, status.st_nlink, status.st_mtime_ns, digest)
    return state


def test_equal_sizes_told_apart_at_head_tail_and_middle(tmp_path: Path) -> None:
    base = os.urandom(SIZE)
    write(tmp_path / "a/Original.mkv", base)
    write(tmp_path / "b/Copy.mkv", base)
    write(tmp_path / "c/Head.mkv", b"\x00" + base[1:] if base[0] else b"\x01" + base[1:])
    tail = bytes([base[-1] ^ 0xFF])
    write(tmp_path / "d/Tail.mkv", base[:-1] + tail)
    middle = bytes([base[SIZE // 2] ^ 0xFF])
    write(tmp_path / "e/Middle.mkv", base[: SIZE // 2] + middle + base[SIZE // 2 + 1 :])
    report = find(tmp_path)
    assert group_names(report) == [["Copy.mkv", "Original.mkv"]]
    group = report.groups[0]
    assert group.fingerprint == "xxh3-128:" + xxhash.xxh3_128_hexdigest(base)
    assert (group.size_bytes, group.duplicate_bytes, group.reclaimable_bytes) == (SIZE, SIZE, SIZE)
    assert group.same_device
    assert report.size_candidates == 5
    assert report.sampled_inodes == 5
    # Head and tail differences end at the sample; only the full hash separates the middle.
    assert report.full_inodes == 3


def test_unique_sizes_and_hardlinks_are_never_read(tmp_path: Path) -> None:
    one = write(tmp_path / "One.mkv", os.urandom(5000))
    os.link(one, tmp_path / "One.hardlink.mkv")
    write(tmp_path / "Two.mkv", os.urandom(6000))
    write(tmp_path / "Empty1.mkv", b"")
    write(tmp_path / "Empty2.mkv", b"")
    report = find(tmp_path)
    assert report.groups == ()
    assert report.files == 5
    assert (report.size_candidates, report.sampled_inodes, report.full_inodes) == (0, 0, 0)


def test_small_files_skip_the_sampled_stage(tmp_path: Path) -> None:
    content = os.urandom(2 * SAMPLE)  # read whole by a sampled fingerprint anyway
    write(tmp_path / "x/A.mkv", content)
    write(tmp_path / "y/B.mkv", content)
    write(tmp_path / "z/C.mkv", os.urandom(2 * SAMPLE))
    report = find(tmp_path)
    assert group_names(report) == [["A.mkv", "B.mkv"]]
    assert (report.sampled_inodes, report.full_inodes) == (0, 3)


def library(base: Path) -> dict[str, Path]:
    """A film in media/ with a hardlink in torrents/, a second copy (a "copy instead of
    hardlink" by Radarr) and a third copy hardlinked outside the scanned roots."""
    content = os.urandom(3 * SIZE)
    film = write(base / "media/Film (2020)/Film.2020.mkv", content)
    (base / "torrents").mkdir()
    os.link(film, base / "torrents/Film.2020.mkv")
    copy = write(base / "media/Film (2020)/Film.2020.copy.mkv", content)
    held = write(base / "links/Film.2020.mkv", content)
    (base / "outside").mkdir()
    os.link(held, base / "outside/Film.2020.mkv")
    other = os.urandom(SIZE)
    write(base / "media/Other.mkv", other)
    write(base / "torrents/Other.mkv", other)
    return {"film": film, "copy": copy, "held": held}


def test_report_shows_reclaimable_bytes_and_keeps_the_most_linked(tmp_path: Path) -> None:
    files = library(tmp_path)
    roots = [str(tmp_path / name) for name in ("media", "torrents", "links")]
    document = dupes_json("--sample-size", str(SAMPLE), *roots)
    film, other = document["groups"]
    assert film["size_bytes"] == 3 * SIZE
    assert film["same_device"] is True
    assert film["duplicate_bytes"] == 2 * 3 * SIZE
    # The copy with a link outside the roots keeps its bytes after a relink.
    assert film["reclaimable_bytes"] == 3 * SIZE
    kept = [copy for copy in film["copies"] if copy["kept"]]
    assert [copy["inode"] for copy in kept] == [files["film"].stat().st_ino]
    assert kept[0]["paths"] == [
        {"root": roots[0], "relative_path": "Film (2020)/Film.2020.mkv"},
        {"root": roots[1], "relative_path": "Film.2020.mkv"},
    ]
    held = [copy for copy in film["copies"] if copy["links_outside"]]
    assert [copy["inode"] for copy in held] == [files["held"].stat().st_ino]
    assert other["reclaimable_bytes"] == SIZE
    assert document["totals"]["reclaimable_bytes"] == 4 * SIZE
    assert document["relink"] is None

    text = run_cli("dupes", "--sample-size", str(SAMPLE), *roots)
    assert text.returncode == 0, text.stderr
    assert f"group 1: 3 copies of 192.0 KiB ({3 * SIZE} bytes), same device" in text.stdout
    assert f"reclaimable by --relink: 256.0 KiB ({4 * SIZE} bytes" in text.stdout


def test_relink_dry_run_changes_nothing(tmp_path: Path) -> None:
    library(tmp_path)
    before = snapshot(tmp_path)
    roots = [str(tmp_path / name) for name in ("media", "torrents", "links")]
    result = run_cli("dupes", "--relink", *roots)
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == before
    assert f"would relink: {roots[0]}/Film (2020)/Film.2020.copy.mkv" in result.stdout
    assert (
        f"dry run: would relink 3 names, freeing 256.0 KiB ({4 * SIZE} bytes); skipped 0, "
        "failed 0. Nothing was changed: add --yes to relink." in result.stdout
    )


def test_relink_yes_leaves_one_inode_with_the_right_link_count(tmp_path: Path) -> None:
    files = library(tmp_path)
    content = files["film"].read_bytes()
    roots = [str(tmp_path / name) for name in ("media", "torrents", "links")]
    document = dupes_json("--relink", "--yes", *roots)
    relinked = document["relink"]
    assert relinked["acted"] is True
    assert [o["status"] for o in relinked["outcomes"]] == ["relinked"] * 3
    assert relinked["freed_bytes"] == 4 * SIZE  # the held copy stays alive outside the roots
    film_names = [
        tmp_path / "media/Film (2020)/Film.2020.mkv",
        tmp_path / "torrents/Film.2020.mkv",
        tmp_path / "media/Film (2020)/Film.2020.copy.mkv",
        tmp_path / "links/Film.2020.mkv",
    ]
    inodes = {path.stat().st_ino for path in film_names}
    assert inodes == {files["film"].stat().st_ino}
    assert files["film"].stat().st_nlink == 4
    assert all(path.read_bytes() == content for path in film_names)
    # The copy held outside the roots is untouched, content and all.
    outside = tmp_path / "outside/Film.2020.mkv"
    assert outside.stat().st_nlink == 1
    assert outside.read_bytes() == content
    other = {(tmp_path / p).stat().st_ino for p in ("media/Other.mkv", "torrents/Other.mkv")}
    assert len(other) == 1
    assert (tmp_path / "media/Other.mkv").stat().st_nlink == 2
    # No temporary name is left behind, and nothing is found twice.
    assert not [n for _, _, names in os.walk(tmp_path) for n in names if n.startswith(".scanarr")]
    again = dupes_json(*roots)
    assert again["groups"] == []


@pytest.fixture
def other_device_dir() -> Iterator[Path]:
    """A directory on another device than pytest's tmp dirs (/dev/shm, a tmpfs)."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    path = Path(tempfile.mkdtemp(prefix="scanarr-test-", dir="/dev/shm"))
    try:
        if path.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
            pytest.skip("/dev/shm is on the same device as the temporary directory")
        yield path
    finally:
        shutil.rmtree(path)


def test_relink_never_crosses_devices(tmp_path: Path, other_device_dir: Path) -> None:
    content = os.urandom(2 * SIZE)
    disk_a = write(tmp_path / "disk/A.mkv", content)
    disk_b = write(tmp_path / "disk/B.mkv", content)
    memory_a = write(other_device_dir / "A.mkv", content)
    memory_b = write(other_device_dir / "B.mkv", content)
    lonely = os.urandom(SIZE)
    write(tmp_path / "disk/Lonely.mkv", lonely)
    memory_lonely = write(other_device_dir / "Lonely.mkv", lonely)
    roots = [str(tmp_path / "disk"), str(other_device_dir)]
    document = dupes_json(*roots)
    pair, lonely_group = document["groups"]
    assert pair["same_device"] is False
    assert pair["reclaimable_bytes"] == 2 * 2 * SIZE  # one copy per device
    assert pair["duplicate_bytes"] == 3 * 2 * SIZE
    assert lonely_group["same_device"] is False
    assert lonely_group["reclaimable_bytes"] == 0

    lonely_inode = memory_lonely.stat().st_ino
    document = dupes_json("--relink", "--yes", *roots)
    assert len(document["relink"]["outcomes"]) == 2
    assert disk_a.stat().st_ino == disk_b.stat().st_ino
    assert memory_a.stat().st_ino == memory_b.stat().st_ino
    assert disk_a.stat().st_dev != memory_a.stat().st_dev
    assert disk_a.stat().st_nlink == memory_a.stat().st_nlink == 2
    assert memory_lonely.stat().st_ino == lonely_inode
    assert memory_lonely.stat().st_nlink == 1


def test_a_file_modified_between_scan_and_relink_is_skipped(tmp_path: Path) -> None:
    content = os.urandom(3 * SIZE)
    keep = write(tmp_path / "a/Keep.mkv", content)
    same_mtime = write(tmp_path / "b/SameMtime.mkv", content)
    new_mtime = write(tmp_path / "c/NewMtime.mkv", content)
    replaced = write(tmp_path / "d/Replaced.mkv", content)
    untouched = write(tmp_path / "e/Untouched.mkv", content)
    report = find(tmp_path)
    assert len(report.groups) == 1 and len(report.groups[0].copies) == 5
    kept_path = report.path(*report.groups[0].copies[0].paths[0])
    assert kept_path == os.fsencode(keep)

    changed = bytearray(content)
    changed[SIZE + 7] ^= 0xFF  # in the middle: only a full hash notices
    status = same_mtime.stat()
    same_mtime.write_bytes(bytes(changed))
    os.utime(same_mtime, ns=(status.st_atime_ns, status.st_mtime_ns))  # hide the change
    new_mtime.write_bytes(bytes(changed))
    os.utime(new_mtime, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    # Same content, another inode (made before the old one goes, so its number is not reused).
    write(tmp_path / "d/Replacement.tmp", content).rename(replaced)

    dry = relink(report, act=False)
    summary = relink(report, act=True)
    for outcomes in (dry.outcomes, summary.outcomes):
        by_name = {os.fsdecode(o.path).rsplit("/", 1)[1]: o for o in outcomes}
        assert {name: o.status for name, o in by_name.items() if o.status == "skipped"}.keys() == {
            "NewMtime.mkv",
            "Replaced.mkv",
        } | ({"SameMtime.mkv"} if outcomes is summary.outcomes else set())
    by_name = {os.fsdecode(o.path).rsplit("/", 1)[1]: o for o in summary.outcomes}
    assert by_name["SameMtime.mkv"].reason == "file content changed since the scan"
    assert by_name["NewMtime.mkv"].reason == "file changed since the scan (size or mtime)"
    assert by_name["Replaced.mkv"].reason is not None
    assert "replaced since the scan" in by_name["Replaced.mkv"].reason
    assert by_name["Untouched.mkv"].status == "relinked"
    assert summary.freed_bytes == 3 * SIZE
    # Skipped files keep their own inode and their (changed) content.
    assert same_mtime.read_bytes() == bytes(changed)
    assert same_mtime.stat().st_ino != keep.stat().st_ino
    assert new_mtime.stat().st_ino != keep.stat().st_ino
    assert replaced.stat().st_ino != keep.stat().st_ino
    assert untouched.stat().st_ino == keep.stat().st_ino
    assert keep.stat().st_nlink == 2


def test_a_directory_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    content = os.urandom(3 * SIZE)
    write(tmp_path / "lib/a/Keep.mkv", content)
    write(tmp_path / "lib/b/Copy.mkv", content)
    victim = write(tmp_path / "elsewhere/Copy.mkv", content)
    victim_inode = victim.stat().st_ino
    report = find(tmp_path / "lib")
    assert len(report.groups) == 1
    shutil.rmtree(tmp_path / "lib/b")
    (tmp_path / "lib/b").symlink_to(tmp_path / "elsewhere")
    summary = relink(report, act=True)
    assert [o.status for o in summary.outcomes] == ["skipped"]
    assert summary.outcomes[0].reason is not None
    assert "is a symbolic link (never followed)" in summary.outcomes[0].reason
    assert victim.stat().st_ino == victim_inode
    assert victim.stat().st_nlink == 1


def test_yes_without_relink_is_refused(tmp_path: Path) -> None:
    result = run_cli("dupes", "--yes", str(tmp_path))
    assert result.returncode == 2
    assert "--yes only applies to --relink" in result.stderr


def test_relink_between_two_bind_mounts_of_one_filesystem_is_skipped(tmp_path: Path) -> None:
    """torrents/ and media/ mounted separately (the Docker layout) share st_dev, yet the kernel
    refuses links between them: the copy is skipped with the reason, nothing is lost."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    probe_source, probe_target = tmp_path / "probe-source", tmp_path / "probe-target"
    probe_source.mkdir()
    probe_target.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "mount", "--bind", str(probe_source), str(probe_target)],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("needs bind mounts in a mount namespace (root with CAP_SYS_ADMIN)")
    content = os.urandom(3 * SIZE)
    data = tmp_path / "data"
    write(data / "media/Film.mkv", content)
    write(data / "torrents/Film.mkv", content)
    media, torrents = tmp_path / "media", tmp_path / "torrents"
    media.mkdir()
    torrents.mkdir()
    before = snapshot(data)
    script = (
        f"mount --bind {data / 'media'} {media} && mount --bind {data / 'torrents'} {torrents} "
        f"&& exec {sys.executable} -m scanarr dupes --json --relink --yes {media} {torrents}"
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["groups"][0]["same_device"] is True
    [outcome] = document["relink"]["outcomes"]
    assert outcome["status"] == "skipped"
    assert "another mount of this filesystem" in outcome["reason"]
    assert snapshot(data) == before
    assert not [n for _, _, names in os.walk(data) for n in names if n.startswith(".scanarr")]


def test_relink_onto_a_name_linked_meanwhile_leaves_no_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rename(2) between two names of one inode does nothing and reports success."""
    content = os.urandom(3 * SIZE)
    keep = write(tmp_path / "a/Keep.mkv", content)
    copy = write(tmp_path / "b/Copy.mkv", content)
    report = find(tmp_path)
    rename = os.rename

    def linked_by_another_process_first(
        source: str, target: str, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
    ) -> None:
        # After every check, just before the rename, someone else links the copy's name.
        if source.startswith(".scanarr-link-"):
            copy.unlink()
            os.link(keep, copy)
        rename(source, target, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "rename", linked_by_another_process_first)
    summary = relink(report, act=True)
    monkeypatch.undo()

    assert [outcome.status for outcome in summary.outcomes] == ["relinked"]
    assert os.listdir(tmp_path / "b") == ["Copy.mkv"]
    assert copy.stat().st_ino == keep.stat().st_ino and keep.stat().st_nlink == 2
