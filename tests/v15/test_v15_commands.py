"""Commands in the V1.5 dialect, through the shipped `scanarr watch`: flat deletes, hardlinks,
commands meant for other watchers, re-sent deletions and replies kept while disconnected."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from scanarr.dev_api_v15 import DevApiV15Server, Watcher
from scanarr.offline_queue import queue_path_for
from v15_support import (
    approved_watch,
    go_environment,
    serve_v15,
    serve_volumes,
    start_watch,
    stop_watch,
)


async def _scanned(api: DevApiV15Server, *paths: Path) -> None:
    with trio.fail_after(20):
        for path in paths:
            await api.wait_for_type("scan.completed", path=str(path))


@contextlib.asynccontextmanager
async def _watching_scanned(
    nursery: trio.Nursery, state_file: Path, tmp_path: Path, *volumes: Path
) -> AsyncIterator[DevApiV15Server]:
    """A V1.5 API of `volumes` and an approved `scanarr watch` of them (logging to
    tmp_path/watch.log), entered once every volume is scanned; the watcher is stopped on
    leaving."""
    api, environment = await serve_volumes(nursery, state_file, *volumes)
    process = await approved_watch(nursery, api, environment, tmp_path / "watch.log")
    try:
        await _scanned(api, *volumes)
        yield api
    finally:
        await stop_watch(process)


async def test_flat_delete_with_siblings_across_volumes_answers_our_items_only(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    torrents = make_volume("torrents", {"Film/film.mkv": 9, "other.mkv": 1})
    movies = make_volume("movies")
    (movies / "Film (2020)").mkdir()
    os.link(torrents / "Film" / "film.mkv", movies / "Film (2020)" / "film.mkv")
    elsewhere = make_volume("elsewhere", {"film.mkv": 9})  # another watcher's volume
    async with _watching_scanned(nursery, state_file, tmp_path, torrents, movies) as api:
        await api.delete(
            "d1",
            [
                {"media_file_id": 7, "volume_path": str(torrents), "file_path": "Film/film.mkv"},
                {
                    "media_file_id": 7,
                    "volume_path": str(movies),
                    "file_path": "Film (2020)/film.mkv",
                },
                {"media_file_id": 7, "volume_path": str(elsewhere), "file_path": "film.mkv"},
            ],
        )
        with trio.fail_after(20):
            reply = await api.wait_for_type("files.delete.completed", deletion_id="d1")
    assert reply.data["total"] == 2
    assert reply.data["deleted"] == 2
    assert reply.data["failed"] == 0
    assert [result["media_file_id"] for result in reply.data["results"]] == [7, 7]
    assert {result["status"] for result in reply.data["results"]} == {"deleted"}
    assert reply.data["results"][0]["size_bytes"] == 9
    # Empty parent directories went, the volume roots and unrelated files stayed.
    assert not (torrents / "Film").exists()
    assert not (movies / "Film (2020)").exists()
    assert (torrents / "other.mkv").exists()
    assert (elsewhere / "film.mkv").exists()  # not ours: untouched
    assert api.deletions["d1"].status == "completed"
    assert f"{torrents}/Film/film.mkv" not in api.files


async def test_commands_for_another_watchers_paths_get_no_reply_and_touch_nothing(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    other = make_volume("other", {"x.mkv": 1, "y.mkv": 1})
    # A path that starts like ours but is not inside it.
    lookalike = make_volume("movies-old", {"z.mkv": 1})
    async with _watching_scanned(nursery, state_file, tmp_path, movies) as api:
        await api.scan(str(other), "s-other")
        await api.delete(
            "d-other",
            [
                {"media_file_id": "m", "volume_path": str(other), "file_path": "x.mkv"},
                {"media_file_id": "n", "volume_path": str(lookalike), "file_path": "z.mkv"},
            ],
        )
        await api.hardlink("d-link", f"{other}/x.mkv", f"{other}/linked.mkv", str(other))
        await api.send_raw('{"type":"command.files.delete","data":{"request_id":"r","files":3}}')
        # Commands run in order: once this one is answered, the earlier ones were handled.
        await api.delete(
            "d-ours", [{"media_file_id": "a", "volume_path": str(movies), "file_path": "a.mkv"}]
        )
        with trio.fail_after(20):
            await api.wait_for_type("files.delete.completed", deletion_id="d-ours")
        scan_id = await api.scan(str(movies))
        with trio.fail_after(20):
            await api.wait_for_type("scan.completed", scan_id=scan_id)
    assert api.of_type("scan.started", scan_id="s-other") == []
    assert api.of_type("files.delete.completed", deletion_id="d-other") == []
    assert api.of_type("files.delete.progress", deletion_id="d-other") == []
    assert api.of_type("files.hardlink.completed") == []
    assert api.of_type("files.delete.completed", request_id="r") == []
    assert (other / "x.mkv").exists() and (other / "y.mkv").exists()
    assert not (other / "linked.mkv").exists()
    assert (lookalike / "z.mkv").exists()
    assert not (movies / "a.mkv").exists()


async def test_a_deletion_resent_with_a_new_request_id_is_answered_again_not_redone(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"Film/film.mkv": 4, "keep.mkv": 1})
    log = tmp_path / "watch.log"
    api, environment = await serve_volumes(nursery, state_file, movies)
    process = await approved_watch(nursery, api, environment, log)
    try:
        await _scanned(api, movies)
        item = {"media_file_id": "m1", "volume_path": str(movies), "file_path": "Film/film.mkv"}
        first_request = await api.delete("d1", [item])
        with trio.fail_after(20):
            first = await api.wait_for_type("files.delete.completed", request_id=first_request)
        assert first.data["deleted"] == 1
        # The film is downloaded again to the same path; the server lost the reply (it still
        # counts the deletion as waiting) and re-sends it, with a new request id, after the
        # watcher reconnects — even after a restart of the watcher.
        (movies / "Film").mkdir()
        (movies / "Film" / "film.mkv").write_bytes(b"new copy")
        api.deletions["d1"].status = "pending"
        assert await stop_watch(process) == 0
        process = await start_watch(nursery, environment, log)
        with trio.fail_after(20):
            await api.wait_authenticated(2)
            again = await api.wait_for_type("files.delete.completed", deletion_id="d1", count=2)
    finally:
        await stop_watch(process)
    assert again.data["request_id"] != first_request
    assert again.data["request_id"] == api.deletions["d1"].request_ids[-1]
    assert again.data["results"] == first.data["results"]
    assert (movies / "Film" / "film.mkv").read_bytes() == b"new copy"


async def test_a_reply_produced_while_disconnected_is_delivered_after_reconnecting(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    files = {f"many/{index:04d}.mkv": 1 for index in range(1500)}
    movies = make_volume("movies", files)
    api = await serve_v15(nursery, watch_paths=[str(movies)], scan_on_start=False)
    first_progress = trio.Event()
    api.on_message = lambda message: (
        first_progress.set() if message.type == "files.delete.progress" else None
    )
    log = tmp_path / "watch.log"
    process = await approved_watch(nursery, api, go_environment(api.url, state_file), log)
    try:
        request_id = await api.delete(
            "big",
            [
                {"media_file_id": index, "volume_path": str(movies), "file_path": path}
                for index, path in enumerate(files)
            ],
        )
        with trio.fail_after(20):
            await first_progress.wait()
        # The server goes away while the deletion runs, and stays away until the reply is made;
        # the deletion is settled meanwhile, so no re-sent command is what answers it.
        api.accepting = False
        api.deletions["big"].status = "completed"
        await api.drop_all()
        replies = state_file.with_name("watcher-state.v15-replies.json")
        with trio.fail_after(30):
            while not (replies.exists() and json.loads(replies.read_text())["outbox"]):
                await trio.sleep(0.05)
        api.accepting = True
        with trio.fail_after(30):
            await api.wait_authenticated(2)
            reply = await api.wait_for_type("files.delete.completed", request_id=request_id)
    finally:
        await stop_watch(process)
    first_connection = api.of_type("watcher.hello")[0].connection
    assert reply.connection != first_connection  # sent after the reconnection
    assert reply.data["deleted"] == 1500
    assert "sent 1 replies kept while disconnected" in log.read_text()
    assert not (movies / "many").exists()
    assert json.loads(replies.read_text())["outbox"] == []


async def test_hardlink_from_torrents_into_media(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    torrents = make_volume("torrents", {"Film/film.mkv": 6})
    movies = make_volume("movies", {"Film (2020)/film.mkv": 6})  # a copy, to be replaced
    async with _watching_scanned(nursery, state_file, tmp_path, torrents, movies) as api:
        source, target = f"{torrents}/Film/film.mkv", f"{movies}/Film (2020)/film.mkv"
        request_id = await api.hardlink("d-link", source, target, str(movies))
        new_target = f"{movies}/New/film.mkv"
        second = await api.hardlink("d-link2", source, new_target, str(movies))
        with trio.fail_after(20):
            reply = await api.wait_for_type("files.hardlink.completed", request_id=request_id)
            created = await api.wait_for_type("files.hardlink.completed", request_id=second)
    assert reply.data == {
        "request_id": request_id,
        "deletion_id": "d-link",
        "status": "created",
        "source_path": source,
        "target_path": target,
    }
    assert created.data["status"] == "created"
    assert os.stat(source).st_ino == os.stat(target).st_ino == os.stat(new_target).st_ino
    assert api.files[new_target]["path"] == new_target


async def test_the_go_watchers_state_file_is_taken_over_without_approval(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 1})
    token = "ab" * 32
    state_file.parent.mkdir(parents=True)
    go_state = {"auth_token": token, "config_hash": "h1", "config": {"watch_paths": [str(movies)]}}
    state_file.write_text(json.dumps(go_state))
    api, environment = await serve_volumes(nursery, state_file, movies)
    api.watchers["nas-1"] = Watcher("nas-1", status="approved", token=token)
    api.accepting = False  # the server is down when the watcher starts
    log = tmp_path / "watch.log"
    process = await start_watch(nursery, environment, log)
    try:
        # The Go watcher's config is applied at once: its paths are watched while offline
        # (a new file every 0.2 s until the watches are in place and one is queued).
        queue = queue_path_for(state_file)
        with trio.fail_after(20):
            for number in itertools.count():
                (movies / f"meanwhile-{number}.mkv").write_bytes(b"m")
                await trio.sleep(0.2)
                if queue.exists() and "meanwhile-" in queue.read_text():
                    break
        api.accepting = True
        with trio.fail_after(20):
            await api.wait_authenticated(1)
            await api.wait_for_type("scan.completed", path=str(movies))
            await api.wait_until(
                lambda: any("meanwhile-" in m.data["path"] for m in api.of_type("file.created"))
            )
    finally:
        assert await stop_watch(process) == 0
    # Straight to the V1.5 hello (the Go state file says which server this is), its token.
    assert [hello.data for hello in api.of_type("watcher.hello")] == [
        {"watcher_id": "nas-1", "hostname": os.uname().nodename, "version": _version()}
    ]
    assert api.of_type("watcher.auth") == [api.of_type("watcher.auth", token=token)[0]]
    assert all(connection.state != "pending" for connection in api.connections)
    # The Go watcher can be started again on the same file: its fields are still there.
    state = json.loads(state_file.read_text())
    assert state["auth_token"] == token
    assert state["config"] == go_state["config"]
    assert token not in log.read_text()


def _version() -> str:
    from scanarr import __version__

    return __version__


async def test_hostile_paths_in_our_volumes_fail_and_touch_nothing(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"keep.mkv": 1})
    torrents = make_volume("torrents", {"t.mkv": 1})
    outside = make_volume("outside", {"film.mkv": 1, "secret.mkv": 1})
    (movies / "link").symlink_to(outside)  # a symlinked folder inside the volume
    async with _watching_scanned(nursery, state_file, tmp_path, movies, torrents) as api:
        await api.delete(
            "d",
            [
                {"media_file_id": 1, "volume_path": str(movies), "file_path": "link/film.mkv"},
                {"media_file_id": 2, "volume_path": str(movies), "file_path": "../torrents/t.mkv"},
                {"media_file_id": 3, "volume_path": str(movies), "file_path": ""},
            ],
        )
        # A hardlink half in another watcher's volume; one through the symlinked folder.
        half = await api.hardlink("h", f"{outside}/secret.mkv", f"{movies}/s.mkv", str(movies))
        through = await api.hardlink("h2", f"{movies}/keep.mkv", f"{movies}/link/x.mkv", "")
        with trio.fail_after(20):
            reply = await api.wait_for_type("files.delete.completed", deletion_id="d")
            refused = await api.wait_for_type("files.hardlink.completed", request_id=half)
            symlinked = await api.wait_for_type("files.hardlink.completed", request_id=through)
    assert (reply.data["total"], reply.data["deleted"], reply.data["failed"]) == (3, 0, 3)
    assert all(result["error"] for result in reply.data["results"])
    assert api.deletions["d"].status == "failed"
    assert (refused.data["status"], symlinked.data["status"]) == ("failed", "failed")
    assert "unknown_volume" in refused.data["error"]
    assert refused.data["source_path"] == f"{outside}/secret.mkv"
    assert sorted(p.name for p in outside.iterdir()) == ["film.mkv", "secret.mkv"]
    assert (torrents / "t.mkv").exists() and (movies / "keep.mkv").exists()
    assert not (movies / "s.mkv").exists()
