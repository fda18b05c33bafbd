"""A hardlink killed between its link and its rename leaves a ``.scanarr-link-*.tmp`` name (a
second name of the source, holding its space): the next start removes it, and nothing else."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import trio

from scanarr.agent.file_handlers import results_path_for
from scanarr.dev_api import DevApiServer
from scanarr.file_commands import FileCommands
from scanarr.protocol import WatcherConfig, WatchPath

KILLED_BEFORE_THE_RENAME = """
import os, pathlib, signal, sys
from scanarr.file_commands import FileCommands
from scanarr.protocol import CommandFilesHardlink, WatchPath

results, media, torrents = sys.argv[1:]
rename = os.rename

def killed_before_the_rename(source, target, **fds):
    if source.startswith(".scanarr-link-"):
        os.kill(os.getpid(), signal.SIGKILL)
    rename(source, target, **fds)

os.rename = killed_before_the_rename
volumes = [WatchPath(id="media", path=media), WatchPath(id="torrents", path=torrents)]
command = CommandFilesHardlink(
    request_id="link-1",
    deletion_id="del-1",
    source_volume_path=torrents,
    source_relative_path="film.mkv",
    target_volume_path=media,
    target_relative_path="Film (2001)/Film.mkv",
)
devices = {volume.id: os.stat(volume.path).st_dev for volume in volumes}
FileCommands(pathlib.Path(results)).hardlink(command, volumes, devices, False)
"""

LOOKALIKE = ".scanarr-link-0123456789abcdef.tmp"


def kill_a_hardlink_before_its_rename(
    results: pathlib.Path, media: pathlib.Path, torrents: pathlib.Path
) -> pathlib.Path:
    """Replace ``Film (2001)/Film.mkv`` by a link of ``film.mkv`` in a process killed midway."""
    source = torrents / "film.mkv"
    source.write_bytes(b"new")
    (media / "Film (2001)").mkdir()
    (media / "Film (2001)" / "Film.mkv").write_bytes(b"old")
    # Names like a leftover that are not one: the only name of a file, and one in a directory
    # no hardlink was made in.
    (media / "Film (2001)" / LOOKALIKE).write_bytes(b"the operator's")
    (media / "Elsewhere").mkdir()
    os.link(source, media / "Elsewhere" / LOOKALIKE)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_THE_RENAME, str(results), str(media), str(torrents)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    directory = media / "Film (2001)"
    [left] = [name for name in os.listdir(directory) if name not in ("Film.mkv", LOOKALIKE)]
    assert os.stat(directory / left).st_ino == os.stat(source).st_ino
    return directory


def assert_only_the_leftover_went(directory: pathlib.Path, media: pathlib.Path) -> None:
    assert sorted(os.listdir(directory)) == sorted(["Film.mkv", LOOKALIKE])
    assert (directory / "Film.mkv").read_bytes() == b"old"
    assert (directory / LOOKALIKE).read_bytes() == b"the operator's"
    assert os.listdir(media / "Elsewhere") == [LOOKALIKE]


def test_the_next_file_commands_remove_what_a_killed_hardlink_left(
    tmp_path: pathlib.Path,
) -> None:
    media, torrents = tmp_path / "media", tmp_path / "torrents"
    media.mkdir()
    torrents.mkdir()
    results = tmp_path / "state" / "command-results.json"
    directory = kill_a_hardlink_before_its_rename(results, media, torrents)
    volumes = [WatchPath(id="media", path=str(media)), WatchPath(id="torrents", path=str(torrents))]
    devices = {volume.id: os.stat(volume.path).st_dev for volume in volumes}

    FileCommands(results).clean_leftovers(volumes, devices)

    assert_only_the_leftover_went(directory, media)
    assert os.stat(torrents / "film.mkv").st_nlink == 2  # itself and the lookalike elsewhere


async def test_the_agent_removes_what_a_killed_hardlink_left_once_it_has_a_config(
    dev_api: DevApiServer, start_watcher: Any, make_volume: Any, state_file: pathlib.Path
) -> None:
    media, torrents = make_volume("media"), make_volume("torrents")
    results = results_path_for(str(state_file))
    directory = kill_a_hardlink_before_its_rename(results, media, torrents)
    dev_api.config = WatcherConfig(
        watch_paths=[
            WatchPath(id="media", path=str(media)),
            WatchPath(id="torrents", path=str(torrents)),
        ]
    )
    await start_watcher()
    with trio.fail_after(10):
        while len(os.listdir(directory)) > 2:
            await trio.sleep(0.02)
    assert_only_the_leftover_went(directory, media)
