"""Scans through the real agent (§4, §5): records, totals, failures, sequencing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from helpers.agent import one_volume, scan_completed
from helpers.ground_truth import lstat_ground_truth
from scanarr.dev_api import DevApiServer, ReceivedMessage
from scanarr.protocol import (
    CommandScan,
    CommandScanAll,
    WatcherConfig,
    WatchPath,
    decode,
)
from scanarr.state import WatcherState, load_state, save_state


def _mod_time(mtime_ns: int) -> str:
    import datetime

    seconds, fraction = divmod(mtime_ns, 1_000_000_000)
    text = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def _scan_of(server: DevApiServer, scan_id: str, volume_id: str) -> list[ReceivedMessage]:
    """The messages of the last run of one scan: from its last scan.started on."""
    messages = [
        message
        for message in server.messages
        if message.data.get("scan_id") == scan_id and message.data.get("volume_id") == volume_id
    ]
    starts = [i for i, message in enumerate(messages) if message.type == "scan.started"]
    return messages[starts[-1] :] if starts else messages


def _library(make_volume: Any) -> Path:
    root = make_volume(
        "library",
        {
            "Films/Amélie (2001)/Amélie.2001.mkv": 1500,
            "Films/Amélie (2001)/Amélie.2001.nfo": 10,
            "Films/Amélie (2001)/poster.jpg": 10,
            "Films/Heat (1995)/Heat.1995.MP4": 2000,
            "Films/Heat (1995)/Heat.1995.mkv.part": 5,
            "Films/Heat (1995)/.Heat.mkv": 5,
            "Films/Heat (1995)/Heat.srt": 5,
            "Séries/Show/S01/E01.m4v": 300,
            "Séries/Show/S01/E02.ts": 301,
            "Séries/Show/S01/E03.wmv": 302,
            "Séries/Show/S01/E04.avi": 303,
            "Séries/Show/S01/notes.txt": 5,
            "@eaDir/thumb.mkv": 5,
            ".Trash-1000/old.mkv": 5,
            ".hidden/secret.mkv": 5,
            "empty dir/.keep": 0,
            'quote"and\\backslash.mkv': 7,
        },
    )
    os.link(root / "Films/Heat (1995)/Heat.1995.MP4", root / "Heat-link.mp4")
    os.symlink(root / "Films/Amélie (2001)/Amélie.2001.mkv", root / "symlink.mkv")
    os.symlink(root / "Films", root / "symlinked-dir")
    # A name that is not UTF-8: skipped (cannot be sent as JSON text), counted, logged.
    os.close(os.open(os.path.join(os.fsencode(root), b"bad-\xff-name.mkv"), os.O_CREAT, 0o644))
    return root


async def test_scan_records_equal_lstat(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    root = _library(make_volume)
    dev_api.config = one_volume("lib", root)
    await start_watcher()
    completed = await scan_completed(dev_api, "lib", "s-1")
    messages = _scan_of(dev_api, "s-1", "lib")
    assert messages[0].type == "scan.started"
    assert messages[0].data == {"scan_id": "s-1", "volume_id": "lib", "volume_path": str(root)}
    files = [message for message in messages if message.type == "scan.file"]
    # Every frame is a valid protocol message.
    for message in files:
        decode(message.raw)
        assert message.timestamp is not None and message.timestamp.endswith("Z")
    expected = lstat_ground_truth(root)
    assert sorted(expected) == sorted(
        [
            "Films/Amélie (2001)/Amélie.2001.mkv",
            "Films/Heat (1995)/Heat.1995.MP4",
            "Séries/Show/S01/E01.m4v",
            "Séries/Show/S01/E02.ts",
            "Séries/Show/S01/E03.wmv",
            "Séries/Show/S01/E04.avi",
            'quote"and\\backslash.mkv',
            "Heat-link.mp4",
        ]
    )
    reported = {message.data["relative_path"]: message.data for message in files}
    assert len(files) == len(reported)
    assert set(reported) == set(expected)
    for relative_path, truth in expected.items():
        data = reported[relative_path]
        assert data["scan_id"] == "s-1"
        assert data["volume_id"] == "lib"
        assert data["volume_path"] == str(root)
        assert data["filename"] == truth["filename"]
        assert data["inode"] == truth["inode"]
        assert data["device_id"] == truth["device_id"]
        assert data["size_bytes"] == truth["size_bytes"]
        assert data["hardlink_count"] == truth["hardlink_count"]
        assert data["mod_time"] == _mod_time(truth["mtime_ns"])
    unique_inodes = {(truth["device_id"], truth["inode"]): truth for truth in expected.values()}
    disk = os.statvfs(root)
    assert completed.data["total_files"] == len(expected)
    assert completed.data["total_size_bytes"] == sum(
        truth["size_bytes"] for truth in unique_inodes.values()
    )
    walked_dirs = {
        "",
        "Films",
        "Films/Amélie (2001)",
        "Films/Heat (1995)",
        "Séries",
        "Séries/Show",
        "Séries/Show/S01",
        "empty dir",
    }
    assert completed.data["total_dirs"] == len(walked_dirs)
    assert completed.data["disk_total_bytes"] == disk.f_blocks * disk.f_frsize
    assert 0 < completed.data["disk_free_bytes"] <= completed.data["disk_total_bytes"]
    assert completed.data["duration_ms"] >= 0
    assert messages[-1].type == "scan.completed"


async def test_progress_every_hundred_files(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    root = make_volume("many", {f"d{n % 7}/film-{n}.mkv": 1 for n in range(250)})
    dev_api.config = one_volume("many", root)
    await start_watcher()
    await scan_completed(dev_api, "many", "p")
    messages = _scan_of(dev_api, "p", "many")
    files_before: list[int] = []
    seen = 0
    for message in messages:
        if message.type == "scan.file":
            seen += 1
        elif message.type == "scan.progress":
            assert message.data["files_scanned"] == seen
            assert message.data["dirs_scanned"] >= 1
            files_before.append(seen)
    assert files_before[:2] == [100, 200]
    assert seen == 250


async def test_unknown_volume(dev_api: DevApiServer, start_watcher: Any) -> None:
    await start_watcher()
    await dev_api.send(CommandScan(volume_id="nope", scan_id="u"))
    with trio.fail_after(10):
        failed = await dev_api.wait_for_type("scan.failed", scan_id="u")
    assert failed.data == {"scan_id": "u", "volume_id": "nope", "reason": "unknown_volume"}


async def _expect_failure(
    dev_api: DevApiServer, volume_id: str, scan_id: str, words: str
) -> ReceivedMessage:
    await dev_api.send(CommandScan(volume_id=volume_id, scan_id=scan_id))
    with trio.fail_after(10):
        failed = await dev_api.wait_for_type("scan.failed", scan_id=scan_id)
        status = await dev_api.wait_for(
            lambda message: (
                message.type == "watcher.status"
                and any(
                    volume["id"] == volume_id and volume["status"] == "unavailable"
                    for volume in message.data["volumes"]
                )
            )
        )
    assert words in failed.data["reason"]
    assert not dev_api.of_type("scan.completed", scan_id=scan_id)
    assert not dev_api.of_type("scan.file", scan_id=scan_id)
    assert status[-1].data["status"] == "degraded"
    return failed


async def test_missing_root_fails(
    dev_api: DevApiServer, start_watcher: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "not-mounted"
    dev_api.config = one_volume("gone", missing)
    await start_watcher()
    # The config's own scan of the new volume fails first; then the command's.
    await _expect_failure(dev_api, "gone", "m-1", "does not exist")


async def test_root_that_is_a_file_fails(
    dev_api: DevApiServer, start_watcher: Any, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "file.mkv"
    not_a_directory.write_bytes(b"x")
    dev_api.config = one_volume("f", not_a_directory)
    await start_watcher()
    await _expect_failure(dev_api, "f", "f-1", "not a directory")


async def test_root_on_another_device_than_recorded_fails(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    """An unmounted mount point is an empty directory on the parent's device: never complete."""
    root = make_volume("mnt", {"film.mkv": 1})
    config = one_volume("mnt", root)
    recorded = os.stat(root).st_dev + 1
    save_state(str(state_file), WatcherState(last_config=config, volume_devices={"mnt": recorded}))
    dev_api.config = config
    await start_watcher()
    failed = await _expect_failure(dev_api, "mnt", "d-1", "not mounted?")
    assert str(recorded) in failed.data["reason"]
    # The recorded device is kept: the next scan fails too, until the disk is back.
    assert load_state(str(state_file)).volume_devices == {"mnt": recorded}


async def test_device_recorded_after_a_completed_scan(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    root = make_volume("disk", {"film.mkv": 1})
    dev_api.config = one_volume("disk", root)
    await start_watcher()
    await dev_api.send(CommandScan(volume_id="disk", scan_id="r-1"))
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", scan_id="r-1")
        # Recorded once the scan.completed went out.
        while not load_state(str(state_file)).volume_devices:
            await trio.sleep(0.01)
    state = load_state(str(state_file))
    assert state.volume_devices == {"disk": os.stat(root).st_dev}
    assert set(state.last_scan_timestamps) == {"disk"}


async def test_scan_all_runs_volumes_one_after_another(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    volumes = [make_volume(name, {f"{name}/{n}.mkv": 1 for n in range(150)}) for name in "abc"]
    dev_api.config = WatcherConfig(
        watch_paths=[WatchPath(id=path.name, path=str(path)) for path in volumes],
        scan_on_start=True,
    )
    await start_watcher()
    with trio.fail_after(10):
        for path in volumes:  # the scans at start, first
            await dev_api.wait_for(
                lambda message, name=path.name: (
                    message.type == "scan.completed" and message.data["volume_id"] == name
                )
            )
    first = len(dev_api.messages)
    await dev_api.send(CommandScanAll(scan_id="all-1"))
    with trio.fail_after(10):
        for path in volumes:
            await dev_api.wait_for_type("scan.completed", scan_id="all-1", volume_id=path.name)
    scan_messages = [
        message
        for message in dev_api.messages[first:]
        if message.type.startswith("scan.") and message.data.get("scan_id") == "all-1"
    ]
    order = [message.data["volume_id"] for message in scan_messages]
    # Each volume's messages form one contiguous run: a, then b, then c.
    runs = [volume for i, volume in enumerate(order) if i == 0 or order[i - 1] != volume]
    assert runs == ["a", "b", "c"]
    for name in "abc":
        kinds = [m.type for m in scan_messages if m.data["volume_id"] == name]
        assert kinds[0] == "scan.started" and kinds[-1] == "scan.completed"
        assert kinds.count("scan.file") == 150


async def test_nested_volume_is_skipped_by_its_parent(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    root = make_volume(
        "media", {"movie.mkv": 1, "torrents/t.mkv": 1, "torrents/sub/u.mkv": 1, "x/y.mkv": 1}
    )
    dev_api.config = WatcherConfig(
        watch_paths=[
            WatchPath(id="media", path=str(root)),
            WatchPath(id="torrents", path=str(root / "torrents")),
        ]
    )
    await start_watcher()
    await dev_api.send(CommandScanAll(scan_id="n"))
    with trio.fail_after(10):
        media = await dev_api.wait_for_type("scan.completed", scan_id="n", volume_id="media")
        await dev_api.wait_for_type("scan.completed", scan_id="n", volume_id="torrents")
    by_volume: dict[str, set[str]] = {"media": set(), "torrents": set()}
    for message in dev_api.of_type("scan.file", scan_id="n"):
        by_volume[message.data["volume_id"]].add(message.data["relative_path"])
    assert by_volume == {"media": {"movie.mkv", "x/y.mkv"}, "torrents": {"t.mkv", "sub/u.mkv"}}
    assert media.data["total_files"] == 2
    assert media.data["total_dirs"] == 2  # the root and x/, not the nested root


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.01)


def _seed_config(state_file: Path, config: WatcherConfig) -> None:
    """Start as a watcher that already knows the config (so its volumes are not new)."""
    save_state(str(state_file), WatcherState(last_config=config))


async def test_duplicate_and_coalesced_requests(
    tight_dev_api: DevApiServer, start_watcher: Any, big_tree: Path, state_file: Path
) -> None:
    server = tight_dev_api
    server.config = one_volume("big", big_tree)
    _seed_config(state_file, server.config)
    agent = await start_watcher(server=server)
    server.pause_reading()
    await server.send(CommandScan(volume_id="big", scan_id="c-1"))
    with trio.fail_after(10):
        await wait_until(
            lambda: agent.scans.running_job is not None and agent.scans.running_job.scan_id == "c-1"
        )
    for scan_id in ("c-1", "c-2", "c-3"):
        await server.send(CommandScan(volume_id="big", scan_id=scan_id))
    server.resume_reading()
    with trio.fail_after(30):
        await server.wait_for_type("scan.completed", scan_id="c-2")
    refused = server.of_type("scan.failed", scan_id="c-3")
    assert len(refused) == 1 and "coalesced" in refused[0].data["reason"]
    # c-1 ran once (its duplicate ignored); c-2 waited for it to end; c-3 was refused.
    assert len(server.of_type("scan.started", scan_id="c-1")) == 1
    assert len(server.of_type("scan.completed", scan_id="c-1")) == 1
    assert len(server.of_type("scan.started", scan_id="c-2")) == 1
    assert not server.of_type("scan.started", scan_id="c-3")
    first_end = server.messages.index(server.of_type("scan.completed", scan_id="c-1")[0])
    second_start = server.messages.index(server.of_type("scan.started", scan_id="c-2")[0])
    assert first_end < second_start


async def test_progress_also_on_a_timer(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: Path
) -> None:
    """Besides every 100 files, a scan.progress goes out whenever the period elapsed."""
    root = make_volume("few", {f"{n}.mkv": 1 for n in range(50)})
    dev_api.config = one_volume("few", root)
    _seed_config(state_file, dev_api.config)
    await start_watcher(progress_interval=1e-6)
    await dev_api.send(CommandScan(volume_id="few", scan_id="t"))
    with trio.fail_after(30):
        await dev_api.wait_for_type("scan.completed", scan_id="t")
    counts = [m.data["files_scanned"] for m in dev_api.of_type("scan.progress", scan_id="t")]
    # Fewer than 100 files: every progress came from the timer.
    assert counts and counts == sorted(counts) and counts[-1] == 50


async def test_totals_cover_exactly_the_files_sent_and_skipped_names_are_counted_apart(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any
) -> None:
    """§4: a name that is not UTF-8 cannot be sent; its file is in neither total, even its
    bytes, and is counted in skipped_files. A hard link of a sent file under such a name does
    not take the inode's bytes away either."""
    root = make_volume("v", {"A/sent.mkv": 1000, "B/linked.mkv": 300})
    raw = os.fsencode(root)
    with open(os.path.join(raw, b"A", b"skipped-\xff.mkv"), "wb") as file:
        file.write(b"x" * 5000)
    os.mkdir(os.path.join(raw, b"dir-\xfe"))
    with open(os.path.join(raw, b"dir-\xfe", b"below.mkv"), "wb") as file:
        file.write(b"y" * 7000)
    os.link(root / "B/linked.mkv", os.path.join(raw, b"B", b"link-\xff.mkv"))
    dev_api.config = one_volume("v", root)
    await start_watcher()
    completed = await scan_completed(dev_api, "v", "u-1")
    sent = [m.data for m in _scan_of(dev_api, "u-1", "v") if m.type == "scan.file"]
    assert sorted(data["relative_path"] for data in sent) == ["A/sent.mkv", "B/linked.mkv"]
    expected = lstat_ground_truth(root)
    assert set(expected) == {"A/sent.mkv", "B/linked.mkv"}
    assert completed.data["total_files"] == len(sent) == 2
    assert completed.data["total_size_bytes"] == sum(data["size_bytes"] for data in sent) == 1300
    assert completed.data["skipped_files"] == 3
    decode(completed.raw)
