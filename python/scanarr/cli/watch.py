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

from scanarr.config import SettingsError, load_settings

# (flag, variable) pairs: each flag overrides its environment variable.
FLAG_VARIABLES: tuple[tuple[str, str], ...] = (
    ("--api-url", "SCANARR_API_URL"),
    ("--reconnect-delay", "SCANARR_RECONNECT_DELAY"),
    ("--ping-interval", "SCANARR_PING_INTERVAL"),
    ("--log-level", "SCANARR_LOG_LEVEL"),
    ("--state-file", "SCANARR_STATE_FILE"),
    ("--hello-timeout", "SCANARR_HELLO_TIMEOUT"),
    ("--status-interval", "SCANARR_STATUS_INTERVAL"),
    ("--progress-interval", "SCANARR_PROGRESS_INTERVAL"),
    ("--shutdown-timeout", "SCANARR_SHUTDOWN_TIMEOUT"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="run the watcher agent (connects to the Scanarr API)",
        description=(
            "Connect to the Scanarr API, scan and watch the volumes it configures, and carry "
            "out its commands. Settings come from SCANARR_* environment variables; the token "
            "only from SCANARR_AUTH_TOKEN."
        ),
    )
    for flag, variable in FLAG_VARIABLES:
        parser.add_argument(flag, metavar="VALUE", help=f"overrides {variable}")
    parser.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        variable: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, variable in FLAG_VARIABLES
    }


def run(args: argparse.Namespace) -> int:
    from scanarr.agent.runtime import check_environment, run_watcher
    from scanarr.logs import configure_logging, log_format_from_env

    environ = dict(os.environ)
    try:
        settings = load_settings(environ, overrides=_overrides(args))
        log_format = log_format_from_env(environ)
        check_environment(environ)
    except SettingsError as error:
        print(f"scanarr watch: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, log_format, secrets=[settings.auth_token])
    trio.run(run_watcher, settings, environ)
    return 0
