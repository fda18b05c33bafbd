"""Benchmarks of live watching (issue 4).

    python bench/bench_live.py latency [--files 300] [--gap 0.02] [--debounce 1.0] [--direct]
    python bench/bench_live.py burst [--files 10000] [--direct]
    python bench/bench_live.py index-memory [--files 1000000]
    python bench/bench_live.py watch-memory [--files 100000] [--dir DIR]
    python bench/bench_live.py scale [--tree /work/bench-trees/movies-250k] [--limits above,below]
        [--backend inotify|fanotify]
    python bench/bench_live.py moved-in [--files 100000] [--dir /work/bench-trees]
    python bench/bench_live.py listing [--tree ...] [--backend inotify|fanotify] [--rounds 3]

`latency`: a writer process creates media files one at a time; for each, the time from its
``close()`` to the moment its ``file.created`` frame reaches the API (p50/p99/max). `burst`: the
writer creates N files as fast as it can; every one must be reported exactly once, and the time
from the last ``close()`` to the last frame is the drain time. Both run the real pipeline in one
process — `LiveWatcher` → `WatcherAgent.live.submit` → WebSocket → `DevApiServer` on 127.0.0.1 —
unless ``--direct``, which measures up to the watcher's ``emit`` only. Both clocks are
CLOCK_MONOTONIC, shared by the two processes. Targets: p99 ≤ debounce + 50 ms; burst drained in
under 2 s; zero lost, zero duplicated.

`index-memory`: the memory of the live tree and of the ``(device, inode)`` index for N media
files (no filesystem: the same structures filled directly): bytes per file by the native
index's own count of its arenas and tables, and the RSS growth of a fresh process filling
them. `watch-memory`: the RSS growth of a `LiveWatcher` listing and watching a real library
of N empty media files (one directory per film, a quarter of them hardlinked from a torrents/
volume; needs N·1.25 inotify watches).
Target for both: at most 250 bytes per file.

`scale`: the NAS case. Generates (once, with `gen_tree.py --movies 250000`, about 1,000,000
files and 340,000 directories; reused afterwards, keep it outside the repository) or reuses
`--tree`, measures `scanarr scan` of it (median of 3 warm runs), then runs the real `scanarr
watch` runtime against a `DevApiServer` on 127.0.0.1 with that tree as one volume, once with
``fs.inotify.max_user_watches`` above the directory count (set for the run, restored after)
and once below it (4/7 of the directories, set in a user namespace of the agent's own, so the
rest of the machine keeps its watches). It reports the time from the connection to the
"watching volume" line (arm time) and its ratio to the scan, RSS after the initial scan,
steady CPU and RSS over `--steady` seconds, peak RSS (VmHWM), the change of the kernel's
unreclaimable slab (``SUnreclaim``), the longest lateness of a watchdog task in the agent's trio
loop (it sleeps 10 ms in a loop; a stall still going on counts too), the drain time of a
`--burst` of files created in the volume root (last close to last ``file.created`` at the API),
how often the watch-limit warning and its summary were logged, and how SIGTERM was honoured.
When ``watchman`` is installed (Debian package; for the bench only), a private watchman server
then watches the same tree: its crawl time and RSS once it answers a query. ``--limits ''``
runs the scan and watchman only.
Needs root (the sysctl) and ``unshare --user``. ``--backend fanotify`` runs the agent with
``SCANARR_LIVE_BACKEND=fanotify`` (needs CAP_SYS_ADMIN): the watch limit does not apply, so only
the ``above`` run is made (in a user namespace fanotify is not usable), and the burst's files
reported twice are counted too.

`moved-in`: a folder of `--files` media files (100 films × 10 folders, made once under `--dir`
and reused) is moved into a watched, empty volume with one ``rename``, then the volume is
removed from the config. Reported (``--direct``: up to the watcher's ``emit``): the drain time
from the rename to the last ``file.created`` (each file must come exactly once), the longest
lateness of a watchdog task in the trio loop meanwhile (it sleeps 5 ms in a loop), and the same
lateness while the volume is dropped. The folder is moved back out afterwards.

`listing`: the native listing alone, as the live watcher arms a volume (`LiveLister.list` of
`--tree`, four threads, inotify watches or fanotify handles), alternating with `scanarr scan`
of the same tree, `--rounds` times each, every run in a fresh process: the median of each and
their ratio, the listing process's RSS growth with the listing held, and what it keeps once
the listing is dropped and the heap trimmed (the handle map under fanotify, nothing but the
kernel's watches under inotify). Needs root: fanotify, and the watch limit, raised above the
directory count for the run as in `scale`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from scanarr._native import LiveIndex
from scanarr.live import LiveEvent, LiveWatcher
from scanarr.live.filters import MediaFilter
from scanarr.live.tree import InodeIndex, VolumeTree
from scanarr.protocol import FileCreated, WatcherConfig, WatchPath
from scanarr.reasons import RescanReason

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
    def rescan(volume_id: str, reason: RescanReason, detail: str | None) -> None:
        arrivals.rescans.append((volume_id, reason.describe(detail)))

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

    def request_rescan(volume_id: str, reason: RescanReason, detail: str | None) -> None:
        rescan(volume_id, reason, detail)
        agent.live.request_rescan(volume_id, reason, detail)

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
    index = InodeIndex()
    movies = VolumeTree("movies", "/volume1/media/movies", 2049, media_filter, index=index)
    torrents = VolumeTree("torrents", "/volume1/torrents", 2049, media_filter, index=index)
    linked = count // 4
    for number in range(count - linked):
        title = f"Film Title Number {number} ({1950 + number % 75})"
        directory = movies.root.new_subdir(title)
        name = f"Film.Title.Number.{number}.{1950 + number % 75}.1080p.BluRay.x264-GRP.mkv"
        index.add_link_stamped(
            directory,
            name,
            10_000_000 + number,
            LiveIndex.stamp(4_000_000_000 + number, 17 * 10**17, 1),
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
    file by the native index's count of its arenas, and the RSS growth of a fresh process
    filling the same."""
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
    index, _trees = _fill_library(count)
    # The live state is native: the arenas' and tables' own count of their bytes.
    total = index.native.heap_bytes
    return {
        "files": count,
        "inodes": len(index),
        "hardlinked_files": 2 * (count // 4),
        "directories": index.native.dir_count,
        "total_live_state_mib": round(total / 2**20, 1),
        "total_bytes_per_file": round(total / count),
        "rss_growth_mib": round(rss["rss_growth_bytes"] / 2**20, 1),
        "rss_growth_bytes_per_file": round(rss["rss_growth_bytes"] / count),
    }


def _directories(kept: tuple[InodeIndex, list[VolumeTree]]) -> int:
    return kept[0].native.dir_count


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

            def rescan(volume_id: str, reason: RescanReason, detail: str | None) -> None:
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


# --- scale: the agent on a generated NAS-sized tree ------------------------------------------

BENCH_DIR = Path(__file__).resolve().parent
MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")

# The watcher process of `scale`: the real `scanarr watch` runtime, plus a watchdog task in the
# same trio loop that measures its own lateness and writes the longest stall every 0.2 s.
SCALE_AGENT = r"""
import json, os, sys, time
import trio
from scanarr.agent.runtime import run_watcher
from scanarr.config import load_settings
from scanarr import heap
from scanarr.logs import configure_logging

stall_file = sys.argv[1]
settings = load_settings()
configure_logging(settings.log_level)
heap.bound_arenas()  # as `scanarr watch` does, before any thread starts

async def watchdog():
    longest = 0.0
    last_write = 0.0
    while True:
        before = time.monotonic()
        await trio.sleep(0.01)
        late = time.monotonic() - before - 0.01
        longest = max(longest, late)
        now = time.monotonic()
        if now - last_write > 0.2:
            with open(stall_file + ".tmp", "w") as file:
                json.dump({"longest_stall_s": longest, "at": now}, file)
            os.replace(stall_file + ".tmp", stall_file)
            last_write = now

# What the process holds, for `scale --heap-report`: the Python objects' allocation sites (when
# started with PYTHONTRACEMALLOC), glibc's arenas (malloc_info), the native index.
def heap_report(path):
    import ctypes, gc, tracemalloc
    from scanarr import _native
    report = {}
    with open(f"/proc/{os.getpid()}/smaps_rollup") as rollup:
        report["smaps_rollup"] = rollup.read()
    report["live_index_heap_mib"] = []
    for candidate in gc.get_objects():
        try:
            table = vars(candidate).get("table") if hasattr(candidate, "__dict__") else None
        except Exception:
            continue
        if isinstance(table, _native.LiveIndex):
            report["live_index_heap_mib"].append(round(table.heap_bytes / 2**20, 1))
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        report["tracemalloc_traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
        report["tracemalloc_top"] = [
            f"{stat.size / 2**20:8.1f} MiB {stat.count:9d} {stat.traceback.format()[-1].strip()}"
            for stat in snapshot.statistics("lineno")[:25]
        ]
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stream = libc.fopen((path + ".malloc.xml").encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    heap.trim()
    with open(f"/proc/{os.getpid()}/status") as status:
        report["rss_after_trim_kib"] = [line for line in status if line.startswith("VmRSS")]
    with open(path, "w") as file:
        json.dump(report, file, indent=1)

async def heap_reporter(path):
    while not os.path.exists(path + ".request"):
        await trio.sleep(0.2)
    try:
        heap_report(path)
    except Exception as error:
        with open(path + ".malloc.xml", "w") as file:
            file.write("")
        with open(path, "w") as file:
            json.dump({"error": repr(error)}, file)

async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        if len(sys.argv) > 2:
            nursery.start_soon(heap_reporter, sys.argv[2])
        await run_watcher(settings)
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in bytes."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sunreclaim() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("SUnreclaim:"):
                return int(line.split()[1]) * 1024
    return 0


def _stall(path: Path) -> float:
    """The longest stall the watchdog saw, or the one going on now (it writes every 0.2 s)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return float("nan")
    ongoing = time.monotonic() - float(report["at"]) - 0.2
    return max(float(report["longest_stall_s"]), ongoing)


def _ensure_scale_tree(tree: Path, movies: int) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH_DIR))
    import gen_tree

    manifest = gen_tree.read_manifest(tree)
    if manifest is None:
        print(f"generating {movies} movies under {tree} (takes minutes) ...", file=sys.stderr)
        subprocess.run(
            [
                "nice",
                sys.executable,
                str(BENCH_DIR / "gen_tree.py"),
                str(tree),
                "--movies",
                str(movies),
            ],
            check=True,
        )
        manifest = gen_tree.read_manifest(tree)
        assert manifest is not None
    counts = manifest["counts"]
    assert isinstance(counts, dict)
    return counts


def _native_scan_seconds(tree: Path, repeats: int = 3) -> float:
    """Median wall time of `scanarr scan TREE` (after one warm-up run: warm cache)."""
    scanarr = shutil.which("scanarr") or str(Path(sys.executable).with_name("scanarr"))
    times = []
    for run in range(repeats + 1):
        started = time.monotonic()
        subprocess.run([scanarr, "scan", str(tree)], check=True, capture_output=True)
        if run:
            times.append(time.monotonic() - started)
    return statistics.median(times)


async def _scale_run(
    args: argparse.Namespace, tree: Path, limit: int, namespace_limit: int | None
) -> dict[str, Any]:
    from scanarr.dev_api import DevApiServer, ReceivedMessage

    # The burst goes to the volume root, watched whatever the limit (a new directory would not
    # be watched below the limit, and is then covered by the fallback rescans only).
    burst_names = {f"{number:06d}.mkv" for number in range(args.burst)}
    _remove_burst(tree, burst_names)
    arrivals: dict[str, int] = {}
    counted = {"scan.file": 0, "duplicated": 0}

    def on_message(message: ReceivedMessage) -> None:
        if message.type == "file.created" and message.data["relative_path"] in burst_names:
            if message.data["relative_path"] in arrivals:
                counted["duplicated"] += 1
            arrivals[message.data["relative_path"]] = time.monotonic_ns()
        elif message.type == "scan.file":
            counted["scan.file"] += 1

    server = DevApiServer(
        token=TOKEN,
        # The initial scan is part of the figure (RSS after it): asked for at start.
        config=WatcherConfig(watch_paths=[WatchPath(id="nas", path=str(tree))], scan_on_start=True),
        on_message=on_message,
    )
    result: dict[str, Any] = {"max_user_watches": limit}
    with tempfile.TemporaryDirectory(prefix="bench-live-scale-") as temporary:
        work = Path(temporary)
        stall_file = work / "stall.json"
        log_path = work / "agent.log"
        environment = {
            **os.environ,
            "SCANARR_API_URL": "",
            "SCANARR_AUTH_TOKEN": TOKEN,
            "SCANARR_STATE_FILE": str(work / "state.json"),
            "SCANARR_LOG_LEVEL": "info",
            "SCANARR_WATCH_RETRY_DELAY": f"{args.retry_delay}s",
            "SCANARR_WATCH_RETRY_MAX_DELAY": f"{args.retry_delay * 4}s",
            "SCANARR_FALLBACK_RESCAN_INTERVAL": "10m",
            "SCANARR_LIVE_BACKEND": args.backend,
        }
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            environment["SCANARR_API_URL"] = server.url
            slab_before = _sunreclaim()
            command = [sys.executable, "-c", SCALE_AGENT, str(stall_file)]
            if args.heap_report:
                command.append(str(work / "heap.json"))
                if args.tracemalloc:
                    environment["PYTHONTRACEMALLOC"] = "1"
            if namespace_limit is not None:
                # The limit lowered for the agent only, in a user namespace of its own (Linux
                # >= 5.11): lowering fs.inotify.max_user_watches itself would starve every other
                # inotify user of this uid on the machine.
                lowered = 'echo "$1" > /proc/sys/user/max_inotify_watches && shift && exec "$@"'
                command = [
                    *("unshare", "--user", "--map-root-user", "sh", "-c", lowered, "-"),
                    str(namespace_limit),
                    *command,
                ]
            with log_path.open("wb") as log_file:
                agent = await trio.lowlevel.open_process(
                    command,
                    env=environment,
                    stderr=log_file,
                )
            try:
                with trio.fail_after(args.timeout):
                    await server.wait_connected()
                    connected = time.monotonic()
                    while "watching volume nas" not in log_path.read_text(errors="replace"):
                        await trio.sleep(0.05)
                    result["arm_s"] = round(time.monotonic() - connected, 2)
                    result["stall_while_arming_s"] = round(_stall(stall_file), 3)
                with trio.move_on_after(args.timeout) as scan_wait:
                    await server.wait_for_type("scan.completed", volume_id="nas")
                result["initial_scan_files"] = counted["scan.file"]
                if scan_wait.cancelled_caught:
                    result["initial_scan"] = f"not completed within {args.timeout} s"
                result["rss_after_arm_and_scan_mib"] = round(
                    _proc_status(agent.pid)["VmRSS"] / 2**20, 1
                )
                # Steady state: nothing changes on disk; retries (below the limit) go on.
                cpu_before = _cpu_seconds(agent.pid)
                await trio.sleep(args.steady)
                cpu = _cpu_seconds(agent.pid) - cpu_before
                status = _proc_status(agent.pid)
                result["steady_cpu_percent"] = round(100 * cpu / args.steady, 1)
                result["steady_rss_mib"] = round(status["VmRSS"] / 2**20, 1)
                result["peak_rss_mib"] = round(status["VmHWM"] / 2**20, 1)
                result["sunreclaim_delta_mib"] = round((_sunreclaim() - slab_before) / 2**20, 1)
                result["stall_until_steady_s"] = round(_stall(stall_file), 3)
                if args.heap_report:  # after the stall figure: the report stalls the loop
                    result["heap"] = await _heap_report(work / "heap.json", Path(args.heap_report))
                # A burst of 10,000 files in the (watched) volume root.
                closed = (await _run_writer(tree, args.burst, 0.0))[-1]
                with trio.move_on_after(120):
                    while len(arrivals) < args.burst:
                        await trio.sleep(0.05)
                result["burst_files_reported"] = len(arrivals)
                result["burst_lost"] = args.burst - len(arrivals)
                result["burst_duplicated"] = counted["duplicated"]
                if arrivals:
                    result["burst_drain_s"] = round((max(arrivals.values()) - closed) / 1e9, 2)
                result["longest_stall_s"] = round(_stall(stall_file), 3)
                log_text = log_path.read_text(errors="replace")
                lines = log_text.splitlines()
                warnings = [line for line in lines if "fs.inotify.max_user_watches=" in line]
                result["watch_limit_warnings"] = sum("still:" not in line for line in warnings)
                result["watch_limit_summaries"] = sum("still:" in line for line in warnings)
                result["run_s"] = round(time.monotonic() - connected, 1)
                stopping = time.monotonic()
                agent.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await agent.wait()
                if agent.returncode is None:
                    result["sigterm"] = "not honoured within 15 s (killed)"
                else:
                    result["sigterm"] = (
                        f"exit {agent.returncode} after {time.monotonic() - stopping:.2f} s"
                    )
            finally:
                if agent.returncode is None:
                    agent.kill()
                    await agent.wait()
                nursery.cancel_scope.cancel()
            if agent.returncode is None or "sigterm" not in result:
                result["log_tail"] = log_path.read_text(errors="replace")[-2000:]
    _remove_burst(tree, burst_names)
    return result


async def _heap_report(path: Path, keep: Path) -> dict[str, Any]:
    """Asks the agent for its heap report (see SCALE_AGENT) and keeps it under `keep`."""
    path.with_name(path.name + ".request").touch()
    with trio.fail_after(120):
        while not path.exists():
            await trio.sleep(0.2)
        await trio.sleep(0.5)  # the XML is written before the JSON
    keep.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = json.loads(path.read_text())
    shutil.copy(path, keep / path.name)
    shutil.copy(path.with_name(path.name + ".malloc.xml"), keep / (path.name + ".malloc.xml"))
    return report


def _remove_burst(tree: Path, names: set[str]) -> None:
    for name in names:
        (tree / name).unlink(missing_ok=True)


@contextlib.contextmanager
def _max_user_watches(limit: int) -> Iterator[None]:
    """``fs.inotify.max_user_watches`` set to `limit` for the block, restored after."""
    original = int(MAX_USER_WATCHES.read_text())
    MAX_USER_WATCHES.write_text(f"{limit}\n")
    try:
        yield
    finally:
        MAX_USER_WATCHES.write_text(f"{original}\n")


def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    tree = Path(args.tree)
    counts = _ensure_scale_tree(tree, args.movies)
    directories = int(counts.get("directories", 0))
    result: dict[str, Any] = {"tree": str(tree), "counts": counts, "backend": args.backend}
    result["native_scan_s"] = round(_native_scan_seconds(tree), 2)
    above = max(directories * 3, 1_000_000)
    below = directories * 4 // 7
    with _max_user_watches(above):
        limits = list(filter(None, args.limits.split(",")))
        if args.backend == "fanotify":
            limits = [name for name in limits if name == "above"] or ["above"]
        for name in limits:
            namespace_limit = below if name == "below" else None
            run = trio.run(_scale_run, args, tree, namespace_limit or above, namespace_limit)
            if "arm_s" in run:
                run["arm_vs_native_scan"] = round(run["arm_s"] / result["native_scan_s"], 1)
            result[f"limit_{name}"] = run
            print(json.dumps({name: run}), file=sys.stderr)
        if shutil.which("watchman"):
            result["watchman"] = _watchman_rss(tree, args.timeout)
            print(json.dumps({"watchman": result["watchman"]}), file=sys.stderr)
    return result


def _watchman_rss(tree: Path, timeout: float) -> dict[str, Any]:
    """RSS of a private watchman server (its own socket and state, nothing saved) once it has
    crawled `tree`, and after one query naming nothing (it answers once the crawl settled)."""
    with tempfile.TemporaryDirectory(prefix="bench-watchman-") as temporary:
        base = [
            "watchman",
            f"--sockname={temporary}/sock",
            f"--statefile={temporary}/state",
            f"--logfile={temporary}/log",
            "--no-save-state",
        ]

        def call(*command: str) -> dict[str, Any]:
            done = subprocess.run(
                [*base, *command], capture_output=True, check=True, text=True, timeout=timeout
            )
            answer: dict[str, Any] = json.loads(done.stdout)
            return answer

        started = time.monotonic()
        try:
            call("watch", str(tree))
            pid = int(call("get-pid")["pid"])
            query = json.dumps({"expression": ["false"], "fields": ["name"], "sync_timeout": 0})
            subprocess.run(
                [*base, "-j"],
                input=f'["query", "{tree}", {query}]',
                capture_output=True,
                check=True,
                text=True,
                timeout=timeout,
            )
            crawled = time.monotonic() - started
            status = _proc_status(pid)
            return {
                "version": call("version").get("version"),
                "crawl_s": round(crawled, 1),
                "rss_mib": round(status["VmRSS"] / 2**20, 1),
                "peak_rss_mib": round(status["VmHWM"] / 2**20, 1),
            }
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
            return {"error": str(error)}
        finally:
            subprocess.run([*base, "shutdown-server"], capture_output=True, timeout=30)


def _ensure_moved_in_tree(top: Path, count: int) -> list[str]:
    """The folder to move in (made once): relative paths of its media files."""
    films = 100
    per_folder = max(1, count // (films * 10))
    names = [
        f"Film {film:03d}/Part {part}/f{number:04d}.mkv"
        for film in range(films)
        for part in range(10)
        for number in range(per_folder)
    ]
    marker = top / ".complete"
    if not marker.exists():
        shutil.rmtree(top, ignore_errors=True)
        for film in range(films):
            for part in range(10):
                folder = top / f"Film {film:03d}" / f"Part {part}"
                folder.mkdir(parents=True)
                (folder / "info.nfo").write_bytes(b"")
                for number in range(per_folder):
                    fd = os.open(folder / f"f{number:04d}.mkv", os.O_CREAT | os.O_WRONLY, 0o644)
                    os.write(fd, b"m")
                    os.close(fd)
        marker.write_text(f"{len(names)}\n")
    return names


async def _moved_in_run(args: argparse.Namespace, source: Path, names: list[str]) -> dict[str, Any]:
    volume = source.parent / "moved-in-volume"
    shutil.rmtree(volume, ignore_errors=True)
    volume.mkdir()
    created: collections.Counter[str] = collections.Counter()
    expected = {f"{source.name}/{name}" for name in names}
    done = trio.Event()
    last_at = 0.0

    async def emit(event: LiveEvent) -> None:
        nonlocal last_at
        if isinstance(event, FileCreated):
            created[event.relative_path] += 1
            last_at = time.perf_counter()
            if len(created) >= len(expected):
                done.set()

    lateness = [0.0]
    awake = [time.perf_counter()]

    async def watchdog() -> None:
        while True:
            awake[0] = time.perf_counter()
            await trio.sleep(0.005)
            lateness[0] = max(lateness[0], time.perf_counter() - awake[0] - 0.005)

    def longest_stall_ms() -> float:
        # A stall still going on counts too.
        ongoing = time.perf_counter() - awake[0] - 0.005
        return round(max(lateness[0], ongoing) * 1000, 1)

    result: dict[str, Any] = {"files": len(expected)}
    moved = volume / source.name
    try:
        async with trio.open_nursery() as nursery:
            watcher = LiveWatcher(emit, lambda *_rescan: None, debounce=args.debounce)
            await nursery.start(watcher.run)
            watcher.set_volumes([WatchPath(id="v", path=str(volume))], ["mkv"])
            await watcher.wait_applied()
            gc.collect()
            nursery.start_soon(watchdog)
            await trio.sleep(0.2)
            lateness[0] = 0.0
            started = time.perf_counter()
            os.rename(source, moved)
            with trio.fail_after(args.timeout):
                await done.wait()
            result["drain_s"] = round(last_at - started, 3)
            result["longest_stall_ms"] = longest_stall_ms()
            result["duplicates"] = sum(count - 1 for count in created.values())
            result["missing"] = len(expected - set(created))
            await trio.sleep(0.2)
            lateness[0] = 0.0
            started = time.perf_counter()
            watcher.set_volumes([], ["mkv"])
            await watcher.wait_applied()
            await trio.sleep(0.2)
            result["drop_volume_s"] = round(time.perf_counter() - started - 0.2, 3)
            result["drop_volume_longest_stall_ms"] = longest_stall_ms()
            nursery.cancel_scope.cancel()
    finally:
        if moved.exists():
            os.rename(moved, source)
        shutil.rmtree(volume, ignore_errors=True)
    return result


def bench_moved_in(args: argparse.Namespace) -> dict[str, Any]:
    source = Path(args.dir or "/work/bench-trees") / f"moved-in-{args.files}"
    names = _ensure_moved_in_tree(source, args.files)
    return trio.run(_moved_in_run, args, source, names)


LISTING_CHILD = """
import ctypes, json, os, sys, time
import inotify_simple
import scanarr._native as native
from scanarr.live.inotify import WATCH_MASK
from scanarr.scan import DEFAULT_EXTENSIONS

root, backend = sys.argv[1], sys.argv[2]
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
source = native.Fanotify() if backend == "fanotify" else inotify_simple.INotify()
fd = source.fd if backend == "fanotify" else source.fileno()
base = rss()
started = time.perf_counter()
listing = native.LiveLister().list(
    root,
    inotify_fd=fd,
    mask=WATCH_MASK,
    device=os.stat(root).st_dev,
    extensions=list(DEFAULT_EXTENSIONS),
)
seconds = time.perf_counter() - started
held = rss() - base
del listing
ctypes.CDLL("libc.so.6").malloc_trim(0)
print(json.dumps({"s": seconds, "held_mib": held, "kept_mib": rss() - base}))
"""


def bench_listing(args: argparse.Namespace) -> dict[str, Any]:
    tree = Path(args.tree)
    directories = int(_ensure_scale_tree(tree, args.movies).get("directories", 0))
    with _max_user_watches(max(directories * 3, 1_000_000)):
        return _listing_rounds(args, tree)


def _listing_rounds(args: argparse.Namespace, tree: Path) -> dict[str, Any]:
    scanarr = shutil.which("scanarr") or str(Path(sys.executable).with_name("scanarr"))
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    subprocess.run([scanarr, "scan", str(tree)], check=True, capture_output=True)  # warm
    scans: list[float] = []
    listings: list[dict[str, float]] = []
    for _ in range(args.rounds):
        started = time.monotonic()
        subprocess.run([scanarr, "scan", str(tree)], check=True, capture_output=True)
        scans.append(time.monotonic() - started)
        out = subprocess.run(
            [sys.executable, "-c", LISTING_CHILD, str(tree), args.backend],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        listings.append(json.loads(out.splitlines()[-1]))
        print(json.dumps({"scan_s": round(scans[-1], 2), **listings[-1]}), file=sys.stderr)
    listing_s = statistics.median(run["s"] for run in listings)
    scan_s = statistics.median(scans)
    return {
        "tree": str(tree),
        "backend": args.backend,
        "rounds": args.rounds,
        "native_scan_s": round(scan_s, 2),
        "listing_s": round(listing_s, 2),
        "listing_vs_scan": round(listing_s / scan_s, 2),
        "held_mib": round(statistics.median(run["held_mib"] for run in listings), 1),
        "kept_mib": round(statistics.median(run["kept_mib"] for run in listings), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode",
        choices=[
            "latency",
            "burst",
            "index-memory",
            "watch-memory",
            "scale",
            "moved-in",
            "listing",
        ],
    )
    parser.add_argument("--files", type=int)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between files (latency)")
    parser.add_argument("--debounce", type=float, default=1.0)
    parser.add_argument("--direct", action="store_true", help="measure up to emit(), no agent")
    parser.add_argument("--dir", help="where to create the volume (default: the temp dir)")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--measure", choices=["rss"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--tree", default="/work/bench-trees/movies-250k", help="scale: the tree (made if missing)"
    )
    parser.add_argument("--movies", type=int, default=250_000, help="scale: movies to generate")
    parser.add_argument("--limits", default="above,below", help="scale: above,below, one or ''")
    parser.add_argument("--steady", type=float, default=20.0, help="scale: steady window, s")
    parser.add_argument("--burst", type=int, default=10_000, help="scale: burst files")
    parser.add_argument("--retry-delay", type=float, default=5.0, help="scale: watch retry delay")
    parser.add_argument("--timeout", type=float, default=600.0, help="scale: per phase, s")
    parser.add_argument(
        "--backend",
        choices=["inotify", "fanotify", "auto"],
        default="inotify",
        help="scale: SCANARR_LIVE_BACKEND of the agent",
    )
    parser.add_argument("--rounds", type=int, default=3, help="listing: runs of each")
    parser.add_argument("--heap-report", help="scale: write the agent's heap report here (a dir)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="scale: --heap-report with Python allocations"
    )
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
    elif args.mode == "scale":
        args.direct = False
        result = bench_scale(args)
    elif args.mode == "listing":
        args.direct = True
        result = bench_listing(args)
    elif args.mode == "moved-in":
        args.direct = True
        args.files = args.files or 100_000
        result = bench_moved_in(args)
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
