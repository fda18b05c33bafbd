"""A small implementation of the API side of the watcher protocol, for local trials and tests.

`DevApiServer` is a trio WebSocket server (trio-websocket) that speaks PROTOCOL.md §2–3 to one
watcher at a time: it checks the token (``Authorization: Bearer`` header or the hello's
``token``), answers ``watcher.auth``, sends a ``watcher.config`` built from its volumes, and then
records every message the watcher sends. Tests drive it directly::

    server = DevApiServer(token="secret", config=WatcherConfig(watch_paths=[...]))
    await nursery.start(server.serve)          # 127.0.0.1, port 0 → server.url
    scan = await server.wait_for_type("scan.completed", volume_id="movies")
    await server.send(CommandScan(volume_id="movies", scan_id="s1"))

Knobs for misbehaving-API scenarios: `reject_reason` (reject every token with that reason),
`hold_after_reject` (do not close after rejecting), `read_delay` / `pause_reading()` (a slow
API), `drop_connection()` (the TCP connection dies without a close frame), `silent`
(never answer the hello).

`scanarr dev-api` (scanarr.cli.dev_api) wraps it for humans: it prints what it receives and reads
commands such as ``scan VOLUME_ID`` from standard input.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from scanarr.protocol import (
    Message,
    WatcherAuth,
    WatcherConfig,
    encode,
    utc_timestamp,
)

log = logging.getLogger(__name__)

WATCHER_PATH = "/ws/watcher"


@attrs.frozen
class ReceivedMessage:
    """One frame the server received, as sent (``raw``) and parsed (``type``/``data``)."""

    type: str
    timestamp: str | None
    data: dict[str, Any]
    raw: str
    connection: int  # which connection (1, 2, ...) it arrived on


@attrs.frozen
class ConnectionRecord:
    """What the server saw of one watcher connection's opening."""

    number: int
    authorization: str | None  # the Authorization header, as sent
    hello: dict[str, Any] | None = None
    authenticated: bool = False


_Server = TypeVar("_Server", bound="DevServerBase")


class DevServerBase:
    """What both dialects' dev servers share: the listener, change events, the log of events
    and the parsing and recording of what watchers send."""

    _log_name = "dev-api"
    _listening_note = ""  # appended to "listening on URL" (scripts parse that line)

    def __init__(
        self,
        *,
        on_message: Callable[[ReceivedMessage], None] | None,
        on_event: Callable[[str], None] | None,
        record_path: str | None,
    ) -> None:
        self.on_message = on_message
        self.on_event = on_event
        self.record_path = record_path
        self.messages: list[ReceivedMessage] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._changed = trio.Event()
        self._cancel_scope: trio.CancelScope | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{WATCHER_PATH}"

    async def serve(
        self: _Server,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[_Server] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on host:port (0 = any free port) until cancelled; `started` gives self."""
        with trio.CancelScope() as scope:
            self._cancel_scope = scope
            async with trio.open_nursery() as nursery:
                listeners = await trio.open_tcp_listeners(port, host=host)
                # trio-websocket serves any trio Listener; its annotation names two classes.
                served = cast(list[trio.SocketListener], self._listeners(listeners))
                server = WebSocketServer(self._handle, served)
                await nursery.start(server.run)
                self.host = host
                self.port = listeners[0].socket.getsockname()[1]
                self._notify(f"listening on {self.url}{self._listening_note}")
                task_status.started(self)

    def _listeners(
        self, listeners: list[trio.SocketListener]
    ) -> list[trio.abc.Listener[trio.SocketStream]]:
        return list(listeners)

    async def _handle(self, request: WebSocketRequest) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _parse(self, text: str | bytes, connection: int) -> ReceivedMessage | None:
        """One received frame as a message; None (and an event) when it is not a JSON object."""
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        try:
            envelope = json.loads(raw)
        except ValueError:
            self._notify(f"<- (not JSON) {raw[:200]!r}")
            return None
        if not isinstance(envelope, dict):
            return None
        data = envelope.get("data")
        return ReceivedMessage(
            type=str(envelope.get("type")),
            timestamp=envelope.get("timestamp"),
            data=data if isinstance(data, dict) else {},
            raw=raw,
            connection=connection,
        )

    def _keep(self, message: ReceivedMessage) -> None:
        """Record a received message: the list, the record file, the `on_message` callback."""
        self.messages.append(message)
        if self.record_path is not None:
            with open(self.record_path, "a", encoding="utf-8") as file:
                file.write(message.raw + "\n")
        if self.on_message is not None:
            self.on_message(message)

    def _notify(self, text: str) -> None:
        log.debug("%s: %s", self._log_name, text)
        if self.on_event is not None:
            self.on_event(text)

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def of_type(self, message_type: str, **data_fields: Any) -> list[ReceivedMessage]:
        return [
            message
            for message in self.messages
            if message.type == message_type and _fields_match(message.data, data_fields)
        ]

    async def wait_for(
        self, predicate: Callable[[ReceivedMessage], bool], *, count: int = 1
    ) -> list[ReceivedMessage]:
        """Wait until `count` received messages satisfy `predicate`; return those seen so far."""
        matching: list[ReceivedMessage] = []
        checked = 0
        while True:
            for message in self.messages[checked:]:
                if predicate(message):
                    matching.append(message)
            checked = len(self.messages)
            if len(matching) >= count:
                return matching
            await self._changed.wait()

    async def wait_for_type(
        self, message_type: str, *, count: int = 1, **data_fields: Any
    ) -> ReceivedMessage:
        """Wait for the `count`-th message of `message_type` whose data has `data_fields`."""
        matching = await self.wait_for(
            lambda message: (
                message.type == message_type and _fields_match(message.data, data_fields)
            ),
            count=count,
        )
        return matching[count - 1]


class DevApiServer(DevServerBase):
    """The API side of the protocol, on one trio-websocket server. See the module docstring."""

    def __init__(
        self,
        *,
        token: str | None,
        config: WatcherConfig | None = None,
        watcher_id: str = "dev-watcher",
        watcher_name: str = "Development watcher",
        record_path: str | None = None,
        on_message: Callable[[ReceivedMessage], None] | None = None,
        on_event: Callable[[str], None] | None = None,
        receive_buffer: int | None = None,
    ) -> None:
        super().__init__(on_message=on_message, on_event=on_event, record_path=record_path)
        self.token = token  # None accepts any token
        self.config = config or WatcherConfig()
        self.watcher_id = watcher_id
        self.watcher_name = watcher_name
        # SO_RCVBUF of accepted sockets: a small one (e.g. 64 KiB) instead of Linux's autotuned
        # megabytes makes a paused or slow server push back on the watcher after a few frames.
        self.receive_buffer = receive_buffer
        self.reject_reason: str | None = None  # reject every connection with this reason
        self.hold_after_reject = False  # keep the socket open after a rejection
        self.silent = False  # never answer the hello (tests the watcher's hello timeout)
        self.read_delay = 0.0  # seconds slept after each received message
        self.connections: list[ConnectionRecord] = []
        self.close_codes: list[int | None] = []  # close code seen at the end of each connection
        self._current: WebSocketConnection | None = None
        self._reading = trio.Event()
        self._reading.set()
        self._streams: dict[tuple[str, int], trio.SocketStream] = {}

    # --- serving ------------------------------------------------------------------------

    def _listeners(
        self, listeners: list[trio.SocketListener]
    ) -> list[trio.abc.Listener[trio.SocketStream]]:
        if self.receive_buffer is not None:
            for listener in listeners:
                listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        # Each accepted TCP stream is kept (by peer address) so that `drop_connection` can cut it
        # under the WebSocket.
        return [_RecordingListener(listener, self._streams) for listener in listeners]

    async def _handle(self, request: WebSocketRequest) -> None:
        number = len(self.connections) + 1
        authorization = None
        for name, value in request.headers:
            if name.lower() == b"authorization":
                authorization = value.decode("latin-1")
        record = ConnectionRecord(number=number, authorization=authorization)
        self.connections.append(record)
        websocket = await request.accept()
        self._changed_now()
        try:
            await self._converse(websocket, record)
        except ConnectionClosed:
            pass
        finally:
            if self._current is websocket:
                self._current = None
            reason = websocket.closed
            self.close_codes.append(None if reason is None else reason.code)
            self._notify(f"connection {number} closed ({reason})")
            self._changed_now()

    async def _converse(self, websocket: WebSocketConnection, record: ConnectionRecord) -> None:
        first = await websocket.get_message()
        hello = self._record(first, record.number)
        index = self.connections.index(record)
        record = attrs.evolve(record, hello=hello.data if hello else None)
        self.connections[index] = record
        if self.silent:
            await trio.sleep_forever()
        if hello is None or hello.type != "watcher.hello":
            await self._send_on(websocket, WatcherAuth(status="rejected", reason="expected_hello"))
            await websocket.aclose(1008, "expected watcher.hello")
            return
        reason = self.reject_reason or self._check_token(record)
        if reason is not None:
            self._notify(f"connection {record.number}: rejected ({reason})")
            await self._send_on(websocket, WatcherAuth(status="rejected", reason=reason))
            if self.hold_after_reject:
                # Keep reading until the watcher gives up and closes the socket itself.
                while True:
                    self._record(await websocket.get_message(), record.number)
            await websocket.aclose(1008, reason)
            return
        self.connections[index] = attrs.evolve(record, authenticated=True)
        await self._send_on(
            websocket,
            WatcherAuth(
                status="authenticated",
                watcher_id=self.watcher_id,
                watcher_name=self.watcher_name,
            ),
        )
        await self._send_on(websocket, self.config)
        self._current = websocket
        self._notify(f"connection {record.number}: authenticated, config sent")
        self._changed_now()
        while True:
            await self._reading.wait()
            self._record(await websocket.get_message(), record.number)
            if self.read_delay:
                await trio.sleep(self.read_delay)

    def _check_token(self, record: ConnectionRecord) -> str | None:
        if self.token is None:
            return None
        header_ok = record.authorization == f"Bearer {self.token}"
        hello_ok = record.hello is not None and record.hello.get("token") == self.token
        return None if header_ok or hello_ok else "invalid_token"

    def _record(self, text: str | bytes, connection: int) -> ReceivedMessage | None:
        message = self._parse(text, connection)
        if message is not None:
            self._keep(message)
            self._changed_now()
        return message

    # --- driving the watcher -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while an authenticated watcher is connected."""
        return self._current is not None

    async def wait_connected(self, count: int = 1) -> None:
        """Wait until `count` connections have been authenticated in total and one is live."""
        while not (
            self._current is not None
            and sum(1 for record in self.connections if record.authenticated) >= count
        ):
            await self._changed.wait()

    async def wait_connections(self, count: int) -> None:
        """Wait until `count` connections (accepted or not) have been opened."""
        while len(self.connections) < count:
            await self._changed.wait()

    async def wait_closed(self, count: int = 1) -> None:
        """Wait until `count` connections have ended."""
        while len(self.close_codes) < count:
            await self._changed.wait()

    async def send(self, message: Message | dict[str, Any] | str) -> None:
        """Send a message (model, ``{"type", "data"}`` dict or raw text) to the watcher."""
        websocket = self._current
        if websocket is None:
            raise RuntimeError("no authenticated watcher is connected")
        await self._send_on(websocket, message)

    async def send_config(self, config: WatcherConfig | None = None) -> None:
        """Replace the config (when given) and push it to the connected watcher."""
        if config is not None:
            self.config = config
        await self.send(self.config)

    async def _send_on(
        self, websocket: WebSocketConnection, message: Message | dict[str, Any] | str
    ) -> None:
        if isinstance(message, Message):
            text = encode(message)
        elif isinstance(message, dict):
            envelope = {"timestamp": utc_timestamp(), "data": {}, **message}
            text = json.dumps(envelope, ensure_ascii=False)
        else:
            text = message
        self._notify(f"-> {text if len(text) < 500 else text[:500] + '…'}")
        await websocket.send_message(text)

    async def drop_connection(self) -> None:
        """Kill the TCP connection of the current watcher without a WebSocket close frame."""
        websocket = self._current
        if websocket is None:
            raise RuntimeError("no authenticated watcher is connected")
        self._current = None
        # Closing the TCP stream under the WebSocket is exactly "the network died": the
        # watcher sees EOF or a reset, not a close handshake.
        remote = websocket.remote
        stream = None
        if isinstance(remote, Endpoint):
            stream = self._streams.get((str(remote.address), remote.port))
        if stream is None:
            raise RuntimeError("the connection's TCP stream is unknown")
        # SO_LINGER 0 makes close() send a reset, as a crashed API would.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    async def close_connection(self, code: int = 1000, reason: str | None = None) -> None:
        websocket = self._current
        if websocket is not None:
            await websocket.aclose(code, reason)

    def pause_reading(self) -> None:
        """Stop reading the watcher's messages (its sends block once the socket buffers fill)."""
        self._reading = trio.Event()

    def resume_reading(self) -> None:
        self._reading.set()

    # --- inspecting what was received ----------------------------------------------------

    async def wait_for_any(self, message_types: Iterable[str], **data_fields: Any) -> str:
        """Wait for the first message of any of `message_types`; return its type."""
        wanted = set(message_types)
        found = await self.wait_for(
            lambda message: message.type in wanted and _fields_match(message.data, data_fields)
        )
        return found[0].type


def _fields_match(data: dict[str, Any], fields: dict[str, Any]) -> bool:
    return all(data.get(key) == value for key, value in fields.items())


def parse_volume_option(text: str) -> tuple[str, str]:
    """``ID=PATH`` → (id, path). Raises ValueError."""
    volume_id, separator, path = text.partition("=")
    if not separator or not volume_id or not path:
        raise ValueError(f"expected ID=PATH, got {text!r}")
    return volume_id, path


__all__ = [
    "ConnectionRecord",
    "DevApiServer",
    "DevServerBase",
    "ReceivedMessage",
    "parse_volume_option",
]


class _RecordingListener(trio.abc.Listener[trio.SocketStream]):
    """A TCP listener that remembers each stream it accepted, by peer address, while open."""

    def __init__(
        self, listener: trio.SocketListener, streams: dict[tuple[str, int], trio.SocketStream]
    ) -> None:
        self._listener = listener
        self._streams = streams

    async def accept(self) -> trio.SocketStream:
        stream = await self._listener.accept()
        # Peer ports are reused: entries whose socket is closed go first, so this stays small.
        for key, known in list(self._streams.items()):
            if known.socket.fileno() == -1:
                del self._streams[key]
        host, port = stream.socket.getpeername()[:2]
        self._streams[(str(host), int(port))] = stream
        return stream

    async def aclose(self) -> None:
        await self._listener.aclose()
