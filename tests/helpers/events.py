"""Live events for tests, with plausible values for the fields a test does not care about."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from scanarr.protocol import FileCreated, FileDeleted, FileRenamed


def created(
    volume_id: str, relative_path: str, inode: int = 1, hardlink_count: int = 1
) -> FileCreated:
    return FileCreated(
        volume_id=volume_id,
        relative_path=relative_path,
        filename=relative_path.rpartition("/")[2],
        inode=inode,
        device_id=2049,
        size_bytes=10,
        hardlink_count=hardlink_count,
    )


def deleted(volume_id: str, relative_path: str) -> FileDeleted:
    return FileDeleted(
        volume_id=volume_id,
        relative_path=relative_path,
        filename=relative_path.rpartition("/")[2],
    )


def created_on_disk(root: Path, relative_path: str, volume_id: str) -> FileCreated:
    """The ``file.created`` of the file at `root`/`relative_path`, with what lstat says of it."""
    status = os.lstat(root / relative_path)
    return FileCreated(
        volume_id=volume_id,
        relative_path=relative_path,
        filename=os.path.basename(relative_path),
        inode=status.st_ino,
        device_id=status.st_dev,
        size_bytes=status.st_size,
        hardlink_count=status.st_nlink,
    )


def renamed(old_relative_path: str, file: FileCreated) -> FileRenamed:
    """`file`, as `created` or `created_on_disk` describe it, renamed from `old_relative_path`."""
    fields = attrs.asdict(file)
    fields["new_relative_path"] = fields.pop("relative_path")
    return FileRenamed(old_relative_path=old_relative_path, **fields)
