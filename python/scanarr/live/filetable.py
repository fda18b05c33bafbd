"""The media files of one watched directory, as (name, inode, stamp), held compactly.

A table is immutable-in-place for small directories and mutable for large ones; every function
returns the table to keep (which may be a new object), so a `Directory` just reassigns it.

- Up to `SMALL_TABLE` files: one bytes object, a count byte, then one `_RECORD` (inode, stamp)
  per file, then the names, UTF-8, each preceded and the last followed by "/" (a character no
  name contains), in the order of the records. A film's directory with its one file costs one
  object of about 50 bytes plus its name, instead of a dict, a str and three ints.
- Beyond: a `LargeTable`, name → ``stamp << 64 | inode`` and inode → names, so that a directory
  of thousands of files is neither copied on every change nor scanned to find an inode's names.

Both keep insertion order. Names are encoded with surrogateescape, so any str round-trips.
"""

from __future__ import annotations

import struct
from typing import TypeAlias

SMALL_TABLE = 16
_RECORD = struct.Struct("<QQ")
_U64 = (1 << 64) - 1
EMPTY = b""


class LargeTable:
    __slots__ = ("by_inode", "by_name")

    def __init__(self) -> None:
        self.by_name: dict[str, int] = {}  # name → stamp << 64 | inode
        self.by_inode: dict[int, str | tuple[str, ...]] = {}  # inode → its names here

    def add(self, name: str, inode: int, stamp: int) -> None:
        self.remove(name)
        self.by_name[name] = stamp << 64 | inode
        names = self.by_inode.get(inode)
        if names is None:
            self.by_inode[inode] = name
        else:
            self.by_inode[inode] = (*_as_tuple(names), name)

    def remove(self, name: str) -> int | None:
        packed = self.by_name.pop(name, None)
        if packed is None:
            return None
        inode = packed & _U64
        remaining = tuple(other for other in _as_tuple(self.by_inode[inode]) if other != name)
        if not remaining:
            del self.by_inode[inode]
        else:
            self.by_inode[inode] = remaining if len(remaining) > 1 else remaining[0]
        return inode


FileTable: TypeAlias = bytes | LargeTable


def _as_tuple(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return names if isinstance(names, tuple) else (names,)


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def items(table: FileTable) -> dict[str, tuple[int, int]]:
    """name → (inode, stamp), in order."""
    if isinstance(table, LargeTable):
        return {name: (packed & _U64, packed >> 64) for name, packed in table.by_name.items()}
    if not table:
        return {}
    names_start = 1 + table[0] * _RECORD.size
    names = table[names_start + 1 : -1].split(b"/")
    records = _RECORD.iter_unpack(table[1:names_start])
    return {
        name.decode("utf-8", "surrogateescape"): record
        for name, record in zip(names, records, strict=True)
    }


def pack(files: dict[str, tuple[int, int]]) -> FileTable:
    """The table holding `files` (name → (inode, stamp))."""
    if not files:
        return EMPTY
    if len(files) > SMALL_TABLE:
        large = LargeTable()
        for name, (inode, stamp) in files.items():
            large.add(name, inode, stamp)
        return large
    return b"".join(
        (
            bytes((len(files),)),
            *(_RECORD.pack(inode, stamp) for inode, stamp in files.values()),
            b"/",
            b"/".join(_encode(name) for name in files),
            b"/",
        )
    )


def record(table: FileTable, name: str) -> tuple[int, int] | None:
    """(inode, stamp) of `name`, None if not in the table."""
    if isinstance(table, LargeTable):
        packed = table.by_name.get(name)
        return None if packed is None else (packed & _U64, packed >> 64)
    if not table:
        return None
    names_start = 1 + table[0] * _RECORD.size
    position = table.find(b"/" + _encode(name) + b"/", names_start)
    if position < 0:
        return None
    number = table.count(b"/", names_start, position)
    inode, stamp = _RECORD.unpack_from(table, 1 + number * _RECORD.size)
    return inode, stamp


def count(table: FileTable) -> int:
    if isinstance(table, LargeTable):
        return len(table.by_name)
    return table[0] if table else 0


def names_of(table: FileTable, inode: int) -> list[str]:
    """Names in the table that are links of `inode`."""
    if isinstance(table, LargeTable):
        names = table.by_inode.get(inode)
        return [] if names is None else list(_as_tuple(names))
    return [name for name, (linked, _stamp) in items(table).items() if linked == inode]


def with_file(table: FileTable, name: str, inode: int, stamp: int) -> FileTable:
    """The table with `name` set to (inode, stamp)."""
    if isinstance(table, LargeTable):
        table.add(name, inode, stamp)
        return table
    files = items(table)
    files[name] = (inode, stamp)
    return pack(files)


def with_stamp(table: FileTable, inode: int, stamp: int) -> FileTable:
    """The table with every link of `inode` stamped `stamp`."""
    if isinstance(table, LargeTable):
        for name in names_of(table, inode):
            table.by_name[name] = stamp << 64 | inode
        return table
    files = items(table)
    for name, (linked, _stamp) in files.items():
        if linked == inode:
            files[name] = (inode, stamp)
    return pack(files)


def without_file(table: FileTable, name: str) -> tuple[FileTable, int]:
    """The table without `name`, and the inode `name` had (KeyError if not in the table)."""
    if isinstance(table, LargeTable):
        inode = table.remove(name)
        if inode is None:
            raise KeyError(name)
        if len(table.by_name) <= SMALL_TABLE // 2:
            return pack(items(table)), inode
        return table, inode
    files = items(table)
    inode = files.pop(name)[0]
    return pack(files), inode
