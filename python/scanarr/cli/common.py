"""Options and output helpers shared by the sub-commands that walk trees (scan, links, dupes)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import time
from collections.abc import Iterable
from typing import Any, TextIO

from scanarr import _native
from scanarr.scan import WalkError


def extension_list(text: str) -> list[str]:
    extensions = [part.strip().lower().lstrip(".") for part in text.split(",") if part.strip()]
    if not extensions:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as mkv,mp4")
    return extensions


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_walk_arguments(parser: argparse.ArgumentParser) -> None:
    """The options choosing which files a walk reports (as in `scanarr scan`)."""
    parser.add_argument(
        "--ext",
        type=extension_list,
        metavar="EXT[,EXT...]",
        help=f"media extensions to consider (default: {','.join(_native.DEFAULT_EXTENSIONS)})",
    )
    parser.add_argument(
        "--all-files",
        action="store_true",
        help="consider every regular file, not only media (hidden names and system folders such "
        "as @eaDir are still skipped)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=0,
        metavar="N",
        help=f"threads walking and reading (default: {_native.DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--cross-filesystems",
        action="store_true",
        help="also enter other filesystems mounted inside a ROOT",
    )


def walk_options(args: argparse.Namespace) -> dict[str, Any]:
    """The walk's options as the arguments of `add_walk_arguments` chose them."""
    return {
        "extensions": args.ext if args.ext else _native.DEFAULT_EXTENSIONS,
        "all_files": args.all_files,
        "threads": args.threads,
        "same_device": not args.cross_filesystems,
    }


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def display(path: str | bytes) -> str:
    """A path for a terminal: undecodable bytes shown as backslash escapes."""
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    return path


def json_path(path: bytes) -> str:
    """A path for JSON: undecodable bytes become lone surrogates, which `json.dumps` escapes as
    ``\\udcXX`` (``os.fsencode(json.loads(...))`` gives the original bytes back)."""
    return os.fsdecode(path)


def is_failure(error: WalkError) -> bool:
    """Whether part of the tree went unreported (a file gone before its lstat is not)."""
    return not (error.kind == "stat" and error.errno == errno.ENOENT)


def describe(error: WalkError) -> str:
    what = {
        "root": "cannot scan",
        "read_dir": "cannot read directory",
        "stat": "cannot stat",
        "fingerprint": "cannot fingerprint",
    }.get(error.kind, "error at")
    return f"scanarr: {what} {display(error.path)}: {error.message}"


def report_walk_errors(errors: Iterable[WalkError], stream: TextIO) -> int:
    """Print the walk's errors; return how many left part of a tree unread."""
    failures = 0
    for error in errors:
        print(describe(error), file=stream)
        failures += is_failure(error)
    return failures


def walk_errors_json(errors: Iterable[WalkError]) -> list[dict[str, Any]]:
    return [
        {
            "path": json_path(os.fsencode(error.path)),
            "kind": error.kind,
            "errno": error.errno,
            "message": error.message,
        }
        for error in errors
    ]


def json_dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


class ProgressLine:
    """One line of progress on a terminal, shown only once the work has taken a second and
    redrawn at most four times a second; nothing at all when `stream` is not a terminal."""

    AFTER_SECONDS = 1.0
    EVERY_SECONDS = 0.25

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def due(self, *, final: bool = False) -> bool:
        """Whether a `show` now would be seen (`final`: the last update, drawn even if early)."""
        if not self._enabled:
            return False
        now = time.monotonic()
        if now - self.started < self.AFTER_SECONDS:
            return False
        return final or now - self._last >= self.EVERY_SECONDS

    def show(self, text: str) -> None:
        self._last = time.monotonic()
        self._stream.write(f"\r\x1b[K{text}")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False
