"""The one RFC 3339 formatter on the Python side: UTC, a ``Z``, as the protocol writes times.

Two precisions: `utc_timestamp` (milliseconds) for when a message or a log line was made, and
`from_ns` (a file's ``mtime`` in nanoseconds, trailing zeros trimmed, as the native encoder of
``scan.file`` writes it — a live event and a scan of one file must give the same text).
"""

from __future__ import annotations

import datetime

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_SECONDS = "%Y-%m-%dT%H:%M:%S"


def utc_timestamp(moment: datetime.datetime | None = None) -> str:
    """`moment` (default: now) in UTC with milliseconds: ``2026-01-02T03:04:05.678Z``."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime(_SECONDS) + f".{moment.microsecond // 1000:03d}Z"


def from_ns(nanoseconds_since_epoch: int) -> str:
    """A time in nanoseconds since the epoch: ``2026-01-02T03:04:05.5Z`` (no fraction when 0)."""
    seconds, nanoseconds = divmod(nanoseconds_since_epoch, 1_000_000_000)
    text = (_EPOCH + datetime.timedelta(seconds=seconds)).strftime(_SECONDS)
    if nanoseconds:
        text += "." + f"{nanoseconds:09d}".rstrip("0")
    return text + "Z"
