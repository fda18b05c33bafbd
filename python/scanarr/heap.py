"""The C heap of a long-running agent: what a scan's walker threads free is given back.

glibc gives each thread that allocates its own heap arena (up to eight per core) and keeps
what is freed there for later use: after a scan of a large library by the walker's threads,
tens of MiB stay mapped in arenas that no thread uses any more, and ``malloc_trim`` can return
little of it (each arena is fragmented by what other threads still hold). Bounding the number
of arenas before any thread starts keeps the heap compact enough for ``malloc_trim``, which the
agent calls once a scan is over. Other C libraries (musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2  # the walker's threads share them; a scan measured no slower (bench/README.md)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 (glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def bound_arenas(environ: dict[str, str] | None = None) -> bool:
    """Limit glibc to `ARENAS` heap arenas, unless ``MALLOC_ARENA_MAX`` says otherwise; call
    before any thread starts. Whether the limit was set."""
    if (environ if environ is not None else os.environ).get("MALLOC_ARENA_MAX"):
        return False
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, ARENAS) == 1)


def trim() -> None:
    """Return the free memory at the top and inside the heap to the system (a few ms for a large
    heap: run it in a thread)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
