"""Running part of a test without root's powers.

Tests run as root here and in CI, and root reads directories whatever their mode. To check what a
user sees on an unreadable directory, the check runs in a forked child that has dropped to the
`nobody` uid; the tree it reads must be traversable by that uid (see `world_traversable_tmp`).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

NOBODY = 65534
T = TypeVar("T")


def is_root() -> bool:
    return os.geteuid() == 0


def run_unprivileged(function: Callable[[], T]) -> T:
    """Call `function` in a forked child running as uid/gid 65534 (when root) and return its
    result, which must be picklable. Exceptions in the child are re-raised here."""
    if not is_root():
        return function()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = pickle.dumps(("ok", function()))
        except BaseException as error:  # report everything to the parent
            payload = pickle.dumps(("error", error))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(payload)
    if status == "error":
        raise value
    return value  # type: ignore[no-any-return]


@contextmanager
def world_traversable_tmp() -> Iterator[Path]:
    """A temporary directory whose ancestors an unprivileged uid can traverse (pytest's tmp_path
    lives under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="scanarr-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for directory, _dirs, _files in os.walk(path):
            os.chmod(directory, 0o755)
        shutil.rmtree(path, ignore_errors=True)
