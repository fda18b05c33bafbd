"""Scanning volumes from Python: a thin layer over the native walker.

``Scan`` owns one native ``Walker``. Pull its batches with ``next_batch`` (blocking for at most its
timeout, with the GIL released, so ``trio.to_thread.run_sync(scan.next_batch)`` never blocks the
event loop) or iterate ``records()`` for attrs ``ScanRecord`` objects. Leaving the ``with`` block
cancels the walk.

Hot paths (the agent, ``scanarr scan --jsonl``) stay on batches and ``Batch.json_records`` so no
Python object is built per file; ``ScanRecord`` is for callers that want objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Literal

import attrs

from scanarr import _native
from scanarr._native import Batch, FileRecord, WalkError, WalkStats
from scanarr.rfc3339 import from_ns

__all__ = [
    "DEFAULT_EXTENSIONS",
    "Batch",
    "Scan",
    "ScanRecord",
    "WalkError",
    "WalkStats",
    "rfc3339_from_ns",
    "scan",
]

DEFAULT_EXTENSIONS: tuple[str, ...] = _native.DEFAULT_EXTENSIONS
FingerprintMode = Literal["full", "sampled"]


rfc3339_from_ns = from_ns  # a file's mtime as `scan.file` carries it (scanarr.rfc3339)


@attrs.frozen(slots=True)
class ScanRecord:
    """One media file found by a scan (PROTOCOL.md §4 field names)."""

    volume_path: str | bytes
    relative_path: str | bytes
    filename: str | bytes
    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int
    mtime_ns: int
    fingerprint: str | None = None

    @property
    def mod_time(self) -> str:
        return rfc3339_from_ns(self.mtime_ns)


def _parse_extensions(extensions: Sequence[str] | None) -> list[str] | None:
    if extensions is None:
        return None
    return [extension.strip().lower().lstrip(".") for extension in extensions if extension.strip()]


class Scan:
    """A running scan over `roots`; see the module docstring."""

    def __init__(
        self,
        roots: Sequence[str | bytes],
        *,
        extensions: Sequence[str] | None = DEFAULT_EXTENSIONS,
        all_files: bool = False,
        threads: int = 0,
        exclude: Sequence[str | bytes] = (),
        same_device: bool = True,
        fingerprint: FingerprintMode | None = None,
        sample_size: int = _native.DEFAULT_SAMPLE_SIZE,
        batch_size: int = 1024,
        max_pending_batches: int = 4,
    ) -> None:
        # `all_files` reports every regular file; hidden names and system directories stay out
        # because they are never part of a library (thumbnails, recycle bins, dot-files).
        self._walker = _native.Walker(
            list(roots),
            extensions=None if all_files else _parse_extensions(extensions),
            skip_temp=not all_files,
            skip_metadata=not all_files,
            exclude=list(exclude),
            same_device=same_device,
            threads=threads,
            batch_size=batch_size,
            max_pending_batches=max_pending_batches,
            fingerprint=fingerprint,
            sample_size=sample_size,
        )
        self.roots: list[str | bytes] = self._walker.roots
        self.errors: list[WalkError] = []

    def __enter__(self) -> Scan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()

    def next_batch(self, timeout: float = 0.1) -> Batch | None:
        """The next batch (possibly empty on timeout), or None when the walk is over.

        Errors of each batch are also collected in `self.errors`.
        """
        batch = self._walker.next_batch(timeout)
        if batch is not None and batch.errors:
            self.errors.extend(batch.errors)
        return batch

    def batches(self) -> Iterator[Batch]:
        """Every non-empty batch until the walk is over (blocking)."""
        while (batch := self.next_batch()) is not None:
            if len(batch) or batch.errors:
                yield batch

    def record(self, file: FileRecord) -> ScanRecord:
        return ScanRecord(
            volume_path=self.roots[file.root_index],
            relative_path=file.relative_path,
            filename=file.filename,
            inode=file.inode,
            device_id=file.device_id,
            size_bytes=file.size_bytes,
            hardlink_count=file.hardlink_count,
            mtime_ns=file.mtime_ns,
            fingerprint=file.fingerprint,
        )

    def records(self) -> Iterator[ScanRecord]:
        for batch in self.batches():
            for file in batch.files:
                yield self.record(file)

    def stats(self, root_index: int | None = None) -> WalkStats:
        return self._walker.stats(root_index)

    def cancel(self) -> None:
        self._walker.cancel()

    @property
    def cancelled(self) -> bool:
        return self._walker.cancelled


def scan(roots: Sequence[str | bytes], **options: object) -> Iterator[ScanRecord]:
    """Every media file under `roots` as `ScanRecord`s; errors are in `Scan.errors`.

    A convenience for scripts; options are those of `Scan`.
    """
    with Scan(roots, **options) as running:  # type: ignore[arg-type]
        yield from running.records()
