"""The agent's WebSocket client (scanarr.transport) against a real trio-websocket server."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed as ServerClosed
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from scanarr.transport import (
    MESSAGE_TOO_BIG,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    open_websocket,
)
from scanarr.wsframes import encode_text_frames

Handler = Callable[[WebSocketConnection], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.close_codes: list[int | None] = []
        self.received: list[str | bytes] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.ended = trio.Event()

    async def start(self, nursery: trio.Nursery, handler: Handler) -> int:
        async def handle(request: WebSocketRequest) -> None:
            self.headers = list(request.headers)
            websocket = await request.accept()
            try:
                await handler(websocket)
            except ServerClosed:
                pass
            finally:
                closed = websocket.closed
                self.close_codes.append(None if closed is None else closed.code)
                self.ended.set()

        server = await nursery.start(serve_websocket, handle, "127.0.0.1", 0, None)
        port: int = server.port
        return port


async def echo(websocket: WebSocketConnection) -> None:
    while True:
        await websocket.send_message(await websocket.get_message())


async def test_messages_both_ways_and_a_clean_close(nursery: trio.Nursery) -> None:
    server = Server()
    port = await server.start(nursery, echo)
    async with open_websocket(
        "127.0.0.1", port, "/ws", use_ssl=False, extra_headers=[(b"Authorization", b"Bearer t")]
    ) as websocket:
        await websocket.send_message("héllo")
        await websocket.send_message(b"\x00bytes")
        with trio.fail_after(10):
            assert await websocket.get_message() == "héllo"
            assert await websocket.get_message() == b"\x00bytes"
            await websocket.ping()  # the server's pong arrives
    with trio.fail_after(10):
        await server.ended.wait()
    assert server.close_codes == [1000]
    assert (b"authorization", b"Bearer t") in server.headers
    assert websocket.closed is not None and websocket.closed.code == 1000
    with pytest.raises(ConnectionClosed):
        await websocket.send_message("after")


async def test_aclose_is_idempotent_and_sends_one_close(nursery: trio.Nursery) -> None:
    server = Server()
    port = await server.start(nursery, echo)
    async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as websocket:
        with trio.fail_after(10):
            await websocket.aclose(1001, "going away")
            await websocket.aclose(1000)
            with pytest.raises(ConnectionClosed):
                await websocket.get_message()
    with trio.fail_after(10):
        await server.ended.wait()
    assert server.close_codes == [1001]


async def test_a_message_over_the_limit_closes_with_1009(nursery: trio.Nursery) -> None:
    server = Server()

    async def send_big(websocket: WebSocketConnection) -> None:
        await websocket.send_message("small")
        await websocket.send_message("x" * 5000)
        await websocket.get_message()  # until the client closes

    port = await server.start(nursery, send_big)
    async with open_websocket(
        "127.0.0.1", port, "/", use_ssl=False, max_message_size=4096
    ) as websocket:
        with trio.fail_after(10):
            assert await websocket.get_message() == "small"
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == MESSAGE_TOO_BIG
    with trio.fail_after(10):
        await server.ended.wait()
    assert server.close_codes == [MESSAGE_TOO_BIG]


async def test_the_server_closing_ends_the_connection(nursery: trio.Nursery) -> None:
    server = Server()

    async def close_now(websocket: WebSocketConnection) -> None:
        await websocket.send_message("bye")
        await websocket.aclose(4000, "done")

    port = await server.start(nursery, close_now)
    async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as websocket:
        with trio.fail_after(10):
            assert await websocket.get_message() == "bye"
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 4000


async def accept_upgrade(listener: trio.SocketListener) -> trio.SocketStream:
    """A bare server: accepts one WebSocket upgrade, then does only what the test says."""
    try:
        stream = await listener.accept()
    finally:
        await listener.aclose()  # one connection is all it serves
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some(65536)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return stream


async def test_a_pending_ping_ends_when_the_connection_drops(nursery: trio.Nursery) -> None:
    """A peer that vanishes (TCP closed, no close frame) does not leave a ping waiting."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]

    async def accept_then_drop() -> None:
        stream = await accept_upgrade(listener)
        await stream.receive_some(65536)  # the ping, never answered
        await stream.aclose()

    nursery.start_soon(accept_then_drop)
    async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as websocket:
        with trio.fail_after(10), pytest.raises(ConnectionClosed):
            await websocket.ping()
    assert websocket.closed is not None and websocket.closed.code == 1006


async def test_a_peer_that_reads_nothing_cannot_hold_the_close(nursery: trio.Nursery) -> None:
    """With the socket full (a write blocked for good), a deadline on aclose still closes the
    connection, and the blocked write fails instead of hanging."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]

    async def accept_then_stall() -> None:
        stream = await accept_upgrade(listener)
        try:
            await trio.sleep_forever()
        finally:
            await stream.aclose()

    nursery.start_soon(accept_then_stall)
    write_failed = trio.Event()
    async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as websocket:

        async def flood() -> None:
            frames = encode_text_frames(["x" * 65536] * 16, masked=True)
            with pytest.raises(ConnectionClosed):
                while True:
                    await websocket.send_frames(frames)
            write_failed.set()

        nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked()  # the flood's write waits on a full socket
        assert not write_failed.is_set()
        with trio.move_on_after(0.2):
            await websocket.aclose(1001, "no pong")
        with trio.fail_after(10):
            await write_failed.wait()
    assert websocket.closed is not None and websocket.closed.code == 1001


async def test_a_refused_upgrade_raises_connection_rejected(nursery: trio.Nursery) -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"no")

    server = await nursery.start(serve_websocket, reject, "127.0.0.1", 0, None)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False):
            pass
    assert rejected.value.status_code == 403


async def test_no_answer_to_the_upgrade_is_a_timeout() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10), pytest.raises(HandshakeError, match="within"):
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False, connect_timeout=0.3):
            pass
    await listeners[0].aclose()


async def test_a_refused_connection_is_a_handshake_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with trio.fail_after(10), pytest.raises(HandshakeError):
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False):
            pass
