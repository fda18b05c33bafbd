"""What scanarr's walk skips that the Go watcher reported (PROTOCOL-V15.md §6, filters).

The V1.5 server wipes, on ``scan.completed``, every row a scan did not report. Scanarr skips some
media files on purpose — in hidden folders, on another filesystem mounted inside the volume,
symlinks, names that are not valid UTF-8 — where the Go watcher it replaces reported them, so
the operator would see those rows disappear. `count_unreported` counts each class (one walk,
in a worker thread, once per volume and process), so the agent can say so once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Sequence

import attrs

from scanarr.live.filters import is_system_dir


@attrs.frozen
class Unreported:
    hidden_folders: int = 0
    other_filesystems: int = 0
    symlinks: int = 0
    not_utf8: int = 0

    @property
    def total(self) -> int:
        return self.hidden_folders + self.other_filesystems + self.symlinks + self.not_utf8

    def describe(self) -> str:
        parts = [
            (self.hidden_folders, "in hidden folders"),
            (self.other_filesystems, "on other filesystems mounted inside the volume"),
            (self.symlinks, "symbolic links"),
            (self.not_utf8, "with names that are not valid UTF-8"),
        ]
        return ", ".join(f"{count} {what}" for count, what in parts if count)


def _extension(name: bytes) -> bytes | None:
    dot = name.rfind(b".")
    return name[dot + 1 :].lower() if dot > 0 else None


def count_unreported(root: str, exclude: Sequence[str], extensions: Collection[str]) -> Unreported:
    """Media files under `root` (not under the nested roots `exclude`) that scanarr does not
    report and the Go watcher did. Unreadable directories are passed over. Blocking."""
    wanted = {extension.lower().encode() for extension in extensions}
    excluded = {os.fsencode(os.path.normpath(path)) for path in exclude}
    try:
        root_device = os.stat(root).st_dev
    except OSError:
        return Unreported()
    counts = {"hidden": 0, "foreign": 0, "symlink": 0, "not_utf8": 0}
    # (directory, inside a hidden folder, on another filesystem)
    stack: list[tuple[bytes, bool, bool]] = [(os.fsencode(root), False, False)]
    while stack:
        directory, hidden, foreign = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            try:
                status = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(status.st_mode):
                if entry.path in excluded:
                    continue
                text = os.fsdecode(name)
                if is_system_dir(text):
                    continue
                stack.append(
                    (
                        entry.path,
                        hidden or name.startswith(b"."),
                        foreign or status.st_dev != root_device,
                    )
                )
                continue
            if _extension(name) not in wanted or name.startswith(b"."):
                continue
            if hidden:
                counts["hidden"] += 1
            elif foreign:
                counts["foreign"] += 1
            elif stat.S_ISLNK(status.st_mode):
                counts["symlink"] += 1
            else:
                try:
                    name.decode("utf-8")
                except UnicodeDecodeError:
                    counts["not_utf8"] += 1
    return Unreported(counts["hidden"], counts["foreign"], counts["symlink"], counts["not_utf8"])
