"""Live events for tests, with plausible values for the fields a test does not care about."""

from __future__ import annotations

from scanarr.protocol import FileCreated


def created(volume_id: str, relative_path: str, inode: int = 1) -> FileCreated:
    return FileCreated(
        volume_id=volume_id,
        relative_path=relative_path,
        filename=relative_path.rpartition("/")[2],
        inode=inode,
        device_id=2049,
        size_bytes=10,
        hardlink_count=1,
    )
