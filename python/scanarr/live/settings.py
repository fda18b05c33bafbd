"""Tuning of the live watcher from the environment (durations in the Go syntax of config.py).

- ``SCANARR_FALLBACK_RESCAN_INTERVAL`` (5m): how often a volume the watch limit (or unwatchable
  directories) leaves partly unwatched is rescanned meanwhile.
- ``SCANARR_WATCH_RETRY_DELAY`` (30s) and ``SCANARR_WATCH_RETRY_MAX_DELAY`` (10m): the first and
  the longest delay between tries to watch those directories again (or a missing volume root);
  the delay doubles after each failed try.
- ``SCANARR_LIVE_BACKEND`` (auto): ``inotify`` (a watch per directory), ``fanotify`` (one mark
  per filesystem; needs CAP_SYS_ADMIN and Linux 5.17+, an error if unavailable) or ``auto``
  (fanotify when available, else inotify; see `scanarr.live.backend`).
"""

from __future__ import annotations

from collections.abc import Mapping

from scanarr.config import SettingsError, choice_from_env, parse_duration

# (LiveWatcher keyword, variable, default text)
LIVE_DURATION_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("fallback_rescan_interval", "SCANARR_FALLBACK_RESCAN_INTERVAL", "5m"),
    ("watch_retry_delay", "SCANARR_WATCH_RETRY_DELAY", "30s"),
    ("watch_retry_max_delay", "SCANARR_WATCH_RETRY_MAX_DELAY", "10m"),
)


LIVE_BACKEND_VARIABLE = "SCANARR_LIVE_BACKEND"
LIVE_BACKENDS: tuple[str, ...] = ("auto", "inotify", "fanotify")


def live_backend_from_env(environ: Mapping[str, str]) -> str:
    """``SCANARR_LIVE_BACKEND``: auto (default), inotify or fanotify. Raises SettingsError."""
    return choice_from_env(
        environ, LIVE_BACKEND_VARIABLE, LIVE_BACKENDS, "auto", expected="auto, inotify or fanotify"
    )


def live_options_from_env(environ: Mapping[str, str]) -> dict[str, float]:
    """Keyword arguments of `LiveWatcher` from the environment. Raises SettingsError."""
    options: dict[str, float] = {}
    for keyword, variable, default in LIVE_DURATION_VARIABLES:
        text = environ.get(variable, "").strip() or default
        try:
            value = parse_duration(text)
        except ValueError as error:
            raise SettingsError(variable, str(error)) from None
        if value <= 0:
            raise SettingsError(variable, "must be greater than zero")
        options[keyword] = value
    if options["watch_retry_max_delay"] < options["watch_retry_delay"]:
        options["watch_retry_max_delay"] = options["watch_retry_delay"]
    return options
