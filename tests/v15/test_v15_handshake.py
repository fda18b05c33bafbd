"""`scanarr watch` against the V1.5 dev API: approval, token kept, reconnection, restart."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import trio

from v15_support import approved_watch, serve_volumes, start_watch, stop_watch


async def test_first_contact_pending_approve_token_kept_and_reused(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 3})
    log = tmp_path / "watch.log"
    api, environment = await serve_volumes(nursery, state_file, movies)
    process = await start_watch(nursery, environment, log)
    with trio.fail_after(20):
        pending = await api.wait_pending("nas-1")
    # While pending the watcher waits (no hello timeout: 5 s in these tests) and says why.
    await trio.sleep(6)
    assert pending.state == "pending"
    assert "must approve" in log.read_text()
    assert await api.approve("nas-1")
    token = api.watchers["nas-1"].token
    assert token is not None
    with trio.fail_after(20):
        await api.wait_for_type("scan.completed", path=str(movies))
    state = json.loads(state_file.read_text())
    assert state["auth_token"] == token
    assert state["protocol"] == "v1.5"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600

    # The server restarts: the watcher comes back with the kept token, no new approval.
    await api.drop_all()
    with trio.fail_after(20):
        await api.wait_authenticated(2)
    assert api.of_type("watcher.auth")[-1].data == {"token": token}

    # The process restarts: same token, same watcher id.
    assert await stop_watch(process) == 0
    process = await start_watch(nursery, environment, log)
    with trio.fail_after(20):
        await api.wait_authenticated(3)
    hellos = api.of_type("watcher.hello")
    assert {hello.data["watcher_id"] for hello in hellos} == {"nas-1"}
    assert len(api.of_type("watcher.auth", token=token)) == 2
    assert sum(1 for c in api.connections if c.state == "pending") == 0
    assert await stop_watch(process) == 0
    assert token not in log.read_text()


async def test_revoked_watcher_backs_off_to_the_cap_and_says_so(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 3})
    log = tmp_path / "watch.log"
    api, environment = await serve_volumes(
        nursery, state_file, movies, SCANARR_REJECTED_MAX_DELAY="3s"
    )
    process = await approved_watch(nursery, api, environment, log)
    await api.revoke("nas-1")
    await api.drop_all()
    with trio.fail_after(20):
        await api.wait_until(lambda: len(api.connections) >= 2)
    # Reconnect delay is 50 ms; a revoked watcher waits for the cap (3 s) instead.
    await trio.sleep(1.5)
    assert len(api.connections) == 2
    assert await stop_watch(process) == 0
    assert "revoked" in log.read_text()


async def test_approved_while_away_waits_for_a_new_approval_then_keeps_that_token(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    movies = make_volume("movies", {"a.mkv": 3})
    log = tmp_path / "watch.log"
    api, environment = await serve_volumes(nursery, state_file, movies, SCANARR_PROTOCOL="v1.5")
    process = await start_watch(nursery, environment, log)
    with trio.fail_after(20):
        await api.wait_pending("nas-1")
    assert await stop_watch(process) == 0
    # The operator approves while the watcher is stopped: the token is never delivered.
    assert not await api.approve("nas-1")
    process = await start_watch(nursery, environment, log)
    with trio.fail_after(20):
        await api.wait_until(lambda: any(c.state == "awaiting_auth" for c in api.connections))
    await trio.sleep(6)  # longer than the hello timeout: it keeps waiting
    assert api.authenticated_total == 0
    assert "approve it again" in log.read_text()
    assert await api.approve("nas-1")
    with trio.fail_after(20):
        await api.wait_for_type("scan.completed", path=str(movies))
    assert await stop_watch(process) == 0
    assert json.loads(state_file.read_text())["auth_token"] == api.watchers["nas-1"].token


async def test_the_environment_token_is_the_fallback_when_the_kept_one_is_refused(
    nursery: trio.Nursery, make_volume: Any, state_file: Path, tmp_path: Path
) -> None:
    from scanarr.dev_api_v15 import Watcher

    movies = make_volume("movies", {"a.mkv": 3})
    good = "cd" * 32
    api, environment = await serve_volumes(nursery, state_file, movies, SCANARR_AUTH_TOKEN=good)
    api.watchers["nas-1"] = Watcher("nas-1", status="approved", token=good)
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps({"auth_token": "ab" * 32, "protocol": "v1.5"}))
    process = await start_watch(nursery, environment, tmp_path / "watch.log")
    try:
        with trio.fail_after(20):
            await api.wait_for_type("scan.completed", path=str(movies))
    finally:
        assert await stop_watch(process) == 0
    assert [m.data["token"] for m in api.of_type("watcher.auth")] == ["ab" * 32, good]
    # The server sends the token with every config: that is the one kept now.
    assert json.loads(state_file.read_text())["auth_token"] == good
