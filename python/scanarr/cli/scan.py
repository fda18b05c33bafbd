"""`scanarr scan PATH [PATH ...]`: what is on a disk, with no server.

Default output is a summary; `--jsonl` prints one JSON object per media file (encoded natively, no
Python object per file). Problems are reported on stderr, naming the path; the rest of the tree is
still reported. Exit code 0 when the whole tree was read, 1 when a root or a subtree could not be,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Protocol

from scanarr import _native
from scanarr.cli.common import (
    ProgressLine,
    add_walk_arguments,
    describe,
    human_bytes,
    is_failure,
    walk_options,
)
from scanarr.scan import Scan


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "scan",
        help="scan folders and summarise their media files (no server needed)",
        description=(
            "Walk PATHs in parallel, lstat every media file and report what is there: a summary "
            "by default, or one JSON object per file with --jsonl. Symlinks are never followed; "
            "other filesystems mounted inside a PATH are not entered."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="folder to scan")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--jsonl", action="store_true", help="print one JSON object per media file on stdout"
    )
    parser.add_argument(
        "--fingerprint",
        choices=("sampled", "full"),
        help="add an xxh3-128 fingerprint: 'sampled' (size + first and last MiB) or 'full'",
    )
    add_walk_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    roots = [os.path.abspath(path) for path in args.paths]
    progress = ProgressLine(sys.stderr)
    started = progress.started
    failures = 0
    non_utf8 = 0
    with Scan(roots, **walk_options(args), fingerprint=args.fingerprint) as running:
        heads = ["{" + f'"volume_path":{json.dumps(root, ensure_ascii=False)},' for root in roots]
        out = sys.stdout
        try:
            for batch in running.batches():
                for error in batch.errors:
                    if is_failure(error):
                        failures += 1
                    progress.clear()
                    print(describe(error), file=sys.stderr)
                if args.jsonl and len(batch):
                    texts, skipped = batch.json_records(heads, "}")
                    if texts:
                        out.write("\n".join(texts))
                        out.write("\n")
                    for index in skipped:
                        file = batch.files[index]
                        non_utf8 += 1
                        progress.clear()
                        full = os.path.join(
                            os.fsencode(running.roots[file.root_index]),
                            os.fsencode(file.relative_path),
                        )
                        print(f"scanarr: skipped non-UTF-8 name: {full!r}", file=sys.stderr)
                if progress.due():
                    stats = running.stats()
                    rate = stats.files / max(time.monotonic() - started, 1e-9)
                    progress.show(
                        f"scanning: {stats.files} media files, {stats.dirs} directories, "
                        f"{rate:,.0f} files/s"
                    )
        except BrokenPipeError:
            # `scanarr scan --jsonl | head`: the reader is gone; stop quietly.
            running.cancel()
            sys.stderr.close()
            return 0
        finally:
            progress.clear()
        duration = time.monotonic() - started
        stats = running.stats()
    if not args.jsonl:
        _print_summary(stats, duration, len(roots))
    if failures:
        print(
            f"scanarr: {failures} error(s): part of the tree was not scanned (see above)",
            file=sys.stderr,
        )
        return 1
    return 0


class WalkTotals(Protocol):
    """What the summary reads of a walk (`_native.WalkStats`, or bench/pyscan.py's own)."""

    files: int
    dirs: int
    bytes_total: int
    distinct_inodes: int
    multi_link_files: int
    errors: int
    skipped_mounts: int


def summary_lines(stats: WalkTotals, duration: float) -> list[str]:
    """The summary `scanarr scan` prints, one ``key: value`` a line."""
    rate = stats.files / duration if duration > 0 else 0.0
    lines = [
        f"media files: {stats.files}",
        f"directories: {stats.dirs}",
        f"total bytes: {stats.bytes_total}",
        f"total size: {human_bytes(stats.bytes_total)} (each hardlinked file counted once)",
        f"distinct inodes: {stats.distinct_inodes}",
        f"multi-link files: {stats.multi_link_files}",
        f"errors: {stats.errors}",
        f"duration: {duration:.3f} s",
        f"rate: {rate:.0f} files/s",
    ]
    if stats.skipped_mounts:
        lines.append(f"other filesystems not entered: {stats.skipped_mounts}")
    return lines


def _print_summary(stats: _native.WalkStats, duration: float, root_count: int) -> None:
    lines = summary_lines(stats, duration)
    print("\n".join(lines))
