"""Contract of scanarr's native engine (``scanarr._native``), checked by ``mypy.stubtest``.

The engine walks volume roots in parallel on its own threads, ``lstat``s the files that pass the
filters and streams them to Python in bounded batches that Python pulls. Every call that can take
long releases the GIL and returns within a bounded time, so callers may run it through
``trio.to_thread.run_sync`` and still cancel promptly.

Paths cross the boundary as ``str`` when they are valid UTF-8 and as ``bytes`` otherwise
(``str`` paths given to the engine are encoded like ``os.fsencode``).

The classes are final, built only by the engine, and their attributes are read-only.
"""

from collections.abc import Callable, Sequence
from typing import Final, Literal, final

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DEFAULT_SAMPLE_SIZE",
    "DEFAULT_THREADS",
    "METADATA_SUFFIXES",
    "SCAN_FILE_FIELDS",
    "TEMP_SUFFIXES",
    "Batch",
    "Fanotify",
    "FileRecord",
    "FingerprintMode",
    "LiveIndex",
    "LiveLister",
    "LiveListing",
    "LiveMerge",
    "NameFilter",
    "WalkError",
    "WalkStats",
    "Walker",
    "__version__",
    "fingerprint_files",
    "text_frames",  # WebSocket frames
]

__version__: Final[str]

DEFAULT_EXTENSIONS: Final[tuple[str, ...]]  # mkv mp4 avi m4v ts wmv
DEFAULT_SAMPLE_SIZE: Final[int]  # 1 MiB: head and tail sample of a `sampled` fingerprint
DEFAULT_THREADS: Final[int]  # walker threads when `threads=0`, chosen by measurement
# The per-file members of a `scan.file`'s data, in the order `Batch.json_records` writes
# them (after the head's per-scan members; `protocol.ScanFile` lists both).
SCAN_FILE_FIELDS: Final[tuple[str, ...]]
# Lower case; compared with the end of a name regardless of (ASCII) case.
TEMP_SUFFIXES: Final[tuple[str, ...]]  # .part .tmp .download .!qb: files still being written
METADATA_SUFFIXES: Final[tuple[str, ...]]  # .nfo .jpg .png .srt .sub .idx: beside media files

FingerprintMode = Literal["full", "sampled"]

@final
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
    # Why the fingerprint could not be computed: the file is still listed, and the batch also
    # carries a WalkError of kind "fingerprint" for it.
    fingerprint_error: str | None
    @property
    def filename(self) -> str | bytes: ...

@final
class WalkError:
    """A failure met during the walk. Errors are data: the walk goes on past them."""

    root_index: int
    path: str | bytes  # absolute path of what failed
    errno: int  # 0 when the error is not an OS error
    # root: a root is missing, unreadable or not a directory (nothing of it was walked);
    # read_dir: a directory below a root could not be opened or listed (ELOOP/ENOTDIR when it
    #   was replaced by a symlink or a file after it was listed; it is not followed);
    # stat: an entry could not be lstat'ed (ENOENT: it vanished after it was listed);
    # fingerprint: a reported file could not be read.
    kind: Literal["root", "read_dir", "stat", "fingerprint"]
    message: str  # strerror-style text, e.g. "Permission denied (os error 13)"

@final
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
        are returned in the second list. ValueError when a head does not end with `{` or `,`,
        IndexError when `heads` has no entry for a file's `root_index`.
        """
    # --- WebSocket frames (rust/frames.rs) ---
    def json_frames(
        self,
        heads: Sequence[str],
        tail: str,
        *,
        masked: bool,
        files_before: int = 0,
        progress_every: int = 0,
        progress: Callable[[int], str] | None = None,
    ) -> tuple[bytes, list[int]]:
        """The texts of `json_records`, each as one unfragmented RFC 6455 text frame, in one
        buffer, and the indexes of the files not encoded (as `json_records`).

        `masked`: client frames, each masked with its own 4-byte key (RFC 6455 §5.3) from a
        generator seeded from ``getrandom`` at each call. With `progress_every` > 0, after the
        frame of each encoded file whose count (from `files_before`, exclusive) is a multiple
        of it, the frame of ``progress(count)`` follows. OSError when the OS gives no entropy;
        ValueError when `progress_every` > 0 without `progress`; exceptions of `progress`
        propagate.
        """

@final
class WalkStats:
    """Totals of a walk so far (all roots together, or one root)."""

    files: int  # media files reported
    dirs: int  # directories walked, roots included, skipped ones not
    # Sum of size_bytes, each (device_id, inode) counted once; hard-linked files are matched
    # across roots, so roots must not overlap (exclude nested ones).
    bytes_total: int
    distinct_inodes: int
    multi_link_files: int  # files with hardlink_count > 1
    errors: int
    skipped_mounts: int  # directories on another device, not entered (same_device=True)
    # Files delivered but left out of files/bytes_total/distinct_inodes because their relative
    # path is not valid UTF-8 (only with utf8_totals=True; else 0).
    non_utf8_files: int

@final
class Walker:
    """A parallel walk over `roots`, started on construction, consumed with `next_batch`.

    A root given as a symlink is followed (the operator named it); nothing below it is. Relative
    roots and `exclude` paths are resolved against the working directory. Invalid arguments raise
    ValueError (batch_size or sample_size < 1, max_pending_batches outside 1..4096, threads
    above 1024, an unknown fingerprint mode) or TypeError (a path that is neither str nor bytes).
    Dropping the walker cancels its walk.
    """

    def __new__(
        cls,
        roots: Sequence[str | bytes],
        *,
        # Compared with the text after a name's last "." regardless of case; a leading "." in an
        # extension is ignored. None → every regular file. Default: DEFAULT_EXTENSIONS.
        extensions: Sequence[str] | None = ...,
        skip_hidden: bool = True,  # files and directories whose name starts with "."
        skip_temp: bool = True,  # *.part *.tmp *.download *.!qB (any case)
        skip_metadata: bool = True,  # *.nfo *.jpg *.png *.srt *.sub *.idx (any case)
        skip_system_dirs: bool = True,  # @eaDir .Trash-* $RECYCLE.BIN "System Volume Information"
        # Absolute paths of directories not to enter (nested roots); neither walked nor counted.
        exclude: Sequence[str | bytes] = (),
        same_device: bool = True,  # do not enter directories on another st_dev than their root
        threads: int = 0,  # 0 → DEFAULT_THREADS
        batch_size: int = 1024,
        max_pending_batches: int = 4,  # bound of the queue between walker threads and Python
        fingerprint: FingerprintMode | None = None,
        sample_size: int = ...,  # DEFAULT_SAMPLE_SIZE
        # Totals cover only files whose relative path is valid UTF-8 (exactly those
        # `Batch.json_records` encodes); the others are still delivered, counted in
        # `WalkStats.non_utf8_files`.
        utf8_totals: bool = False,
    ) -> Walker: ...
    @property
    def roots(self) -> list[str | bytes]:
        """The roots as given (`root_index` indexes this list)."""
    def next_batch(self, timeout: float = 0.1) -> Batch | None:
        """Wait up to `timeout` seconds (GIL released) for the next batch.

        Returns an empty batch on timeout while the walk goes on, and None once the walk is over
        (finished or cancelled) and everything has been delivered.
        """
    def cancel(self) -> None:
        """Ask the walker threads to stop; `next_batch` returns None at once after (batches not
        yet delivered are dropped). Idempotent."""
    @property
    def finished(self) -> bool:
        """True when `next_batch` has nothing more to give: every walker thread has ended and
        every batch was delivered, or the walk was cancelled."""
    @property
    def cancelled(self) -> bool: ...
    def stats(self, root_index: int | None = None) -> WalkStats:
        """Totals so far, overall or of one root (IndexError when there is no such root). They
        include every batch handed over; once `next_batch` returned None at the end of a walk
        that was not cancelled, they are final."""

@final
class LiveListing:
    """What `LiveLister.list` found, read in slices (each call holds the GIL only briefly)."""

    @property
    def gone(self) -> bool:
        """The top directory is not there (or is not a directory): nothing was listed."""
    @property
    def watch_limit(self) -> int | None:
        """errno of the ``inotify_add_watch`` that hit the limit (ENOSPC, EMFILE), 0 when the
        caller's `watch_budget` ran out, None when every directory could be watched."""
    @property
    def dir_count(self) -> int: ...
    @property
    def file_count(self) -> int: ...
    def dirs(self, start: int, stop: int) -> list[tuple[int, str, int, int]]:
        """``(parent, name, wd, read_errno)`` of directories ``start..stop``, parents before
        their children: parent -1 for the top (name ""), wd > 0 when watched, 0 when not (the
        limit was reached), -errno when the watch failed; read_errno 0 when listed, else the
        errno of opening or reading it (ENOENT/ENOTDIR: gone since its parent was listed)."""
    def files(self, start: int, stop: int) -> list[tuple[int, str, int, int, int, int]]:
        """``(dir, name, inode, size, mtime_ns, nlink)`` of media files ``start..stop``."""

@final
class LiveLister:
    """Lists directory trees for the live watcher and adds their inotify watches on the way,
    with the GIL released: each directory is watched, then read; subdirectories are entered
    when the name filter (as `Walker`'s), UTF-8 and the device allow; media files (UTF-8 names)
    are ``lstat``ed. Past the watch limit nothing more is watched, everything is still listed.
    `cancel` stops the listing running and every later one."""

    def __new__(cls) -> LiveLister: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...
    def list(
        self,
        top: str | bytes,
        *,
        inotify_fd: int,  # or a `Fanotify`'s fd: directories are registered in its handle map
        mask: int,
        device: int,  # st_dev of the volume: other filesystems are not entered
        extensions: Sequence[str],
        excluded: Sequence[str | bytes] | None = None,  # absolute paths not to enter
        watch_budget: int | None = None,  # watches that may still be added; None: no cap
        threads: int = 0,  # threads listing a large tree; 0: 4
    ) -> LiveListing | None:
        """List `top` (absolute); None when cancelled."""

@final
class LiveIndex:
    """The live watcher's index of its volumes, in compact native arenas: directories (parent,
    name, watch descriptor, subdirectories, media files), media files (name, inode, stamp), the
    ``(device, inode)`` → links index, the wd → directory table, retired watches, the watches of
    the inotify instance, and per volume its watch count and unwatched directories.

    A directory is named by an id packing its slot and the slot's generation: once the directory
    is removed its id is stale (`is_live` False, lookups give None). Names are UTF-8 `str`.
    `merge`, `drop_volume` and `release_dropped` run with the GIL released and take the index's
    lock for `slice` entries at a time, letting a thread waiting for it in between: another
    thread's call waits for at most one slice. Every other call is short."""

    slice: int
    """Entries (listed directories and files, freed ones, dropped watches) handled per hold of
    the lock by `merge`, `drop_volume` and `release_dropped` (4096)."""
    @property
    def longest_hold(self) -> int:
        """The most entries one hold of the lock by those calls handled so far."""
    def __new__(cls, inotify_fd: int = ...) -> LiveIndex:
        """`inotify_fd`: the instance whose watches removed directories lose (-1: none)."""
    @staticmethod
    def stamp(size: int, mtime_ns: int, nlink: int) -> int:
        """A 60-bit digest of size, mtime and link count: what "changed" is judged on."""
    def cancel(self) -> None:
        """Stop a `merge` or `drop_volume` running, and every later one."""
    def add_volume(self, device: int) -> tuple[int, int]:
        """A new volume on `device`: (its number, its root directory)."""
    def device(self, volume: int) -> int | None: ...
    def root(self, volume: int) -> int | None: ...
    def drop_volume(self, volume: int) -> bool:
        """Forget a volume and everything in it; its watches wait for `release_dropped` (another
        volume listed meanwhile may take them over). False when cancelled."""
    def release_dropped(self) -> None:
        """Remove (retire) the watches of dropped volumes that no directory took over."""
    def watches(self, volume: int) -> int: ...
    def unwatched_count(self, volume: int) -> int: ...
    def unwatched_tops(self, volume: int) -> list[int]:
        """Unwatched directories whose parent is watched (or that are the root)."""
    def is_live(self, id: int) -> bool: ...
    def parent(self, id: int) -> int | None: ...
    def name(self, id: int) -> str | None: ...
    def volume_of(self, id: int) -> int | None: ...
    def wd(self, id: int) -> int:
        """Watch descriptor, 0 when not watched (or stale)."""
    def path(self, id: int) -> str | None:
        """Path in its volume ("" for the root), None when stale."""
    def is_within(self, id: int, ancestor: int) -> bool:
        """Whether `ancestor` is `id` or above it."""
    def subdir(self, id: int, name: str) -> int | None: ...
    def subdirs(self, id: int) -> list[tuple[str, int]]: ...
    def has_subdirs(self, id: int) -> bool: ...
    def new_subdir(self, id: int, name: str) -> int | None:
        """None when `id` is stale or already has a subdirectory `name`."""
    def move_dir(self, id: int, parent: int, name: str) -> bool:
        """Re-parent (same volume, `name` free, not below itself); False when refused."""
    def remove_subtree(self, id: int) -> list[tuple[str, int]]:
        """Remove a directory and everything below it, their watches removed and retired;
        returns the media files that were under it as (path below it, inode)."""
    def dir_of_wd(self, wd: int) -> int | None: ...
    def set_wd(self, id: int, wd: int) -> bool:
        """`id` is watched as `wd` (taken from any directory that had it)."""
    def dropped_by_kernel(self, id: int) -> int:
        """IN_IGNORED: forget the watch of `id` (no syscall); returns it (0: none)."""
    def unwatch(self, id: int) -> None: ...
    def mark_unwatched(self, id: int) -> None: ...
    def retire(self, wd: int) -> None: ...
    def unretire(self, wd: int) -> bool: ...
    def is_retired(self, wd: int) -> bool: ...
    def own(self, wd: int) -> None: ...
    def disown(self, wd: int) -> bool: ...
    def owns(self, wd: int) -> bool: ...
    @property
    def owned_count(self) -> int:
        """Watches of the inotify instance; never waits (while a merge runs: as last read)."""
    def clear_owned(self) -> None:
        """The inotify instance is closed: no watch is owned or removed any more."""
    def file(self, id: int, name: str) -> tuple[int, int] | None:
        """(inode, stamp) of the media file `name` of `id`."""
    def files(self, id: int) -> list[tuple[str, int, int]]:
        """(name, inode, stamp) of every media file of `id`."""
    def names_of(self, id: int, inode: int) -> list[str]: ...
    def has_files(self, id: int) -> bool: ...
    def add_link(self, id: int, name: str, inode: int, stamp: int) -> int | None:
        """Record `name` of `id` as a link of `inode`; the first link of an inode sets its
        stamp, a further one takes the inode's (returned). None when `id` is stale."""
    def remove_link(self, id: int, name: str) -> tuple[int, bool] | None:
        """Forget `name` of `id`: (its inode, whether other links remain), None if unknown."""
    def links(self, device: int, inode: int) -> list[tuple[int, str]]: ...
    def inode_stamp(self, device: int, inode: int) -> int | None: ...
    def set_stamp(self, device: int, inode: int, stamp: int) -> None: ...
    @property
    def dir_count(self) -> int: ...
    @property
    def file_count(self) -> int: ...
    @property
    def inode_count(self) -> int: ...
    @property
    def heap_bytes(self) -> int:
        """Bytes the arenas and tables hold (capacity)."""
    def merge(self, top: int, listing: LiveListing, report: bool) -> LiveMerge | None:
        """Merge a listing of `top` (a new, empty directory) with the GIL released: directories
        with their watches, media files as links. A directory already watched as another one
        (moved, its move not read yet) is left out and named in `collisions`; one gone since
        its parent was listed is left out. `report`: the media files added are kept for
        `LiveMerge.added`. None when cancelled."""

@final
class LiveMerge:
    """What `LiveIndex.merge` did."""

    @property
    def gone(self) -> bool:
        """The top directory is gone: it was removed, nothing merged."""
    @property
    def directories(self) -> int: ...
    @property
    def unwatched(self) -> int: ...
    @property
    def watch_limit(self) -> int | None:
        """As `LiveListing.watch_limit`."""
    @property
    def errors(self) -> list[tuple[int, bool, int]]:
        """(errno, of the watch (else of the read), directory)."""
    @property
    def collisions(self) -> list[tuple[int, str, int]]:
        """(parent, name, directory already watched elsewhere)."""
    @property
    def added_count(self) -> int: ...
    def added(self, start: int, stop: int) -> list[tuple[int, str, int, int, int, int]]:
        """(directory, name, inode, size, mtime_ns, nlink) of added media files start..stop."""

@final
class Fanotify:
    """A fanotify group (``FAN_REPORT_DFID_NAME_TARGET``) with one filesystem mark per
    filesystem holding a registered directory, and the handle map of those directories: their
    events come back as inotify events ``(key, mask, cookie, name)``, others are dropped.
    OSErrors name the failing syscall first: ``"fanotify_init: ..."``, ``"fanotify_mark: ..."``,
    ``"name_to_handle_at: ..."``."""

    def __new__(cls, *, inotify_mask: int | None = None) -> Fanotify:
        """`inotify_mask`: directories of filesystems fanotify cannot watch get an inotify
        watch with this mask instead (None: `add_watch` fails for them)."""
    @property
    def fd(self) -> int: ...  # to wait on (readable when events are queued)
    def add_watch(self, path: str | bytes) -> int:
        """Register directory `path` (not following a final symlink); its key."""
    def remove(self, key: int) -> bool: ...
    def unwatch(self, key: int) -> bool:
        """`remove`, and a registered directory's IN_IGNORED queued for the next `read`."""
    @property
    def has_queued(self) -> bool: ...  # IN_IGNORED events of removed keys wait for `read`
    @property
    def registered(self) -> int: ...
    @property
    def filesystems_marked(self) -> int: ...
    def fallbacks(self) -> list[tuple[str, int]]: ...  # (syscall, errno) per inotify filesystem
    def read(self, max_bytes: int = ...) -> list[tuple[int, int, int, bytes]]: ...
    def close(self) -> None: ...

def fingerprint_files(
    paths: Sequence[str | bytes],
    mode: FingerprintMode,
    *,
    sample_size: int = ...,  # DEFAULT_SAMPLE_SIZE
    threads: int = 0,  # 0 → DEFAULT_THREADS; at most 1024
) -> list[tuple[str | None, str | None]]:
    """Fingerprint many files in parallel with the GIL released.

    Returns, in input order, (``"xxh3-128:<hex>"``, None) or (None, error message). A final
    symlink is not followed (error) and a non-regular file is refused. `full` hashes
    the whole content (equal to ``xxhash.xxh3_128_hexdigest(content)``); `sampled` hashes the
    8-byte little-endian size followed by the first `sample_size` bytes and the last `sample_size`
    bytes (the whole content when the file is at most 2 × `sample_size`); the size is the one
    `fstat` gives for the opened file. There is no cancel: hand it a bounded list of files.
    """

# --- WebSocket frames (rust/frames.rs) ---

def text_frames(texts: Sequence[str], *, masked: bool) -> bytes:
    """One unfragmented RFC 6455 text frame per item of `texts`, in order, in one buffer;
    `masked` as in `Batch.json_frames`. UnicodeEncodeError for a str that is not valid
    Unicode (a lone surrogate)."""

# --- name filter (rust/filter.rs) ---

@final
class NameFilter:
    """`Walker`'s name filter for single names, with the same options and defaults.

    Names are ``str`` or ``bytes``; a ``str`` is judged on the bytes ``os.fsencode`` gives (so a
    name ``os.fsdecode`` decoded with surrogate escapes is judged on its original bytes).
    TypeError for any other type.
    """

    def __new__(
        cls,
        extensions: Sequence[str] | None = ...,  # as `Walker`; default DEFAULT_EXTENSIONS
        *,
        skip_hidden: bool = True,
        skip_temp: bool = True,
        skip_metadata: bool = True,
        skip_system_dirs: bool = True,
    ) -> NameFilter: ...
    @property
    def extensions(self) -> tuple[str, ...] | None:
        """Lower case, without the dot, duplicates dropped; None: every extension."""
    def accepts_file(self, name: str | bytes) -> bool:
        """Whether `Walker` reports a regular file with this name."""
    def accepts_dir(self, name: str | bytes) -> bool:
        """Whether `Walker` enters a directory with this name."""
