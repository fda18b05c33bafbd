"""The on-disk queue of live events kept while disconnected (PROTOCOL.md §9), on real files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers.events import created, deleted, renamed
from scanarr.offline_queue import OfflineQueue, queue_path_for
from scanarr.protocol import decode


class RecordingSession:
    """The agent's session as far as replay sees it: frames sent, in order."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.frames: list[str] = []
        self.fail_after = fail_after

    async def send_texts(self, texts: Sequence[str]) -> None:
        if self.fail_after is not None and len(self.frames) + len(texts) > self.fail_after:
            raise ConnectionError("connection lost")
        self.frames.extend(texts)


def test_queue_lives_beside_the_state_file() -> None:
    assert queue_path_for("/var/lib/scanarr/watcher-state.json") == Path(
        "/var/lib/scanarr/watcher-state.queue.jsonl"
    )


def test_events_come_back_in_order_with_their_timestamps_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "watcher-state.queue.jsonl"
    queue = OfflineQueue(path, max_events=100)
    events = [
        created("v1", "A/a.mkv", 1),
        deleted("v2", "b.mkv"),
        renamed("A/a.mkv", created("v1", "B/a.mkv", inode=1, hardlink_count=2)),
    ]
    for number, event in enumerate(events):
        assert queue.append(event, f"2026-01-01T00:00:0{number}.000Z")
    assert queue.pending == 3
    queue.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    restarted = OfflineQueue(path, max_events=100)
    assert restarted.pending == 3
    assert restarted.events() == [
        (event, f"2026-01-01T00:00:0{number}.000Z") for number, event in enumerate(events)
    ]


def test_kill_9_loses_nothing_appended(tmp_path: Path) -> None:
    path = tmp_path / "queue.jsonl"
    script = (
        "import sys, time\n"
        "from scanarr.offline_queue import OfflineQueue\n"
        "from scanarr.protocol import FileDeleted\n"
        f"queue = OfflineQueue({str(path)!r})\n"
        "for number in range(500):\n"
        "    queue.put(FileDeleted(volume_id='v', relative_path=f'{number}.mkv',"
        " filename=f'{number}.mkv'))\n"
        "print('appended', flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "appended"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    replayed = OfflineQueue(path).events()
    assert [event.relative_path for event, _ in replayed] == [f"{n}.mkv" for n in range(500)]


def test_a_line_cut_by_a_crash_is_skipped_and_does_not_swallow_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.jsonl"
    queue = OfflineQueue(path)
    queue.append(created("v", "a.mkv"))
    queue.close()
    with open(path, "ab") as file:
        file.write(b'{"type":"file.created","timestamp":"2026-01-01T00:00:00Z","data":{"vol')
    queue = OfflineQueue(path)
    assert queue.pending == 1
    queue.append(created("v", "b.mkv"))
    assert [event.relative_path for event, _ in queue.events()] == ["a.mkv", "b.mkv"]
    assert "damaged" in caplog.text


def test_overflow_drops_the_queue_and_remembers_the_volumes_to_rescan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.jsonl"
    queue = OfflineQueue(path, max_events=3)
    assert queue.put(created("a", "1.mkv"))
    assert queue.put(created("a", "2.mkv"))
    assert queue.put(deleted("b", "3.mkv"))
    assert not queue.put(created("c", "4.mkv"))  # does not fit: everything is dropped
    assert queue.pending == 0 and queue.events() == []
    assert queue.volumes_to_rescan == {"a", "b", "c"}
    assert "offline queue full" in caplog.text
    # Events of volumes to rescan are not kept any more; those of other volumes are.
    assert not queue.put(created("a", "5.mkv"))
    assert queue.put(created("d", "6.mkv"))
    assert queue.dropped_events == 5 and queue.overflows == 1
    queue.close()
    restarted = OfflineQueue(path, max_events=3)
    assert restarted.volumes_to_rescan == {"a", "b", "c"}
    assert [(event.volume_id, event.relative_path) for event, _ in restarted.events()] == [
        ("d", "6.mkv")
    ]


async def test_replay_sends_everything_in_order_then_asks_for_rescans_then_clears(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.jsonl"
    queue = OfflineQueue(path, max_events=2)
    queue.put(created("a", "1.mkv"))
    queue.put(created("a", "2.mkv"))
    queue.put(created("b", "3.mkv"))  # overflow: a and b to rescan
    for number in range(2):
        queue.append(created("c", f"{number}.mkv"), f"2026-02-0{number + 1}T10:00:00.000Z")
    # A connection lost during the replay keeps the queue whole for the next one.
    with pytest.raises(ConnectionError):
        await queue.replay(RecordingSession(fail_after=0))
    assert queue.pending == 2 and queue.volumes_to_rescan == {"a", "b"}
    session = RecordingSession()
    rescans = await queue.replay(session)
    frames = [json.loads(frame) for frame in session.frames]
    assert [(frame["timestamp"], frame["data"]["relative_path"]) for frame in frames] == [
        ("2026-02-01T10:00:00.000Z", "0.mkv"),
        ("2026-02-02T10:00:00.000Z", "1.mkv"),
    ]
    assert decode(session.frames[0]) == created("c", "0.mkv")
    assert rescans == ["a", "b"]
    assert queue.pending == 0 and queue.volumes_to_rescan == frozenset()
    assert OfflineQueue(path).events() == [] and OfflineQueue(path).volumes_to_rescan == set()


def test_a_size_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_events"):
        OfflineQueue(tmp_path / "queue.jsonl", max_events=0)


def test_queue_file_that_cannot_be_written_raises(tmp_path: Path) -> None:
    directory = tmp_path / "not-a-directory"
    directory.write_text("")
    with pytest.raises(NotADirectoryError):
        OfflineQueue(directory / "queue.jsonl").put(created("v", "a.mkv"))
    assert os.path.isfile(directory)
