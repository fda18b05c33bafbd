"""Live watching of volumes with raw inotify (PROTOCOL.md §6); see `scanarr.live.service`."""

from scanarr.live.events import LiveEvent
from scanarr.live.service import (
    RESCAN_NESTED,
    RESCAN_NETWORK,
    RESCAN_OVERFLOW,
    RESCAN_ROOT_BACK,
    RESCAN_ROOT_LOST,
    RESCAN_UNKNOWN_WATCH,
    RESCAN_WATCH_LIMIT,
    RESCAN_WATCHES_RESTORED,
    LiveStats,
    LiveWatcher,
    RescanReason,
    VolumeHealth,
)

__all__ = [
    "RESCAN_NESTED",
    "RESCAN_NETWORK",
    "RESCAN_OVERFLOW",
    "RESCAN_ROOT_BACK",
    "RESCAN_ROOT_LOST",
    "RESCAN_UNKNOWN_WATCH",
    "RESCAN_WATCHES_RESTORED",
    "RESCAN_WATCH_LIMIT",
    "LiveEvent",
    "LiveStats",
    "LiveWatcher",
    "RescanReason",
    "VolumeHealth",
]
