"""The live backend a test runs against (`live_backend` fixture in conftest.py)."""

from __future__ import annotations

import functools
import os

import pytest

LIVE_BACKENDS: tuple[str, ...] = ("inotify", "fanotify")
VARIABLE = "SCANARR_LIVE_BACKEND"


def live_backend_option() -> str:
    """The backend of the running test (set by the `live_backend` fixture), for `LiveWatcher`."""
    return os.environ.get(VARIABLE, "inotify")


@functools.cache
def fanotify_unavailable() -> str | None:
    """Why fanotify cannot be used by this process (None: it can)."""
    from scanarr.live.fanotify import probe

    return probe()


# A test of what only inotify has (its watch limit, scanarr's own cap of inotify watches).
inotify_only = pytest.mark.parametrize("live_backend", ["inotify"], indirect=True)
