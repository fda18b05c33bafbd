"""`scanarr watch` (also `scanarr-watcher`): run the watcher agent against the Scanarr API.

Configured by the environment (PROTOCOL.md §1; also ``SCANARR_LOG_FORMAT`` and
``SCANARR_METRICS_ADDR``); the flags below override the variables they name. The token is read
from ``SCANARR_AUTH_TOKEN`` only: a command-line argument would be visible to every user of the
host in the process list. The process itself is assembled in `scanarr.agent.runtime`.

Exit codes: 0 after SIGTERM/SIGINT (connection closed with 1000, state saved), 2 for a missing or
invalid setting (one line naming the variable; no connection attempted).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import trio

from scanarr import heap
from scanarr.config import DEFAULT_STATE_FILE, SettingsError, load_settings

# (flag, variable, default, meaning): each flag overrides its environment variable.
FLAG_VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    ("--api-url", "SCANARR_API_URL", "required", "ws:// or wss:// URL of the API"),
    ("--reconnect-delay", "SCANARR_RECONNECT_DELAY", "5s", "first reconnect delay (doubling)"),
    ("--ping-interval", "SCANARR_PING_INTERVAL", "30s", "no pong within two → reconnect"),
    ("--log-level", "SCANARR_LOG_LEVEL", "info", "debug, info, warning or error"),
    ("--state-file", "SCANARR_STATE_FILE", DEFAULT_STATE_FILE, "persisted state"),
    ("--hello-timeout", "SCANARR_HELLO_TIMEOUT", "30s", "wait for auth and config"),
    ("--status-interval", "SCANARR_STATUS_INTERVAL", "60s", "watcher.status period"),
    ("--progress-interval", "SCANARR_PROGRESS_INTERVAL", "5s", "scan.progress at least this often"),
    ("--shutdown-timeout", "SCANARR_SHUTDOWN_TIMEOUT", "5s", "SIGTERM: closed and saved within"),
)

EPILOG = """other variables:
  SCANARR_AUTH_TOKEN           the watcher's token (never logged; optional with a V1.5 API)
  SCANARR_PROTOCOL             auto (default), v2 or v1.5 (the released Scanarr API)
  SCANARR_WATCHER_ID           identity for a V1.5 API (default: a UUID kept in the state file)
  SCANARR_WS_URL, SCANARR_STATE_PATH  the Go watcher's names of SCANARR_API_URL, _STATE_FILE
  SCANARR_RECONNECT_MAX_DELAY  cap of the reconnect backoff (60s)
  SCANARR_REJECTED_MAX_DELAY   cap of the backoff after a rejected token (5m)
  SCANARR_LOG_FORMAT           human (default) or json
  SCANARR_METRICS_ADDR         HOST:PORT of /metrics, /livez, /readyz (off by default)
  SCANARR_LIVE_WATCH           on (default) or off: off only scans, no inotify
  SCANARR_LIVE_BACKEND         auto (default), inotify or fanotify (needs CAP_SYS_ADMIN);
                               also --live-backend
  SCANARR_FALLBACK_RESCAN_INTERVAL  rescan of a partly unwatched volume (5m)
  SCANARR_WATCH_RETRY_DELAY    first retry of unwatched folders (30s), doubling up to
  SCANARR_WATCH_RETRY_MAX_DELAY  (10m)
durations are Go-style: 500ms, 5s, 2m, 1h30m"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "watch",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run the watcher agent (connects to the Scanarr API)",
        description=(
            "Connect to the Scanarr API, scan and watch the volumes it configures, and carry "
            "out its commands. Settings come from SCANARR_* environment variables; the token "
            "only from SCANARR_AUTH_TOKEN."
        ),
    )
    for flag, variable, default, meaning in FLAG_VARIABLES:
        parser.add_argument(
            flag, metavar="VALUE", help=f"{meaning}; overrides {variable} ({default})"
        )
    parser.add_argument(
        "--live-backend",
        metavar="VALUE",
        help="auto, inotify or fanotify; overrides SCANARR_LIVE_BACKEND (auto)",
    )
    parser.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        variable: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, variable, _default, _meaning in FLAG_VARIABLES
    }


def run(args: argparse.Namespace) -> int:
    from scanarr.agent.runtime import check_environment, run_watcher
    from scanarr.logs import configure_logging, log_format_from_env

    environ = dict(os.environ)
    if getattr(args, "live_backend", None) is not None:
        environ["SCANARR_LIVE_BACKEND"] = args.live_backend
    try:
        settings = load_settings(environ, overrides=_overrides(args))
        log_format = log_format_from_env(environ)
        check_environment(environ)
    except SettingsError as error:
        print(f"scanarr watch: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, log_format, secrets=[settings.auth_token])
    heap.bound_arenas(environ)  # before any thread starts (see scanarr.heap)
    trio.run(run_watcher, settings, environ)
    return 0
