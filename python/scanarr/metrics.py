"""Prometheus metrics and health endpoints of the watcher (``SCANARR_METRICS_ADDR``).

`Metrics` holds every metric in its own `CollectorRegistry` (never the process-wide default, so
tests and several agents in one process each get theirs). The agent reports what happens through
a few methods, each safe to call from any thread:

- `set_connected(bool)` — on session attach/detach;
- `message_sent(type, count=1)` — frames written to the API, by protocol ``type``;
  `record_sent(message)` does it for a model and also records a ``scan.completed``'s scan;
  `frames_sent(texts)` for pre-encoded frames (the type is read from each frame's head);
- `command_done(type, result)` — a message from the API handled (``ok``, ``error``,
  ``malformed``, ``unsupported``, ``unknown``);
- `scan_finished(duration_seconds, files)` — a completed scan;
- `rescan_requested(reason)` — a rescan the watcher asked for itself (overflow, watch limit...);
- `event_dropped(reason, count=1)` — live events not delivered as events (a rescan covers them);
- `set_inotify_watches(n)` / `set_queue_events(n)`, or `count_inotify_watches(callable)` /
  `count_queue_events(callable)` to have them read at scrape time (under fanotify the
  "watches" are the directories registered in its handle map: no kernel watch each);
- `live_backend_of(callable)` — ``scanarr_live_backend{backend="inotify"|"fanotify"}``, 1 for the
  one in use (the reason is in the log, ``/readyz`` and ``scanarr doctor``).

``scanarr_inotify_watch_limit`` is read from ``/proc/sys/fs/inotify/max_user_watches`` at each
scrape. Reasons are labelled with their fixed `label` (`scanarr.reasons`), whatever their text
says. Free-text label values (types sent by the API) are folded to short snake_case words and
capped in number (`LABEL_VALUES_LIMIT`), so a misbehaving peer cannot grow the registry.

`MetricsServer` answers ``GET /metrics``, ``/livez`` and ``/readyz`` inside trio (`scanarr.httpd`,
one request per connection): start it with ``nursery.start(server.serve)``. ``/readyz`` asks a
readiness callback — ``WatcherAgent.readiness`` for the watcher: connected, configured, at least
one volume and none unavailable — and answers 200 or 503 with the reason.

This module knows nothing of the agent: the agent reports into it, `scanarr.agent.runtime`
wires the two.
"""

from __future__ import annotations

import logging
import platform
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from scanarr import __version__, httpd, native_version
from scanarr.config import SettingsError
from scanarr.protocol import Message, ScanCompleted, frame_type
from scanarr.reasons import DroppedEvents, RescanReason

log = logging.getLogger(__name__)

# `*_created` series double the exposition and tell nothing a NAS operator needs.
disable_created_metrics()  # type: ignore[no-untyped-call]

METRICS_ADDR_VARIABLE = "SCANARR_METRICS_ADDR"
MAX_USER_WATCHES_PATH = "/proc/sys/fs/inotify/max_user_watches"

# A scan of a small volume takes a fraction of a second, a cold 100k-file NAS volume minutes.
SCAN_DURATION_BUCKETS: tuple[float, ...] = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
# Distinct values one free-text label may take; later new values count as "other".
LABEL_VALUES_LIMIT = 32
OTHER_LABEL = "other"

# How a message from the API was handled (`Metrics.command_done`).
CommandResult = Literal["ok", "error", "malformed", "unsupported", "unknown"]
# (host, port): host None listens on every interface.
MetricsAddress = tuple[str | None, int]
# () → (ready, why): the body of /readyz says why.
Readiness = Callable[[], tuple[bool, str]]


class _LabelFolder:
    """Turns free text into a bounded set of label values ("command.Scan!" → "command.scan")."""

    def __init__(self, limit: int = LABEL_VALUES_LIMIT) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> str:
        value = re.sub(r"[^a-z0-9.]+", "_", text.strip().lower()).strip("_")[:48] or "unknown"
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self._limit:
                return OTHER_LABEL
            self._seen.add(value)
        return value


def read_max_user_watches(path: str = MAX_USER_WATCHES_PATH) -> int | None:
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


class Metrics:
    """Every metric of the watcher in one dedicated registry; see the module docstring."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            # Memory and file descriptors over months of uptime are what an operator looks at.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.build_info = Gauge(
            "scanarr_build_info",
            "Always 1; the labels say which scanarr is running.",
            ["version", "native_version", "python_version"],
            registry=registry,
        )
        self.build_info.labels(__version__, native_version(), platform.python_version()).set(1)
        self.connected = Gauge(
            "scanarr_connected",
            "1 while an authenticated session with the Scanarr API is open.",
            registry=registry,
        )
        self.messages_sent = Counter(
            "scanarr_messages_sent",
            "Messages written to the API, by protocol type.",
            ["type"],
            registry=registry,
        )
        self.commands = Counter(
            "scanarr_commands",
            "Messages from the API handled, by protocol type and result.",
            ["type", "result"],
            registry=registry,
        )
        self.scan_duration = Histogram(
            "scanarr_scan_duration_seconds",
            "Duration of completed scans (as reported in scan.completed).",
            buckets=SCAN_DURATION_BUCKETS,
            registry=registry,
        )
        self.scanned_files = Counter(
            "scanarr_scanned_files",
            "Media files reported by completed scans.",
            registry=registry,
        )
        self.inotify_watches = Gauge(
            "scanarr_inotify_watches",
            "inotify watches held (one per watched directory).",
            registry=registry,
        )
        self.inotify_watch_limit = Gauge(
            "scanarr_inotify_watch_limit",
            "fs.inotify.max_user_watches, shared by every process of the user (-1: unreadable).",
            registry=registry,
        )
        self.inotify_watch_limit.set_function(lambda: float(read_max_user_watches() or -1))
        self.live_backend = Gauge(
            "scanarr_live_backend",
            "1 for the kernel interface live watching uses (inotify or fanotify), else 0.",
            ["backend"],
            registry=registry,
        )
        self.rescans = Counter(
            "scanarr_rescans",
            "Rescans the watcher asked for itself, by reason (overflow, watch limit...).",
            ["reason"],
            registry=registry,
        )
        self.queue_events = Gauge(
            "scanarr_queue_events",
            "Live events waiting in the offline queue for the next connection.",
            registry=registry,
        )
        self.events_dropped = Counter(
            "scanarr_events_dropped",
            "Live events not delivered as events (a rescan of the volume covers them), by reason.",
            ["reason"],
            registry=registry,
        )
        self._types = _LabelFolder()

    # --- what the agent calls --------------------------------------------------------------

    def set_connected(self, connected: bool) -> None:
        self.connected.set(1 if connected else 0)

    def message_sent(self, message_type: str, count: int = 1) -> None:
        if count > 0:
            self.messages_sent.labels(self._types(message_type)).inc(count)

    def frames_sent(self, texts: Iterable[str]) -> None:
        """Pre-encoded frames sent; each one's type is read from its ``{"type":"..."`` head."""
        counts: dict[str, int] = {}
        for text in texts:
            message_type = frame_type(text)
            counts[message_type] = counts.get(message_type, 0) + 1
        for message_type, count in counts.items():
            self.message_sent(message_type, count)

    def record_sent(self, message: Message) -> None:
        """One model sent; a ``scan.completed`` also records its scan (`scan_finished`)."""
        self.message_sent(message.TYPE)
        if isinstance(message, ScanCompleted):
            self.scan_finished(message.duration_ms / 1000, message.total_files)

    def command_done(self, command_type: str, result: CommandResult) -> None:
        self.commands.labels(self._types(command_type), result).inc()

    def scan_finished(self, duration_seconds: float, files: int) -> None:
        self.scan_duration.observe(max(duration_seconds, 0.0))
        if files > 0:
            self.scanned_files.inc(files)

    def rescan_requested(self, reason: RescanReason) -> None:
        self.rescans.labels(reason.label).inc()

    def event_dropped(self, reason: DroppedEvents, count: int = 1) -> None:
        if count > 0:
            self.events_dropped.labels(reason.label).inc(count)

    def set_inotify_watches(self, watches: int) -> None:
        self.inotify_watches.set(watches)

    def count_inotify_watches(self, watches: Callable[[], int]) -> None:
        """Read the watch count from `watches()` at each scrape instead."""
        self.inotify_watches.set_function(lambda: float(watches()))

    def live_backend_of(self, backend: Callable[[], str | None]) -> None:
        """Read the live backend in use (None: not chosen yet) from `backend()` at each scrape."""
        for name in ("inotify", "fanotify"):
            self.live_backend.labels(name).set_function(
                lambda name=name: 1.0 if backend() == name else 0.0  # type: ignore[misc]
            )

    def set_queue_events(self, events: int) -> None:
        self.queue_events.set(events)

    def count_queue_events(self, events: Callable[[], int]) -> None:
        """Read the offline queue's length from `events()` at each scrape instead."""
        self.queue_events.set_function(lambda: float(events()))

    # --- exposition --------------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Every metric in the format `accept` (an HTTP Accept header) asks for — OpenMetrics
        or the Prometheus text format (the default) — and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


# --- address -----------------------------------------------------------------------------------


def parse_metrics_address(text: str) -> MetricsAddress:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface). Raises ValueError."""
    value = text.strip()
    example = "expected HOST:PORT, e.g. 127.0.0.1:9469 (or :9469 for every interface)"
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host:
            raise ValueError(f"{example}; got {text!r}")
        port_text = rest[1:]
        listen_host: str | None = host
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise ValueError(f"{example}; got {text!r}")
        if ":" in host:
            raise ValueError(f"put an IPv6 address in brackets, e.g. [::1]:9469; got {text!r}")
        listen_host = host or None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535; got {text!r}")
    return listen_host, int(port_text)


def metrics_address_from_env(environ: Mapping[str, str]) -> MetricsAddress | None:
    """The listening address from ``SCANARR_METRICS_ADDR``, None when unset (metrics off).

    Raises SettingsError naming the variable.
    """
    text = environ.get(METRICS_ADDR_VARIABLE, "").strip()
    if not text:
        return None
    try:
        return parse_metrics_address(text)
    except ValueError as error:
        raise SettingsError(METRICS_ADDR_VARIABLE, str(error)) from None


# --- HTTP ------------------------------------------------------------------------------------


class MetricsServer:
    """``/metrics``, ``/livez``, ``/readyz`` over HTTP/1.1 on `address`, inside trio."""

    def __init__(self, address: MetricsAddress, metrics: Metrics, readiness: Readiness) -> None:
        self.host, self.port = address
        self.metrics = metrics
        self.readiness = readiness

    @property
    def url(self) -> str:
        host = self.host or "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def serve(
        self, *, task_status: trio.TaskStatus[MetricsServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; `started` gives self once bound (`port` is then the real
        port when 0 was asked). Raises OSError when the address cannot be bound."""
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(httpd.serve, self.host, self.port, self.answer)
            log.info("metrics and health endpoints on %s (/metrics /livez /readyz)", self.url)
            task_status.started(self)

    def answer(self, request: httpd.Request) -> httpd.Response:
        text = httpd.TEXT
        if request.path not in ("/metrics", "/livez", "/readyz"):
            return httpd.Response(404, text, b"not found: try /metrics, /livez or /readyz\n")
        if request.method not in ("GET", "HEAD"):
            return httpd.Response(405, text, b"only GET and HEAD\n", (("Allow", "GET, HEAD"),))
        if request.path == "/livez":
            return httpd.Response(200, text, b"alive\n")
        if request.path == "/readyz":
            try:
                ready, why = self.readiness()
            except Exception as error:
                log.exception("the readiness check failed")
                return httpd.Response(503, text, f"readiness check failed: {error}\n".encode())
            return httpd.Response(200 if ready else 503, text, f"{why}\n".encode())
        try:
            body, content_type = self.metrics.render(request.headers.get("accept", ""))
        except Exception as error:
            log.exception("rendering the metrics failed")
            return httpd.Response(500, text, f"rendering the metrics failed: {error}\n".encode())
        return httpd.Response(200, content_type, body)
