"""The agent's WebSocket client, on wsproto: one connection, its stream and its life.

`open_websocket` opens TCP (TLS for ``wss``), runs the HTTP upgrade and yields a `WebSocket`
whose reader task (in the context's nursery) answers pings, matches pongs, runs the close
handshake and queues incoming messages. Every write goes through one `trio.StrictFIFOLock`, so
frames never interleave; `WebSocket.send_frames` writes frames the caller built itself (a whole
batch of ``scan.file`` frames from the native encoder) in one ``send_all``.

A write is shielded from cancellation: a ``send_all`` cut in the middle of a frame would leave
the stream unusable. A dead peer still cannot hang a writer forever: closing the stream (the
ping watchdog and the shutdown deadline do, through `WebSocket.aclose`) makes the pending
``send_all`` fail at once.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from scanarr.config import ApiUrl

log = logging.getLogger(__name__)

RECEIVE_BYTES = 256 * 1024
# Close codes (RFC 6455 §7.4.1).
ABNORMAL_CLOSURE = 1006  # never sent: the connection ended without a close frame
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009


@attrs.frozen
class CloseReason:
    code: int
    reason: str | None = None

    def __str__(self) -> str:
        return f"code {self.code}" + (f", {self.reason}" if self.reason else "")


class ConnectionClosed(Exception):
    """The connection is closed (or closing); `reason` says how."""

    def __init__(self, reason: CloseReason | None) -> None:
        super().__init__(str(reason))
        self.reason = reason


class HandshakeError(Exception):
    """The connection or the HTTP upgrade failed (refused, timed out, TLS, bad answer)."""


class ConnectionRejected(HandshakeError):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__(f"the server refused the WebSocket upgrade (HTTP {status_code})")
        self.status_code = status_code
        self.body = body


class WebSocket:
    """An open client connection. Build it with `open_websocket`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: WSConnection,
        *,
        max_message_size: int,
        close_timeout: float,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._send_lock = trio.StrictFIFOLock()
        self._messages_in, self._messages = trio.open_memory_channel[str | bytes](1)
        self._pings: dict[bytes, trio.Event] = {}
        self._closed: CloseReason | None = None
        self._reader_done = trio.Event()
        self._stream_closed = False
        # The message being received, in fragments.
        self._text_parts: list[str] = []
        self._bytes_parts = bytearray()
        self._size = 0

    @property
    def closed(self) -> CloseReason | None:
        """None while open; how it closed (or is closing) otherwise."""
        return self._closed

    @property
    def masked(self) -> bool:
        """Frames written with `send_frames` must be masked (always: this is a client)."""
        return True

    # --- receiving -----------------------------------------------------------------------

    async def get_message(self) -> str | bytes:
        """The next message; raises ConnectionClosed once the connection is closed and every
        message received before was returned."""
        try:
            return await self._messages.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed(self._closed) from None

    async def _read(self) -> None:
        """The reader task: bytes from the stream into wsproto, events handled, until closed."""
        try:
            while True:
                await self._handle_events()
                if self._protocol.state in (ConnectionState.CLOSED, ConnectionState.REJECTING):
                    return
                try:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self._set_closed(CloseReason(ABNORMAL_CLOSURE, "connection lost"))
                    return
                try:
                    self._protocol.receive_data(bytes(data))
                except RemoteProtocolError as error:
                    await self._fail(PROTOCOL_ERROR, str(error))
                    return
        finally:
            self._set_closed(CloseReason(ABNORMAL_CLOSURE, "connection lost"))
            self._messages_in.close()
            self._reader_done.set()
            await self._close_stream()

    async def _handle_events(self) -> None:
        try:
            for event in self._protocol.events():
                if isinstance(event, TextMessage | BytesMessage):
                    await self._on_message(event)
                elif isinstance(event, Ping):
                    await self._write_event(event.response())
                elif isinstance(event, Pong):
                    waiter = self._pings.pop(bytes(event.payload), None)
                    if waiter is not None:
                        waiter.set()
                elif isinstance(event, CloseConnection):
                    self._set_closed(CloseReason(event.code, event.reason or None))
                    if self._protocol.state == ConnectionState.REMOTE_CLOSING:
                        await self._write_event(event.response())
                    return
                if self._closed is not None and self._protocol.state == ConnectionState.CLOSED:
                    return
        except RemoteProtocolError as error:
            await self._fail(PROTOCOL_ERROR, str(error))
        except ConnectionClosed:
            return

    async def _on_message(self, event: TextMessage | BytesMessage) -> None:
        self._size += len(event.data)
        if self._size > self._max_message_size:
            await self._fail(MESSAGE_TOO_BIG, f"message larger than {self._max_message_size} bytes")
            raise ConnectionClosed(self._closed)
        if isinstance(event, TextMessage):
            self._text_parts.append(event.data)
        else:
            self._bytes_parts += event.data
        if not event.message_finished:
            return
        message: str | bytes
        if isinstance(event, TextMessage):
            message = "".join(self._text_parts)
            self._text_parts = []
        else:
            message = bytes(self._bytes_parts)
            self._bytes_parts = bytearray()
        self._size = 0
        # Nobody reads any more when the connection is closing.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._messages_in.send(message)

    async def _fail(self, code: int, reason: str) -> None:
        """Close because the peer broke the protocol (or a limit): close frame, then the
        stream."""
        log.warning("closing the WebSocket (%d): %s", code, reason)
        self._set_closed(CloseReason(code, reason))
        with suppress(ConnectionClosed), trio.move_on_after(self._close_timeout):
            await self._write_event(CloseConnection(code=code, reason=reason), shield=False)
        await self._close_stream()

    # --- sending -------------------------------------------------------------------------

    async def send_message(self, message: str | bytes) -> None:
        """Send one message. Raises ConnectionClosed."""
        event: Event = (
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        await self._write_event(event)

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send each of `texts` as one text message, all in one write. Raises
        ConnectionClosed."""
        if texts:
            from scanarr import _native

            self._check_open()
            await self.send_frames(_native.text_frames(list(texts), masked=True))

    async def send_frames(self, data: bytes) -> None:
        """Write complete, masked frames the caller encoded (never a close frame). Raises
        ConnectionClosed; then an unknown prefix of `data` may have reached the peer."""
        async with self._send_lock:
            self._check_open()
            await self._write(data)

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong. Raises ConnectionClosed."""
        payload = payload if payload is not None else os.urandom(4)
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        answered = self._pings[payload] = trio.Event()
        try:
            await self._write_event(Ping(payload=payload))
            await answered.wait()
        finally:
            # Still there: no pong came, the wait ended because the connection closed.
            unanswered = self._pings.pop(payload, None)
        if unanswered is not None:
            raise ConnectionClosed(self._closed)

    async def _write_event(self, event: Event, *, shield: bool = True) -> None:
        async with self._send_lock:
            if self._stream_closed:
                raise ConnectionClosed(self._closed)
            try:
                data = self._protocol.send(event)
            except LocalProtocolError:
                raise ConnectionClosed(self._closed) from None
            await self._write(data, shield=shield)

    async def _write(self, data: bytes, *, shield: bool = True) -> None:
        # Called under the send lock. Unshielded (close frames only), a cancelled write may
        # leave half a frame: the stream is closed then, as it is about to be anyway.
        try:
            with trio.CancelScope(shield=shield):
                await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._set_closed(CloseReason(ABNORMAL_CLOSURE, "connection lost"))
            await self._close_stream()
            raise ConnectionClosed(self._closed) from None
        except trio.Cancelled:
            await self._close_stream()
            raise

    def _check_open(self) -> None:
        if self._closed is not None or self._protocol.state != ConnectionState.OPEN:
            raise ConnectionClosed(self._closed)

    # --- closing -------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame, wait up to the close timeout for the peer's answer, then close
        the stream. Idempotent. When cancelled (a caller's deadline: the peer may read
        nothing), the stream is closed anyway and a pending write fails with ConnectionClosed.
        """
        try:
            if self._protocol.state == ConnectionState.OPEN and self._closed is None:
                self._set_closed(CloseReason(code, reason))
                with suppress(ConnectionClosed):
                    await self._write_event(CloseConnection(code=code, reason=reason), shield=False)
            with trio.move_on_after(self._close_timeout):
                await self._reader_done.wait()
        finally:
            await self._close_stream()

    def _set_closed(self, reason: CloseReason) -> None:
        if self._closed is None:
            self._closed = reason
        # A pending ping will never get its pong.
        for waiter in self._pings.values():
            waiter.set()

    async def _close_stream(self) -> None:
        if not self._stream_closed:
            self._stream_closed = True
            self._set_closed(CloseReason(ABNORMAL_CLOSURE, "connection lost"))
            await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def open_websocket(
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    max_message_size: int = 1024 * 1024,
    connect_timeout: float = 60.0,
    close_timeout: float = 1.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocket]:
    """Connect, upgrade, and yield the open connection; close it (1000) on exit.

    Raises ConnectionRejected (an HTTP answer other than 101) or HandshakeError (refused,
    unreachable, timed out, TLS, a malformed answer) before yielding."""
    websocket = await _connect(
        host,
        port,
        resource,
        use_ssl=use_ssl,
        ssl_context=ssl_context,
        extra_headers=extra_headers,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
    )
    # What the body raises leaves as it is, not wrapped in the reader's nursery's group (the
    # caller tells HandshakeFailed from ConnectionClosed...).
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket._read)
            try:
                yield websocket
            except BaseException as error:
                body_error = error
            finally:
                # Closed even when the body is cancelled, but not waiting forever on a peer
                # that reads nothing.
                deadline = trio.current_time() + 2 * close_timeout
                with trio.CancelScope(shield=True, deadline=deadline):
                    await websocket.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await websocket._close_stream()
    if body_error is not None:
        raise body_error


def open_api_websocket(
    url: ApiUrl,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    connect_timeout: float,
    close_timeout: float,
    max_message_size: int = 1024 * 1024,
) -> AbstractAsyncContextManager[WebSocket]:
    """`open_websocket` to the API at `url` (``SCANARR_API_URL``), TLS for ``wss``."""
    return open_websocket(
        url.host,
        url.port,
        url.resource,
        use_ssl=url.secure,
        extra_headers=headers,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
    )


async def _connect(
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool,
    ssl_context: ssl.SSLContext | None,
    extra_headers: Sequence[tuple[bytes, bytes]],
    max_message_size: int,
    connect_timeout: float,
    close_timeout: float,
) -> WebSocket:
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout):
            if use_ssl:
                context = ssl_context if ssl_context is not None else ssl.create_default_context()
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=context, https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
            protocol = WSConnection(ConnectionType.CLIENT)
            default_port = 443 if use_ssl else 80
            request = Request(
                host=host if port == default_port else f"{host}:{port}",
                target=resource,
                extra_headers=list(extra_headers),
            )
            await stream.send_all(protocol.send(request))
            await _upgrade(stream, protocol)
    except trio.TooSlowError:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise HandshakeError(f"no WebSocket upgrade within {connect_timeout:g} s") from None
    except (OSError, trio.BrokenResourceError, RemoteProtocolError) as error:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise HandshakeError(str(error) or type(error).__name__) from error
    except BaseException:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise
    return WebSocket(
        stream, protocol, max_message_size=max_message_size, close_timeout=close_timeout
    )


async def _upgrade(stream: trio.abc.Stream, protocol: WSConnection) -> None:
    """Read the server's answer to the upgrade request; raises ConnectionRejected."""
    rejected: RejectConnection | None = None
    body = bytearray()
    while True:
        # Events are taken one at a time: those after the acceptance (messages the server sent
        # at once) stay queued in wsproto for the reader task.
        for event in protocol.events():
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                rejected = event
                if not event.has_body:
                    raise ConnectionRejected(event.status_code, b"")
            elif isinstance(event, RejectData) and rejected is not None:
                body += event.data
                if event.body_finished:
                    raise ConnectionRejected(rejected.status_code, bytes(body))
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            if rejected is not None:
                raise ConnectionRejected(rejected.status_code, bytes(body))
            raise HandshakeError("the server closed the connection during the upgrade")
        protocol.receive_data(bytes(data))
