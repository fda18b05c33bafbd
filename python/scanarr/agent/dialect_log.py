"""``watcher.log`` in the V1.5 dialect: scanarr's own log lines, forwarded to the server's UI."""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from scanarr.protocol import utc_timestamp
from scanarr.protocol_v15 import Log15

_LEVEL_NAMES = {logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}
_CONFIG_LEVELS = {
    "debug": logging.INFO,  # never debug: one line per file would flood the server
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# A record carrying this extra field was already sent as its own watcher.log.
FORWARDED = "forwarded_to_server"


class LogForwarder(logging.Handler):
    """Keeps scanarr's warnings and errors (info too when the config's ``log_level`` asks) as
    ``watcher.log`` messages, redacted and rate-limited, for the session to send."""

    BURST = 20
    PER_SECOND = 0.5
    MAX_KEPT = 200
    MAX_MESSAGE = 4000

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__(logging.INFO)
        self.redact = redact
        self.threshold = logging.WARNING
        self.kept: collections.deque[Log15] = collections.deque(maxlen=self.MAX_KEPT)
        self.suppressed = 0
        self._allowance = float(self.BURST)
        self._last = time.monotonic()
        self._trio_token = trio.lowlevel.current_trio_token()
        self.wakeup = trio.Event()

    def set_level_name(self, name: str | None) -> None:
        self.threshold = _CONFIG_LEVELS.get((name or "").lower(), logging.WARNING)

    def keep(self, entry: Log15) -> None:
        """Forward `entry` as it is (no rate limit)."""
        self.kept.append(entry)
        self.wakeup.set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < self.threshold or not record.name.startswith("scanarr"):
            return
        if getattr(record, FORWARDED, False):
            return
        now = time.monotonic()
        self._allowance = min(self.BURST, self._allowance + (now - self._last) * self.PER_SECOND)
        self._last = now
        if self._allowance < 1:
            self.suppressed += 1
            return
        self._allowance -= 1
        try:
            text = self.redact(record.getMessage())
        except Exception:
            text = self.redact(str(record.msg))
        if self.suppressed:
            text += f" ({self.suppressed} earlier messages not forwarded: rate limit)"
            self.suppressed = 0
        context: dict[str, Any] = {"logger": record.name}
        volume_id = getattr(record, "volume_id", None)
        if isinstance(volume_id, str):
            context["path"] = volume_id
        level = _LEVEL_NAMES.get(min(record.levelno, logging.ERROR), "warning")
        self.kept.append(
            Log15(
                level=level,
                message=text[: self.MAX_MESSAGE],
                timestamp=utc_timestamp(),
                context=context,
            )
        )
        with contextlib.suppress(trio.RunFinishedError):
            self._trio_token.run_sync_soon(self.wakeup.set)
