"""Contract of scanarr's native engine (``scanarr._native``), checked by ``mypy.stubtest``.

The engine walks volume roots in parallel on its own threads, ``lstat``s the files that pass the
filters and streams them to Python in bounded batches that Python pulls. Every call that can take
long releases the GIL and returns within a bounded time, so callers may run it through
``trio.to_thread.run_sync`` and still cancel promptly.

Paths cross the boundary as ``str`` when they are valid UTF-8 and as ``bytes`` otherwise.
"""

from collections.abc import Sequence
from typing import Final, Literal

__version__: Final[str]

DEFAULT_EXTENSIONS: Final[tuple[str, ...]]  # mkv mp4 avi m4v ts wmv
DEFAULT_SAMPLE_SIZE: Final[int]  # 1 MiB: head and tail sample of a `sampled` fingerprint
DEFAULT_THREADS: Final[int]  # walker threads when `threads=0`, chosen by measurement

FingerprintMode = Literal["full", "sampled"]

class FileRecord:
    """One media file, as `lstat` saw it. Returned by `Batch.files`."""

    root_index: int  # index into the walker's `roots`
    relative_path: str | bytes  # POSIX, relative to the root, no leading "/"
    inode: int
    device_id: int
    hardlink_count: int
    size_bytes: int
    mtime_ns: int  # st_mtime in nanoseconds since the epoch (may be negative)
    fingerprint: str | None  # "xxh3-128:<32 hex>" when the walker fingerprints, else None
    fingerprint_error: str | None  # why the fingerprint could not be computed (file still listed)
    @property
    def filename(self) -> str | bytes: ...

class WalkError:
    """A failure met during the walk. Errors are data: the walk goes on past them."""

    root_index: int
    path: str | bytes  # absolute path of what failed
    errno: int  # 0 when the error is not an OS error
    kind: Literal["root", "read_dir", "stat", "fingerprint"]
    message: str  # strerror-style text, e.g. "Permission denied (os error 13)"

class Batch:
    """Up to `batch_size` files and the errors met since the previous batch."""

    files: list[FileRecord]
    errors: list[WalkError]
    dirs_walked: int  # directories read completely or partially since the previous batch
    def __len__(self) -> int: ...
    def json_records(self, heads: Sequence[str], tail: str) -> tuple[list[str], list[int]]:
        """Encode every file of the batch as one JSON object text, without Python objects per file.

        Each text is ``heads[root_index] + BODY + tail`` where BODY is, in this order::

            "relative_path":..., "filename":..., "inode":..., "device_id":...,
            "size_bytes":..., "hardlink_count":..., "mod_time":"2024-01-02T03:04:05.123456789Z"
            [, "fingerprint":"xxh3-128:..."]   (only when the record has a fingerprint)

        (no spaces; strings JSON-escaped; `mod_time` RFC 3339 UTC with `Z`, fraction only when
        non-zero, nanosecond precision trimmed of trailing zeros). `heads` must end with `{` or `,`.
        Files whose relative path is not valid UTF-8 are not encoded: their indexes in `files`
        are returned in the second list.
        """

class WalkStats:
    """Totals of a walk so far (all roots together, or one root)."""

    files: int  # media files reported
    dirs: int  # directories walked, roots included, skipped ones not
    bytes_total: int  # sum of size_bytes, each (device_id, inode) counted once
    distinct_inodes: int
    multi_link_files: int  # files with hardlink_count > 1
    errors: int
    skipped_mounts: int  # directories on another device, not entered (same_device=True)

class Walker:
    """A parallel walk over `roots`, started on construction, consumed with `next_batch`."""

    def __init__(
        self,
        roots: Sequence[str | bytes],
        *,
        extensions: Sequence[str] | None = ...,  # None → every regular file; default DEFAULT_EXTENSIONS
        skip_hidden: bool = True,  # names starting with "."
        skip_temp: bool = True,  # *.part *.tmp *.download *.!qB (any case)
        skip_metadata: bool = True,  # *.nfo *.jpg *.png *.srt *.sub *.idx (any case)
        skip_system_dirs: bool = True,  # @eaDir .Trash-* $RECYCLE.BIN "System Volume Information"
        exclude: Sequence[str | bytes] = (),  # absolute paths of directories not to enter (nested roots)
        same_device: bool = True,  # do not enter directories on another st_dev than their root
        threads: int = 0,  # 0 → DEFAULT_THREADS
        batch_size: int = 1024,
        max_pending_batches: int = 4,  # bound of the queue between walker threads and Python
        fingerprint: FingerprintMode | None = None,
        sample_size: int = ...,  # DEFAULT_SAMPLE_SIZE
    ) -> None: ...
    @property
    def roots(self) -> list[str | bytes]: ...
    def next_batch(self, timeout: float = 0.1) -> Batch | None:
        """Wait up to `timeout` seconds (GIL released) for the next batch.

        Returns an empty batch on timeout while the walk goes on, and None once the walk is over
        (finished or cancelled) and everything has been delivered.
        """
    def cancel(self) -> None:
        """Ask the walker threads to stop; `next_batch` returns None within 100 ms after."""
    @property
    def finished(self) -> bool: ...
    @property
    def cancelled(self) -> bool: ...
    def stats(self, root_index: int | None = None) -> WalkStats: ...

def fingerprint_files(
    paths: Sequence[str | bytes],
    mode: FingerprintMode,
    *,
    sample_size: int = ...,
    threads: int = 0,
) -> list[tuple[str | None, str | None]]:
    """Fingerprint many files in parallel with the GIL released.

    Returns, in input order, (``"xxh3-128:<hex>"``, None) or (None, error message). `full` hashes
    the whole content (equal to ``xxhash.xxh3_128_hexdigest(content)``); `sampled` hashes the
    8-byte little-endian size followed by the first `sample_size` bytes and the last `sample_size`
    bytes (the whole content when the file is at most 2 × `sample_size`).
    """
