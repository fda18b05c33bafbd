"""A pure-Python scanner doing the work of `scanarr scan`: the baseline of bench/bench_scan.py.

    python bench/pyscan.py ROOT [ROOT ...]

`os.scandir` recursion over every root; the same name filters as the native engine (media
extensions compared without regard to case; hidden names, temporary files, metadata files and
NAS/OS system directories skipped); one `lstat` per media file (and per directory, for the device
check); one record per media file with the protocol's fields. Symlinks are never followed, other
filesystems mounted inside a root are not entered. It prints the summary `scanarr scan` prints,
one `key: value` per line, and exits 1 when part of the tree could not be read.

It is written as well as plain Python allows (no per-file `Path`, type checks from `d_type`, only
hard-linked inodes kept in the de-duplication set) so that the comparison is against a fair
baseline, not a slow one.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from scanarr import _native
from scanarr.cli.scan import summary_lines  # the same output, so scripts compare the two

# The engine's vocabulary; the filtering itself is plain Python, which is what this measures.
DEFAULT_EXTENSIONS = _native.DEFAULT_EXTENSIONS
# Every temporary and metadata suffix is a dot and an extension, so one look at the text after
# the last dot decides all three filters.
TEMP_EXTENSIONS = frozenset(suffix.removeprefix(".") for suffix in _native.TEMP_SUFFIXES)
METADATA_EXTENSIONS = frozenset(suffix.removeprefix(".") for suffix in _native.METADATA_SUFFIXES)
SYSTEM_DIRS_ANY_CASE = frozenset(("$recycle.bin", "system volume information"))


class FileRecord(NamedTuple):
    """One media file, as `lstat` saw it (PROTOCOL.md §4 field names)."""

    volume_path: str
    relative_path: str
    filename: str
    inode: int
    device_id: int
    size_bytes: int
    hardlink_count: int
    mtime_ns: int


class WalkError(NamedTuple):
    path: str
    kind: str  # "root", "read_dir" or "stat", as the native engine names them
    errno: int
    message: str


@dataclass
class WalkStats:
    """The totals `scanarr scan` reports, with the same meaning."""

    files: int = 0
    dirs: int = 0  # directories walked, roots included, skipped ones not
    bytes_total: int = 0  # each (device_id, inode) counted once
    distinct_inodes: int = 0
    multi_link_files: int = 0
    errors: int = 0
    skipped_mounts: int = 0


def is_system_dir(name: str) -> bool:
    return name == "@eaDir" or name.startswith(".Trash-") or name.lower() in SYSTEM_DIRS_ANY_CASE


def walk(
    roots: Sequence[str],
    stats: WalkStats,
    *,
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    same_device: bool = True,
    on_error: Callable[[WalkError], None] = lambda error: None,
) -> Iterator[FileRecord]:
    """Yield a record per media file under `roots`, counting into `stats` as it goes."""
    wanted = frozenset(extension.lower().lstrip(".") for extension in extensions)
    wanted -= TEMP_EXTENSIONS | METADATA_EXTENSIONS
    # Only a file with several links can be met twice; the others need no memory.
    linked_inodes: set[tuple[int, int]] = set()

    def error(path: str, kind: str, exc: OSError) -> None:
        stats.errors += 1
        on_error(WalkError(path, kind, exc.errno or 0, exc.strerror or str(exc)))

    for root in roots:
        volume_path = os.path.abspath(root)
        try:
            root_dev = os.stat(volume_path).st_dev
        except OSError as exc:
            error(volume_path, "root", exc)
            continue
        # Directories still to list: (path, path relative to the root followed by "/").
        pending: list[tuple[str, str]] = [(volume_path, "")]
        while pending:
            path, prefix = pending.pop()
            try:
                iterator = os.scandir(path)
            except OSError as exc:
                error(path, "read_dir" if prefix else "root", exc)
                continue
            stats.dirs += 1
            with iterator:
                try:
                    for entry in iterator:
                        name = entry.name
                        if name[0] == ".":
                            continue
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                if is_system_dir(name):
                                    continue
                                if (
                                    same_device
                                    and entry.stat(follow_symlinks=False).st_dev != root_dev
                                ):
                                    stats.skipped_mounts += 1
                                    continue
                                pending.append((entry.path, f"{prefix}{name}/"))
                                continue
                            if not entry.is_file(follow_symlinks=False):
                                continue  # symlink, FIFO, socket or device: never reported
                        except OSError as exc:
                            error(entry.path, "read_dir", exc)
                            continue
                        dot = name.rfind(".")
                        if dot < 0 or name[dot + 1 :].lower() not in wanted:
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError as exc:
                            error(entry.path, "stat", exc)
                            continue
                        nlink = st.st_nlink
                        stats.files += 1
                        if nlink > 1:
                            stats.multi_link_files += 1
                            key = (st.st_dev, st.st_ino)
                            if key in linked_inodes:
                                yield FileRecord(
                                    volume_path, prefix + name, name, st.st_ino, st.st_dev,
                                    st.st_size, nlink, st.st_mtime_ns,
                                )  # fmt: skip
                                continue
                            linked_inodes.add(key)
                        stats.distinct_inodes += 1
                        stats.bytes_total += st.st_size
                        yield FileRecord(
                            volume_path, prefix + name, name, st.st_ino, st.st_dev,
                            st.st_size, nlink, st.st_mtime_ns,
                        )  # fmt: skip
                except OSError as exc:  # the listing itself failed part-way
                    error(path, "read_dir", exc)


def is_failure(error: WalkError) -> bool:
    """A file that vanished between its listing and its lstat is not a failure (as the CLI)."""
    return not (error.kind == "stat" and error.errno == errno.ENOENT)


def main(argv: Sequence[str] | None = None) -> int:
    roots = list(sys.argv[1:] if argv is None else argv)
    if not roots or any(root.startswith("-") for root in roots):
        print("usage: python bench/pyscan.py ROOT [ROOT ...]", file=sys.stderr)
        return 2
    failures = 0

    def report(error: WalkError) -> None:
        nonlocal failures
        failures += is_failure(error)
        print(f"pyscan: {error.kind} {error.path}: {error.message}", file=sys.stderr)

    stats = WalkStats()
    started = time.monotonic()
    for _record in walk(roots, stats, on_error=report):
        pass  # a summary keeps nothing per file, as `scanarr scan` without --jsonl
    duration = time.monotonic() - started
    print("\n".join(summary_lines(stats, duration)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
