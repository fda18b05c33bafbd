"""`scanarr scan` as a user runs it: output, exit codes, messages."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import xxhash

from helpers.cli import run_cli
from helpers.messages import FILE_MEMBERS
from privileges import run_unprivileged, world_traversable_tmp
from scanarr.cli import build_parser, main
from scanarr.scan import rfc3339_from_ns

JSONL_KEYS = ["volume_path", *FILE_MEMBERS]  # as README.md lists them


def summary(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def make_library(root: Path) -> None:
    (root / "media/Film (2020)").mkdir(parents=True)
    film = root / "media/Film (2020)/Film.2020.mkv"
    film.write_bytes(b"a" * 3000)
    (root / "media/Film (2020)/Film.nfo").write_bytes(b"nfo")
    (root / "media/Other.MP4").write_bytes(b"b" * 500)
    (root / "torrents").mkdir()
    os.link(film, root / "torrents/Film.2020.mkv")
    (root / "media/@eaDir").mkdir()
    (root / "media/@eaDir/Film.2020.mkv").write_bytes(b"thumb")


def test_summary_counts_each_hardlinked_file_once(tmp_path: Path) -> None:
    make_library(tmp_path)
    result = run_cli("scan", str(tmp_path))
    assert result.returncode == 0, result.stderr
    fields = summary(result.stdout)
    assert fields["media files"] == "3"
    assert fields["directories"] == "4"  # root, media, Film (2020), torrents
    assert fields["total bytes"] == "3500"
    assert fields["distinct inodes"] == "2"
    assert fields["multi-link files"] == "2"
    assert fields["errors"] == "0"
    assert fields["rate"].endswith("files/s")


def test_jsonl_has_exactly_the_documented_keys_and_lstat_values(tmp_path: Path) -> None:
    make_library(tmp_path)
    result = run_cli("scan", "--jsonl", str(tmp_path))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    for record in records:
        assert list(record) == JSONL_KEYS
        assert record["volume_path"] == str(tmp_path)
        info = os.lstat(tmp_path / record["relative_path"])
        assert record["filename"] == os.path.basename(record["relative_path"])
        assert (record["inode"], record["device_id"]) == (info.st_ino, info.st_dev)
        assert (record["size_bytes"], record["hardlink_count"]) == (info.st_size, info.st_nlink)
        assert record["mod_time"] == rfc3339_from_ns(info.st_mtime_ns)


def test_jsonl_with_full_fingerprint(tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "a.mkv").write_bytes(content)
    result = run_cli("scan", "--jsonl", "--fingerprint", "full", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert list(record) == [*JSONL_KEYS, "fingerprint"]
    assert record["fingerprint"] == "xxh3-128:" + xxhash.xxh3_128_hexdigest(content)


def test_ext_and_all_files_options(tmp_path: Path) -> None:
    make_library(tmp_path)
    only_mp4 = run_cli("scan", "--jsonl", "--ext", "mp4", str(tmp_path))
    assert [json.loads(line)["filename"] for line in only_mp4.stdout.splitlines()] == ["Other.MP4"]
    everything = run_cli("scan", "--jsonl", "--all-files", str(tmp_path))
    names = sorted(json.loads(line)["filename"] for line in everything.stdout.splitlines())
    assert names == ["Film.2020.mkv", "Film.2020.mkv", "Film.nfo", "Other.MP4"]


def test_non_utf8_name_goes_to_stderr_not_json(tmp_path: Path) -> None:
    (tmp_path / "good.mkv").write_bytes(b"g")
    raw = os.path.join(os.fsencode(tmp_path), b"bad\xff.mkv")
    with open(raw, "wb") as handle:
        handle.write(b"b")
    result = run_cli("scan", "--jsonl", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["filename"] for line in result.stdout.splitlines()] == ["good.mkv"]
    assert "non-UTF-8" in result.stderr and "bad\\xff.mkv" in result.stderr


def test_missing_root_still_reports_the_rest_and_exits_1(tmp_path: Path) -> None:
    make_library(tmp_path)
    missing = tmp_path / "not-mounted"
    result = run_cli("scan", "--jsonl", str(missing), str(tmp_path / "media"))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 2
    assert str(missing) in result.stderr
    assert "No such file or directory" in result.stderr


def test_unreadable_subtree_is_named_and_exits_1() -> None:
    with world_traversable_tmp() as base:
        (base / "open").mkdir()
        (base / "open/seen.mkv").write_bytes(b"s")
        (base / "locked").mkdir()
        (base / "locked/hidden-from-user.mkv").write_bytes(b"h")
        (base / "locked").chmod(0o000)

        build_parser()  # import every sub-command now: the child cannot read root's stdlib

        def scan_as_user() -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["scan", str(base)])
            return code, out.getvalue(), err.getvalue()

        code, stdout, stderr = run_unprivileged(scan_as_user)
    assert code == 1
    assert summary(stdout)["media files"] == "1"
    assert f"cannot read directory {base / 'locked'}" in stderr
    assert "Permission denied" in stderr


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    for args in (
        ["scan"],
        ["scan", "--threads", "0", str(tmp_path)],
        ["scan", "--fingerprint", "md5", str(tmp_path)],
        ["scan", "--ext", ",", "x"],
    ):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert "usage:" in result.stderr


def test_version_names_package_and_engine() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("scanarr ")
    assert "native engine" in result.stdout


def test_scan_does_not_load_the_watcher_stack(tmp_path: Path) -> None:
    """`scanarr scan` starts fast: the watcher's trio/WebSocket modules are not imported."""
    code = (
        "import sys; from scanarr.cli import main; code = main(['scan', sys.argv[1]]); "
        "print(sorted(m for m in ('trio', 'trio_websocket', 'wsproto', 'prometheus_client') "
        "if m in sys.modules)); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_help_lists_every_command_and_each_command_has_its_options() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("scan", "links", "dupes", "watch", "dev-api", "doctor"):
        assert f"    {command} " in result.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.startswith(f"usage: scanarr {command}")
