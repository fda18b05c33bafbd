"""Identical files that are separate inodes (copies, not hardlinks), and replacing them with
hardlinks.

Finding reads as little as it can: inodes are grouped by size (an inode whose size no other inode
has is never opened; names of one inode are one candidate, not duplicates), then by a `sampled`
fingerprint (size, head and tail) for sizes above two samples, then by the full xxh3-128 of the
content, which alone decides. Hashing runs in the native engine, in parallel, without the GIL.

Relinking (`relink`) keeps one copy per device and makes every name of the other copies on that
device a hardlink of it, through `scanarr.safefs` (fd-relative, no symlink followed, no other
filesystem entered, link to a temporary name then rename over the target). Before replacing a
name it checks that both files are still what the scan saw (inode, size, mtime) and that the full
hash of both still equals the group's; a name that changed is skipped, never replaced.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import Literal

import attrs

from scanarr import _native, safefs
from scanarr.links import FileTable

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "Copy",
    "DuplicateGroup",
    "DuplicateReport",
    "FingerprintFailure",
    "RelinkOutcome",
    "RelinkSummary",
    "find_duplicates",
    "relink",
]

# Head and tail read by the `sampled` stage. Files of equal size that differ almost always differ
# in their first or last kilobytes (container headers, indexes); on a spinning disk the seek costs
# more than the read, and from the page cache 16 KiB reads cost a third of 64 KiB ones (measured
# with bench/bench_dupes.py --size-mib 8). Anything the sample misses, the full hash catches.
DEFAULT_SAMPLE_SIZE = 16 * 1024
# Paths per native call, and bytes a call may read: bounds memory, keeps Ctrl-C responsive, and
# lets progress be shown between calls.
BATCH_FILES = 4096
BATCH_BYTES = 8 << 30

Stage = Literal["sampled", "full"]
Progress = Callable[[Stage, int, int], None]  # stage, inodes done, inodes in the stage


@attrs.frozen(slots=True)
class Copy:
    """One inode of a duplicate group and the names it was seen under."""

    device_id: int
    inode: int
    hardlink_count: int
    mtime_ns: int
    paths: tuple[tuple[int, bytes], ...]  # (root_index, relative_path), sorted

    @property
    def links_outside(self) -> int:
        """Names not seen under the scanned roots (they keep the inode alive after a relink)."""
        return max(self.hardlink_count - len(self.paths), 0)


@attrs.frozen(slots=True)
class DuplicateGroup:
    """Inodes with identical content (equal size and full xxh3-128)."""

    size_bytes: int
    fingerprint: str  # "xxh3-128:<hex>" of the full content
    copies: tuple[Copy, ...]  # by device, the kept copy of each device first

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(sorted({copy.device_id for copy in self.copies}))

    @property
    def same_device(self) -> bool:
        """Whether every copy is on one device, so all could be hardlinked together."""
        return len(self.devices) == 1

    @property
    def duplicate_bytes(self) -> int:
        """Bytes held by the copies beyond the first, whatever their devices."""
        return self.size_bytes * (len(self.copies) - 1)

    def relink_plan(self) -> list[tuple[Copy, tuple[Copy, ...]]]:
        """Per device with two copies or more: (kept copy, copies to replace with links to it)."""
        plan = []
        for device in self.devices:
            copies = [copy for copy in self.copies if copy.device_id == device]
            if len(copies) > 1:
                plan.append((copies[0], tuple(copies[1:])))
        return plan

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes a relink frees: each replaced copy on the kept copy's device whose every name
        was seen (a name outside the scanned roots keeps its inode and its bytes)."""
        return sum(
            self.size_bytes
            for _, replaced in self.relink_plan()
            for copy in replaced
            if not copy.links_outside
        )


def _keep_first(copies: list[Copy]) -> list[Copy]:
    """Copies ordered by device; on each device the one to keep first: the most names (fewest to
    replace; names outside the roots cannot be freed anyway), then the first path."""
    return sorted(copies, key=lambda c: (c.device_id, -c.hardlink_count, c.paths[0]))


@attrs.frozen(slots=True)
class FingerprintFailure:
    path: bytes
    message: str


@attrs.frozen(slots=True)
class DuplicateReport:
    roots: tuple[str, ...]
    groups: tuple[DuplicateGroup, ...]  # most reclaimable bytes first
    failures: tuple[FingerprintFailure, ...]  # files that could not be read (left out)
    files: int  # names walked
    size_candidates: int  # inodes sharing their size with another inode
    sampled_inodes: int  # inodes read by the `sampled` stage
    full_inodes: int  # inodes hashed in full

    @property
    def duplicate_bytes(self) -> int:
        return sum(group.duplicate_bytes for group in self.groups)

    @property
    def reclaimable_bytes(self) -> int:
        return sum(group.reclaimable_bytes for group in self.groups)

    def path(self, root_index: int, relative_path: bytes) -> bytes:
        return os.fsencode(self.roots[root_index]).rstrip(b"/") + b"/" + relative_path


Inode = tuple[int, ...]  # file numbers of the names of one inode; the first is the one read


class _Hasher:
    """Runs one fingerprint stage over inodes of a `FileTable`, in bounded native calls."""

    def __init__(
        self, table: FileTable, sample_size: int, threads: int, progress: Progress | None
    ) -> None:
        self.table = table
        self.sample_size = sample_size
        self.threads = threads
        self.progress = progress
        self.failures: list[FingerprintFailure] = []

    def batches(self, files: list[int], mode: Stage) -> Iterator[list[int]]:
        batch: list[int] = []
        budget = 0
        for file in files:
            size = self.table.size_bytes[file]
            batch.append(file)
            budget += min(size, 2 * self.sample_size) if mode == "sampled" else size
            if len(batch) >= BATCH_FILES or budget >= BATCH_BYTES:
                yield batch
                batch, budget = [], 0
        if batch:
            yield batch

    def fingerprints(self, buckets: list[list[Inode]], mode: Stage) -> dict[int, str]:
        """Fingerprint of the first name of every inode in `buckets`, by its file number."""
        device, inode = self.table.device_id, self.table.inode
        # Inode order approximates on-disk order, which spares a spinning disk some seeks.
        files = sorted(
            (names[0] for bucket in buckets for names in bucket),
            key=lambda f: (device[f], inode[f]),
        )
        result: dict[int, str] = {}
        done = 0
        for batch in self.batches(files, mode):
            paths = [self.table.path(file) for file in batch]
            answers = _native.fingerprint_files(
                paths, mode, sample_size=self.sample_size, threads=self.threads
            )
            for file, path, (fingerprint, error) in zip(batch, paths, answers, strict=True):
                if fingerprint is None:
                    self.failures.append(FingerprintFailure(path, error or "unknown error"))
                else:
                    result[file] = fingerprint
            done += len(batch)
            if self.progress is not None:
                self.progress(mode, done, len(files))
        return result


def _split(
    buckets: list[list[Inode]], fingerprints: dict[int, str]
) -> list[tuple[str, list[Inode]]]:
    """Each bucket split by fingerprint, keeping the parts with two inodes or more."""
    parts: list[tuple[str, list[Inode]]] = []
    for bucket in buckets:
        by_fingerprint: dict[str, list[Inode]] = {}
        for names in bucket:
            fingerprint = fingerprints.get(names[0])
            if fingerprint is not None:
                by_fingerprint.setdefault(fingerprint, []).append(names)
        parts.extend(item for item in by_fingerprint.items() if len(item[1]) > 1)
    return parts


def _size_buckets(table: FileTable, min_size: int) -> list[list[Inode]]:
    """Inodes whose size another inode has, bucketed by size.

    Sizes are counted over names first (one sorted pass, no dict of every size); only the names
    of a repeated size are then grouped by inode, so names of one inode are one candidate.
    """
    sizes = table.size_bytes
    repeated: set[int] = set()
    previous = -1
    for size in sorted(sizes):
        if size == previous and size >= min_size:
            repeated.add(size)
        previous = size
    by_size: dict[int, dict[tuple[int, int], list[int]]] = {}
    device, inode = table.device_id, table.inode
    for file, size in enumerate(sizes):
        if size in repeated:
            inodes = by_size.setdefault(size, {})
            inodes.setdefault((device[file], inode[file]), []).append(file)
    return [
        [tuple(names) for names in inodes.values()]
        for inodes in by_size.values()
        if len(inodes) > 1
    ]


def _copy(table: FileTable, names: Inode) -> Copy:
    first = names[0]
    return Copy(
        device_id=table.device_id[first],
        inode=table.inode[first],
        hardlink_count=max(table.hardlink_count[file] for file in names),
        mtime_ns=table.mtime_ns[first],
        paths=tuple(sorted((table.root_index[f], table.relative_path(f)) for f in names)),
    )


def find_duplicates(
    table: FileTable,
    *,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    threads: int = 0,
    min_size: int = 1,
    progress: Progress | None = None,
) -> DuplicateReport:
    """Groups of distinct inodes with identical content among `table`'s files.

    Files smaller than `min_size` are left out (empty files by default: nothing to reclaim).
    Files that cannot be read are left out and listed in `failures`.
    """
    if sample_size < 1:
        raise ValueError("sample_size must be at least 1")
    hasher = _Hasher(table, sample_size, threads, progress)
    buckets = _size_buckets(table, max(min_size, 0))
    candidates = sum(len(bucket) for bucket in buckets)

    # A file of at most two samples is read whole by `sampled`: hash it in full directly.
    def is_large(bucket: list[Inode]) -> bool:
        return table.size_bytes[bucket[0][0]] > 2 * sample_size

    large = [bucket for bucket in buckets if is_large(bucket)]
    small = [bucket for bucket in buckets if not is_large(bucket)]
    sampled = hasher.fingerprints(large, "sampled")
    to_hash = small + [inodes for _, inodes in _split(large, sampled)]
    full = hasher.fingerprints(to_hash, "full")

    groups = [
        DuplicateGroup(
            table.size_bytes[inodes[0][0]],
            fingerprint,
            tuple(_keep_first([_copy(table, names) for names in inodes])),
        )
        for fingerprint, inodes in _split(to_hash, full)
    ]
    groups.sort(key=lambda g: (-g.reclaimable_bytes, -g.duplicate_bytes, g.copies[0].paths[0]))
    return DuplicateReport(
        roots=tuple(table.roots),
        groups=tuple(groups),
        failures=tuple(hasher.failures),
        files=len(table),
        size_candidates=candidates,
        sampled_inodes=sum(len(bucket) for bucket in large),
        full_inodes=sum(len(bucket) for bucket in to_hash),
    )


# --- relinking ------------------------------------------------------------------------------

RelinkStatus = Literal["relinked", "would_relink", "skipped", "failed"]


@attrs.frozen(slots=True)
class RelinkOutcome:
    """What happened to one name of a copy. `freed_bytes`: the copy's size when this name was
    its last link (for a dry run: would be, as far as the scan knows)."""

    path: bytes
    kept_path: bytes
    status: RelinkStatus
    reason: str | None = None
    freed_bytes: int = 0


@attrs.frozen(slots=True)
class RelinkSummary:
    outcomes: tuple[RelinkOutcome, ...]
    acted: bool  # False for a dry run

    def count(self, status: RelinkStatus) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def freed_bytes(self) -> int:
        return sum(outcome.freed_bytes for outcome in self.outcomes)


class _Changed(Exception):
    """A file is not what the scan saw any more; the name is skipped."""


def _proc_path(dir_fd: int, name: str) -> bytes:
    """A path the engine can open that names exactly `name` in the already-checked directory
    `dir_fd` (the engine does not follow a final symlink, so a swapped name is refused)."""
    return f"/proc/self/fd/{dir_fd}/".encode() + os.fsencode(name)


def _identity(status: os.stat_result) -> tuple[int, int, int, int, int]:
    # ctime moves on any write or metadata change, even one that restores mtime.
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


class _OpenName:
    """A name of a copy resolved under its root: its parent directory's fd and its final name."""

    def __init__(self, root: safefs.VolumeRoot, relative_path: bytes) -> None:
        names = safefs.split_relative_path(os.fsdecode(relative_path))
        self.name = names[-1]
        self.parents = safefs.ParentDirectories(root, names[:-1])

    @property
    def dir_fd(self) -> int:
        return self.parents.fd

    def close(self) -> None:
        self.parents.close()


class _Relinker:
    def __init__(self, report: DuplicateReport, act: bool, threads: int) -> None:
        self.report = report
        self.act = act
        self.threads = threads
        self.roots: dict[int, safefs.VolumeRoot] = {}
        self.outcomes: list[RelinkOutcome] = []

    def root(self, root_index: int) -> safefs.VolumeRoot:
        if root_index not in self.roots:
            self.roots[root_index] = safefs.VolumeRoot(self.report.roots[root_index], None)
        return self.roots[root_index]

    def close(self) -> None:
        for root in self.roots.values():
            root.close()

    def run(self) -> None:
        for group in self.report.groups:
            for kept, replaced in group.relink_plan():
                for copy in replaced:
                    self.replace_copy(group, kept, copy)

    def replace_copy(self, group: DuplicateGroup, kept: Copy, copy: Copy) -> None:
        kept_path = self.report.path(*kept.paths[0])
        outcomes: list[RelinkOutcome] = []
        for root_index, relative_path in copy.paths:
            path = self.report.path(root_index, relative_path)
            try:
                freed = self.replace_name(group, kept, copy, root_index, relative_path)
            except (_Changed, safefs.Refused, safefs.UnsafePath) as why:
                outcomes.append(RelinkOutcome(path, kept_path, "skipped", str(why)))
                continue
            except OSError as error:
                if error.errno in _CHANGED_ERRNOS:
                    reason = f"{_CHANGED_ERRNOS[error.errno]} ({_os_reason(error)})"
                    outcomes.append(RelinkOutcome(path, kept_path, "skipped", reason))
                else:
                    outcomes.append(RelinkOutcome(path, kept_path, "failed", _os_reason(error)))
                continue
            status: RelinkStatus = "relinked" if self.act else "would_relink"
            outcomes.append(RelinkOutcome(path, kept_path, status, None, freed))
        if (
            not self.act
            and not copy.links_outside
            and all(outcome.status == "would_relink" for outcome in outcomes)
        ):
            # As far as the scan knows, replacing its last seen name frees the copy.
            outcomes[-1] = attrs.evolve(outcomes[-1], freed_bytes=group.size_bytes)
        self.outcomes.extend(outcomes)

    def replace_name(
        self,
        group: DuplicateGroup,
        kept: Copy,
        copy: Copy,
        root_index: int,
        relative_path: bytes,
    ) -> int:
        """Check (and with `act`, replace) one name; returns the bytes freed."""
        source = _OpenName(self.root(kept.paths[0][0]), kept.paths[0][1])
        try:
            target = _OpenName(self.root(root_index), relative_path)
            try:
                return self.replace_opened(group, kept, copy, source, target)
            finally:
                target.close()
        finally:
            source.close()

    def replace_opened(
        self, group: DuplicateGroup, kept: Copy, copy: Copy, source: _OpenName, target: _OpenName
    ) -> int:
        # Same device as the kept copy, or refused ("cross_device"): a link never crosses devices.
        source_status = safefs.lstat_regular_file(source.dir_fd, source.name, kept.device_id)
        target_status = safefs.lstat_regular_file(target.dir_fd, target.name, kept.device_id)
        _check_as_scanned("kept file", source_status, kept, group.size_bytes)
        _check_as_scanned("file", target_status, copy, group.size_bytes)
        if not self.act:
            return 0
        last_link = target_status.st_nlink == 1

        def verify_linked() -> None:
            # The temporary link exists: re-check both files against the scan and re-hash them
            # in full right before the rename. The link itself moved the kept file's link count
            # and ctime, so its status is taken afresh.
            kept_now = os.stat(source.name, dir_fd=source.dir_fd, follow_symlinks=False)
            copy_now = os.stat(target.name, dir_fd=target.dir_fd, follow_symlinks=False)
            _check_as_scanned("kept file", kept_now, kept, group.size_bytes)
            _check_as_scanned("file", copy_now, copy, group.size_bytes)
            self.verify_content(group, source, target, kept_now, copy_now)

        try:
            safefs.link_replace(
                source.dir_fd,
                source.name,
                target.dir_fd,
                target.name,
                source=(kept.device_id, kept.inode),
                before_rename=verify_linked,
            )
        except OSError as error:
            if error.errno == errno.EXDEV:
                # Same st_dev but another mount (two bind mounts of one filesystem).
                raise _Changed(
                    "the kept file is on another mount of this filesystem: the kernel refuses "
                    "hardlinks between mounts"
                ) from None
            raise
        return group.size_bytes if last_link else 0

    def verify_content(
        self,
        group: DuplicateGroup,
        source: _OpenName,
        target: _OpenName,
        source_status: os.stat_result,
        target_status: os.stat_result,
    ) -> None:
        """Full hash of both files equals the group's, and neither changed while being read."""
        answers = _native.fingerprint_files(
            [_proc_path(source.dir_fd, source.name), _proc_path(target.dir_fd, target.name)],
            "full",
            threads=min(self.threads or 2, 2),
        )
        for what, (fingerprint, error) in zip(("kept file", "file"), answers, strict=True):
            if fingerprint is None:
                raise OSError(0, f"cannot re-read {what}: {error}")
            if fingerprint != group.fingerprint:
                raise _Changed(f"{what} content changed since the scan")
        for what, opened, before in (
            ("kept file", source, source_status),
            ("file", target, target_status),
        ):
            after = os.stat(opened.name, dir_fd=opened.dir_fd, follow_symlinks=False)
            if _identity(after) != _identity(before):
                raise _Changed(f"{what} changed while it was verified")


# What these errors mean for a path the scan saw: the tree changed since, so the name is skipped.
_CHANGED_ERRNOS = {
    errno.ENOENT: "gone since the scan",
    errno.ENOTDIR: "a folder on the way was replaced since the scan",
    errno.ELOOP: "a folder on the way is a symbolic link (never followed)",
    errno.EXDEV: "a folder on the way is another filesystem (never entered)",
}


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error)


def _check_as_scanned(what: str, status: os.stat_result, copy: Copy, size: int) -> None:
    if status.st_ino != copy.inode:
        raise _Changed(f"{what} was replaced since the scan (inode {status.st_ino})")
    if status.st_size != size or status.st_mtime_ns != copy.mtime_ns:
        raise _Changed(f"{what} changed since the scan (size or mtime)")


def relink(report: DuplicateReport, *, act: bool, threads: int = 0) -> RelinkSummary:
    """Replace every copy's names with hardlinks to the kept copy of its device.

    Without `act`, only checks each name against the scan and says what would be done; nothing is
    changed on disk.
    """
    relinker = _Relinker(report, act, threads)
    try:
        relinker.run()
    finally:
        relinker.close()
    return RelinkSummary(tuple(relinker.outcomes), act)
