"""Messages the watcher sends, for tests, with plausible values for the fields a test does not
care about."""

from __future__ import annotations

from scanarr.protocol import ScanCompleted

# A file's own members of a scan.file's data, in PROTOCOL.md's order; they follow the scan's
# (scan_id, volume_id, volume_path), and `scanarr scan --jsonl` writes them after volume_path.
FILE_MEMBERS = [
    "relative_path",
    "filename",
    "inode",
    "device_id",
    "size_bytes",
    "hardlink_count",
    "mod_time",
]


def completed_scan(
    volume_id: str = "v", *, total_files: int = 1, duration_ms: int = 1
) -> ScanCompleted:
    """The scan.completed of scan "s" of `volume_id`."""
    return ScanCompleted(
        scan_id="s",
        volume_id=volume_id,
        total_files=total_files,
        total_dirs=3,
        total_size_bytes=1,
        duration_ms=duration_ms,
        disk_total_bytes=1,
        disk_free_bytes=1,
    )
