"""Mounts and immutable files for tests of what scanarr may touch; each skips with the reason
when this machine does not allow it."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
from collections.abc import Iterator

import pytest


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
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        pytest.skip("no mount command on this machine")
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({' '.join(command[:3])}): {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@contextlib.contextmanager
def immutable(path: pathlib.Path) -> Iterator[None]:
    """`chattr +i` on `path` (even root cannot unlink or replace it); skips when unsupported."""
    try:
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no chattr command on this machine")
    if result.returncode != 0:
        pytest.skip(f"chattr +i unsupported here: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
