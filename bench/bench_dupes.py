"""Benchmark `scanarr dupes` against the duplicate finders users already have.

    python bench/bench_dupes.py [--movies 5000] [--size-mib N] [--real-mib 768] [--repeat 3]
    python bench/bench_dupes.py --scale-files 1000000      # peak memory on a million files

Builds once, under bench/out/, a library made by bench/gen_tree.py (sparse media files, hardlinks
into torrents/ and links/, identical posters and subtitles beside the films) plus real duplicated
content: random bytes copied (not hardlinked) across media/, torrents/ and links/, and files of the
same size that differ only at the head, in the middle or at the tail. Then runs scanarr, rmlint,
jdupes and fdupes on DEST/media DEST/torrents DEST/links with a warm page cache (a first run of
each warms it and gives the groups compared), and reports the best wall time of `--repeat` runs,
its ratio to scanarr's, and the peak RSS.

Groups are compared as sets of inodes (one tool lists every name of a hardlinked file, another
one name), on the files every tool considers: scanarr never reports hidden names and system
folders (@eaDir, $RECYCLE.BIN, System Volume Information), so those are dropped from the others'
answers before comparing. A tool that is not installed is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
MiB = 1 << 20
MANIFEST_NAME = ".bench_dupes.json"
SKIPPED_NAMES = frozenset(("@eaDir", "$RECYCLE.BIN", "System Volume Information"))
LIBRARY_ROOTS = ("media", "torrents", "links")

Group = frozenset[tuple[int, int]]


# --- the tree ------------------------------------------------------------------------------------


def add_real_duplicates(dest: Path, real_mib: int, seed: int) -> dict[str, int]:
    """Real (non-sparse) films with copies across the library, and same-size near-duplicates."""
    rng = random.Random(seed)
    counts = {"originals": 0, "copies": 0, "hardlinks": 0, "near_duplicates": 0, "bytes": 0}
    budget = real_mib * MiB
    number = 0
    while budget > 0:
        number += 1
        size = min(rng.randrange(4 * MiB, 48 * MiB), max(budget, MiB)) + rng.randrange(4096)
        budget -= size
        content = os.urandom(size)
        release = f"Real.Film.{number:03d}.2024.1080p.WEB-DL.x264-BENCH"
        original = dest / f"media/movies/Real Film {number:03d} (2024)/{release}.mkv"
        counts["bytes"] += _write(original, content)
        counts["originals"] += 1
        kind = number % 3
        if kind == 0:
            # Radarr hardlinked the download, and cross-seed copied it instead of linking.
            _link(original, dest / f"torrents/{release}/{release}.mkv")
            counts["bytes"] += _write(dest / f"links/tracker-b/{release}.mkv", content)
            counts["hardlinks"] += 1
            counts["copies"] += 1
        else:
            # Radarr copied instead of hardlinking (download and library on different mounts
            # once), sometimes twice.
            counts["bytes"] += _write(dest / f"torrents/{release}/{release}.mkv", content)
            counts["copies"] += 1
            if kind == 1:
                counts["bytes"] += _write(dest / f"links/tracker-c/{release}.mkv", content)
                counts["copies"] += 1
        if number % 4 == 0:
            # Same size, different content: at the head, in the middle, or at the tail.
            changed = bytearray(content)
            position = (0, size // 2, size - 1)[(number // 4) % 3]
            changed[position] ^= 0xFF
            counts["bytes"] += _write(original.with_name(f"{release}.alt.mkv"), bytes(changed))
            counts["near_duplicates"] += 1
    return counts


def _write(path: Path, content: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.write_bytes(content)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, target)


def build_library(out: Path, movies: int, size_mib: int | None, real_mib: int, seed: int) -> Path:
    name = f"dupes-m{movies}-r{real_mib}-seed{seed}" + (f"-s{size_mib}" if size_mib else "")
    dest = out / name
    if (dest / MANIFEST_NAME).exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)  # an interrupted build
    command = [sys.executable, str(BENCH_DIR / "gen_tree.py"), str(dest), "--movies", str(movies)]
    command += ["--seed", str(seed)] + (["--size-mib", str(size_mib)] if size_mib else [])
    print("generating:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    counts = add_real_duplicates(dest, real_mib, seed)
    os.sync()
    (dest / MANIFEST_NAME).write_text(json.dumps(counts, indent=2) + "\n")
    return dest


def build_scale_tree(out: Path, files: int) -> Path:
    """`files` media files, sparse, 1,000 per folder. Sizes are unique except for two files in a
    hundred, pairs of equal size that differ at the head; in one pair out of ten the two files are
    identical."""
    dest = out / f"dupes-scale-{files}"
    if (dest / MANIFEST_NAME).exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    print(f"generating {files} files under {dest}", file=sys.stderr)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for start in range(0, files, 1000):
        folder = dest / f"Folder {start // 1000:05d}"
        folder.mkdir(parents=True)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for number in range(start, min(start + 1000, files)):
                size = 1_000_000 + (number - number % 2 if number % 100 < 2 else number) * 7
                fd = os.open(
                    f"Some.Film.Title.{number:07d}.1080p.WEB-DL.mkv", flags, 0o644, dir_fd=dir_fd
                )
                try:
                    first = number - number % 2
                    head = first if number % 1000 < 2 else number
                    os.write(fd, head.to_bytes(8, "little"))
                    os.ftruncate(fd, size)
                finally:
                    os.close(fd)
        finally:
            os.close(dir_fd)
    (dest / MANIFEST_NAME).write_text(json.dumps({"files": files}) + "\n")
    return dest


# --- the tools -----------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    command: Callable[[Sequence[str], Path], list[str]]  # (roots, scratch dir) -> argv
    parse: Callable[[str, Path], list[list[str]]]  # (stdout, scratch dir) -> groups of paths

    def executable(self) -> str | None:
        argv0 = self.command(["/"], Path("/"))[0]
        return argv0 if os.path.isabs(argv0) else shutil.which(argv0)


def _scanarr_command(roots: Sequence[str], scratch: Path) -> list[str]:
    return [sys.executable, "-m", "scanarr", "dupes", "--all-files", "--json", *roots]


def _scanarr_groups(stdout: str, scratch: Path) -> list[list[str]]:
    document = json.loads(stdout)
    return [
        [
            os.path.join(entry["root"], entry["relative_path"])
            for copy in group["copies"]
            for entry in copy["paths"]
        ]
        for group in document["groups"]
    ]


def _rmlint_command(roots: Sequence[str], scratch: Path) -> list[str]:
    # Duplicate files only, JSON report, symlinks ignored; hidden files are skipped by default.
    return ["rmlint", "-T", "df", "-F", "-o", f"json:{scratch / 'rmlint.json'}", *roots]


def _rmlint_groups(stdout: str, scratch: Path) -> list[list[str]]:
    entries = json.loads((scratch / "rmlint.json").read_text())
    groups: dict[tuple[object, ...], list[str]] = {}
    for entry in entries:
        if entry.get("type") == "duplicate_file":
            # Names of one inode come without a checksum (rmlint does not hash hardlinks).
            key = (
                ("checksum", entry["checksum"], entry["size"])
                if "checksum" in entry
                else ("inode", entry["disk_id"], entry["inode"])
            )
            groups.setdefault(key, []).append(entry["path"])
    return list(groups.values())


def _jdupes_command(roots: Sequence[str], scratch: Path) -> list[str]:
    return ["jdupes", "--recurse", "--no-hidden", "--quiet", *roots]


def _fdupes_command(roots: Sequence[str], scratch: Path) -> list[str]:
    return ["fdupes", "--recurse", "--nohidden", "--noempty", "--quiet", *roots]


def _blank_line_groups(stdout: str, scratch: Path) -> list[list[str]]:
    return [block.splitlines() for block in stdout.split("\n\n") if block.strip()]


TOOLS = (
    Tool("scanarr", _scanarr_command, _scanarr_groups),
    Tool("rmlint", _rmlint_command, _rmlint_groups),
    Tool("jdupes", _jdupes_command, _blank_line_groups),
    Tool("fdupes", _fdupes_command, _blank_line_groups),
)


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system
    peak_rss_kib: int
    stdout: str


GNU_TIME = "/usr/bin/time"
# A launcher for when GNU time is missing: forks, execs the tool, reports its peak RSS. Its own
# pre-exec size (a few MiB) is the floor of what it can report.
LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "figures = (usage.ru_maxrss, usage.ru_utime, usage.ru_stime)\n"
    "open(sys.argv[1], 'w').write(' '.join(map(str, figures)))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_once(argv: list[str], scratch: Path) -> Run:
    """Run `argv`; its wall time, CPU time and peak RSS.

    The RSS comes from a small parent (GNU time, or a minimal Python launcher) that forks and
    execs the tool: `wait4` here would count this process's own size, which the child has until
    it execs.
    """
    rss_file = scratch / "peak-rss"
    if os.access(GNU_TIME, os.X_OK):
        wrapped = [GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file), *argv]
    else:
        wrapped = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(rss_file), *argv]
    with tempfile.TemporaryFile(dir=scratch) as captured:
        started = time.perf_counter()
        process = subprocess.run(wrapped, stdout=captured, stderr=subprocess.PIPE, cwd=scratch)
        seconds = time.perf_counter() - started
        captured.seek(0)
        stdout = captured.read().decode("utf-8", "surrogateescape")
    # jdupes and fdupes exit 0 or 1 by their own conventions; only a signal or >1 is a failure.
    if process.returncode not in (0, 1):
        message = process.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[0]} exited {process.returncode}: {message}")
    # GNU time may put a "Command exited with non-zero status" line first.
    peak_kib, user, system = rss_file.read_text().splitlines()[-1].split()
    return Run(seconds, float(user) + float(system), int(peak_kib), stdout)


# --- comparing groups ----------------------------------------------------------------------------


def considered(path: str) -> bool:
    """Whether scanarr considers this path at all (not hidden, not in a system folder)."""
    return not any(part.startswith(".") or part in SKIPPED_NAMES for part in path.split("/"))


def normalise(groups: list[list[str]]) -> set[Group]:
    """Groups as sets of (device, inode) of considered regular files, two inodes or more."""
    result: set[Group] = set()
    for paths in groups:
        inodes = set()
        for path in paths:
            if not considered(path):
                continue
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                inodes.add((status.st_dev, status.st_ino))
        if len(inodes) > 1:
            result.add(frozenset(inodes))
    return result


@dataclass
class Result:
    tool: str
    command: str
    best_seconds: float
    median_seconds: float
    median_cpu_seconds: float
    peak_rss_mib: float
    groups: int
    same_groups: bool | None  # None for scanarr itself
    missing: int = 0  # groups scanarr found that the tool did not
    extra: int = 0  # groups the tool found that scanarr did not
    runs: list[float] = field(default_factory=list)


def bench(roots: Sequence[str], repeat: int, tools: Sequence[str]) -> list[Result]:
    """Run every tool once (warming the caches; that answer is compared), then `repeat` rounds
    of one run of each in turn, so a change in the machine's load hits every tool alike."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-dupes-") as scratch_name:
        scratch = Path(scratch_name)
        chosen: list[tuple[Tool, list[str]]] = []
        for tool in TOOLS:
            if tool.name not in tools:
                continue
            if tool.executable() is None:
                print(f"skipping {tool.name}: not installed", file=sys.stderr)
                continue
            chosen.append((tool, tool.command(roots, scratch)))
        first: dict[str, Run] = {}
        groups: dict[str, set[Group]] = {}
        for tool, argv in chosen:
            print(f"{tool.name}: {' '.join(argv)}", file=sys.stderr)
            first[tool.name] = run_once(argv, scratch)
            groups[tool.name] = normalise(tool.parse(first[tool.name].stdout, scratch))
        runs: dict[str, list[Run]] = {tool.name: [] for tool, _ in chosen}
        for round_number in range(repeat):
            print(f"round {round_number + 1} of {repeat}", file=sys.stderr)
            for tool, argv in chosen:
                runs[tool.name].append(run_once(argv, scratch))
        reference = groups[chosen[0][0].name] if chosen else set()
        for tool, argv in chosen:
            name = tool.name
            seconds = sorted(run.seconds for run in runs[name])
            cpu = sorted(run.cpu_seconds for run in runs[name])
            found = groups[name]
            missing, extra = len(reference - found), len(found - reference)
            results.append(
                Result(
                    tool=name,
                    command=" ".join(_display_argv(argv, roots, scratch)),
                    best_seconds=seconds[0],
                    median_seconds=seconds[len(seconds) // 2],
                    median_cpu_seconds=cpu[len(cpu) // 2],
                    peak_rss_mib=max(run.peak_rss_kib for run in [first[name], *runs[name]]) / 1024,
                    groups=len(found),
                    same_groups=None if name == chosen[0][0].name else not missing and not extra,
                    missing=missing,
                    extra=extra,
                    runs=seconds,
                )
            )
    return results


def _display_argv(argv: list[str], roots: Sequence[str], scratch: Path) -> list[str]:
    shown = ["scanarr" if part == sys.executable else part for part in argv]
    if shown[:3] == ["scanarr", "-m", "scanarr"]:
        shown = shown[2:]
    shown = [part.replace(str(scratch), "OUT") for part in shown]
    return [part for part in shown if part not in roots] + ["ROOTS..."]


def print_table(results: list[Result]) -> None:
    base = next((r for r in results if r.tool == "scanarr"), None)
    print(
        "| tool | best wall (s) | median wall (s) | wall × scanarr | median CPU (s) "
        "| CPU × scanarr | peak RSS (MiB) | groups | same groups |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        wall_ratio = f"{r.best_seconds / base.best_seconds:.1f}×" if base else "-"
        cpu_ratio = f"{r.median_cpu_seconds / base.median_cpu_seconds:.1f}×" if base else "-"
        if r.same_groups is None:
            same = "(reference)"
        elif r.same_groups:
            same = "yes"
        else:
            same = f"no: {r.missing} missing, {r.extra} extra"
        print(
            f"| {r.tool} | {r.best_seconds:.3f} | {r.median_seconds:.3f} | {wall_ratio} | "
            f"{r.median_cpu_seconds:.2f} | {cpu_ratio} | {r.peak_rss_mib:.0f} | {r.groups} | "
            f"{same} |"
        )
    print()
    for r in results:
        print(f"- {r.tool}: `{r.command}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="where trees go")
    parser.add_argument("--movies", type=int, default=5000, help="gen_tree.py movies (5000)")
    parser.add_argument(
        "--size-mib",
        type=int,
        default=None,
        help="gen_tree.py --size-mib (every media file "
        "the same size: the size filter keeps them all, the sampled stage must separate them)",
    )
    parser.add_argument(
        "--real-mib",
        type=int,
        default=768,
        help="real content of the originals (768 MiB; "
        "copies and near-duplicates make the tree about 2.7 times that)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per tool (3)")
    parser.add_argument(
        "--tools", default="scanarr,rmlint,jdupes,fdupes", help="comma-separated tools to run"
    )
    parser.add_argument(
        "--scale-files",
        type=int,
        default=0,
        metavar="N",
        help="instead: N sparse media files (peak memory at scale)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    tools = [name.strip() for name in args.tools.split(",") if name.strip()]
    if args.scale_files:
        dest = build_scale_tree(args.out, args.scale_files)
        roots = [str(dest)]
        print(f"tree: {dest} ({args.scale_files} files)")
    else:
        dest = build_library(args.out, args.movies, args.size_mib, args.real_mib, args.seed)
        roots = [str(dest / name) for name in LIBRARY_ROOTS]
        print(f"tree: {dest}")
        print(f"real content: {(dest / MANIFEST_NAME).read_text().strip()}")
    results = bench(roots, args.repeat, tools)
    print()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    different = [r.tool for r in results if r.same_groups is False]
    if different:
        print(f"\ndifferent groups from: {', '.join(different)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
