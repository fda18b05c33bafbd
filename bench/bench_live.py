"""Benchmarks of live watching (issue 4).

    python bench/bench_live.py latency [--files 300] [--gap 0.02] [--debounce 1.0] [--direct]
    python bench/bench_live.py burst [--files 10000] [--direct]
    python bench/bench_live.py index-memory [--files 1000000]
    python bench/bench_live.py watch-memory [--files 100000] [--dir DIR]

`latency`: a writer process creates media files one at a time; for each, the time from its
``close()`` to the moment its ``file.created`` frame reaches the API (p50/p99/max). `burst`: the
writer creates N files as fast as it can; every one must be reported exactly once, and the time
from the last ``close()`` to the last frame is the drain time. Both run the real pipeline in one
process — `LiveWatcher` → `WatcherAgent.live.submit` → WebSocket → `DevApiServer` on 127.0.0.1 —
unless ``--direct``, which measures up to the watcher's ``emit`` only. Both clocks are
CLOCK_MONOTONIC, shared by the two processes. Targets: p99 ≤ debounce + 50 ms; burst drained in
under 2 s; zero lost, zero duplicated.

`index-memory`: the memory of the live tree and of the ``(device, inode)`` index for N media
files (no filesystem: the same structures filled directly): bytes per file by tracemalloc, and
the RSS growth of a fresh process filling them. `watch-memory`: the RSS growth of a
`LiveWatcher` listing and watching a real library of N empty media files (one directory per
film, a quarter of them hardlinked from a torrents/ volume; needs N·1.25 inotify watches).
Target for both: at most 250 bytes per file.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio

from scanarr.live import LiveEvent, LiveWatcher
from scanarr.live.filters import MediaFilter
from scanarr.live.tree import STAMP_MASK, InodeIndex, VolumeTree
from scanarr.protocol import FileCreated, WatcherConfig, WatchPath

WRITER = r"""
import os, sys, time
directory, count, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
closed = []
payload = b"m" * 1024
for number in range(count):
    fd = os.open(f"{directory}/{number:06d}.mkv", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, payload)
    os.close(fd)
    closed.append(time.monotonic_ns())
    if gap:
        time.sleep(gap)
sys.stdout.write("\n".join(map(str, closed)))
"""

TOKEN = "bench-token"


class Arrivals:
    """When each file.created arrived (monotonic ns), by relative path."""

    def __init__(self) -> None:
        self.times: dict[str, list[int]] = collections.defaultdict(list)
        self.rescans: list[tuple[str, str]] = []
        self.changed = trio.Event()

    def arrived(self, relative_path: str) -> None:
        self.times[relative_path].append(time.monotonic_ns())
        self.changed.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        with trio.move_on_after(timeout):
            while len(self.times) < count:
                self.changed = trio.Event()
                await self.changed.wait()


async def _run_writer(directory: Path, count: int, gap: float) -> list[int]:
    result = await trio.run_process(
        [sys.executable, "-c", WRITER, str(directory), str(count), str(gap)],
        capture_stdout=True,
    )
    return [int(line) for line in result.stdout.decode().split()]


async def _measure(args: argparse.Namespace, count: int, gap: float) -> dict[str, Any]:
    """Start the pipeline on an empty volume, run the writer, collect arrival times."""
    arrivals = Arrivals()
    with tempfile.TemporaryDirectory(prefix="bench-live-", dir=args.dir) as temporary:
        root = Path(temporary) / "volume"
        root.mkdir()
        async with trio.open_nursery() as nursery:
            watcher = await _start_pipeline(nursery, arrivals, root, Path(temporary), args)
            await watcher.wait_applied()
            closed = await _run_writer(root, count, gap)
            await arrivals.wait_for(count, timeout=60)
            nursery.cancel_scope.cancel()
        stats = watcher.stats()
    expected = {f"{number:06d}.mkv" for number in range(count)}
    duplicated = sum(len(times) - 1 for times in arrivals.times.values() if len(times) > 1)
    lost = len(expected - set(arrivals.times))
    latencies = [
        (arrivals.times[f"{number:06d}.mkv"][0] - closed_at) / 1e6
        for number, closed_at in enumerate(closed)
        if f"{number:06d}.mkv" in arrivals.times
    ]
    last_arrival = max((times[0] for times in arrivals.times.values()), default=0)
    return {
        "files": count,
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": len(set(arrivals.times) - expected),
        "overflows": stats.overflows,
        "rescans": arrivals.rescans,
        "latencies_ms": latencies,
        "write_s": (closed[-1] - closed[0]) / 1e9 if closed else 0.0,
        "drain_after_last_close_s": (last_arrival - closed[-1]) / 1e9 if closed else 0.0,
    }


async def _start_pipeline(
    nursery: trio.Nursery,
    arrivals: Arrivals,
    root: Path,
    workdir: Path,
    args: argparse.Namespace,
) -> LiveWatcher:
    def rescan(volume_id: str, reason: str) -> None:
        arrivals.rescans.append((volume_id, reason))

    if args.direct:

        async def emit(event: LiveEvent) -> None:
            if isinstance(event, FileCreated):
                arrivals.arrived(event.relative_path)

        watcher = LiveWatcher(emit, rescan, debounce=args.debounce)
        await nursery.start(watcher.run)
        watcher.set_volumes([WatchPath(id="bench", path=str(root))], ["mkv"])
        return watcher

    from scanarr.agent import WatcherAgent
    from scanarr.config import Settings, parse_api_url
    from scanarr.dev_api import DevApiServer, ReceivedMessage

    def on_message(message: ReceivedMessage) -> None:
        if message.type == "file.created":
            arrivals.arrived(message.data["relative_path"])

    server = DevApiServer(
        token=TOKEN,
        config=WatcherConfig(
            watch_paths=[WatchPath(id="bench", path=str(root))], scan_extensions=["mkv"]
        ),
        on_message=on_message,
    )
    await nursery.start(server.serve)
    agent = WatcherAgent(
        Settings(
            api_url=parse_api_url(server.url),
            auth_token=TOKEN,
            state_file=str(workdir / "state.json"),
        )
    )

    def request_rescan(volume_id: str, reason: str) -> None:
        rescan(volume_id, reason)
        agent.live.request_rescan(volume_id, reason)

    watcher = LiveWatcher(agent.live.submit, request_rescan, debounce=args.debounce)
    agent.volumes.add_listener(
        lambda volumes, _change: watcher.set_volumes(volumes.ordered(), volumes.scan_extensions)
    )
    await nursery.start(watcher.run)
    await nursery.start(agent.run)
    with trio.fail_after(30):
        await server.wait_for_type("scan.completed", volume_id="bench")
    return watcher


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    result = trio.run(_measure, args, args.files, args.gap)
    latencies = result.pop("latencies_ms")
    result.update(
        p50_ms=round(statistics.median(latencies), 2) if latencies else None,
        p99_ms=round(_percentile(latencies, 0.99), 2),
        max_ms=round(max(latencies, default=0.0), 2),
        target_p99_ms=args.debounce * 1000 + 50,
    )
    return result


def bench_burst(args: argparse.Namespace) -> dict[str, Any]:
    result = trio.run(_measure, args, args.files, 0.0)
    result.pop("latencies_ms")
    result["target_drain_s"] = 2.0
    return result


def _fill_library(count: int) -> tuple[InodeIndex, list[VolumeTree]]:
    """The live structures for `count` media files laid out like an *arr library: one film per
    directory, a quarter of the files being links (in torrents/) of a film."""
    media_filter = MediaFilter(["mkv"])
    movies = VolumeTree("movies", "/volume1/media/movies", 2049, media_filter)
    torrents = VolumeTree("torrents", "/volume1/torrents", 2049, media_filter)
    index = InodeIndex()
    linked = count // 4
    for number in range(count - linked):
        title = f"Film Title Number {number} ({1950 + number % 75})"
        directory = movies.root.new_subdir(title)
        name = f"Film.Title.Number.{number}.{1950 + number % 75}.1080p.BluRay.x264-GRP.mkv"
        index.add_link_stamped(
            directory,
            name,
            10_000_000 + number,
            hash((4_000_000_000 + number, 17 * 10**17, 1)) & STAMP_MASK,
        )
    for number in range(linked):
        release = f"Film.Title.Number.{number}.{1950 + number % 75}.1080p.BluRay.x264-GRP"
        directory = torrents.root.new_subdir(release)
        index.add_link_stamped(directory, release + ".mkv", 10_000_000 + number, 0)
    return index, [movies, torrents]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_index_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Memory of the live state for N media files, filled directly (no filesystem): bytes per
    file by tracemalloc, and the RSS growth of a fresh process filling the same (no tracemalloc
    there: it costs memory of its own)."""
    count = args.files
    if args.measure == "rss":
        gc.collect()
        before = _rss_bytes()
        kept = _fill_library(count)
        gc.collect()
        return {"rss_growth_bytes": _rss_bytes() - before, "directories": _directories(kept)}
    child = subprocess.run(
        [sys.executable, __file__, "index-memory", "--files", str(count), "--measure", "rss"],
        capture_output=True,
        check=True,
        text=True,
    )
    rss = json.loads(child.stdout)
    tracemalloc.start()
    start, _peak = tracemalloc.get_traced_memory()
    index, trees = _fill_library(count)
    total, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "files": count,
        "inodes": len(index),
        "hardlinked_files": 2 * (count // 4),
        "directories": _directories((index, trees)),
        "total_live_state_mib": round((total - start) / 2**20, 1),
        "total_bytes_per_file": round((total - start) / count),
        "rss_growth_mib": round(rss["rss_growth_bytes"] / 2**20, 1),
        "rss_growth_bytes_per_file": round(rss["rss_growth_bytes"] / count),
    }


def _directories(kept: tuple[InodeIndex, list[VolumeTree]]) -> int:
    return sum(1 for tree in kept[1] for _ in tree.root.iter_tree())


WATCH_MEMORY_MAKER = r"""
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
linked = count // 4
os.makedirs(f"{root}/movies"); os.makedirs(f"{root}/torrents")
for number in range(count - linked):
    title = f"Film Title Number {number} ({1950 + number % 75})"
    name = f"Film.Title.Number.{number}.{1950 + number % 75}.1080p.BluRay.x264-GRP"
    os.mkdir(f"{root}/movies/{title}")
    open(f"{root}/movies/{title}/{name}.mkv", "wb").close()
    if number < linked:
        os.mkdir(f"{root}/torrents/{name}")
        os.link(f"{root}/movies/{title}/{name}.mkv", f"{root}/torrents/{name}/{name}.mkv")
"""


def bench_watch_memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS growth of `LiveWatcher` watching a real library of N (empty) media files, same layout
    as `index-memory`, from before `set_volumes` to after `wait_applied` (watches in place)."""
    count = args.files
    with tempfile.TemporaryDirectory(prefix="bench-live-memory-", dir=args.dir) as temporary:
        made = time.monotonic()
        subprocess.run(
            [sys.executable, "-c", WATCH_MEMORY_MAKER, temporary, str(count)], check=True
        )
        made = time.monotonic() - made
        result: dict[str, Any] = {}

        async def watch() -> None:
            async def emit(event: LiveEvent) -> None:
                pass

            def rescan(volume_id: str, reason: str) -> None:
                pass

            watcher = LiveWatcher(emit, rescan)
            async with trio.open_nursery() as nursery:
                await nursery.start(watcher.run)
                gc.collect()
                before = _rss_bytes()
                started = time.monotonic()
                watcher.set_volumes(
                    [
                        WatchPath(id="movies", path=f"{temporary}/movies"),
                        WatchPath(id="torrents", path=f"{temporary}/torrents"),
                    ],
                    ["mkv"],
                )
                await watcher.wait_applied()
                result["listing_s"] = round(time.monotonic() - started, 2)
                gc.collect()
                growth = _rss_bytes() - before
                result["watches"] = watcher.stats().watches
                result["rss_growth_mib"] = round(growth / 2**20, 1)
                result["rss_growth_bytes_per_file"] = round(growth / count)
                nursery.cancel_scope.cancel()

        trio.run(watch)
    return {"files": count, "make_library_s": round(made, 1), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["latency", "burst", "index-memory", "watch-memory"])
    parser.add_argument("--files", type=int)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between files (latency)")
    parser.add_argument("--debounce", type=float, default=1.0)
    parser.add_argument("--direct", action="store_true", help="measure up to emit(), no agent")
    parser.add_argument("--dir", help="where to create the volume (default: the temp dir)")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--measure", choices=["rss"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "latency":
        args.files = args.files or 300
        result = bench_latency(args)
    elif args.mode == "burst":
        args.files = args.files or 10_000
        result = bench_burst(args)
    elif args.mode == "index-memory":
        args.files = args.files or 1_000_000
        result = bench_index_memory(args)
        if args.measure:
            print(json.dumps(result))
            return 0
    else:
        args.files = args.files or 100_000
        result = bench_watch_memory(args)
    result = {"mode": args.mode, "pipeline": "direct" if args.direct else "agent", **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
