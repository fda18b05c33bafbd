"""`Link`: services waiting for a session wake on attach/detach, never by polling."""

from __future__ import annotations

import trio
import trio.testing
import trio_websocket

from scanarr.agent.session import Link, Session
from scanarr.wsframes import FrameWriter


async def _echo(request: trio_websocket.WebSocketRequest) -> None:
    websocket = await request.accept()
    try:
        while True:
            await websocket.get_message()
    except trio_websocket.ConnectionClosed:
        pass


async def test_a_waiter_on_a_closed_session_gets_the_next_one_without_the_clock(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    # The clock stands still: a waiter that polls (sleeps) would never see the new session.
    server = await nursery.start(trio_websocket.serve_websocket, _echo, "127.0.0.1", 0, None)
    port = server.port
    async with (
        trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as first_socket,
        trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as second_socket,
    ):
        link = Link()
        first = Session(1, first_socket, FrameWriter(first_socket))
        second = Session(2, second_socket, FrameWriter(second_socket))
        link.attach(first)
        await first_socket.aclose()
        assert not first.alive
        got: list[Session] = []

        async def wait() -> None:
            got.append(await link.wait_session())

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # the closed session is not handed out
        link.detach(first)
        link.attach(second)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [second]
