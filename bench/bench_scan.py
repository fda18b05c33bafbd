"""Benchmark the scan engine: `scanarr scan` against a pure-Python scanner, and sampled fingerprints
against hashlib SHA-256 over the same bytes.

    python bench/bench_scan.py [--movies 20000] [--repeats 5] [--cold-repeats 3]
    python bench/bench_scan.py --million        # the peak-RSS check on a 1,000,000-file tree

Builds (once, reused afterwards) a tree with bench/gen_tree.py under `--workdir`, then:

* scan: runs `scanarr scan TREE` and `python bench/pyscan.py TREE` as whole processes, alternately,
  with a warm page cache (after one warm-up run of each) and, when this process may drop the page
  cache (root, /proc/sys/vm/drop_caches writable), with a cold one. Reports the median wall time,
  files/s and peak RSS of each, and the ratio python/native of the wall times. Every run must print
  the same counts, equal to what the generator says the tree holds; otherwise the exit code is 1.
* fingerprint: `scanarr._native.fingerprint_files(paths, "sampled")` against Python reading the
  same head and tail (1 MiB each) of the same files and hashing them with SHA-256.

Wall time and peak RSS come from a minimal launcher process (`python -I -S`) that forks, execs
the command and reads `os.wait4`'s rusage: the child's `ru_maxrss` includes what it had before
`exec`, which is the launcher's few MiB rather than this process's size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gen_tree
import pyscan

BENCH_DIR = Path(__file__).resolve().parent
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
MiB = 1 << 20
MILLION_MOVIES = 253_000  # gen_tree makes about 3.96 files per movie: just over 1,000,000 files
COUNT_KEYS = (
    "media files",
    "directories",
    "total bytes",
    "distinct inodes",
    "multi-link files",
    "errors",
)
# The counts the generator predicts, by summary key.
EXPECTED_KEYS = {
    "media files": "expected_media_files",
    "directories": "expected_directories",
    "total bytes": "expected_total_bytes",
    "distinct inodes": "expected_distinct_inodes",
    "multi-link files": "expected_multi_link_files",
}
TARGETS = {
    "warm": 2.5,  # native whole process at least this many times faster than pure Python
    "cold": 3.0,
    "fingerprint": 5.0,
    "rss_mb": 100.0,  # peak RSS of a summary scan of 1,000,000 files, in MB (10^6 bytes)
}
# Forks, execs argv[2:], writes "wall_seconds max_rss_kib exit_code user_seconds system_seconds"
# to the descriptor argv[1].
LAUNCHER = """\
import os, sys, time
report = int(sys.argv[1])
os.set_inheritable(report, False)
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
os.write(report, f"{seconds} {usage.ru_maxrss} {code} {usage.ru_utime} {usage.ru_stime}".encode())
"""


# --- running a command ---------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_rss_kib: int
    exit_code: int
    stdout: str
    stderr: str
    cpu_seconds: float  # user + system time of the process and its threads

    def summary(self) -> dict[str, str]:
        """The `key: value` lines of a scan summary."""
        pairs = (line.split(": ", 1) for line in self.stdout.splitlines() if ": " in line)
        return {key: value for key, value in pairs}

    def counts(self) -> dict[str, int]:
        summary = self.summary()
        return {key: int(summary[key]) for key in COUNT_KEYS if key in summary}


def run_measured(argv: Sequence[str]) -> Run:
    """Run `argv` under the launcher: its wall time, peak RSS, exit code and output."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(write_end), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_end,),
        )
        os.close(write_end)
        write_end = -1
        stdout, stderr = process.communicate()
        report = os.read(read_end, 200).decode()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if process.returncode != 0 or not report:
        raise RuntimeError(f"launcher failed ({process.returncode}): {stderr.decode()[-2000:]}")
    seconds, rss, code, user, system = report.split()
    return Run(
        float(seconds),
        int(rss),
        int(code),
        stdout.decode("utf-8", "surrogateescape"),
        stderr.decode("utf-8", "surrogateescape"),
        float(user) + float(system),
    )


def cold_cache_unavailable() -> str | None:
    """Why the page cache cannot be dropped here, or None when it can."""
    if os.geteuid() != 0:
        return "not root"
    if not os.access(DROP_CACHES, os.W_OK):
        return f"{DROP_CACHES} is not writable"
    try:
        drop_caches()
    except OSError as error:
        return f"writing {DROP_CACHES} failed: {error}"
    return None


def load_average() -> str:
    """Other work on the machine skews every figure: say how busy it was."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def drop_caches() -> None:
    os.sync()
    DROP_CACHES.write_text("3\n")


# --- the tree ------------------------------------------------------------------------------------


def ensure_tree(workdir: Path, movies: int, seed: int) -> tuple[Path, dict[str, int]]:
    """The generated tree for these parameters (made now unless a complete one exists)."""
    dest = workdir / f"scan-m{movies}-seed{seed}"
    manifest = gen_tree.read_manifest(dest)
    if manifest is None:
        if dest.exists():
            print(f"removing incomplete tree {dest}", file=sys.stderr)
            shutil.rmtree(dest)
        print(f"generating {movies} movies under {dest} ...", file=sys.stderr)
        manifest = gen_tree.generate(
            dest, movies=movies, seed=seed, hardlink_share=0.3, size_mib=None
        )
        print(f"generated in {manifest['generation_seconds']} s", file=sys.stderr)
    counts = manifest["counts"]
    assert isinstance(counts, dict)
    return dest, {str(key): int(value) for key, value in counts.items()}


# --- the scan benchmark --------------------------------------------------------------------------


@dataclass
class Side:
    """The runs of one scanner in one cache state."""

    name: str
    runs: list[Run]

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(run.cpu_seconds for run in self.runs)

    @property
    def walk_seconds(self) -> float:
        """Median of the `duration:` the scanner itself reports: the walk, without start-up."""
        return statistics.median(float(run.summary()["duration"].split()[0]) for run in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(run.peak_rss_kib for run in self.runs) / 1024

    def files_per_second(self, files: int) -> float:
        return files / self.seconds


class CountMismatch(Exception):
    pass


def check_counts(run: Run, name: str, reference: dict[str, int]) -> None:
    counts = run.counts()
    if run.exit_code != 0 or counts != reference:
        raise CountMismatch(
            f"{name} (exit {run.exit_code}) reported {counts}, expected {reference}\n"
            f"{run.stderr[-2000:]}"
        )


def startup_seconds(commands: dict[str, list[str]], tree: Path, repeats: int) -> dict[str, float]:
    """Median wall time of each scanner on an empty directory: its fixed cost per process."""
    with tempfile.TemporaryDirectory() as empty:
        argvs = {
            name: [empty if arg == str(tree) else arg for arg in argv]
            for name, argv in commands.items()
        }
        return {
            name: statistics.median(run_measured(argv).seconds for _ in range(repeats))
            for name, argv in argvs.items()
        }


def scan_commands(tree: Path, threads: int | None) -> dict[str, list[str]]:
    scanarr = shutil.which("scanarr") or str(Path(sys.executable).with_name("scanarr"))
    if not os.access(scanarr, os.X_OK):
        raise SystemExit("bench_scan: no `scanarr` command: install scanarr in this environment")
    native = [scanarr, "scan", str(tree)] + ([] if threads is None else ["--threads", str(threads)])
    return {"native": native, "python": [sys.executable, str(BENCH_DIR / "pyscan.py"), str(tree)]}


def bench_scan(
    commands: dict[str, list[str]],
    reference: dict[str, int],
    repeats: int,
    before_each: Callable[[], None] | None,
) -> dict[str, Side]:
    sides = {name: Side(name, []) for name in commands}
    for _ in range(repeats):
        for name, argv in commands.items():
            if before_each is not None:
                before_each()
            run = run_measured(argv)
            check_counts(run, name, reference)
            sides[name].runs.append(run)
    return sides


# --- the fingerprint benchmark -------------------------------------------------------------------


def media_paths(tree: Path, count: int) -> list[str]:
    """`count` media files of the tree, spread evenly over it, in a fixed order."""
    stats = pyscan.WalkStats()
    paths = sorted(
        os.path.join(r.volume_path, r.relative_path) for r in pyscan.walk([str(tree)], stats)
    )
    if count >= len(paths):
        return paths
    step = len(paths) / count
    return [paths[int(index * step)] for index in range(count)]


def sha256_sampled(path: str, sample_size: int) -> tuple[str, int]:
    """SHA-256 over the bytes a `sampled` fingerprint reads; the digest and the bytes read."""
    with open(path, "rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        digest = hashlib.sha256(size.to_bytes(8, "little"))
        if size <= 2 * sample_size:
            content = file.read()
            digest.update(content)
            return digest.hexdigest(), len(content)
        head = file.read(sample_size)
        file.seek(size - sample_size)
        tail = file.read(sample_size)
        digest.update(head)
        digest.update(tail)
        return digest.hexdigest(), len(head) + len(tail)


@dataclass
class FingerprintResult:
    name: str
    seconds: list[float]
    files: int
    bytes_read: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def bench_fingerprints(
    paths: list[str], repeats: int, before_each: Callable[[], None] | None
) -> list[FingerprintResult]:
    from scanarr import _native

    sample_size = _native.DEFAULT_SAMPLE_SIZE
    threads = os.cpu_count() or 1
    pool = ThreadPoolExecutor(threads)

    sampled_bytes = sum(min(os.stat(path).st_size, 2 * sample_size) for path in paths)

    def native() -> int:
        results = _native.fingerprint_files(paths, "sampled")
        failed = [(path, error) for path, (_, error) in zip(paths, results, strict=True) if error]
        if failed:
            raise RuntimeError(f"fingerprint_files failed on {len(failed)} files: {failed[:3]}")
        return sampled_bytes

    def sequential() -> int:
        return sum(sha256_sampled(path, sample_size)[1] for path in paths)

    def threaded() -> int:
        return sum(read for _, read in pool.map(lambda p: sha256_sampled(p, sample_size), paths))

    contenders: list[tuple[str, Callable[[], int]]] = [
        ("native xxh3-128 sampled", native),
        ("python hashlib sha256", sequential),
        (f"python hashlib sha256, {threads} threads", threaded),
    ]
    results = [FingerprintResult(name, [], len(paths), 0) for name, _ in contenders]
    with pool:
        if before_each is None:  # warm the page cache
            for _, work in contenders:
                work()
        for _ in range(repeats):
            for result, (_, work) in zip(results, contenders, strict=True):
                if before_each is not None:
                    before_each()
                started = time.perf_counter()
                result.bytes_read = work()
                result.seconds.append(time.perf_counter() - started)
    return results


# --- report --------------------------------------------------------------------------------------


def verdict(value: float, target: float, *, at_most: bool = False) -> str:
    met = value < target if at_most else value >= target
    return f"{'meets' if met else 'MISSES'} target {'<' if at_most else '>='} {target:g}"


def print_scan(state: str, sides: dict[str, Side], files: int) -> float:
    native, python = sides["native"], sides["python"]
    for side, label in ((native, "scanarr scan"), (python, "pyscan.py")):
        runs = ", ".join(f"{run.seconds:.3f}" for run in side.runs)
        print(
            f"  {state:<5} {label:<13} {side.seconds:8.3f} s {side.files_per_second(files):>10,.0f}"
            f" files/s  cpu {side.cpu_seconds:6.3f} s  peak RSS {side.peak_rss_mib:6.1f} MiB"
            f"   (runs: {runs})"
        )
    ratio = python.seconds / native.seconds
    target = TARGETS[state]
    print(f"  {state:<5} ratio native/python  {ratio:5.2f}x  ({verdict(ratio, target)})")
    walk_ratio = python.walk_seconds / native.walk_seconds
    print(
        f"  {state:<5} walk alone (each summary's duration line): scanarr scan"
        f" {native.walk_seconds:.3f} s, pyscan.py {python.walk_seconds:.3f} s, {walk_ratio:.2f}x"
    )
    return ratio


def print_fingerprints(state: str, results: list[FingerprintResult]) -> None:
    for result in results:
        files_per_s = result.files / result.median
        mb_per_s = result.bytes_read / result.median / 1e6
        print(
            f"  {state:<5} {result.name:<34} {result.median:8.3f} s {files_per_s:>10,.0f} files/s"
            f" {mb_per_s:>9,.0f} MB/s"
        )
    native, sequential = results[0], results[1]
    ratio = sequential.median / native.median
    # The target compares hashing the same bytes; a cold cache adds disk latency to both sides.
    judged = verdict(ratio, TARGETS["fingerprint"]) if state == "warm" else "disk-bound, no target"
    print(f"  {state:<5} ratio native/hashlib  {ratio:5.2f}x  ({judged})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--movies", type=int, default=20_000, help="movies in the tree (20000)")
    size.add_argument(
        "--million",
        action="store_const",
        const=MILLION_MOVIES,
        dest="movies",
        help=f"a tree of just over 1,000,000 files ({MILLION_MOVIES} movies)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "out")
    parser.add_argument("--repeats", type=int, default=5, help="warm runs of each (5)")
    parser.add_argument("--cold-repeats", type=int, default=3, help="cold runs of each (3)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs")
    parser.add_argument("--threads", type=int, help="pass --threads N to scanarr scan")
    parser.add_argument(
        "--fingerprint-files",
        type=int,
        default=2000,
        help="files fingerprinted (2000; 0 skips the fingerprint benchmark)",
    )
    args = parser.parse_args(argv)
    if args.movies < 1 or args.repeats < 1 or args.cold_repeats < 1:
        parser.error("--movies, --repeats and --cold-repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from scanarr import _native  # noqa: F401  (the fingerprint benchmark calls it in-process)
    except ImportError as error:
        print(f"bench_scan: scanarr's native engine is not importable: {error}", file=sys.stderr)
        return 2
    tree, generated = ensure_tree(args.workdir, args.movies, args.seed)
    reference = {key: generated[name] for key, name in EXPECTED_KEYS.items()} | {"errors": 0}
    media = reference["media files"]
    print(
        f"tree: {tree}\n  {generated['files']:,} files ({generated['hardlinks']:,} of them"
        f" hardlinks), {generated['directories']:,} directories, {generated['symlinks']:,}"
        f" symlinks; a scan reports {media:,} media files in {reference['directories']:,}"
        f" directories"
    )
    floor = run_measured(["true"]).peak_rss_kib / 1024
    print(f"  peak RSS floor of the launcher: {floor:.1f} MiB; cpus: {os.cpu_count()}")
    print(f"  load average at start: {load_average()}")

    cold_reason = "--no-cold" if args.no_cold else cold_cache_unavailable()
    commands = scan_commands(tree, args.threads)
    mismatch = False
    print("\nscan, whole process, median wall time")
    try:
        bench_scan(commands, reference, 1, None)  # warm-up, and a first check of the counts
        warm = bench_scan(commands, reference, args.repeats, None)
        print_scan("warm", warm, media)
        cold: dict[str, Side] | None = None
        if cold_reason is None:
            cold = bench_scan(commands, reference, args.cold_repeats, drop_caches)
            print_scan("cold", cold, media)
        else:
            print(f"  cold: skipped ({cold_reason})")
        startup = startup_seconds(commands, tree, args.repeats)
        print(
            "  startup on an empty directory (part of every figure above): "
            f"scanarr scan {startup['native']:.3f} s, pyscan.py {startup['python']:.3f} s"
        )
    except CountMismatch as error:
        print(f"  FAILED (a run exited non-zero or its counts differ): {error}")
        mismatch = True
    else:
        print(f"  counts identical in every run: {json.dumps(reference)}")
        rss_mib = max(warm["native"].peak_rss_mib, cold["native"].peak_rss_mib if cold else 0)
        rss_mb = rss_mib * MiB / 1e6
        if generated["files"] >= 1_000_000:
            judged = verdict(rss_mb, TARGETS["rss_mb"], at_most=True)
        else:
            judged = "the target applies to 1,000,000 files: --million"
        print(
            f"  scanarr scan peak RSS on {generated['files']:,} files: {rss_mib:.1f} MiB"
            f" = {rss_mb:.1f} MB ({judged})"
        )

    if args.fingerprint_files > 0:
        paths = media_paths(tree, args.fingerprint_files)
        print(
            f"\nsampled fingerprints of {len(paths)} media files (8-byte size + first and last"
            " MiB), median wall time"
        )
        print_fingerprints("warm", bench_fingerprints(paths, args.repeats, None))
        if cold_reason is None:
            print_fingerprints("cold", bench_fingerprints(paths, args.cold_repeats, drop_caches))
        else:
            print(f"  cold: skipped ({cold_reason})")
    print(f"\nload average at end: {load_average()}")
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
