"""`scanarr doctor` verdicts on real trees, a real state directory and the dev API server."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from helpers.agent import TOKEN, one_volume, watcher_settings
from privileges import run_unprivileged, world_traversable_tmp
from scanarr.cli import build_parser
from scanarr.cli.doctor import agent_handshake
from scanarr.dev_api import DevApiServer
from scanarr.doctor import (
    SYSCTL_FILE,
    TEMP_PREFIX,
    DoctorOptions,
    check_api,
    check_hardlinks,
    check_state_directory,
    check_watch_limit,
    count_directories,
    parse_volume_argument,
    read_environment_file,
    recommended_watch_limit,
    run_checks,
)
from scanarr.protocol import WatcherConfig, WatchPath


def doctor(*arguments: str) -> tuple[int, str]:
    """Run `scanarr doctor ARGUMENTS` in-process; (exit code, standard output)."""
    from scanarr.cli.doctor import run

    args = build_parser().parse_args(["doctor", *arguments])
    out = io.StringIO()
    code = run(args, out)
    return code, out.getvalue()


def make_tree(root: Path, directories: int) -> Path:
    """`directories` directories under `root` (root included), plus ones the watcher skips."""
    root.mkdir(parents=True, exist_ok=True)
    for number in range(directories - 1):
        (root / f"Show {number // 10:02d}" / f"Season {number % 10:02d}").mkdir(
            parents=True, exist_ok=True
        )
    made = sum(1 for _ in root.rglob("*")) + 1
    assert made >= directories
    (root / ".hidden" / "deep").mkdir(parents=True)
    (root / "@eaDir").mkdir()
    (root / "Show 00" / "episode.mkv").write_bytes(b"x")
    return root


def line_of(output: str, check: str) -> str:
    lines = [line for line in output.splitlines() if re.match(rf"\[\w+\] +{check}:", line)]
    assert len(lines) == 1, output
    return lines[0]


# --- inotify watches ---------------------------------------------------------------------------


def test_directory_count_is_what_the_watcher_watches(tmp_path: Path) -> None:
    root = tmp_path / "tv"
    root.mkdir()
    for relative in ("A/1", "A/2", "B", ".hidden/x", "@eaDir", "nested/inner"):
        (root / relative).mkdir(parents=True)
    tv = WatchPath(id="tv", path=str(root))
    nested = WatchPath(id="nested", path=str(root / "nested"))
    # root, A, A/1, A/2, B, nested, nested/inner — hidden and system directories left out.
    assert count_directories(tv) == (7, 0)
    # A nested volume is counted once, as its own.
    assert count_directories(tv, [tv, nested]) == (5, 0)
    assert count_directories(nested, [tv, nested]) == (2, 0)


def test_a_tree_over_a_lowered_limit_needs_action(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tv", 60)
    directories, _ = count_directories(WatchPath(id="tv", path=str(root)))
    code, output = doctor(
        str(root),
        "--max-user-watches",
        str(directories - 1),
        "--skip-api",
        "--state-file",
        str(tmp_path / "state" / "watcher-state.json"),
    )
    assert code == 1
    verdict = line_of(output, "inotify watches")
    assert verdict.startswith("[ACTION]")
    assert f"{directories} directories in 1 volume" in verdict
    assert f"limit {directories - 1} (given)" in verdict
    assert "miss 1 directory" in verdict
    advice = output.splitlines()[output.splitlines().index(verdict) + 1]
    assert f"fs.inotify.max_user_watches={recommended_watch_limit(directories)}" in advice
    assert SYSCTL_FILE in advice


def test_little_headroom_needs_action_and_enough_is_ok(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tv", 30)
    volume = [WatchPath(id="tv", path=str(root))]
    directories, _ = count_directories(volume[0])
    (tight,) = check_watch_limit(volume, limit_override=directories + 1)
    assert tight.status == "action" and "left for new folders" in tight.summary
    (roomy,) = check_watch_limit(volume, limit_override=directories * 10)
    assert roomy.status == "ok"


def test_the_kernel_limit_is_read_when_not_given(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tv", 5)
    (verdict,) = check_watch_limit([WatchPath(id="tv", path=str(root))])
    with open("/proc/sys/fs/inotify/max_user_watches") as file:
        limit = int(file.read())
    assert f"limit {limit:,} (fs.inotify.max_user_watches)" in verdict.summary


def test_recommended_limit() -> None:
    assert recommended_watch_limit(10) == 524288
    assert recommended_watch_limit(300_000) == 1048576


# --- state directory ---------------------------------------------------------------------------


def test_a_read_only_state_directory_needs_action() -> None:
    with world_traversable_tmp() as base:
        state_directory = base / "state"
        state_directory.mkdir()
        state_directory.chmod(0o555)
        state_file = str(state_directory / "watcher-state.json")

        def as_a_user() -> tuple[int, str]:
            return doctor("--skip-api", "--state-file", state_file)

        code, output = run_unprivileged(as_a_user)
    assert code == 1
    verdict = line_of(output, "state file")
    assert verdict.startswith("[ACTION]")
    assert f"cannot write in {state_directory}" in verdict
    assert "Permission denied" in verdict
    assert "StateDirectory=" in output


def test_a_missing_state_directory_under_a_read_only_one_needs_action() -> None:
    with world_traversable_tmp() as base:
        base.chmod(0o555)
        state_file = str(base / "scanarr" / "watcher-state.json")
        verdict = run_unprivileged(lambda: check_state_directory(state_file))
        base.chmod(0o755)
    assert verdict.status == "action"
    assert f"(to create {base / 'scanarr'})" in verdict.summary


def test_writable_state_directories(tmp_path: Path) -> None:
    created = check_state_directory(str(tmp_path / "new" / "dir" / "state.json"))
    assert created.status == "ok" and "can create it" in created.summary
    assert not (tmp_path / "new").exists()  # the probe leaves nothing behind
    existing = tmp_path / "state.json"
    existing.write_text('{"last_config": null}')
    assert check_state_directory(str(existing)).status == "ok"
    existing.write_text("{not json")
    corrupt = check_state_directory(str(existing))
    assert corrupt.status == "note" and "not valid JSON" in corrupt.summary
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


# --- volumes, filesystems, hardlinks -----------------------------------------------------------


def test_a_missing_volume_needs_action(tmp_path: Path) -> None:
    present = make_tree(tmp_path / "movies", 3)
    code, output = doctor(
        f"movies={present}",
        f"tv={tmp_path / 'unmounted'}",
        "--skip-api",
        "--state-file",
        str(tmp_path / "state.json"),
    )
    assert code == 1
    assert line_of(output, "volume movies").startswith("[ok]")
    assert "local filesystem" in line_of(output, "volume movies")
    missing = line_of(output, "volume tv")
    assert missing.startswith("[ACTION]") and "does not exist" in missing


def test_a_network_filesystem_is_a_note(tmp_path: Path) -> None:
    """The mount table says NFS for the filesystem holding the volume: live events unreliable,
    periodic rescans — worth knowing, nothing to fix."""
    root = make_tree(tmp_path / "remote", 3)
    device = os.stat(root).st_dev
    lines = []
    with open("/proc/self/mountinfo") as file:
        for line in file:
            fields = line.split(" ")
            major, minor = (int(part) for part in fields[2].split(":"))
            if os.makedev(major, minor) == device:
                separator = fields.index("-")
                fields[separator + 1] = "nfs4"
            lines.append(" ".join(fields))
    table = tmp_path / "mountinfo"
    table.write_text("".join(lines))
    verdicts = run_checks(
        DoctorOptions(
            volumes=[WatchPath(id="remote", path=str(root))],
            state_file=str(tmp_path / "state.json"),
            check_api=False,
            mount_table=str(table),
            max_user_watches=1000,
        )
    )
    (volume,) = [verdict for verdict in verdicts if verdict.check == "volume remote"]
    assert volume.status == "note"
    assert "nfs4" in volume.summary and "rescans it periodically" in volume.summary
    assert not any(verdict.needs_action for verdict in verdicts)


def test_volumes_on_one_filesystem_can_hardlink(tmp_path: Path) -> None:
    volumes = [
        WatchPath(id=name, path=str(make_tree(tmp_path / name, 2)))
        for name in ("torrents", "movies", "tv")
    ]
    (verdict,) = check_hardlinks(volumes, link_test_allowed=True)
    assert verdict.status == "ok"
    assert verdict.summary == "torrents, movies, tv: same filesystem, a test link worked"
    for volume in volumes:
        assert not [name for name in os.listdir(volume.path) if name.startswith(TEMP_PREFIX)]


def test_volumes_on_different_filesystems_cannot_hardlink(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    other = Path(os.path.realpath(shm)) / f"scanarr-doctor-test-{os.getpid()}"
    other.mkdir()
    try:
        volumes = [
            WatchPath(id="movies", path=str(make_tree(tmp_path / "movies", 2))),
            WatchPath(id="ram", path=str(other)),
        ]
        verdicts = check_hardlinks(volumes, link_test_allowed=True)
    finally:
        other.rmdir()
    (verdict,) = verdicts
    assert verdict.status == "note"
    assert "cannot hardlink to each other: movies | ram" in verdict.summary


def _bind_mounts_allowed(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    source, target = tmp_path / "probe-source", tmp_path / "probe-target"
    source.mkdir()
    target.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "mount", "--bind", str(source), str(target)], capture_output=True
    )
    return probe.returncode == 0


def test_two_bind_mounts_of_one_filesystem_cannot_hardlink(tmp_path: Path) -> None:
    """The Docker mistake: torrents/ and media/ mounted separately share st_dev but refuse
    links (EXDEV); only the real link test sees it."""
    if not _bind_mounts_allowed(tmp_path):
        pytest.skip("needs unshare -m and bind mounts (root with CAP_SYS_ADMIN)")
    data = tmp_path / "data"
    (data / "torrents").mkdir(parents=True)
    (data / "media").mkdir()
    torrents, media = tmp_path / "torrents", tmp_path / "media"
    torrents.mkdir()
    media.mkdir()
    script = (
        f"mount --bind {data / 'torrents'} {torrents} && mount --bind {data / 'media'} {media} "
        f"&& exec {sys.executable} -m scanarr doctor torrents={torrents} media={media} "
        f"--skip-api --state-file {tmp_path / 'state.json'}"
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True)
    output = result.stdout.decode()
    assert result.returncode == 1, output + result.stderr.decode()
    verdict = line_of(output, "hardlinks")
    assert verdict.startswith("[ACTION]")
    assert "torrents, media share a filesystem but cannot hardlink" in verdict
    assert "EXDEV" in verdict
    assert "mount their common parent once" in output
    assert not os.listdir(data / "torrents") and not os.listdir(data / "media")


def test_the_link_test_is_skipped_where_it_cannot_write() -> None:
    with world_traversable_tmp() as base:
        first, second = base / "first", base / "second"
        first.mkdir()
        second.mkdir()
        first.chmod(0o555)
        volumes = [WatchPath(id="a", path=str(first)), WatchPath(id="b", path=str(second))]
        (verdict,) = run_unprivileged(lambda: check_hardlinks(volumes, link_test_allowed=True))
        first.chmod(0o755)
    assert verdict.status == "note"
    assert "link test not run" in verdict.summary
    assert "Permission denied" in verdict.summary


# --- API ---------------------------------------------------------------------------------------


async def test_the_api_accepts_the_token(
    dev_api: DevApiServer, make_volume: Any, tmp_path: Path
) -> None:
    root = make_volume("movies", {"a.mkv": b"1"})
    dev_api.config = one_volume("movies", root)
    settings = watcher_settings(dev_api.url, tmp_path / "state.json")
    verdict, config = await check_api(settings, 5, agent_handshake)
    assert verdict.status == "ok"
    assert "token accepted as Development watcher; 1 volume configured" in verdict.summary
    assert config is not None and config.watch_paths[0].id == "movies"
    record = dev_api.connections[0]
    assert record.authorization == f"Bearer {TOKEN}"
    with trio.fail_after(5):
        await dev_api.wait_closed(1)
    assert dev_api.close_codes == [1000]
    assert [message.type for message in dev_api.messages] == ["watcher.hello"]


@pytest.mark.parametrize("reject_reason", [None, "revoked"])
async def test_a_rejected_token_needs_action(
    serve_dev_api: Any, tmp_path: Path, reject_reason: str | None
) -> None:
    server = await serve_dev_api(token="the-right-token")
    server.reject_reason = reject_reason
    settings = watcher_settings(server.url, tmp_path / "state.json")
    verdict, config = await check_api(settings, 5, agent_handshake)
    assert verdict.status == "action" and config is None
    assert f"rejected the token ({reject_reason or 'invalid_token'})" in verdict.summary
    assert verdict.action is not None and "SCANARR_AUTH_TOKEN" in verdict.action
    assert TOKEN not in verdict.summary + verdict.action


async def test_an_unreachable_api_needs_action(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = watcher_settings(f"ws://127.0.0.1:{port}/ws/watcher", tmp_path / "state.json")
    verdict, _ = await check_api(settings, 5, agent_handshake)
    assert verdict.status == "action"
    assert f"cannot reach ws://127.0.0.1:{port}/ws/watcher" in verdict.summary


async def test_a_silent_api_needs_action(dev_api: DevApiServer, tmp_path: Path) -> None:
    dev_api.silent = True
    settings = watcher_settings(dev_api.url, tmp_path / "state.json")
    verdict, _ = await check_api(settings, 0.5, agent_handshake)
    assert verdict.status == "action"
    assert "handshake: no watcher.auth and watcher.config within 0.5 s" in verdict.summary


async def test_the_command_checks_the_volumes_the_api_configures(
    dev_api: DevApiServer, make_volume: Any, tmp_path: Path
) -> None:
    """`scanarr doctor` as a process, with the service's environment file."""
    movies = make_volume("movies", {"a.mkv": b"1"})
    tv = make_volume("tv", {"b.mkv": b"1"})
    dev_api.config = WatcherConfig(
        watch_paths=[WatchPath(id="movies", path=str(movies)), WatchPath(id="tv", path=str(tv))]
    )
    env_file = tmp_path / "scanarr.env"
    env_file.write_text(
        "# the service's environment\n"
        f"SCANARR_API_URL={dev_api.url}\n"
        f'SCANARR_AUTH_TOKEN="{TOKEN}"\n'
        f"SCANARR_STATE_FILE={tmp_path / 'state' / 'watcher-state.json'}\n"
    )
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("SCANARR_")
    }
    result = await trio.run_process(
        [sys.executable, "-m", "scanarr", "doctor", "--env-file", str(env_file)],
        capture_stdout=True,
        capture_stderr=True,
        env=environment,
        check=False,
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    assert TOKEN not in output
    assert line_of(output, "API").startswith("[ok]")
    assert "2 volumes from the API's config" in line_of(output, "volumes")
    assert line_of(output, "volume movies").startswith("[ok]")
    assert line_of(output, "volume tv").startswith("[ok]")
    assert "movies, tv: same filesystem, a test link worked" in line_of(output, "hardlinks")
    assert output.rstrip().endswith("nothing to fix")


# --- arguments ---------------------------------------------------------------------------------


def test_volume_arguments() -> None:
    assert parse_volume_argument("movies=/data/movies", 0) == WatchPath("movies", "/data/movies")
    assert parse_volume_argument("/data/tv/", 0) == WatchPath("tv", "/data/tv")


def test_environment_file(tmp_path: Path) -> None:
    env_file = tmp_path / "scanarr.env"
    env_file.write_text(
        "# comment\n; another\n\nSCANARR_API_URL=ws://nas:8081/ws/watcher\n"
        "SCANARR_AUTH_TOKEN='quoted value'\nexport SCANARR_LOG_LEVEL = debug\n"
    )
    assert read_environment_file(str(env_file)) == {
        "SCANARR_API_URL": "ws://nas:8081/ws/watcher",
        "SCANARR_AUTH_TOKEN": "quoted value",
        "SCANARR_LOG_LEVEL": "debug",
    }
    env_file.write_text("not a variable\n")
    with pytest.raises(ValueError, match=r"scanarr.env:1"):
        read_environment_file(str(env_file))
    code, _ = doctor("--env-file", str(env_file), "--skip-api")
    assert code == 2
