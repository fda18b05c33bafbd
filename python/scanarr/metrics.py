"""Prometheus metrics and health endpoints of the watcher (``SCANARR_METRICS_ADDR``).

`Metrics` holds every metric in its own `CollectorRegistry` (never the process-wide default, so
tests and several agents in one process each get theirs). The agent reports what happens through
a few methods, each safe to call from any thread:

- `set_connected(bool)` — on session attach/detach (`follow_link` does it with a Link listener);
- `message_sent(type, count=1)` — frames written to the API, by protocol ``type``;
  `record_sent(message)` does it for a model and also records a ``scan.completed``'s scan;
  `frames_sent(texts)` for pre-encoded frames (the type is read from each frame's head);
- `command_done(type, result)` — a message from the API handled (``ok``, ``error``,
  ``malformed``, ``unsupported``, ``unknown``);
- `scan_finished(duration_seconds, files)` — a completed scan;
- `rescan_requested(reason)` — a rescan the watcher asked for itself (overflow, watch limit...);
- `event_dropped(reason, count=1)` — live events not delivered as events (a rescan covers them);
- `set_inotify_watches(n)` / `set_queue_events(n)`, or `count_inotify_watches(callable)` /
  `count_queue_events(callable)` to have them read at scrape time.

``scanarr_inotify_watch_limit`` is read from ``/proc/sys/fs/inotify/max_user_watches`` at each
scrape. Free-text label values (reasons, types sent by the API) are folded to short snake_case
words and capped in number (`LABEL_VALUES_LIMIT`), so a misbehaving peer cannot grow the registry.

`MetricsServer` answers ``GET /metrics``, ``/livez`` and ``/readyz`` inside trio (a minimal
HTTP/1.1 responder, one request per connection): start it with ``nursery.start(server.serve)``.
``/readyz`` asks a readiness callback — `agent_readiness(agent)` for the watcher: connected,
configured, at least one volume and none unavailable — and answers 200 or 503 with the reason.
"""

from __future__ import annotations

import logging
import platform
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

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

from scanarr import __version__, native_version
from scanarr.config import SettingsError
from scanarr.logs import redact_url
from scanarr.protocol import Message, ScanCompleted

if TYPE_CHECKING:
    from scanarr.agent import WatcherAgent
    from scanarr.agent.session import Link, Session

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

# (host, port): host None listens on every interface.
MetricsAddress = tuple[str | None, int]
# () → (ready, why): the body of /readyz says why.
Readiness = Callable[[], tuple[bool, str]]


class _LabelFolder:
    """Turns free text into a bounded set of label values ("watch limit: ..." → "watch_limit")."""

    def __init__(self, limit: int = LABEL_VALUES_LIMIT) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> str:
        # Reasons are written "summary: detail"; the summary is the stable part.
        summary = text.split(":", 1)[0].strip().lower()
        value = re.sub(r"[^a-z0-9.]+", "_", summary).strip("_")[:48] or "unknown"
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
        self._results = _LabelFolder()
        self._reasons = _LabelFolder()
        self._drop_reasons = _LabelFolder()

    # --- what the agent calls --------------------------------------------------------------

    def set_connected(self, connected: bool) -> None:
        self.connected.set(1 if connected else 0)

    def follow_link(self, link: Link) -> None:
        """Keep ``scanarr_connected`` in step with the agent's `Link` (attach/detach)."""

        def on_session(session: Session | None) -> None:
            self.set_connected(session is not None)

        link.add_listener(on_session)
        self.set_connected(link.current is not None)

    def message_sent(self, message_type: str, count: int = 1) -> None:
        if count > 0:
            self.messages_sent.labels(self._types(message_type)).inc(count)

    def frames_sent(self, texts: Iterable[str]) -> None:
        """Pre-encoded frames sent; each one's type is read from its ``{"type":"..."`` head."""
        counts: dict[str, int] = {}
        for text in texts:
            message_type = _frame_type(text)
            counts[message_type] = counts.get(message_type, 0) + 1
        for message_type, count in counts.items():
            self.message_sent(message_type, count)

    def record_sent(self, message: Message) -> None:
        """One model sent; a ``scan.completed`` also records its scan (`scan_finished`)."""
        self.message_sent(message.TYPE)
        if isinstance(message, ScanCompleted):
            self.scan_finished(message.duration_ms / 1000, message.total_files)

    def command_done(self, command_type: str, result: str) -> None:
        self.commands.labels(self._types(command_type), self._results(result)).inc()

    def scan_finished(self, duration_seconds: float, files: int) -> None:
        self.scan_duration.observe(max(duration_seconds, 0.0))
        if files > 0:
            self.scanned_files.inc(files)

    def rescan_requested(self, reason: str) -> None:
        self.rescans.labels(self._reasons(reason)).inc()

    def event_dropped(self, reason: str, count: int = 1) -> None:
        if count > 0:
            self.events_dropped.labels(self._drop_reasons(reason)).inc(count)

    def set_inotify_watches(self, watches: int) -> None:
        self.inotify_watches.set(watches)

    def count_inotify_watches(self, watches: Callable[[], int]) -> None:
        """Read the watch count from `watches()` at each scrape instead."""
        self.inotify_watches.set_function(lambda: float(watches()))

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


_FRAME_HEAD = '{"type":"'


def _frame_type(text: str) -> str:
    """The type of a frame rendered by `scanarr.protocol.encode` or the scan fast path."""
    if text.startswith(_FRAME_HEAD):
        end = text.find('"', len(_FRAME_HEAD))
        if end > 0:
            return text[len(_FRAME_HEAD) : end]
    return "unknown"


# --- readiness ---------------------------------------------------------------------------------


def agent_readiness(agent: WatcherAgent) -> Readiness:
    """The watcher's /readyz: connected, configured, at least one volume, none unavailable.

    Degraded volumes (part of a tree unwatched, a network filesystem) do not make it unready —
    rescans cover them — but the body names them.
    """

    def readiness() -> tuple[bool, str]:
        if agent.link.current is None:
            return False, f"not connected to the API at {redact_url(agent.settings.api_url.url)}"
        if agent.volumes.config is None:
            return False, "connected, but no valid watcher.config was received yet"
        status = agent.status.snapshot()
        if not status.volumes:
            return False, "connected, but the API configured no volume for this watcher"
        unavailable = [volume for volume in status.volumes if volume.status == "unavailable"]
        if unavailable:
            names = ", ".join(f"{volume.id} ({volume.path})" for volume in unavailable)
            return False, f"volume unavailable: {names}"
        summary = ", ".join(f"{volume.id} {volume.status}" for volume in status.volumes)
        return True, f"ready: connected, {len(status.volumes)} volume(s): {summary}"

    return readiness


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

MAX_REQUEST_HEAD = 8192  # bytes of request line and headers accepted
REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request and take the answer
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"


class _BadRequest(Exception):
    pass


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
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        if self.port == 0 and len(listeners) > 1:
            # Port 0 on a name with several addresses gives each its own port: keep one.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        self.port = listeners[0].socket.getsockname()[1]
        log.info("metrics and health endpoints on %s (/metrics /livez /readyz)", self.url)
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT) as timer:
                try:
                    method, path, headers = await _read_request(stream)
                except _BadRequest as error:
                    method, status, content_type, body = "GET", 400, _TEXT, f"{error}\n".encode()
                else:
                    status, content_type, body = self._answer(method, path, headers)
                extra = [("Allow", "GET, HEAD")] if status == 405 else []
                await _respond(
                    stream, status, content_type, body, head_only=method == "HEAD", headers=extra
                )
            if not timer.cancelled_caught:
                await _lingering_close(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            log.debug("metrics client went away: %s", error)
        finally:
            await trio.aclose_forcefully(stream)

    def _answer(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        if path not in ("/metrics", "/livez", "/readyz"):
            return 404, _TEXT, b"not found: try /metrics, /livez or /readyz\n"
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"only GET and HEAD\n"
        if path == "/livez":
            return 200, _TEXT, b"alive\n"
        if path == "/readyz":
            try:
                ready, why = self.readiness()
            except Exception as error:
                log.exception("the readiness check failed")
                return 503, _TEXT, f"readiness check failed: {error}\n".encode()
            return (200 if ready else 503), _TEXT, f"{why}\n".encode()
        try:
            body, content_type = self.metrics.render(headers.get("accept", ""))
        except Exception as error:
            log.exception("rendering the metrics failed")
            return 500, _TEXT, f"rendering the metrics failed: {error}\n".encode()
        return 200, content_type, body


LINGER_TIMEOUT = 1.0
LINGER_BYTES = 1 << 20


async def _lingering_close(stream: trio.SocketStream) -> None:
    """Half-close, then discard what the client still sends: closing with unread input would
    reset the connection and could destroy the answer before the client reads it."""
    await stream.send_eof()
    discarded = 0
    with trio.move_on_after(LINGER_TIMEOUT):
        while discarded < LINGER_BYTES:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            discarded += len(chunk)


async def _read_request(stream: trio.SocketStream) -> tuple[str, str, dict[str, str]]:
    """(method, path without query, headers by lower-case name) of the request."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer and b"\n\n" not in buffer:
        if len(buffer) > MAX_REQUEST_HEAD:
            raise _BadRequest("request head too large")
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise _BadRequest("incomplete request")
        buffer += chunk
    head = bytes(buffer).replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    request_line, *header_lines = head.split(b"\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest("malformed request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest("request line is not ASCII") from None
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.decode("latin-1").partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


async def _respond(
    stream: trio.SocketStream,
    status: int,
    content_type: str,
    body: bytes,
    *,
    head_only: bool,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers or []),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    await stream.send_all(head if head_only else head + body)
