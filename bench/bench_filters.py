"""Cost of one name decision on the live watcher's event path: the native filter against the
pure-Python filter the watcher used before (kept here, verbatim in behaviour, as the baseline).

Every inotify event about a file or directory asks `MediaFilter.accepts_file` or `accepts_dir`
once. This times both over a mix of the names a media library's events carry (media files,
partial downloads, artwork and subtitles, hidden and system names, some non-ASCII)::

    python bench/bench_filters.py [--names 20000] [--repeats 7]

It prints nanoseconds per call (best of the repeats) for each and the ratio Python / native.
"""

from __future__ import annotations

import argparse
import random
import timeit
from collections.abc import Callable, Iterable

from scanarr import _native
from scanarr.live.filters import MediaFilter

TEMP_SUFFIXES = (".part", ".tmp", ".download", ".!qb")
METADATA_SUFFIXES = (".nfo", ".jpg", ".png", ".srt", ".sub", ".idx")


def _lower_tail(name: str) -> str:
    tail = name[-10:]
    if tail.isascii():
        return tail.lower()
    return "".join(char.lower() if char.isascii() else char for char in tail)


def _is_system_dir(name: str) -> bool:
    lowered = name.lower()
    return (
        name == "@eaDir"
        or name.startswith(".Trash-")
        or lowered == "$recycle.bin"
        or lowered == "system volume information"
    )


class PythonFilter:
    """The watcher's former pure-Python filter: the baseline."""

    __slots__ = ("extensions",)

    def __init__(self, extensions: Iterable[str]) -> None:
        self.extensions = frozenset(extension.removeprefix(".").lower() for extension in extensions)

    def accepts_file(self, name: str) -> bool:
        if name.startswith("."):
            return False
        dot = name.rfind(".")
        if dot < 0:
            return False
        lowered = _lower_tail(name)
        if lowered.endswith(TEMP_SUFFIXES) or lowered.endswith(METADATA_SUFFIXES):
            return False
        return name[dot + 1 :].lower() in self.extensions

    def accepts_dir(self, name: str) -> bool:
        return not name.startswith(".") and not _is_system_dir(name)


def names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    titles = ["Some.Film.2020.1080p.BluRay.x264-GRP", "Show.S01E02.720p.WEB-DL", "Amélie (2001)"]
    titles += ["物語 第1話", "Film"]
    endings = [".mkv"] * 6 + [".mp4", ".MKV", ".mkv.part", ".!qB", ".nfo", "-poster.jpg"]
    endings += [".en.srt", ".tmp", ""]
    out = []
    for number in range(count):
        name = f"{rng.choice(titles)}.{number}{rng.choice(endings)}"
        out.append("." + name if rng.random() < 0.03 else name)
    return out


def per_call_ns(decide: Callable[[str], bool], sample: list[str], repeats: int) -> float:
    def run() -> None:
        for name in sample:
            decide(name)

    best = min(timeit.repeat(run, number=1, repeat=repeats))
    return best / len(sample) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sample = names(args.names, args.seed)
    directories = ["Season 01", "@eaDir", ".Trash-1000", "Extras", "Crème", "$RECYCLE.BIN"]
    directories = [directories[number % len(directories)] for number in range(args.names)]
    python = PythonFilter(_native.DEFAULT_EXTENSIONS)
    native = MediaFilter(_native.DEFAULT_EXTENSIONS)
    assert [python.accepts_file(n) for n in sample] == [native.accepts_file(n) for n in sample]

    # A Python method forwarding to the native one, to show what binding it directly saves.
    class Forwarding:
        def __init__(self) -> None:
            self._native = _native.NameFilter(_native.DEFAULT_EXTENSIONS)

        def accepts_file(self, name: str) -> bool:
            return self._native.accepts_file(name)

    forwarding = Forwarding()
    rows = [
        ("accepts_file", python.accepts_file, native.accepts_file, sample),
        ("accepts_dir", python.accepts_dir, native.accepts_dir, directories),
    ]
    print(f"{args.names} names, best of {args.repeats}")
    for label, slow, fast, items in rows:
        python_ns = per_call_ns(slow, items, args.repeats)
        native_ns = per_call_ns(fast, items, args.repeats)
        print(
            f"{label:13s} python {python_ns:6.0f} ns  native {native_ns:6.0f} ns  "
            f"python/native {python_ns / native_ns:4.1f}"
        )
    forwarded_ns = per_call_ns(forwarding.accepts_file, sample, args.repeats)
    print(f"accepts_file through a forwarding Python method: {forwarded_ns:6.0f} ns")


if __name__ == "__main__":
    main()
