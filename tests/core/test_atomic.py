"""`scanarr.atomic.atomic_write` and the files written with it, on a really full filesystem.

A 64 KiB tmpfs is filled to the last page: every write then fails with ENOSPC, as on a NAS whose
system partition filled up. The old file must stay whole and no temporary file may stay behind.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsfixtures import mounted
from helpers.commands import delete_one
from helpers.events import created
from privileges import is_root
from scanarr.atomic import atomic_write
from scanarr.file_commands import FileCommands
from scanarr.offline_queue import OfflineQueue
from scanarr.protocol import CommandFilesDelete
from scanarr.state import WatcherState, load_state, save_state

pytestmark = pytest.mark.skipif(not is_root(), reason="mounting a tmpfs needs root")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "tiny"
    with mounted(target, size="64k"):
        yield target


def _fill(directory: Path) -> None:
    """Write a filler file until the filesystem refuses one more byte."""
    with open(directory / "filler", "wb", buffering=0) as filler:
        while True:
            try:
                filler.write(b"x" * 4096)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
        while True:  # the last partial page
            try:
                filler.write(b"x")
            except OSError:
                return


def test_atomic_write_replaces_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "file.json"
    atomic_write(path, b"first")
    inode = path.stat().st_ino
    atomic_write(path, b"second" * 1000, 0o640)
    assert path.read_bytes() == b"second" * 1000
    assert path.stat().st_ino != inode  # renamed over, never rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(path.parent)) == ["file.json"]


def test_atomic_write_on_enospc_keeps_the_old_file_and_no_temporary(tiny_fs: Path) -> None:
    path = tiny_fs / "state.json"
    atomic_write(path, b"old content")
    with pytest.raises(OSError) as raised:
        atomic_write(path, os.urandom(256 * 1024))  # four times the filesystem
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old content"
    assert sorted(os.listdir(tiny_fs)) == ["state.json"]


def test_state_save_on_enospc_keeps_the_old_state(tiny_fs: Path) -> None:
    path = tiny_fs / "watcher-state.json"
    save_state(str(path), WatcherState(volume_devices={"v1": 1}))
    _fill(tiny_fs)
    with pytest.raises(OSError):
        save_state(str(path), WatcherState(volume_devices={"v1": 2, "v2": 3}))
    assert load_state(str(path)) == WatcherState(volume_devices={"v1": 1})
    assert sorted(os.listdir(tiny_fs)) == ["filler", "watcher-state.json"]


def _unknown_volume_delete(request_id: str) -> CommandFilesDelete:
    return delete_one(request_id, "/nowhere", "a.mkv")


def test_command_results_on_enospc_keep_the_old_file_and_no_temporary(
    tiny_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = tiny_fs / "watcher-state.command-results.json"
    commands = FileCommands(results)
    commands.delete(_unknown_volume_delete("r1"), [], {}, False, lambda _progress: None)
    before = results.read_bytes()
    _fill(tiny_fs)
    reply = commands.delete(_unknown_volume_delete("r2"), [], {}, False, lambda _progress: None)
    assert reply.failed == 1  # the command is still answered
    assert "cannot save command results" in caplog.text
    assert results.read_bytes() == before
    assert sorted(os.listdir(tiny_fs)) == ["filler", results.name]
    # After a restart the saved reply is still replayed.
    (tiny_fs / "filler").unlink()
    replayed = FileCommands(results).delete(
        _unknown_volume_delete("r1"), [], {}, False, lambda _progress: None
    )
    assert replayed.failed == 1 and "unknown_volume" in (replayed.results[0].error or "")


def test_offline_queue_rescan_record_on_enospc_leaves_no_temporary(tiny_fs: Path) -> None:
    queue = OfflineQueue(tiny_fs / "watcher-state.queue.jsonl", max_events=1)
    event = created("v1", "a.mkv")
    assert queue.put(event)
    _fill(tiny_fs)
    with pytest.raises(OSError):
        queue.put(event)  # overflow: the rescan record cannot be written
    queue.close()
    assert sorted(os.listdir(tiny_fs)) == ["filler", "watcher-state.queue.jsonl"]


def test_v15_reply_store_on_enospc_keeps_the_old_file_and_no_temporary(tiny_fs: Path) -> None:
    from scanarr.agent.dialect import ReplyStore

    path = tiny_fs / "watcher-state.v15-replies.json"
    store = ReplyStore(path)
    store.outbox.append('{"type":"first"}')
    store.save()
    before = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _fill(tiny_fs)
    store.outbox.append("x" * (256 * 1024))  # more than the filesystem holds
    with pytest.raises(OSError):
        store.save()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tiny_fs)) == ["filler", path.name]
