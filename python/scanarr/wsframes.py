"""Many WebSocket text messages in one socket write, on a trio-websocket connection.

The protocol sends one JSON object per text frame, and a scan sends one ``scan.file`` per media
file. trio-websocket's ``send_message`` costs one wsproto call, one lock and one ``send_all`` per
message (about 30k messages/s on one core), more than the native walk itself. `FrameWriter`
builds the frames of a whole batch at once and hands them to the socket in one ``send_all``, under
the connection's own send lock so they never interleave with the frames trio-websocket itself
writes (pongs, close).

Client frames must be masked (RFC 6455 §5.3) with a fresh random key per frame. The keys come
from one ``os.urandom`` call; the masking of the whole buffer is one big-integer XOR against a key
stream that is zero over the headers, so the Python work per frame is a header and a slice.

This relies on four private attributes of ``trio_websocket.WebSocketConnection`` (``_stream``,
``_stream_lock``, ``_wsproto``, ``_abort_web_socket``, read in `FrameWriter.__init__`); the
supported trio-websocket versions are pinned in pyproject.toml and the test suite writes through
this module against a real trio-websocket server. When the connection negotiated a WebSocket
extension (trio-websocket offers none, but a future version might), frames are built by wsproto
itself, one call per message, still written together.

The write is shielded from cancellation: a ``send_all`` cut in the middle of a frame would leave
the stream unusable. A dead peer still cannot hang the writer forever: closing the stream (the
ping watchdog and the shutdown deadline do) makes the pending ``send_all`` fail at once.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

_TEXT_FIN = 0x81  # FIN bit + opcode 1 (text)
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_ZEROS = bytes(16)


def _header(length: int, mask_bit: int) -> bytes:
    if length < 126:
        return bytes((_TEXT_FIN, mask_bit | length))
    if length < 65536:
        return _HEADER_16.pack(_TEXT_FIN, mask_bit | 126, length)
    return _HEADER_64.pack(_TEXT_FIN, mask_bit | 127, length)


def encode_text_frames(texts: Sequence[str], *, masked: bool) -> bytes:
    """The wire bytes of one unfragmented text frame per item of `texts`, in order."""
    if not texts:
        return b""
    parts: list[bytes] = []
    append = parts.append
    if not masked:
        for text in texts:
            payload = text.encode("utf-8")
            append(_header(len(payload), 0))
            append(payload)
        return b"".join(parts)
    keys = os.urandom(4 * len(texts))
    frames: list[bytes] = []
    for start in range(0, len(texts), _MASK_CHUNK):
        frames.append(_masked_frames(texts[start : start + _MASK_CHUNK], keys, 4 * start))
    return b"".join(frames)


# Frames masked per call of `_masked_frames`: big integers of a few tens of kB convert faster
# than one of several hundred kB (which costs fresh pages on every batch).
_MASK_CHUNK = 128


def _masked_frames(texts: Sequence[str], keys: bytes, position: int) -> bytes:
    # Hot path (one iteration per scan.file): kept flat on purpose.
    parts: list[bytes] = []
    key_stream: list[bytes] = []
    append = parts.append
    append_key = key_stream.append
    pack_16 = _HEADER_16.pack
    zeros_2 = _ZEROS[:2]
    zeros_4 = _ZEROS[:4]
    zeros_10 = _ZEROS[:10]
    for text in texts:
        payload = text.encode("utf-8")
        length = len(payload)
        key = keys[position : position + 4]
        position += 4
        if length < 126:
            append(bytes((_TEXT_FIN, 0x80 | length)))
            append_key(zeros_2)
        elif length < 65536:
            append(pack_16(_TEXT_FIN, 0xFE, length))
            append_key(zeros_4)
        else:
            append(_HEADER_64.pack(_TEXT_FIN, 0xFF, length))
            append_key(zeros_10)
        append(key)
        append(payload)
        append_key(zeros_4)
        append_key((key * ((length >> 2) + 1))[:length])
    clear = b"".join(parts)
    masked = int.from_bytes(clear, "big") ^ int.from_bytes(b"".join(key_stream), "big")
    return masked.to_bytes(len(clear), "big")


class FrameWriter:
    """Writes text messages on `connection`, many frames per socket write.

    Use one writer per connection; every sender of the agent shares it, and the connection's
    send lock keeps whole batches in order.
    """

    def __init__(self, connection: WebSocketConnection) -> None:
        self._connection = connection
        # The private parts of trio-websocket this module relies on (see module docstring).
        self._stream: Any = connection._stream
        self._stream_lock: trio.StrictFIFOLock = connection._stream_lock
        self._wsproto: Any = connection._wsproto
        self._masked = bool(self._wsproto.client)
        protocol = getattr(getattr(self._wsproto, "connection", None), "_proto", None)
        extensions = getattr(protocol, "extensions", None)
        self._fast = extensions == []

    @property
    def connection(self) -> WebSocketConnection:
        return self._connection

    def _check_open(self) -> None:
        connection = self._connection
        if connection.closed is not None or self._wsproto.state != ConnectionState.OPEN:
            raise ConnectionClosed(connection.closed)

    def encode(self, texts: Sequence[str]) -> bytes:
        if self._fast:
            return encode_text_frames(texts, masked=self._masked)
        return b"".join(self._wsproto.send(TextMessage(data=text)) for text in texts)

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send each of `texts` as one text message, all in one write.

        Raises trio_websocket.ConnectionClosed when the connection is (or becomes) closed;
        then an unknown prefix of `texts` may have reached the peer.
        """
        if not texts:
            return
        self._check_open()
        data = self.encode(texts)
        await self.send_encoded(data)

    async def send_text(self, text: str) -> None:
        await self.send_texts((text,))

    async def send_encoded(self, data: bytes) -> None:
        """Write frames built by `encode` (cheap to build outside a lock, or ahead of time)."""
        async with self._stream_lock:
            self._check_open()
            with trio.CancelScope(shield=True):
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._connection._abort_web_socket()
                    raise ConnectionClosed(self._connection.closed) from None
