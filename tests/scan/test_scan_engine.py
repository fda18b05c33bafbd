"""The native scan engine against `os.lstat` ground truth, on a tree built to trip it up."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import xxhash

from helpers.messages import FILE_MEMBERS
from privileges import run_unprivileged, world_traversable_tmp
from scanarr import _native
from scanarr.scan import Scan, ScanRecord, rfc3339_from_ns, scan

GIB = 1024**3

# Relative paths the scan must report; everything else in the tree must stay out.
EXPECTED_MEDIA = {
    "Movies/Inception (2010)/Inception.2010.1080p.mkv",
    "Movies/Amélie (2001)/Amélie.mkv",
    "Movies/日本/映画.MP4",
    "Movies/Upper/FILM.MKV",
    "Movies/Mixed/Film.Avi",
    "torrents/Inception.2010.1080p.mkv",  # a hardlink of the first one
    "big/huge.mkv",  # a sparse file over 4 GiB
    "series/show.ts",
    "series/episode.m4v",
    "series/old.wmv",
    "deep/" + "/".join(["d"] * 120) + "/bottom.mkv",
}


def build_tree(root: Path, outside: Path) -> None:
    """A media tree with every hazard the scan must handle (except unreadable directories)."""

    def write(relative: str, content: bytes = b"x") -> Path:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    inception = write("Movies/Inception (2010)/Inception.2010.1080p.mkv", b"inception" * 100)
    for companion in (
        "Inception.nfo",
        "poster.jpg",
        "fanart.png",
        "Inception.srt",
        "a.sub",
        "a.idx",
    ):
        write(f"Movies/Inception (2010)/{companion}")
    write("Movies/Amélie (2001)/Amélie.mkv", b"amelie")
    write("Movies/日本/映画.MP4", b"eiga")
    write("Movies/Upper/FILM.MKV")
    write("Movies/Mixed/Film.Avi")
    (root / "torrents").mkdir()
    os.link(inception, root / "torrents/Inception.2010.1080p.mkv")
    big = root / "big"
    big.mkdir()
    with open(big / "huge.mkv", "wb") as handle:
        handle.truncate(5 * GIB)
    write("series/show.ts")
    write("series/episode.m4v")
    write("series/old.wmv")
    deep = root / "deep" / Path(*["d"] * 120)
    deep.mkdir(parents=True)
    (deep / "bottom.mkv").write_bytes(b"deep")

    # Names that are not media, or are filtered out.
    for name in (
        "README",
        "mkv",
        "notes.txt",
        "film.mkv.part",
        "film.part",
        "x.!qB",
        "y.TMP",
        "z.download",
        ".hidden.mkv",
    ):
        write(f"misc/{name}")
    for directory in (
        "@eaDir",
        ".Trash-1000",
        "$RECYCLE.BIN",
        "System Volume Information",
        ".hidden",
    ):
        write(f"misc/{directory}/film.mkv")
    os.mkfifo(root / "misc/x.mkv")
    (root / "empty/inner").mkdir(parents=True)

    # Symlinks: to a file, to a directory outside, dangling, looping.
    outside.mkdir(exist_ok=True)
    (outside / "outside.mkv").write_bytes(b"outside")
    (root / "links").mkdir()
    os.symlink(inception, root / "links/link.mkv")
    os.symlink(outside, root / "links/outside-dir")
    os.symlink(root / "nowhere.mkv", root / "links/dangling.mkv")
    os.symlink("loop.mkv", root / "links/loop.mkv")
    os.symlink("..", root / "links/up")


def expected_directory_count(root: Path) -> int:
    skipped = {"@eaDir", ".Trash-1000", "$RECYCLE.BIN", "System Volume Information", ".hidden"}
    count = 0
    for _directory, dirnames, _files in os.walk(root):
        dirnames[:] = [name for name in dirnames if name not in skipped]
        count += 1
    return count


@pytest.fixture
def media_tree(tmp_path: Path) -> Path:
    root = tmp_path / "volume"
    root.mkdir()
    build_tree(root, tmp_path / "outside")
    return root


def assert_matches_lstat(record: ScanRecord, root: Path) -> None:
    assert isinstance(record.relative_path, str)
    info = os.lstat(root / record.relative_path)
    assert stat.S_ISREG(info.st_mode)
    assert (record.inode, record.device_id) == (info.st_ino, info.st_dev)
    assert record.hardlink_count == info.st_nlink
    assert record.size_bytes == info.st_size
    assert record.mtime_ns == info.st_mtime_ns
    assert record.filename == Path(record.relative_path).name
    assert record.volume_path == str(root)


def test_reports_exactly_the_media_files_with_lstat_fields(media_tree: Path) -> None:
    with Scan([str(media_tree)]) as running:
        records = list(running.records())
        stats = running.stats()
        errors = running.errors
    assert errors == []
    assert {record.relative_path for record in records} == EXPECTED_MEDIA
    assert len(records) == len(EXPECTED_MEDIA)  # nothing reported twice
    for record in records:
        assert_matches_lstat(record, media_tree)

    by_path = {record.relative_path: record for record in records}
    original = by_path["Movies/Inception (2010)/Inception.2010.1080p.mkv"]
    link = by_path["torrents/Inception.2010.1080p.mkv"]
    assert original.inode == link.inode and original.hardlink_count == 2
    assert by_path["big/huge.mkv"].size_bytes == 5 * GIB

    assert stats.files == len(EXPECTED_MEDIA)
    assert stats.dirs == expected_directory_count(media_tree)
    assert stats.distinct_inodes == len(EXPECTED_MEDIA) - 1
    assert stats.multi_link_files == 2
    unique_sizes = {(r.device_id, r.inode): r.size_bytes for r in records}
    assert stats.bytes_total == sum(unique_sizes.values())
    assert stats.errors == 0


def test_extension_choice_and_all_files(media_tree: Path) -> None:
    only_ts = {record.relative_path for record in scan([str(media_tree)], extensions=["TS"])}
    assert only_ts == {"series/show.ts"}

    everything = {record.relative_path for record in scan([str(media_tree)], all_files=True)}
    assert everything >= EXPECTED_MEDIA
    assert {"misc/README", "misc/mkv", "misc/notes.txt", "misc/film.part"} <= everything
    # Hidden names, system folders, FIFOs and symlinks stay out even then.
    assert not any(
        "@eaDir" in path or "/." in path or path.startswith(".") or path.startswith("links/")
        for path in map(str, everything)
    )
    assert "misc/x.mkv" not in everything


def test_non_utf8_name_travels_as_bytes(tmp_path: Path) -> None:
    raw_name = b"caf\xe9.mkv"
    (tmp_path / "ok.mkv").write_bytes(b"1")
    with open(os.path.join(os.fsencode(tmp_path), raw_name), "wb") as handle:
        handle.write(b"2")
    records = {record.relative_path: record for record in scan([str(tmp_path)])}
    assert set(records) == {"ok.mkv", raw_name}
    assert records[raw_name].filename == raw_name
    assert records[raw_name].inode == os.lstat(os.path.join(os.fsencode(tmp_path), raw_name)).st_ino

    with Scan([str(tmp_path)]) as running:
        batch_texts: list[str] = []
        skipped_names: list[str | bytes] = []
        for batch in running.batches():
            texts, skipped = batch.json_records(['{"volume_path":"v",'], "}")
            batch_texts += texts
            skipped_names += [batch.files[index].relative_path for index in skipped]
    assert [json.loads(text)["relative_path"] for text in batch_texts] == ["ok.mkv"]
    assert skipped_names == [raw_name]


def test_json_records_equal_lstat(media_tree: Path) -> None:
    heads = ['{"type":"scan.file","data":{"scan_id":"s1","volume_id":"v1",']
    decoded = []
    with Scan([str(media_tree)]) as running:
        for batch in running.batches():
            texts, skipped = batch.json_records(heads, "}}")
            assert skipped == []
            decoded += [json.loads(text) for text in texts]
    assert len(decoded) == len(EXPECTED_MEDIA)
    for message in decoded:
        data = message["data"]
        assert list(data) == ["scan_id", "volume_id", *FILE_MEMBERS]
        info = os.lstat(media_tree / data["relative_path"])
        assert data["inode"] == info.st_ino
        assert data["device_id"] == info.st_dev
        assert data["size_bytes"] == info.st_size
        assert data["hardlink_count"] == info.st_nlink
        assert data["mod_time"] == rfc3339_from_ns(info.st_mtime_ns)
        assert data["mod_time"].endswith("Z")


def test_json_escapes_awkward_names(tmp_path: Path) -> None:
    names = [
        'quote".mkv',
        "back\\slash.mkv",
        "tab\there.mkv",
        "new\nline.mkv",
        "ctl\x01.mkv",
        "emoji 🎬.mkv",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    texts: list[str] = []
    with Scan([str(tmp_path)]) as running:
        for batch in running.batches():
            texts += batch.json_records(["{"], "}")[0]
    assert sorted(json.loads(text)["filename"] for text in texts) == sorted(names)


def test_mod_time_precision_and_old_dates(tmp_path: Path) -> None:
    cases = {
        "whole.mkv": 1_700_000_000_000_000_000,
        "fraction.mkv": 1_700_000_000_123_456_789,
        "millis.mkv": 1_700_000_000_500_000_000,
        "before-epoch.mkv": -86_400_000_000_000 - 1,
    }
    for name, mtime_ns in cases.items():
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, ns=(mtime_ns, mtime_ns))
    texts: list[str] = []
    with Scan([str(tmp_path)]) as running:
        for batch in running.batches():
            texts += batch.json_records(["{"], "}")[0]
    got = {json.loads(text)["filename"]: json.loads(text)["mod_time"] for text in texts}
    assert got["whole.mkv"] == "2023-11-14T22:13:20Z"
    assert got["fraction.mkv"] == "2023-11-14T22:13:20.123456789Z"
    assert got["millis.mkv"] == "2023-11-14T22:13:20.5Z"
    assert got["before-epoch.mkv"] == "1969-12-30T23:59:59.999999999Z"
    for name, text in got.items():
        assert text == rfc3339_from_ns(cases[name])


def test_missing_and_non_directory_roots_are_errors_and_other_roots_still_scanned(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.mkv").write_bytes(b"a")
    not_a_dir = tmp_path / "file.mkv"
    not_a_dir.write_bytes(b"f")
    missing = tmp_path / "missing"
    with Scan([str(missing), str(good), str(not_a_dir)]) as running:
        records = list(running.records())
        errors = running.errors
    assert [(record.volume_path, record.relative_path) for record in records] == [
        (str(good), "a.mkv")
    ]
    by_root = {error.root_index: error for error in errors}
    assert set(by_root) == {0, 2}
    assert by_root[0].kind == "root" and by_root[0].errno == errno.ENOENT
    assert by_root[0].path == str(missing)
    assert by_root[2].kind == "root" and by_root[2].errno == errno.ENOTDIR


def test_unreadable_directory_is_reported_and_the_rest_still_found() -> None:
    with world_traversable_tmp() as base:
        root = base / "volume"
        (root / "open").mkdir(parents=True)
        (root / "open/visible.mkv").write_bytes(b"v")
        (root / "locked/inner").mkdir(parents=True)
        (root / "locked/secret.mkv").write_bytes(b"s")
        (root / "locked").chmod(0o000)

        def walk() -> tuple[list[str | bytes], list[tuple[str, str | bytes, int]]]:
            with Scan([str(root)]) as running:
                found = [record.relative_path for record in running.records()]
                return found, [(e.kind, e.path, e.errno) for e in running.errors]

        found, errors = run_unprivileged(walk)
    assert found == ["open/visible.mkv"]
    assert errors == [("read_dir", str(root / "locked"), errno.EACCES)]


def test_nested_roots_are_skipped_when_excluded(tmp_path: Path) -> None:
    (tmp_path / "movies/nested").mkdir(parents=True)
    (tmp_path / "movies/top.mkv").write_bytes(b"t")
    (tmp_path / "movies/nested/inner.mkv").write_bytes(b"i")
    with Scan([str(tmp_path / "movies")], exclude=[str(tmp_path / "movies/nested")]) as running:
        found = [record.relative_path for record in running.records()]
        dirs = running.stats().dirs
    assert found == ["top.mkv"]
    assert dirs == 1
    both = sorted(str(r.relative_path) for r in scan([str(tmp_path / "movies")]))
    assert both == ["nested/inner.mkv", "top.mkv"]


def test_multiple_roots_are_told_apart(tmp_path: Path) -> None:
    for volume in ("a", "b"):
        (tmp_path / volume).mkdir()
        (tmp_path / volume / f"{volume}.mkv").write_bytes(b"x")
    found = {
        (r.volume_path, r.relative_path) for r in scan([str(tmp_path / "a"), str(tmp_path / "b")])
    }
    assert found == {(str(tmp_path / "a"), "a.mkv"), (str(tmp_path / "b"), "b.mkv")}


def test_batches_are_bounded_and_complete(tmp_path: Path) -> None:
    for index in range(500):
        directory = tmp_path / f"d{index % 20}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{index}.mkv").write_bytes(b"")
    sizes: list[int] = []
    seen: set[str | bytes] = set()
    with Scan([str(tmp_path)], batch_size=7, max_pending_batches=2) as running:
        for batch in running.batches():
            sizes.append(len(batch))
            seen.update(file.relative_path for file in batch.files)
    assert max(sizes) <= 7
    assert len(seen) == sum(sizes) == 500


def test_cancel_stops_the_walk_early(tmp_path: Path) -> None:
    for index in range(300):
        directory = tmp_path / f"d{index}"
        directory.mkdir()
        for file_index in range(100):
            (directory / f"f{file_index}.mkv").write_bytes(b"")
    walker = _native.Walker([str(tmp_path)], batch_size=16, max_pending_batches=1, threads=2)
    first = walker.next_batch(5.0)
    assert first is not None
    walker.cancel()
    deadline = time.monotonic() + 10  # a hang guard, not a timing check
    while walker.next_batch(0.1) is not None:
        assert time.monotonic() < deadline
    assert walker.cancelled
    assert walker.stats().files < 30_000


def test_file_vanishing_mid_walk_is_not_a_failure(tmp_path: Path) -> None:
    names = [tmp_path / f"d{index % 50}" / f"f{index}.mkv" for index in range(4_000)]
    for path in names:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    stop = threading.Event()

    def delete_all() -> None:
        for path in names:
            if stop.is_set():
                return
            path.unlink()

    deleter = threading.Thread(target=delete_all)
    with Scan([str(tmp_path)], batch_size=64, max_pending_batches=1) as running:
        deleter.start()
        reported = sum(1 for _ in running.records())
        errors = running.errors
    stop.set()
    deleter.join()
    assert all(error.kind == "stat" and error.errno == errno.ENOENT for error in errors)
    assert reported + len(errors) <= len(names)


def test_fingerprints_equal_the_xxhash_package(tmp_path: Path) -> None:
    sample = 4096
    contents = {
        "empty.mkv": b"",
        "small.mkv": os.urandom(1000),
        "exactly-two-samples.mkv": os.urandom(2 * sample),
        "large.mkv": os.urandom(5 * sample + 17),
    }
    for name, content in contents.items():
        (tmp_path / name).write_bytes(content)
    paths = [str(tmp_path / name) for name in contents]

    def sampled(content: bytes) -> str:
        size = len(content).to_bytes(8, "little")
        body = content if len(content) <= 2 * sample else content[:sample] + content[-sample:]
        return "xxh3-128:" + xxhash.xxh3_128_hexdigest(size + body)

    full = _native.fingerprint_files(paths, "full", sample_size=sample)
    assert full == [("xxh3-128:" + xxhash.xxh3_128_hexdigest(c), None) for c in contents.values()]
    sampled_results = _native.fingerprint_files(paths, "sampled", sample_size=sample)
    assert sampled_results == [(sampled(c), None) for c in contents.values()]

    walked = {
        record.relative_path: record.fingerprint
        for record in scan([str(tmp_path)], fingerprint="sampled", sample_size=sample)
    }
    assert walked == {name: sampled(content) for name, content in contents.items()}


def test_fingerprint_errors_are_reported_per_file(tmp_path: Path) -> None:
    (tmp_path / "ok.mkv").write_bytes(b"ok")
    results = _native.fingerprint_files(
        [str(tmp_path / "ok.mkv"), str(tmp_path / "gone.mkv"), str(tmp_path)], "full"
    )
    assert results[0][0] is not None and results[0][1] is None
    assert results[1][0] is None and results[1][1]
    assert results[2][0] is None and results[2][1]
