"""`scanarr watch` (also `scanarr-watcher`): run the watcher agent against the Scanarr API.

Configured by the environment (PROTOCOL.md §1); the flags below override the variables they
name. The token is read from ``SCANARR_AUTH_TOKEN`` only: a command-line argument would be
visible to every user of the host in the process list.

Exit codes: 0 after SIGTERM/SIGINT (connection closed with 1000, state saved), 2 for a missing or
invalid setting (one line naming the variable; no connection attempted).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from scanarr.config import LOG_LEVELS, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from scanarr.agent import WatcherAgent

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


class _RedactToken(logging.Filter):
    """Defence in depth: no log line may carry the token, whatever formatted it."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._token in message:
            record.msg = message.replace(self._token, "[token]")
            record.args = None
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactToken(settings.auth_token))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[settings.log_level])
    # trio-websocket logs every frame at debug; keep it at info even in debug mode.
    logging.getLogger("trio-websocket").setLevel(max(logging.INFO, root.level))


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(overrides=_overrides(args))
    except SettingsError as error:
        print(f"scanarr watch: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    trio.run(_watch, settings)
    return 0


async def _watch(settings: Settings) -> None:
    from scanarr.agent import WatcherAgent

    agent = WatcherAgent(settings)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, agent, signals, nursery.cancel_scope)
            await agent.run()
            nursery.cancel_scope.cancel()


async def _stop_on_signal(
    agent: WatcherAgent, signals: AsyncIterator[int], scope: trio.CancelScope
) -> None:
    """First signal: graceful stop. Second: stop now (the state is still saved)."""
    stopping = False
    async for signal_number in signals:
        if stopping:
            scope.cancel()
            return
        logging.getLogger("scanarr.watch").info(
            "received %s; stopping", signal.Signals(signal_number).name
        )
        agent.request_stop()
        stopping = True
