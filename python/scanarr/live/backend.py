"""Which kernel interface the live watcher uses: inotify or fanotify (``SCANARR_LIVE_BACKEND``).

- ``inotify``: one watch per directory (``fs.inotify.max_user_watches`` applies), any
  filesystem, no privilege.
- ``fanotify``: one mark per filesystem (`scanarr.live.fanotify`): no watch limit, no kernel
  memory per directory. Needs CAP_SYS_ADMIN and Linux 5.17+. Asked for explicitly and not
  available, it is an error (`FanotifyUnavailable`), never a silent fallback; a volume whose
  filesystem fanotify cannot watch is then degraded (its directories "cannot be watched") and
  covered by rescans.
- ``auto`` (default): fanotify when the process may use it, else inotify; a filesystem
  fanotify cannot watch (no file handles: CIFS, most FUSE filesystems, a btrfs subvolume) gets
  inotify watches through the same instance.

Network and FUSE filesystems keep their periodic rescans whatever the backend: changes made by
other machines make no event for either (`scanarr.live.mounts`).
"""

from __future__ import annotations

import attrs

from scanarr.live.fanotify import Fanotify, FanotifyUnavailable, probe
from scanarr.live.inotify import Inotify


@attrs.frozen
class BackendChoice:
    """The backend in use and why (for the log, ``watcher.status``, metrics, doctor)."""

    name: str  # "inotify" or "fanotify"
    requested: str  # "auto", "inotify" or "fanotify"
    reason: str


def choose_backend(requested: str) -> BackendChoice:
    """Raises FanotifyUnavailable when fanotify was asked for and cannot be used."""
    if requested == "inotify":
        return BackendChoice("inotify", requested, "requested (SCANARR_LIVE_BACKEND=inotify)")
    why_not = probe()
    if requested == "fanotify":
        if why_not is not None:
            raise FanotifyUnavailable(why_not)
        return BackendChoice("fanotify", requested, "requested (SCANARR_LIVE_BACKEND=fanotify)")
    if why_not is not None:
        return BackendChoice("inotify", requested, f"fanotify unavailable: {why_not}")
    return BackendChoice(
        "fanotify", requested, "CAP_SYS_ADMIN and fanotify FAN_RENAME available (Linux 5.17+)"
    )


def open_backend(choice: BackendChoice, max_watches: int | None) -> Inotify | Fanotify:
    if choice.name == "fanotify":
        return Fanotify(max_watches, inotify_fallback=choice.requested == "auto")
    return Inotify(max_watches)
