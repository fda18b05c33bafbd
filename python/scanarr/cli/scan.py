"""`scanarr scan PATH [PATH ...]`: what is on a disk, with no server.

Default output is a summary; `--jsonl` prints one JSON object per media file (encoded natively, no
Python object per file). Problems are reported on stderr, naming the path; the rest of the tree is
still reported. Exit code 0 when the whole tree was read, 1 when a root or a subtree could not be,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from typing import Any, TextIO

from scanarr import _native
from scanarr.scan import Scan, WalkError

PROGRESS_AFTER_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 0.25


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
    parser.add_argument(
        "--ext",
        type=_extension_list,
        metavar="EXT[,EXT...]",
        help=f"media extensions to report (default: {','.join(_native.DEFAULT_EXTENSIONS)})",
    )
    parser.add_argument(
        "--all-files",
        action="store_true",
        help="report every regular file, not only media (hidden names and system folders "
        "such as @eaDir are still skipped)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=0,
        metavar="N",
        help=f"walker threads (default: {_native.DEFAULT_THREADS}, sized for disk latency)",
    )
    parser.add_argument(
        "--cross-filesystems",
        action="store_true",
        help="also enter other filesystems mounted inside a PATH",
    )
    parser.set_defaults(func=run)


def _extension_list(text: str) -> list[str]:
    extensions = [part.strip().lower().lstrip(".") for part in text.split(",") if part.strip()]
    if not extensions:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as mkv,mp4")
    return extensions


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _display(path: str | bytes) -> str:
    return os.fsdecode(path) if isinstance(path, bytes) else path


def _is_failure(error: WalkError) -> bool:
    """Whether this error means part of the tree was not reported.

    A file that vanished between the directory listing and its lstat is not a failure: the walk
    saw the tree as it was at that moment.
    """
    return not (error.kind == "stat" and error.errno == errno.ENOENT)


def _describe(error: WalkError) -> str:
    path = _display(error.path)
    what = {
        "root": "cannot scan",
        "read_dir": "cannot read directory",
        "stat": "cannot stat",
        "fingerprint": "cannot fingerprint",
    }.get(error.kind, "error at")
    return f"scanarr: {what} {path}: {error.message}"


def _human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class _Progress:
    """A one-line progress display on a terminal, shown only for scans longer than a second."""

    def __init__(self, stream: TextIO, started: float) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._started = started
        self._last = 0.0
        self._shown = False

    def update(self, running: Scan) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if (
            now - self._started < PROGRESS_AFTER_SECONDS
            or now - self._last < PROGRESS_EVERY_SECONDS
        ):
            return
        self._last = now
        stats = running.stats()
        rate = stats.files / max(now - self._started, 1e-9)
        self._stream.write(
            f"\r\x1b[Kscanning: {stats.files} media files, {stats.dirs} directories, "
            f"{rate:,.0f} files/s"
        )
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def run(args: argparse.Namespace) -> int:
    roots = [os.path.abspath(path) for path in args.paths]
    started = time.monotonic()
    progress = _Progress(sys.stderr, started)
    failures = 0
    non_utf8 = 0
    with Scan(
        roots,
        extensions=args.ext if args.ext else _native.DEFAULT_EXTENSIONS,
        all_files=args.all_files,
        threads=args.threads,
        same_device=not args.cross_filesystems,
        fingerprint=args.fingerprint,
    ) as running:
        heads = ["{" + f'"volume_path":{json.dumps(root, ensure_ascii=False)},' for root in roots]
        out = sys.stdout
        try:
            for batch in running.batches():
                for error in batch.errors:
                    if _is_failure(error):
                        failures += 1
                    progress.clear()
                    print(_describe(error), file=sys.stderr)
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
                progress.update(running)
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


def _print_summary(stats: _native.WalkStats, duration: float, root_count: int) -> None:
    rate = stats.files / duration if duration > 0 else 0.0
    lines = [
        f"media files: {stats.files}",
        f"directories: {stats.dirs}",
        f"total bytes: {stats.bytes_total}",
        f"total size: {_human_bytes(stats.bytes_total)} (each hardlinked file counted once)",
        f"distinct inodes: {stats.distinct_inodes}",
        f"multi-link files: {stats.multi_link_files}",
        f"errors: {stats.errors}",
        f"duration: {duration:.3f} s",
        f"rate: {rate:.0f} files/s",
    ]
    if stats.skipped_mounts:
        lines.append(f"other filesystems not entered: {stats.skipped_mounts}")
    print("\n".join(lines))
