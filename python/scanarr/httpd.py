"""A small HTTP/1.1 server inside trio, on h11: one request per connection, then close.

For the watcher's local endpoints (``/metrics``, ``/livez``, ``/readyz``): a few short GET
requests from a scraper or a container runtime, so no keep-alive and no request bodies. h11
parses and frames; this module only moves bytes and bounds what a client may cost (head size,
time, the input still read after the answer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs
import h11
import trio

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192  # bytes of request line and headers accepted
REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request and take the answer
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 1 << 20
TEXT = "text/plain; charset=utf-8"


@attrs.frozen
class Request:
    method: str
    path: str  # without the query
    headers: Mapping[str, str]  # by lower-case name


@attrs.frozen
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


class _BadRequest(Exception):
    pass


async def serve(
    host: str | None,
    port: int,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on (`host`, `port`) until cancelled; `started` gives the bound port (the real one
    when 0 was asked). Raises OSError when the address cannot be bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0 and len(listeners) > 1:
        # Port 0 on a name with several addresses gives each its own port: keep one.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        await handle_connection(stream, handler)

    await trio.serve_listeners(handle, listeners)


async def handle_connection(stream: trio.SocketStream, handler: Handler) -> None:
    """Answer one request on `stream` and close it; a client's fault never escapes."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        with trio.move_on_after(REQUEST_TIMEOUT) as timer:
            head_only = False
            try:
                request = await _read_request(stream, connection)
            except _BadRequest as error:
                response = Response(400, TEXT, f"{error}\n".encode())
            else:
                head_only = request.method == "HEAD"
                response = handler(request)
            await _respond(stream, connection, response, head_only=head_only)
        if not timer.cancelled_caught:
            await _lingering_close(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
        log.debug("HTTP client went away: %s", error)
    except h11.LocalProtocolError as error:
        log.debug("cannot answer the HTTP client: %s", error)
    finally:
        await trio.aclose_forcefully(stream)


async def _read_request(stream: trio.SocketStream, connection: h11.Connection) -> Request:
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as error:
            raise _BadRequest(_bad_request_reason(error)) from None
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(4096))
            continue
        if isinstance(event, h11.Request):
            target = event.target.decode("ascii", "replace")
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in event.headers
            }
            return Request(event.method.decode("ascii"), target.split("?", 1)[0], headers)
        raise _BadRequest("incomplete request")


def _bad_request_reason(error: h11.RemoteProtocolError) -> str:
    if "exceeded" in str(error) or "too long" in str(error):
        return "request head too large"
    return f"malformed request: {error}"


async def _respond(
    stream: trio.SocketStream, connection: h11.Connection, response: Response, *, head_only: bool
) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
        *response.headers,
    ]
    data = connection.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if not head_only:
        data += connection.send(h11.Data(data=response.body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


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
