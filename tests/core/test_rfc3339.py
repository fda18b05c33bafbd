"""scanarr.rfc3339: the times of messages, log lines and files (the native encoder's parity is
checked in test_scan_engine)."""

from __future__ import annotations

import datetime

import pytest

from scanarr import rfc3339


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (1_767_225_600_500_000_000, "2026-01-01T00:00:00.5Z"),
        (-1_500_000_000, "1969-12-31T23:59:58.5Z"),  # a file dated before 1970
    ],
)
def test_nanosecond_times(nanoseconds: int, text: str) -> None:
    assert rfc3339.from_ns(nanoseconds) == text


def test_message_times_have_milliseconds_in_utc() -> None:
    moment = datetime.datetime(
        2026, 1, 2, 4, 4, 5, 678_901, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    assert rfc3339.utc_timestamp(moment) == "2026-01-02T03:04:05.678Z"
