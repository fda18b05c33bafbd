"""What a scan must report, computed without scanarr code (os.walk and os.lstat)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def walk_entered(root: Path, entered: Callable[[str], bool]) -> Iterator[tuple[str, list[str]]]:
    """(directory, its file names) of `root` and each directory below it a scan enters: those
    `entered` accepts by name, never a symlink to a directory."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            name
            for name in dirnames
            if entered(name) and not os.path.islink(os.path.join(directory, name))
        ]
        yield directory, filenames


def lstat_ground_truth(
    root: Path, extensions: tuple[str, ...] = ("mkv", "mp4", "avi", "m4v", "ts", "wmv")
) -> dict[str, dict[str, Any]]:
    """What a scan of `root` must report, computed with os.walk/os.lstat (no scanarr code).

    Skips what PROTOCOL.md §6 filters out: hidden names, temporary and metadata files, system
    directories, symlinks, names that are not UTF-8.
    """
    system_directories = {"@eaDir", "$RECYCLE.BIN", "System Volume Information"}
    temporary = (".part", ".tmp", ".download", ".!qb")

    def entered(name: str) -> bool:
        return (
            not name.startswith(".")
            and name not in system_directories
            and not name.startswith(".Trash-")
        )

    expected: dict[str, dict[str, Any]] = {}
    for directory, filenames in walk_entered(root, entered):
        for name in filenames:
            path = os.path.join(directory, name)
            lower = name.lower()
            if name.startswith(".") or lower.endswith(temporary):
                continue
            if lower.rsplit(".", 1)[-1] not in extensions or "." not in lower:
                continue
            try:
                name.encode("utf-8")
                relative = os.path.relpath(path, root)
                relative.encode("utf-8")
            except UnicodeEncodeError:
                continue
            status = os.lstat(path)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            expected[relative] = {
                "relative_path": relative,
                "filename": name,
                "inode": status.st_ino,
                "device_id": status.st_dev,
                "size_bytes": status.st_size,
                "hardlink_count": status.st_nlink,
                "mtime_ns": status.st_mtime_ns,
            }
    return expected
