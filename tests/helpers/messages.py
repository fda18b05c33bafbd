"""Messages the watcher sends, for tests, with plausible values for the fields a test does not
care about."""

from __future__ import annotations

import json
from pathlib import Path

from scanarr.protocol import ScanCompleted


def _documented_jsonl_keys() -> list[str]:
    """The keys of the `scanarr scan --jsonl` object README.md shows ("exactly these keys")."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("exactly these keys:", 1)[1].split("```json\n", 1)[1]
    keys = list(json.loads(example.split("\n", 1)[0]))
    assert keys[0] == "volume_path", keys
    return keys


# A file's own members of a scan.file's data, in the order README.md lists them for
# `scanarr scan --jsonl` (after volume_path); in a scan.file they follow the scan's
# (scan_id, volume_id, volume_path).
FILE_MEMBERS = _documented_jsonl_keys()[1:]


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
