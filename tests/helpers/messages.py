"""Messages the watcher sends, for tests, with plausible values for the fields a test does not
care about."""

from __future__ import annotations

from scanarr.protocol import ScanCompleted


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
