"""End-to-end speed of a scan through the real watcher agent, next to its two reference points.

    python bench/bench_pipeline.py [--movies 20000 | --tree DIR] [--repeat 3] [--memory-files N]

1. a bench tree: ``bench/out/pipeline-m<N>`` made by ``bench/gen_tree.py`` (or, when that
   generator is missing, a simple one below), unless ``--tree`` names one;
2. a *sink*: a minimal API in a separate process, raw sockets, that does the handshake, sends the
   config and one ``command.scan``, then counts frames (it unmasks only 4 bytes of each
   ``scan.file``, in a flat loop) and times ``scan.started`` → ``scan.completed`` by the
   ``recv`` that brought each (their arrival, not their parsing). Two run side by side: one
   parses each chunk as it arrives, and a *deferred* one that only receives during the scan and
   parses once the socket is quiet, so that its parsing (about 30 ms of CPU for a 31,000-file
   scan) does not take a core from the agent, as an API on another machine would not;
3. and measures, each ``--repeat`` times (best kept, warm page cache), interleaved:

   - **agent**: ``scanarr watch`` as a subprocess → deferred sink: scan.file messages/s end to
     end; then the same into the parsing sink;
   - **native walk alone**: ``Walker.next_batch`` until done, no JSON, no socket;
   - **pure Python**: ``os.scandir`` + ``lstat`` + ``json.dumps`` + trio-websocket
     ``send_message`` per file → the deferred sink;
   - **CPU per scan**: the native walk's (``getrusage``), the agent's between the arrival of
     scan.started and scan.completed (``/proc/PID/stat`` sampled every 2 ms, 10 ms ticks), the
     sink's. Warm, the walk alone keeps both cores of a 2-core machine busy, so what the agent
     and the sink add in CPU is what they add in wall time: ``walk / (agent + sink)`` is the
     ratio an otherwise idle machine would show, and moves much less with other jobs' load
     than the wall-time ratio does;

4. with ``--memory-files N`` (e.g. 1000000): a tree of N empty media files on tmpfs, scanned by
   the agent into a sink that reads at most ``--slow-rate`` messages/s; the agent's peak RSS.

Targets (20,000-movie tree, 2 cores): agent ≥ 5 × pure Python and ≥ 0.9 × native walk (the
frames of a batch are built, framed and masked in one native call); agent RSS < 150 MB while
streaming a 1M-file scan to a slow sink. On a shared machine compare the medians of several
runs, and run the previous version in the same session for a before/after.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from scanarr import _native

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
TOKEN = "bench-token"
VOLUME_ID = "bench"
MEDIA_EXTENSIONS = frozenset(_native.DEFAULT_EXTENSIONS)
SYSTEM_DIRECTORIES = frozenset(("@eaDir", "$RECYCLE.BIN", "System Volume Information"))
# Every frame starts with '{"type":"': bytes 12..15 of a scan.file are "n.fi", and a mask key
# repeats every 4 bytes, so those 4 bytes unmask with the key itself.
SCAN_FILE_MARK = int.from_bytes(b"n.fi", "big")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


# --- the sink: a minimal API side, in its own process ---------------------------------------


def _server_frame(text: str) -> bytes:
    payload = text.encode("utf-8")
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 65536:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


def _unmask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return value.to_bytes(len(payload), "big")


def _message(message_type: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": message_type, "timestamp": "2026-01-01T00:00:00Z", "data": data})


class _Connection:
    """One client connection: the handshake, the bytes after it, the frame count."""

    def __init__(self, sock: socket.socket, rate: float) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.position = 0
        self.rate = rate  # messages/s at most (0: as fast as possible)
        self.started = time.monotonic()
        self.frames = 0

    def handshake(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the HTTP upgrade")
            self.buffer += chunk
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head)
        if match is None:
            raise ConnectionError("no Sec-WebSocket-Key")
        accept = base64.b64encode(hashlib.sha1(match.group(1) + GUID).digest())
        self.sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.buffer = bytearray(rest)

    def throttle(self) -> None:
        due = self.started + self.frames / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def sink_main(arguments: argparse.Namespace) -> int:
    """Serve one scan per connection; print one JSON line of results per completed scan."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        sock, _address = listener.accept()
        with sock:
            try:
                _serve_one(_Connection(sock, arguments.rate), arguments.root, arguments.deferred)
            except (ConnectionError, OSError) as error:
                print(json.dumps({"error": str(error)}), flush=True)


# A deferred sink parses what it received once nothing more has come for this long.
QUIET = 0.1


def _serve_one(connection: _Connection, root: str, deferred: bool) -> None:
    """One connection. Times are those at which the bytes of scan.started and scan.completed
    were received (the `recv` that completed their frame), not those at which they were parsed.

    `deferred`: frames are parsed only once the socket has been quiet for `QUIET` (the
    handshake's answers wait that long; nothing else does), so during a scan the sink only
    receives: its parsing does not take CPU from the agent on a machine the two share, as an
    API on another machine would not. Otherwise every chunk is parsed as it arrives."""
    connection.handshake()
    sock = connection.sock
    scan_files = 0
    started_at = 0.0
    started_cpu = 0.0
    from_bytes = int.from_bytes
    mark = SCAN_FILE_MARK
    frames = 0
    buffer = bytes(connection.buffer)
    # (offset in the stream of the end of a recv, monotonic time, this process's CPU time)
    base = 0  # stream offset of buffer[0]
    received = len(buffer)  # stream offset of the end of what was received
    arrivals: list[tuple[int, float, float]] = [(received, time.monotonic(), time.process_time())]
    pending: list[bytes] = []

    def arrival(offset: int) -> tuple[float, float]:
        index = bisect.bisect_left(arrivals, (base + offset, 0.0, 0.0))
        _end, moment, cpu = arrivals[min(index, len(arrivals) - 1)]
        return moment, cpu

    if deferred:
        sock.settimeout(QUIET)
    while True:
        if pending:
            buffer = b"".join([buffer, *pending])
            pending.clear()
        position = 0
        end = len(buffer)
        # The sink must be much faster than the agent, or it measures itself: scan.file frames
        # are recognised in this flat loop (no generator, no copy); others go further down.
        while end - position >= 2:
            second = buffer[position + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if end - position < 4:
                    break
                length = (buffer[position + 2] << 8) | buffer[position + 3]
                header = 4
            elif length == 127:
                if end - position < 10:
                    break
                length = from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            start = position + header + (4 if second & 0x80 else 0)
            stop = start + length
            if stop > end:
                break
            frames += 1
            # Only 4 bytes of a frame are unmasked to recognise a scan.file: the key (the 4
            # bytes before the payload) XOR payload bytes 12..15, from one 20-byte integer.
            if length >= 16 and buffer[position] == 0x81:
                value = from_bytes(buffer[start - 4 : start + 16], "big")
                if (value >> 128) ^ (value & 0xFFFFFFFF) == mark:
                    scan_files += 1
                    position = stop
                    continue
            connection.frames = frames
            opcode = buffer[position] & 0x0F
            key = buffer[start - 4 : start] if second & 0x80 else b""
            payload = buffer[start:stop]
            position = stop
            if opcode == 8:  # close: answer it
                sock.sendall(bytes((0x88, 2)) + (1000).to_bytes(2, "big"))
                return
            if opcode != 1:
                continue
            message = json.loads(_unmask(payload, key).decode("utf-8"))
            kind = message["type"]
            if kind == "watcher.hello":
                config = {"watch_paths": [{"id": VOLUME_ID, "path": root, "name": "bench"}]}
                sock.sendall(
                    _server_frame(_message("watcher.auth", {"status": "authenticated"}))
                    + _server_frame(_message("watcher.config", config))
                    + _server_frame(
                        _message("command.scan", {"volume_id": VOLUME_ID, "scan_id": "bench"})
                    )
                )
            elif kind == "scan.started":
                started_at, started_cpu = arrival(stop)
                scan_files = 0
                connection.started = started_at
                frames = 0
            elif kind in ("scan.completed", "scan.failed"):
                ended_at, ended_cpu = arrival(stop)
                result = {
                    "kind": kind,
                    "scan_files": scan_files,
                    "seconds": ended_at - started_at,
                    "started_at": started_at,
                    "ended_at": ended_at,
                    "sink_cpu": ended_cpu - started_cpu,
                }
                result["data"] = message["data"]
                print(json.dumps(result), flush=True)
        connection.frames = frames
        buffer = buffer[position:]
        base += position
        del arrivals[: max(0, bisect.bisect_left(arrivals, (base, 0.0, 0.0)) - 1)]
        if connection.rate:
            connection.throttle()
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                break  # quiet: parse what came
            if not chunk:
                return
            received += len(chunk)
            arrivals.append((received, time.monotonic(), time.process_time()))
            pending.append(chunk)
            if not deferred:
                break


class Sink:
    """The sink process, from the benchmark's side."""

    def __init__(self, root: Path, rate: float = 0.0, *, deferred: bool = False) -> None:
        command = [sys.executable, __file__, "--sink", "--root", str(root), "--rate", str(rate)]
        self.process = subprocess.Popen(
            command + (["--deferred"] if deferred else []),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def result(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the sink ended without a result")
        result: dict[str, Any] = json.loads(line)
        if "error" in result:
            raise RuntimeError(f"sink: {result['error']}")
        return result

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


# --- the three pipelines ------------------------------------------------------------------


class AgentRun(NamedTuple):
    rate: float  # scan.file messages/s, as the sink received them
    sink_cpu: float  # seconds of the sink's CPU during the scan
    agent_cpu: float  # seconds of the agent's CPU (every thread) during the scan


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process and all its threads, exited ones included (10 ms ticks)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU used between two monotonic times, interpolated between (time, cpu) samples."""

    def at(moment: float) -> float:
        index = bisect.bisect_left(samples, (moment, 0.0))
        if index == 0:
            return samples[0][1]
        if index == len(samples):
            return samples[-1][1]
        (t0, c0), (t1, c1) = samples[index - 1], samples[index]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c1

    return at(end) - at(start) if samples else float("nan")


def run_agent(tree: Path, sink: Sink, on_running: Callable[[int], None] | None = None) -> AgentRun:
    """`scanarr watch` → sink; `on_running(pid)` while it runs."""
    import threading

    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample(pid: int) -> None:
        # Every 2 ms: the scan lasts a few hundred, the counter moves in 10 ms ticks.
        while not stop.is_set():
            cpu = _cpu_seconds(pid)
            if cpu is None:
                return
            samples.append((time.monotonic(), cpu))
            stop.wait(0.002)

    with tempfile.TemporaryDirectory(prefix="bench-state-") as state_directory:
        state_file = os.path.join(state_directory, "state.json")
        config = {"watch_paths": [{"id": VOLUME_ID, "path": str(tree), "name": "bench"}]}
        Path(state_file).write_text(json.dumps({"last_config": config}))
        environment = {
            **{key: value for key, value in os.environ.items() if not key.startswith("SCANARR_")},
            "SCANARR_API_URL": f"ws://127.0.0.1:{sink.port}/ws/watcher",
            "SCANARR_AUTH_TOKEN": TOKEN,
            "SCANARR_STATE_FILE": state_file,
            "SCANARR_LOG_LEVEL": "warning",
            "SCANARR_PING_INTERVAL": "10m",
            # The scan pipeline is measured: the live watcher's listing and index are not.
            "SCANARR_LIVE_WATCH": "off",
        }
        agent = subprocess.Popen([sys.executable, "-m", "scanarr", "watch"], env=environment)
        sampler = threading.Thread(target=sample, args=(agent.pid,), daemon=True)
        sampler.start()
        try:
            if on_running is not None:
                on_running(agent.pid)
            result = sink.result()
        finally:
            stop.set()
            sampler.join()
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
    if result["kind"] != "scan.completed":
        raise RuntimeError(f"the agent's scan failed: {result['data']}")
    return AgentRun(
        rate=float(result["scan_files"]) / float(result["seconds"]),
        sink_cpu=float(result["sink_cpu"]),
        agent_cpu=_cpu_between(samples, result["started_at"], result["ended_at"]),
    )


def run_native(tree: Path) -> tuple[int, float, float]:
    """The native walk alone: (files, files/s, CPU seconds of the walk)."""
    import resource

    from scanarr import _native

    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    walker = _native.Walker([str(tree)])
    files = 0
    while True:
        batch = walker.next_batch(1.0)
        if batch is None:
            break
        files += len(batch)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return files, files / seconds, cpu


def _python_walk(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """os.scandir recursion with the protocol's filters: (relative_path, name, lstat)."""
    root_device = os.lstat(root).st_dev
    pending = [""]
    while pending:
        relative_directory = pending.pop()
        directory = os.path.join(root, relative_directory) if relative_directory else root
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                relative = f"{relative_directory}/{name}" if relative_directory else name
                if entry.is_dir(follow_symlinks=False):
                    if name in SYSTEM_DIRECTORIES or name.startswith(".Trash-"):
                        continue
                    if entry.stat(follow_symlinks=False).st_dev == root_device:
                        pending.append(relative)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                extension = name.rpartition(".")[2].lower()
                if extension in MEDIA_EXTENSIONS:
                    yield relative, name, entry.stat(follow_symlinks=False)


def run_pure_python(tree: Path, sink: Sink) -> float:
    """os.scandir + json.dumps + trio-websocket send_message per file → sink; messages/s."""
    import datetime

    import trio
    from trio_websocket import open_websocket

    async def stream() -> None:
        async with open_websocket(
            "127.0.0.1", sink.port, "/ws/watcher", use_ssl=False
        ) as websocket:
            await websocket.send_message(_message("watcher.hello", {"token": TOKEN}))
            for _ in range(3):  # auth, config, command.scan
                await websocket.get_message()
            root = str(tree)
            scan = {"scan_id": "bench", "volume_id": VOLUME_ID, "volume_path": root}
            await websocket.send_message(_message("scan.started", scan))
            count = 0
            for relative_path, name, status in _python_walk(root):
                moment = datetime.datetime.fromtimestamp(status.st_mtime, datetime.timezone.utc)
                data = {
                    **scan,
                    "relative_path": relative_path,
                    "filename": name,
                    "inode": status.st_ino,
                    "device_id": status.st_dev,
                    "size_bytes": status.st_size,
                    "hardlink_count": status.st_nlink,
                    "mod_time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                }
                timestamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
                await websocket.send_message(
                    json.dumps(
                        {"type": "scan.file", "timestamp": timestamp, "data": data},
                        separators=(",", ":"),
                    )
                )
                count += 1
            await websocket.send_message(_message("scan.completed", {**scan, "total_files": count}))

    trio.run(stream)
    result = sink.result()
    return float(result["scan_files"]) / float(result["seconds"])


# --- trees --------------------------------------------------------------------------------


def bench_tree(movies: int) -> Path:
    tree = OUT / f"pipeline-m{movies}"
    if (tree / ".gen_tree.json").exists() or (tree / ".simple_tree").exists():
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    generator = BENCH / "gen_tree.py"
    print(f"generating {tree} ...", file=sys.stderr)
    if generator.exists():
        subprocess.run(
            [sys.executable, str(generator), str(tree), "--movies", str(movies)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    else:
        simple_tree(tree, files=movies * 3 // 2, per_directory=2)
    return tree


def simple_tree(root: Path, *, files: int, per_directory: int) -> None:
    """`files` empty media files, `per_directory` per folder (fallback generator)."""
    root.mkdir(parents=True)
    directory = root
    for number in range(files):
        if number % per_directory == 0:
            directory = root / f"Title {number // per_directory:07d} ({1950 + number % 70})"
            directory.mkdir()
        name = f"Title.{number // per_directory:07d}.Part{number % per_directory}.1080p.mkv"
        os.close(os.open(directory / name, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
    (root / ".simple_tree").write_text(f"{files}\n")


# --- the benchmark ------------------------------------------------------------------------


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def speed(arguments: argparse.Namespace) -> None:
    tree = (arguments.tree or bench_tree(arguments.movies)).resolve()
    files, _, _ = run_native(tree)  # warms the page cache
    cores = os.cpu_count()
    print(f"tree: {tree} ({files} media files), {cores} cores, {arguments.repeat} runs each")
    # Two sinks: one parses every frame as it arrives (its CPU competes with the agent's on
    # this machine), one only receives during the scan and parses afterwards, as if the API ran
    # elsewhere. Both time the arrival of scan.started and scan.completed.
    deferred_sink = Sink(tree, deferred=True)
    eager_sink = Sink(tree)
    agent: list[AgentRun] = []
    agent_eager: list[AgentRun] = []
    native: list[float] = []
    native_cpu: list[float] = []
    python: list[float] = []
    try:
        # Interleaved, so that a busy moment of a shared machine hits all of them alike.
        for _ in range(arguments.repeat):
            agent.append(run_agent(tree, deferred_sink))
            _, rate, cpu = run_native(tree)
            native.append(rate)
            native_cpu.append(cpu)
            agent_eager.append(run_agent(tree, eager_sink))
            python.append(run_pure_python(tree, deferred_sink))
    finally:
        deferred_sink.close()
        eager_sink.close()
    rows = [
        ("agent end to end (scanarr watch → sink)", [run.rate for run in agent]),
        ("  the same, sink parsing as it receives", [run.rate for run in agent_eager]),
        ("native walk alone", native),
        ("pure Python (scandir + json.dumps + send_message)", python),
    ]
    print(f"  {'':52} {'best':>10} {'median':>10}   files/s")
    for label, rates in rows:
        print(f"  {label:52} {max(rates):>10,.0f} {statistics.median(rates):>10,.0f}")
    # Each round's agent runs and native walk ran back to back: their ratio, round by round,
    # cancels most of a shared machine's drifting load.
    for label, runs in (("", agent), (" (sink parsing)", agent_eager)):
        paired = sorted(run.rate / n for run, n in zip(runs, native, strict=True))
        print(
            f"  paired{label}: agent / native walk per run "
            f"{' '.join(f'{r:.2f}' for r in paired)}, median {statistics.median(paired):.2f} "
            "(target >= 0.9)"
        )
    # CPU moves much less with the machine's load than wall time. When the walk alone keeps
    # every core busy (warm, it does on 2 cores), wall time follows the CPU that the agent and
    # the sink add to it: walk / (agent + sink) is the rate ratio an otherwise idle machine of
    # this size would show.
    walk = statistics.median(native_cpu)
    print(f"  CPU per scan (median, ms): native walk {walk * 1000:.0f}")
    for label, runs in (("receiving only", agent), ("parsing as it receives", agent_eager)):
        agent_cpu = statistics.median(run.agent_cpu for run in runs)
        sink_cpu = statistics.median(run.sink_cpu for run in runs)
        print(
            f"    sink {label:22}: agent {agent_cpu * 1000:.0f} (+{(agent_cpu - walk) * 1000:.0f}"
            f" over the walk), sink {sink_cpu * 1000:.0f}; walk / (agent + sink) "
            f"{walk / (agent_cpu + sink_cpu):.2f}"
        )
    agent_rates = [run.rate for run in agent]
    for label, pick in (("best", max), ("median", statistics.median)):
        print(
            f"  {label:6}: agent / pure Python {pick(agent_rates) / pick(python):4.1f} x "
            f"(target >= 5), agent / native walk {pick(agent_rates) / pick(native):.2f} "
            "(target >= 0.9)"
        )


def memory(arguments: argparse.Namespace) -> None:
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else OUT
    tree = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=base))
    try:
        print(f"generating {arguments.memory_files:,} files in {tree} ...", file=sys.stderr)
        simple_tree(tree / "v", files=arguments.memory_files, per_directory=250)
        sink = Sink(tree / "v", rate=arguments.slow_rate)
        samples: list[int] = []
        try:

            def sample(pid: int) -> None:
                import threading

                def loop() -> None:
                    while True:
                        value = _rss_kib(pid)
                        if not value:
                            return
                        samples.append(value)
                        time.sleep(0.25)

                threading.Thread(target=loop, daemon=True).start()

            rate = run_agent(tree / "v", sink, on_running=sample).rate
        finally:
            sink.close()
        print(
            f"memory: {arguments.memory_files:,} files to a sink reading at most "
            f"{arguments.slow_rate:,.0f} msg/s: {rate:,.0f} files/s, agent peak RSS "
            f"{max(samples) / 1024:.0f} MiB (target < 150 MB; live watching off)"
        )
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movies", type=int, default=20_000, help="bench tree size (20000)")
    parser.add_argument("--tree", type=Path, help="scan this tree instead")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each pipeline (3)")
    parser.add_argument(
        "--memory-files", type=int, default=0, help="also run the memory test with N files"
    )
    parser.add_argument(
        "--slow-rate", type=float, default=50_000, help="slow sink: messages/s (50000)"
    )
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--deferred", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.sink:
        return sink_main(arguments)
    speed(arguments)
    if arguments.memory_files:
        memory(arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
