"""Frame coalescing (scanarr.wsframes): many messages per write, each a valid RFC 6455 frame."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket
from wsproto.frame_protocol import FrameProtocol, Opcode

from scanarr.transport import ConnectionClosed, open_websocket
from scanarr.wsframes import FrameWriter, encode_text_frames

TEXTS = [
    "",
    "a",
    "x" * 125,
    "y" * 126,
    "z" * 65535,
    "w" * 65536,
    "é€😀 unicode " * 3000,
    '{"type":"scan.file","data":{"relative_path":"Films/Amélie (2001)/Amélie.mkv"}}',
]


@pytest.mark.parametrize("masked", [True, False])
def test_frames_decode_back_to_the_texts(masked: bool) -> None:
    data = encode_text_frames(TEXTS * 50, masked=masked)
    # The receiving side of a client connection is a server, and vice versa.
    parser = FrameProtocol(client=not masked, extensions=[])
    parser.receive_bytes(data)
    frames = list(parser.received_frames())
    assert [frame.opcode for frame in frames] == [Opcode.TEXT] * len(TEXTS) * 50
    assert all(frame.message_finished for frame in frames)
    assert [frame.payload for frame in frames] == TEXTS * 50


def test_every_frame_gets_its_own_mask_key() -> None:
    data = encode_text_frames(["abcd"] * 1000, masked=True)
    # 2 header bytes, 4 key bytes, 4 payload bytes per frame.
    keys = {data[10 * n + 2 : 10 * n + 6] for n in range(1000)}
    assert len(keys) > 990  # equal keys by chance: about 1 pair in 8600 batches


def test_two_batches_get_different_keys() -> None:
    first = encode_text_frames(["abcd"], masked=True)
    second = encode_text_frames(["abcd"], masked=True)
    assert first[2:6] != second[2:6]  # 1 chance in 2**32 of a false failure


async def test_a_real_server_receives_every_message_in_order(nursery: trio.Nursery) -> None:
    received: list[str] = []
    done = trio.Event()
    count = 3000

    async def handler(request: WebSocketRequest) -> None:
        websocket = await request.accept()
        while len(received) < count + 1:
            message = await websocket.get_message()
            assert isinstance(message, str)
            received.append(message)
        done.set()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    texts = [f'{{"n":{n},"pad":"{"é" * (n % 300)}"}}' for n in range(count)]
    async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as websocket:
        writer = FrameWriter(websocket)
        for start in range(0, count, 1000):
            await writer.send_texts(texts[start : start + 1000])
        # Frames written by the transport itself still interleave correctly.
        await websocket.send_message("last")
        with trio.fail_after(10):
            await done.wait()
    assert received == [*texts, "last"]


async def test_sending_on_a_closed_connection_raises(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        websocket = await request.accept()
        await websocket.aclose()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as websocket:
        writer = FrameWriter(websocket)
        with pytest.raises(ConnectionClosed), trio.fail_after(10):
            while True:
                await writer.send_texts(["x" * 1000] * 100)
