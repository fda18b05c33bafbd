"""Live watching of volumes with raw inotify (PROTOCOL.md §6); see `scanarr.live.service`."""

from scanarr.live.events import LiveEvent
from scanarr.live.service import LiveStats, LiveWatcher, RescanReason, VolumeHealth

__all__ = [
    "LiveEvent",
    "LiveStats",
    "LiveWatcher",
    "RescanReason",
    "VolumeHealth",
]
