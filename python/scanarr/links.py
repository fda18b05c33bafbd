"""Hardlink groups across roots: which names share an inode, which inodes also have names outside
the scanned roots, and which files under one root have no name under others (orphans) with the
bytes deleting them would really free.

`st_nlink > 1` alone cannot answer these: a cross-seed link makes a film "hardlinked" although
its library copy is gone. Here an inode is described by the names actually seen under the roots
and its `st_nlink`; the difference is the number of names elsewhere (outside every root, or
filtered out of the walk, such as a `.part` name).

Files are held as columns (`array`s and one path blob), not one Python object per file, so a
million-file library costs a few tens of bytes per file plus its path.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
from operator import attrgetter

import attrs

from scanarr._native import FileRecord
from scanarr.scan import DEFAULT_EXTENSIONS, Scan, WalkError

__all__ = [
    "FileTable",
    "InodeGroup",
    "LinkIndex",
    "LinkTotals",
    "Orphan",
    "OrphanReport",
    "RootTotals",
    "RootsError",
    "collect",
    "normalise_roots",
]


class RootsError(ValueError):
    """The roots given cannot be scanned together (a root given twice)."""


def normalise_roots(roots: Sequence[str]) -> list[str]:
    """Absolute roots in the order given; a root given twice is an error.

    A root inside another is allowed: its files are reported under the inner root only.
    """
    result: list[str] = []
    for root in roots:
        absolute = os.path.abspath(root)
        if absolute in result:
            raise RootsError(f"root given twice: {absolute}")
        result.append(absolute)
    return result


_ROOT_INDEX = attrgetter("root_index")
_DEVICE_ID = attrgetter("device_id")
_INODE = attrgetter("inode")
_HARDLINK_COUNT = attrgetter("hardlink_count")
_SIZE_BYTES = attrgetter("size_bytes")
_MTIME_NS = attrgetter("mtime_ns")
_RELATIVE_PATH = attrgetter("relative_path")


class FileTable:
    """Every file a walk reported, as columns indexed by file number.

    `relative_path(i)` is the raw bytes of the path under `roots[root_index[i]]`.
    """

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots: list[str] = list(roots)
        self.root_index = array("H")
        self.device_id = array("Q")
        self.inode = array("Q")
        self.hardlink_count = array("Q")
        self.size_bytes = array("Q")
        self.mtime_ns = array("q")
        self._paths = bytearray()
        self._path_ends = array("Q")
        self._root_bytes = [os.fsencode(root).rstrip(b"/") for root in self.roots]

    def __len__(self) -> int:
        return len(self.inode)

    def extend(self, files: Sequence[FileRecord]) -> None:
        """Append a batch of walker records, column by column (C-level loops, no Python frame per
        file: this runs once per file of the library)."""
        self.root_index.extend(map(_ROOT_INDEX, files))
        self.device_id.extend(map(_DEVICE_ID, files))
        self.inode.extend(map(_INODE, files))
        self.hardlink_count.extend(map(_HARDLINK_COUNT, files))
        self.size_bytes.extend(map(_SIZE_BYTES, files))
        self.mtime_ns.extend(map(_MTIME_NS, files))
        names: list[str | bytes] = list(map(_RELATIVE_PATH, files))
        # The engine hands out `str` only for valid UTF-8, so `encode()` restores the raw bytes.
        if all(type(name) is str for name in names):
            encoded = list(map(str.encode, names))  # type: ignore[arg-type]
        else:
            encoded = [name.encode() if isinstance(name, str) else name for name in names]
        ends = accumulate(map(len, encoded), initial=len(self._paths))
        next(ends)  # the initial value is the previous end, already stored
        self._path_ends.extend(ends)
        self._paths += b"".join(encoded)

    def relative_path(self, index: int) -> bytes:
        start = self._path_ends[index - 1] if index else 0
        return bytes(self._paths[start : self._path_ends[index]])

    def path(self, index: int) -> bytes:
        """Absolute path of file `index`, as bytes."""
        return self._root_bytes[self.root_index[index]] + b"/" + self.relative_path(index)


def collect(
    roots: Sequence[str],
    *,
    extensions: Sequence[str] | None = DEFAULT_EXTENSIONS,
    all_files: bool = False,
    threads: int = 0,
    same_device: bool = True,
) -> tuple[FileTable, list[WalkError]]:
    """Walk `roots` (already normalised) and return their files and the walk's errors.

    A root nested in another is walked on its own; the outer walk does not enter it, so each file
    is listed once, under its innermost root.
    """
    table = FileTable(roots)
    with Scan(
        roots,
        extensions=extensions,
        all_files=all_files,
        threads=threads,
        # The engine skips, under each root, the excluded directories strictly below it.
        exclude=roots,
        same_device=same_device,
    ) as running:
        for batch in running.batches():
            table.extend(batch.files)
        errors = list(running.errors)
    return table, errors


@attrs.frozen(slots=True)
class InodeGroup:
    """One inode and the names it was seen under.

    `links_outside` counts names not seen under the scanned roots: `st_nlink` minus the names seen
    (never negative: a name may have been added while the walk ran).
    """

    device_id: int
    inode: int
    size_bytes: int
    hardlink_count: int
    paths: tuple[tuple[int, bytes], ...]  # (root_index, relative_path), sorted

    @property
    def links_seen(self) -> int:
        return len(self.paths)

    @property
    def links_outside(self) -> int:
        return max(self.hardlink_count - len(self.paths), 0)

    @property
    def root_indexes(self) -> frozenset[int]:
        return frozenset(root for root, _ in self.paths)


@attrs.frozen(slots=True)
class RootTotals:
    """What one root holds. `freed_if_deleted_bytes`: bytes of the inodes whose every name is
    under this root (no name under another root, none outside the scanned roots)."""

    root: str
    files: int
    inodes: int
    bytes: int
    freed_if_deleted_bytes: int


@attrs.frozen(slots=True)
class LinkTotals:
    files: int  # names seen
    inodes: int
    bytes: int  # each inode once
    hardlinked_inodes: int  # inodes seen under two names or more
    outside_inodes: int  # inodes with names outside the scanned roots
    outside_bytes: int
    roots: tuple[RootTotals, ...]


@attrs.frozen(slots=True)
class Orphan:
    """An inode with a name under the `--orphans-in` root and none under an `--against` root.

    `freed_bytes` is its size when deleting its names under the orphans root removes its last
    link, else 0; `kept_by` says what keeps it: "outside" (names outside the scanned roots) or
    "other_root" (a name under another scanned root).
    """

    group: InodeGroup
    freed_bytes: int
    kept_by: str | None


@attrs.frozen(slots=True)
class OrphanReport:
    orphans_in: int  # root index
    against: tuple[int, ...]
    orphans: tuple[Orphan, ...]  # largest first

    @property
    def files(self) -> int:
        return sum(1 for o in self.orphans for root, _ in o.group.paths if root == self.orphans_in)

    @property
    def bytes(self) -> int:
        return sum(o.group.size_bytes for o in self.orphans)

    @property
    def freed_bytes(self) -> int:
        return sum(o.freed_bytes for o in self.orphans)

    def kept(self, reason: str) -> tuple[int, int]:
        """(inodes, bytes) of the orphans that deleting would not free, for `reason`."""
        kept = [o.group.size_bytes for o in self.orphans if o.kept_by == reason]
        return len(kept), sum(kept)


class LinkIndex:
    """The files of a `FileTable` grouped by `(device_id, inode)`.

    Groups are held as two index arrays: `order` lists file numbers group after group, and group
    `g` is `order[starts[g]:starts[g + 1]]`.
    """

    def __init__(self, table: FileTable) -> None:
        self.table = table
        count = len(table)
        devices = set(table.device_id)
        if len(devices) <= 1:
            ordered = sorted(range(count), key=table.inode.__getitem__)
        else:
            device, inode = table.device_id, table.inode
            ordered = sorted(range(count), key=lambda i: (device[i], inode[i]))
        self.order = array("I", ordered)
        del ordered
        self.starts = array("I")
        previous: tuple[int, int] | None = None
        for position, file in enumerate(self.order):
            key = (table.device_id[file], table.inode[file])
            if key != previous:
                self.starts.append(position)
                previous = key
        self.starts.append(count)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def members(self, group: int) -> array[int]:
        return self.order[self.starts[group] : self.starts[group + 1]]

    def group(self, group: int) -> InodeGroup:
        table = self.table
        files = self.members(group)
        first = files[0]
        if len(files) == 1:
            paths: tuple[tuple[int, bytes], ...] = (
                (table.root_index[first], table.relative_path(first)),
            )
        else:
            paths = tuple(sorted((table.root_index[f], table.relative_path(f)) for f in files))
        return InodeGroup(
            device_id=table.device_id[first],
            inode=table.inode[first],
            size_bytes=table.size_bytes[first],
            hardlink_count=max(table.hardlink_count[f] for f in files),
            paths=paths,
        )

    def size_of(self, group: int) -> int:
        return self.table.size_bytes[self.order[self.starts[group]]]

    def largest_first(self, groups: Sequence[int] | None = None) -> list[int]:
        """Group numbers by decreasing size; equal sizes by first path, so the output does not
        depend on the walk's order. Only runs of equal sizes (rare in a library) compare paths."""
        table, order, starts = self.table, self.order, self.starts
        sizes = array("Q", (table.size_bytes[order[start]] for start in starts[:-1]))
        chosen = list(range(len(self)) if groups is None else groups)
        chosen.sort(key=sizes.__getitem__, reverse=True)
        start = 0
        while start < len(chosen):
            size = sizes[chosen[start]]
            end = start + 1
            while end < len(chosen) and sizes[chosen[end]] == size:
                end += 1
            if end - start > 1:
                chosen[start:end] = sorted(chosen[start:end], key=self._first_path)
            start = end
        return chosen

    def _first_path(self, group: int) -> tuple[int, bytes]:
        table = self.table
        return min((table.root_index[f], table.relative_path(f)) for f in self.members(group))

    def groups(self, groups: Sequence[int] | None = None) -> Iterator[InodeGroup]:
        """`InodeGroup`s, largest first, built one at a time."""
        for group in self.largest_first(groups):
            yield self.group(group)

    def totals(self) -> LinkTotals:
        table = self.table
        root_count = len(table.roots)
        files = [0] * root_count
        inodes = [0] * root_count
        sizes = [0] * root_count
        freed = [0] * root_count
        total_bytes = hardlinked = outside_inodes = outside_bytes = 0
        for group in range(len(self)):
            members = self.members(group)
            size = self.size_of(group)
            total_bytes += size
            if len(members) > 1:
                hardlinked += 1
            roots = {table.root_index[f] for f in members}
            for f in members:
                files[table.root_index[f]] += 1
            for root in roots:
                inodes[root] += 1
                sizes[root] += size
            nlink = max(table.hardlink_count[f] for f in members)
            if nlink > len(members):
                outside_inodes += 1
                outside_bytes += size
            elif len(roots) == 1:
                freed[next(iter(roots))] += size
        return LinkTotals(
            files=len(table),
            inodes=len(self),
            bytes=total_bytes,
            hardlinked_inodes=hardlinked,
            outside_inodes=outside_inodes,
            outside_bytes=outside_bytes,
            roots=tuple(
                RootTotals(table.roots[i], files[i], inodes[i], sizes[i], freed[i])
                for i in range(root_count)
            ),
        )

    def orphans(self, orphans_in: int, against: Sequence[int]) -> OrphanReport:
        """Inodes with a name under root `orphans_in` and none under any `against` root.

        Deleting an orphan's names under `orphans_in` frees its size once, and only when those
        are all its names: every name seen is under `orphans_in` and `st_nlink` equals the names
        seen. Otherwise it frees nothing and `kept_by` says why.
        """
        table = self.table
        against_set = set(against)
        if orphans_in in against_set:
            raise ValueError("the orphans root cannot also be an --against root")
        found: list[int] = []
        for group in range(len(self)):
            roots = {table.root_index[f] for f in self.members(group)}
            if orphans_in in roots and not roots & against_set:
                found.append(group)
        orphans: list[Orphan] = []
        for inode_group in self.groups(found):
            kept_by: str | None = None
            if inode_group.links_outside:
                kept_by = "outside"
            elif inode_group.root_indexes != {orphans_in}:
                kept_by = "other_root"
            orphans.append(Orphan(inode_group, 0 if kept_by else inode_group.size_bytes, kept_by))
        return OrphanReport(orphans_in, tuple(against), tuple(orphans))
