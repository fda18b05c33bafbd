"""What the watcher sends must be text a strict JSON peer can read."""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def assert_all_text(value: Any) -> None:
    """Every string in `value` (a decoded JSON document) is valid Unicode: no lone surrogate."""
    if isinstance(value, str):
        assert not _SURROGATE.search(value), f"the watcher sent a lone surrogate: {value[:80]!r}"
    elif isinstance(value, list):
        for item in value:
            assert_all_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_all_text(key)
            assert_all_text(item)
