"""Why the watcher rescans a volume by itself, and why a live event is not delivered as one.

Each reason carries two fixed facts: its `text` (what the log says, and with it the V1.5
dialect's ``watcher.log``) and its metric `label` (``scanarr_rescans{reason}``,
``scanarr_events_dropped{reason}``). The label is never derived from the text, so rewording a
message or adding a detail cannot move a series an alert is written against.

A leaf module: the live watcher, the agent and `scanarr.metrics` all import it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class _Reason(enum.Enum):
    """A member is (`text`, `label`)."""

    text: str
    label: str

    def __init__(self, text: str, label: str) -> None:
        self.text = text
        self.label = label


class RescanReason(_Reason):
    """Why a volume is rescanned without the API asking."""

    # The live watcher's.
    OVERFLOW = ("event queue overflow", "event_queue_overflow")  # the log names the backend
    UNKNOWN_WATCH = ("event for an unknown watch", "event_for_an_unknown_watch")
    ROOT_LOST = ("volume root lost", "volume_root_lost")  # with a detail: deleted, moved...
    ROOT_BACK = ("volume root available again", "volume_root_available_again")
    WATCH_LIMIT = ("watch limit: part of the volume is not watched", "watch_limit")
    WATCHES_RESTORED = ("every directory watched again", "every_directory_watched_again")
    NETWORK = ("network filesystem: remote changes make no event", "network_filesystem")
    NESTED = ("nested volumes changed", "nested_volumes_changed")
    # The agent's: live events it could not deliver or keep.
    DISCONNECTED = ("live events while disconnected", "live_events_while_disconnected")
    STORE_FULL = ("the offline event queue overflowed", "the_offline_event_queue_overflowed")
    STORE_OVERFLOWED = (
        "the offline event queue overflowed while disconnected",
        "the_offline_event_queue_overflowed_while_disconnected",
    )

    def describe(self, detail: str | None = None) -> str:
        """The text for the log: `text`, then ``": "`` and `detail` when there is one."""
        return self.text if detail is None else f"{self.text}: {detail}"


class DroppedEvents(_Reason):
    """Why a live event was not delivered as an event (a rescan covers it)."""

    NO_STORE = ("disconnected without an offline queue", "disconnected_without_an_offline_queue")
    STORE_FULL = ("offline queue full", "offline_queue_full")


# (volume_id, reason, detail or None): how the live watcher asks the agent for a rescan. Sync,
# must not block; the result is ignored.
RequestRescan = Callable[[str, RescanReason, str | None], object]
