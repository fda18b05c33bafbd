"""Log setup of the watcher: human lines by default, JSON lines with ``SCANARR_LOG_FORMAT=json``.

Lines go to stderr (journald and ``docker logs`` pick them up). Two conventions hold for every
module:

- **A line about a volume names it.** The text says ``volume <id>`` as the agent's messages do,
  and the record carries the id as ``extra={"volume_id": ...}`` — or use `volume_logger`, a
  `logging.LoggerAdapter` that adds it to every call. JSON lines then have a ``volume_id`` field
  to filter on; human lines end with ``[volume=<id>]`` when the text does not already name it.
- **The token never appears.** Secrets are kept out of log records where they are produced:
  the hello and the ``Authorization`` header are never logged, and a URL is logged through
  `redact_url` (no user info, query values replaced). `RedactSecrets`, installed on the handler
  by `configure_logging`, is only a backstop: it replaces each secret of at least
  `MIN_REDACTED_LENGTH` characters in the message, its arguments, extra fields, the formatted
  traceback and stack with ``[redacted]``, and both formatters check the finished line once
  more. A shorter secret is not scrubbed: replacing every occurrence of a few common characters
  would mangle every line (and tell a reader which characters the token is made of).

Extra fields (``extra={...}``) other than LogRecord's own attributes become JSON fields.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
import urllib.parse
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping
from typing import Any, TextIO

from scanarr.config import LOG_LEVELS, choice_from_env
from scanarr.rfc3339 import utc_timestamp

LOG_FORMAT_VARIABLE = "SCANARR_LOG_FORMAT"
LOG_FORMATS = ("human", "json")
REDACTED = "[redacted]"
# Shorter secrets are not scrubbed from log lines (see the module docstring).
MIN_REDACTED_LENGTH = 8
VOLUME_FIELD = "volume_id"

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}

# Libraries whose debug output is one line per frame or per connection attempt.
_CHATTY_LOGGERS = ("trio-websocket",)


def log_format_from_env(environ: Mapping[str, str]) -> str:
    """``human`` (default) or ``json`` from ``SCANARR_LOG_FORMAT``. Raises SettingsError."""
    return choice_from_env(environ, LOG_FORMAT_VARIABLE, LOG_FORMATS, "human")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record got from ``extra=...``."""
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


def redact_url(url: str) -> str:
    """`url` fit for a log line: user info dropped, every query value and the fragment replaced
    with ``[redacted]`` (a token may ride in either)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}={REDACTED}" if separator else REDACTED
        for name, separator, _value in (
            item.partition("=") for item in parts.query.split("&") if item
        )
    )
    fragment = REDACTED if parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


class RedactSecrets(logging.Filter):
    """Backstop: replaces every secret of `MIN_REDACTED_LENGTH` characters or more in a record,
    whatever part of it would carry it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(
            secret for secret in secrets if secret and len(secret) >= MIN_REDACTED_LENGTH
        )
        # A secret also shows escaped: inside a repr() (a %r argument, an exception's args) and
        # inside a JSON string. Longest first, so no variant leaves a piece of another behind.
        variants: set[str] = set()
        for secret in self.secrets:
            for form in (secret, repr(secret)[1:-1]):
                variants.update((form, json.dumps(form, ensure_ascii=False)[1:-1]))
        self._variants = tuple(sorted(variants, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for variant in self._variants:
            if variant in text:
                text = text.replace(variant, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it, with the raw text
            message = str(record.msg)
        redacted = self.redact(message)
        if redacted != message or record.args:
            # Freeze the message: arguments formatted later could not be checked.
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


def _names_volume(record: logging.LogRecord, volume_id: str) -> bool:
    return f"volume {volume_id}" in record.getMessage()


class HumanFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO scanarr.agent.scans: text [volume=movies]``."""

    def __init__(self, redact: RedactSecrets | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        volume_id = getattr(record, VOLUME_FIELD, None)
        if volume_id is not None and not _names_volume(record, str(volume_id)):
            first, newline, rest = line.partition("\n")
            line = f"{first} [volume={volume_id}]{newline}{rest}"
        return self._redact.redact(line) if self._redact else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339 UTC), level, logger, message, extra fields,
    and ``exception`` / ``stack`` when there is one."""

    def __init__(self, redact: RedactSecrets | None = None) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        document: dict[str, Any] = {
            "time": utc_timestamp(moment),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            document.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(document, ensure_ascii=False, default=repr)
        return self._redact.redact(line) if self._redact else line


def configure_logging(
    level: str = "info",
    log_format: str = "human",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record to `stream` (stderr) in `log_format`, secrets redacted.

    Replaces the root logger's handlers; returns the handler installed.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}")
    redact = RedactSecrets(secrets)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(redact)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else HumanFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS.get(level, logging.INFO))
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    return handler


class VolumeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every record carries ``volume_id`` (and ``volume_path`` when known).

    Unlike the standard adapter, ``extra`` given to a call is merged, not replaced.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def volume_logger(
    logger: logging.Logger, volume_id: str, volume_path: str | None = None
) -> VolumeLogger:
    """``volume_logger(log, "movies").info("scan started")`` → a line naming volume movies."""
    extra: dict[str, object] = {VOLUME_FIELD: volume_id}
    if volume_path is not None:
        extra["volume_path"] = volume_path
    return VolumeLogger(logger, extra)


# --- repeating conditions ----------------------------------------------------------------------


class RepeatingCondition:
    """A warning about a condition that lasts (the inotify watch limit, unwatchable folders,
    unreadable paths), checked again and again by retries.

    `occurred` logs the warning the first time, when the condition starts; while it lasts,
    further occurrences are only counted, and summarised in one line at most once per
    `summary_interval` (60 s). `ended` logs once when it is over. So a retry every second writes
    two lines when the condition starts and ends, and one a minute in between — never one per
    retry. Conditions are told apart by a key (e.g. ``("watch limit", volume_id)``).
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
        *,
        summary_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = summary_interval
        self._clock = clock
        # key → [first message, repeats not summarised yet, time of the last line, started at]
        self._active: dict[Hashable, list[Any]] = {}

    def active(self, key: Hashable) -> bool:
        return key in self._active

    def occurred(
        self,
        key: Hashable,
        message: str,
        *args: object,
        level: int = logging.WARNING,
        **kwargs: Any,
    ) -> bool:
        """The condition `key` holds (again). Returns True when a line was written."""
        now = self._clock()
        state = self._active.get(key)
        if state is None:
            self._active[key] = [message % args if args else message, 0, now, now]
            self._logger.log(level, message, *args, **kwargs)
            return True
        state[1] += 1
        if now - state[2] < self._interval:
            return False
        self._logger.log(
            level,
            "still: %s (%d more times in the last %d s, for %d s now)",
            state[0],
            state[1],
            round(now - state[2]),
            round(now - state[3]),
            **kwargs,
        )
        state[1], state[2] = 0, now
        return True

    def ended(
        self,
        key: Hashable,
        message: str,
        *args: object,
        level: int = logging.INFO,
        **kwargs: Any,
    ) -> bool:
        """The condition `key` is over: logs `message` if it was active. Returns True if so."""
        if self._active.pop(key, None) is None:
            return False
        self._logger.log(level, message, *args, **kwargs)
        return True
