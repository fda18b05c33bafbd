"""The live index's merge of a whole volume's listing, alone: what arming adds after the listing.

    python bench/bench_merge.py [TREE] [--repeat 7]

Lists TREE once natively (with a `Fanotify` group when this process may use one, else an inotify
instance, as the agent would), then merges that listing into a fresh `LiveIndex` `--repeat`
times and prints the median and every run. To compare two builds, alternate their native modules
in the same session (machines here are noisy): the ratio of the medians is the figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import inotify_simple

from scanarr import _native
from scanarr.live.fanotify import probe as fanotify_probe
from scanarr.live.inotify import WATCH_MASK
from scanarr.scan import DEFAULT_EXTENSIONS

DEFAULT_TREE = "/work/bench-trees/movies-250k"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", nargs="?", default=DEFAULT_TREE)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    fanotify = fanotify_probe([args.tree]) is None
    group = _native.Fanotify() if fanotify else None
    instance = None if fanotify else inotify_simple.INotify()
    fd = group.fd if group is not None else instance.fileno() if instance is not None else -1
    backend = "fanotify" if fanotify else "inotify"
    device = os.stat(args.tree).st_dev
    started = time.perf_counter()
    extensions = list(DEFAULT_EXTENSIONS)
    listing = _native.LiveLister().list(
        args.tree, inotify_fd=fd, mask=WATCH_MASK, device=device, extensions=extensions
    )
    listed = time.perf_counter() - started
    if listing is None:  # cancelled: never, here
        raise SystemExit("the listing was cancelled")
    times = []
    for _ in range(args.repeat):
        index = _native.LiveIndex(fd)
        _volume, top = index.add_volume(device)
        started = time.perf_counter()
        index.merge(top, listing, False)
        times.append(time.perf_counter() - started)
        del index
    print(
        f"{backend}: {listing.dir_count} directories, {listing.file_count} media files listed in "
        f"{listed:.2f} s; merge median {statistics.median(times):.3f} s "
        f"(runs: {', '.join(f'{t:.3f}' for t in times)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
