"""The agent bounds glibc's heap arenas so that a scan's memory is given back (scanarr.heap);
how much comes back is measured in bench/ (`bench_live.py scale`), not asserted here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scanarr import heap

pytestmark = pytest.mark.skipif(heap._libc() is None, reason="not glibc")

_BOUND = "from scanarr import heap; print(heap.bound_arenas())"


def _bound(**env: str) -> str:
    environ = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", _BOUND],
        capture_output=True,
        text=True,
        check=True,
        env={**environ, **env},
    )
    return done.stdout.strip()


def test_arenas_are_bounded_unless_the_user_set_malloc_arena_max() -> None:
    assert _bound() == "True"
    assert _bound(MALLOC_ARENA_MAX="8") == "False"
