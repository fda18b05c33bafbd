"""`scanarr links ROOT [ROOT ...]`: which media files share an inode across roots, and
`--orphans-in A --against B`: which files under A have no link under B, and what deleting them
would really free.

An inode frees its bytes only when its last name goes. An orphan frees its size once when every
name seen is under A and `st_nlink` equals the names seen; one with names outside the scanned
roots (another folder, a filtered-out name) or under another scanned root frees nothing, and the
output says so.

Exit code 0 when every root was read completely, 1 when part of a tree could not be read (the
results are then incomplete and said to be), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from scanarr.cli.common import (
    add_walk_arguments,
    display,
    human_bytes,
    json_dump,
    json_path,
    report_walk_errors,
    walk_errors_json,
    walk_options,
)
from scanarr.links import (
    FileTable,
    InodeGroup,
    LinkIndex,
    LinkTotals,
    OrphanReport,
    RootsError,
    collect,
    normalise_roots,
)
from scanarr.scan import WalkError

# --- helpers shared with `scanarr dupes` ------------------------------------------------------


def collect_from_args(
    args: argparse.Namespace, roots: Sequence[str]
) -> tuple[FileTable, list[WalkError]]:
    return collect(roots, **walk_options(args))


def roots_or_exit(parser: argparse.ArgumentParser, given: Sequence[str]) -> list[str]:
    """`normalise_roots`, or exit with code 2 (``parser.error``) naming what is wrong."""
    try:
        return normalise_roots(given)
    except RootsError as error:
        parser.error(str(error))


# --- the sub-command ----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "links",
        help="show which media files are hardlinked across roots, and orphans with the space "
        "deleting them frees",
        description=(
            "Group the media files under the ROOTs by inode: each group shows its size once, its "
            "path under each root and how many of its links lie outside the scanned roots "
            "(st_nlink above the links seen). With --orphans-in A --against B, list the files "
            "under A with no link under any B, and the bytes deleting them would actually free: "
            "an inode is freed only when its last link goes, so one with links outside the "
            "scanned roots or under another scanned root frees nothing. Read-only."
        ),
    )
    parser.add_argument("roots", nargs="*", metavar="ROOT", help="folder to scan")
    parser.add_argument(
        "--orphans-in",
        metavar="A",
        help="list the files under A that have no link under any --against folder",
    )
    parser.add_argument(
        "--against",
        metavar="B",
        action="append",
        default=[],
        help="a folder whose links keep a file of A from being an orphan (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    add_walk_arguments(parser)
    parser.set_defaults(func=run, parser=parser)


def _roots(args: argparse.Namespace) -> list[str]:
    parser: argparse.ArgumentParser = args.parser
    if args.against and not args.orphans_in:
        parser.error("--against needs --orphans-in")
    if args.orphans_in and not args.against:
        parser.error("--orphans-in needs at least one --against")
    if not args.orphans_in and not args.roots:
        parser.error("give at least one ROOT, or --orphans-in A --against B")
    given = [args.orphans_in, *args.against] if args.orphans_in else []
    # A positional ROOT repeating A or B adds nothing: it is already scanned.
    given_absolute = {os.path.abspath(root) for root in given}
    given += [root for root in args.roots if os.path.abspath(root) not in given_absolute]
    return roots_or_exit(parser, given)


def run(args: argparse.Namespace) -> int:
    roots = _roots(args)
    table, errors = collect_from_args(args, roots)
    failures = report_walk_errors(errors, sys.stderr)
    index = LinkIndex(table)
    out = sys.stdout
    try:
        if args.orphans_in:
            report = index.orphans(0, list(range(1, 1 + len(args.against))))
            if args.json:
                _write_json_lines(out, _orphans_json(report, roots, errors))
            else:
                _print_orphans(out, report, roots)
        elif args.json:
            _write_json_lines(out, _links_json(index, roots, errors))
        else:
            _print_links(out, index)
    except BrokenPipeError:
        # `scanarr links ... | head`: the reader is gone; stop quietly.
        sys.stderr.close()
        return 0
    if failures:
        print(
            f"scanarr: {failures} error(s): part of the tree was not read, so links there were "
            "not seen and the results above are incomplete",
            file=sys.stderr,
        )
        return 1
    return 0


# --- JSON ---------------------------------------------------------------------------------------


def _write_json_lines(out: TextIO, pieces: Iterable[str]) -> None:
    for piece in pieces:
        out.write(piece)
    out.write("\n")


def group_json(group: InodeGroup, roots: Sequence[str]) -> dict[str, Any]:
    return {
        "size_bytes": group.size_bytes,
        "device_id": group.device_id,
        "inode": group.inode,
        "hardlink_count": group.hardlink_count,
        "links_seen": group.links_seen,
        "links_outside": group.links_outside,
        "paths": [
            {"root": roots[root], "relative_path": json_path(relative_path)}
            for root, relative_path in group.paths
        ],
    }


def _json_list(items: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array written item by item (a million groups never sit in memory as text)."""
    yield "["
    for number, item in enumerate(items):
        yield ("," if number else "") + json_dump(item)
    yield "]"


def _totals_json(totals: LinkTotals) -> dict[str, Any]:
    return {
        "files": totals.files,
        "inodes": totals.inodes,
        "bytes": totals.bytes,
        "hardlinked_inodes": totals.hardlinked_inodes,
        "outside_inodes": totals.outside_inodes,
        "outside_bytes": totals.outside_bytes,
        "roots": [
            {
                "root": root.root,
                "files": root.files,
                "inodes": root.inodes,
                "bytes": root.bytes,
                "freed_if_deleted_bytes": root.freed_if_deleted_bytes,
            }
            for root in totals.roots
        ],
    }


def _links_json(index: LinkIndex, roots: Sequence[str], errors: list[WalkError]) -> Iterator[str]:
    yield '{"roots":' + json_dump(list(roots)) + ',"groups":'
    yield from _json_list(group_json(group, roots) for group in index.groups())
    yield ',"totals":' + json_dump(_totals_json(index.totals()))
    yield ',"errors":' + json_dump(walk_errors_json(errors)) + "}"


def _orphans_json(
    report: OrphanReport, roots: Sequence[str], errors: list[WalkError]
) -> Iterator[str]:
    outside = report.kept("outside")
    other = report.kept("other_root")
    yield (
        '{"roots":'
        + json_dump(list(roots))
        + ',"orphans_in":'
        + json_dump(roots[report.orphans_in])
        + ',"against":'
        + json_dump([roots[i] for i in report.against])
        + ',"orphans":'
    )
    yield from _json_list(
        {**group_json(o.group, roots), "freed_bytes": o.freed_bytes, "kept_by": o.kept_by}
        for o in report.orphans
    )
    totals = {
        "inodes": len(report.orphans),
        "files": report.files,
        "bytes": report.bytes,
        "freed_bytes": report.freed_bytes,
        "kept_by_outside_links": {"inodes": outside[0], "bytes": outside[1]},
        "kept_by_other_roots": {"inodes": other[0], "bytes": other[1]},
    }
    yield ',"totals":' + json_dump(totals)
    yield ',"errors":' + json_dump(walk_errors_json(errors)) + "}"


# --- tables -------------------------------------------------------------------------------------


def full_path(roots: Sequence[str], root_index: int, relative_path: bytes) -> str:
    return display(os.fsencode(roots[root_index]).rstrip(b"/") + b"/" + relative_path)


def _print_links(out: TextIO, index: LinkIndex) -> None:
    roots = index.table.roots
    out.write(f"{'SIZE':>10}  {'LINKS':>5}  {'OUTSIDE':>7}  PATH\n")
    for group in index.groups():
        lead = f"{human_bytes(group.size_bytes):>10}  {group.links_seen:>5}  "
        lead += f"{group.links_outside or '':>7}  "
        for number, (root, relative_path) in enumerate(group.paths):
            prefix = lead if number == 0 else " " * len(lead)
            out.write(prefix + full_path(roots, root, relative_path) + "\n")
    totals = index.totals()
    lines = [
        "",
        f"media files: {totals.files} (names seen)",
        f"inodes: {totals.inodes}",
        f"total size: {human_bytes(totals.bytes)} ({totals.bytes} bytes, each inode once)",
        f"hardlinked inodes (two names or more seen): {totals.hardlinked_inodes}",
        f"inodes with links outside the scanned roots: {totals.outside_inodes} "
        f"({human_bytes(totals.outside_bytes)})",
    ]
    for per_root in totals.roots:
        lines.append(
            f"{per_root.root}: {per_root.files} files, {per_root.inodes} inodes, "
            f"{human_bytes(per_root.bytes)}; only here (freed if deleted): "
            f"{human_bytes(per_root.freed_if_deleted_bytes)} "
            f"({per_root.freed_if_deleted_bytes} bytes)"
        )
    out.write("\n".join(lines) + "\n")


_KEPT_BY = {
    "outside": "frees nothing: {n} link(s) outside the scanned roots",
    "other_root": "frees nothing: also linked under {roots}",
}


def _print_orphans(out: TextIO, report: OrphanReport, roots: Sequence[str]) -> None:
    orphans_root = roots[report.orphans_in]
    out.write(f"{'SIZE':>10}  {'FREED':>10}  PATH\n")
    for orphan in report.orphans:
        group = orphan.group
        lead = f"{human_bytes(group.size_bytes):>10}  {human_bytes(orphan.freed_bytes):>10}  "
        paths = [(r, p) for r, p in group.paths if r == report.orphans_in]
        for number, (root, relative_path) in enumerate(paths):
            prefix = lead if number == 0 else " " * len(lead)
            out.write(prefix + full_path(roots, root, relative_path) + "\n")
        if orphan.kept_by is not None:
            others = sorted({roots[r] for r in group.root_indexes} - {orphans_root})
            note = _KEPT_BY[orphan.kept_by].format(n=group.links_outside, roots=", ".join(others))
            out.write(" " * len(lead) + f"({note})\n")
    against = ", ".join(roots[i] for i in report.against)
    outside_inodes, outside_bytes = report.kept("outside")
    other_inodes, other_bytes = report.kept("other_root")
    lines = [
        "",
        f"orphans under {orphans_root} (no link under {against}): {len(report.orphans)} inodes, "
        f"{report.files} files, {human_bytes(report.bytes)}",
        f"deleting them frees: {human_bytes(report.freed_bytes)} ({report.freed_bytes} bytes)",
    ]
    if outside_inodes:
        lines.append(
            f"not freed: {outside_inodes} inodes ({human_bytes(outside_bytes)}) also have links "
            "outside the scanned roots"
        )
    if other_inodes:
        lines.append(
            f"not freed: {other_inodes} inodes ({human_bytes(other_bytes)}) are also linked under "
            "another scanned root"
        )
    out.write("\n".join(lines) + "\n")
