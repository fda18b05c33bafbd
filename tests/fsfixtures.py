"""Mounts and immutable files for tests of what scanarr may touch; each skips with the reason
when this machine does not allow it."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def _applied(command: list[str], undo: list[str], refused: str) -> Iterator[None]:
    """Run `command` for the body and `undo` after it; skips (`refused`: why) when the machine
    has no such command or refuses it."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        pytest.skip(f"no {command[0]} command on this machine")
    if result.returncode != 0:
        pytest.skip(f"{refused}: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


@contextlib.contextmanager
def mounted(
    target: pathlib.Path, bind_source: pathlib.Path | None = None, *, size: str = "8m"
) -> Iterator[None]:
    """A tmpfs of `size` (or a bind mount of `bind_source`) on `target`; skips when mounting is
    denied."""
    target.mkdir(exist_ok=True)
    if bind_source is None:
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "scanarr-test", str(target)]
    else:
        command = ["mount", "--bind", str(bind_source), str(target)]
    refused = f"cannot mount here ({' '.join(command[:3])})"
    with _applied(command, ["umount", "-l", str(target)], refused):
        yield


@contextlib.contextmanager
def immutable(path: pathlib.Path) -> Iterator[None]:
    """`chattr +i` on `path` (even root cannot unlink or replace it); skips when unsupported."""
    with _applied(
        ["chattr", "+i", str(path)], ["chattr", "-i", str(path)], "chattr +i unsupported here"
    ):
        yield
