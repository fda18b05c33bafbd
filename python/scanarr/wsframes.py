"""Many WebSocket text messages in one socket write, on the agent's `scanarr.transport`.

The protocol sends one JSON object per text frame, and a scan sends one ``scan.file`` per media
file: one wsproto call, one lock and one ``send_all`` per message would cost more than the
native walk itself. `FrameWriter` has the frames of a whole batch built natively
(``_native.text_frames``, or ``Batch.json_frames`` straight from a walk batch: JSON, framing
and masking in one call, RFC 6455 §5.3 keys drawn per frame from a generator seeded from the
OS) and writes them with one `WebSocket.send_frames`, under the connection's send lock.

A writer whose `encode` rewrites the texts (the V1.5 dialect's `TranslatingWriter`) gets every
frame through that `encode`, scan batches included: the native batch path is used only when
`encode` is this class's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scanarr import _native
from scanarr.transport import ConnectionClosed, WebSocket


def encode_text_frames(texts: Sequence[str], *, masked: bool) -> bytes:
    """The wire bytes of one unfragmented text frame per item of `texts`, in order."""
    return _native.text_frames(list(texts), masked=masked)


def with_progress(
    records: list[str], files_before: int, every: int, progress: Callable[[int], str]
) -> list[str]:
    """`records` with ``progress(n)`` after the record that makes the n-th file, for every n
    that is a multiple of `every` (0: never), counting from `files_before`."""
    if every <= 0:
        return records
    files_after = files_before + len(records)
    next_mark = (files_before // every + 1) * every
    if next_mark > files_after:
        return records
    texts: list[str] = []
    start = 0
    while next_mark <= files_after:
        cut = next_mark - files_before
        texts.extend(records[start:cut])
        texts.append(progress(next_mark))
        start = cut
        next_mark += every
    texts.extend(records[start:])
    return texts


class FrameWriter:
    """Writes text messages on `connection`, many frames per socket write.

    Use one writer per connection; every sender of the agent shares it, and the connection's
    send lock keeps whole batches in order.
    """

    def __init__(self, connection: WebSocket) -> None:
        self._connection = connection
        # Batches may skip `encode` only when it is the plain one.
        self.rewrites = type(self).encode is not FrameWriter.encode

    @property
    def connection(self) -> WebSocket:
        return self._connection

    def _check_open(self) -> None:
        if self._connection.closed is not None:
            raise ConnectionClosed(self._connection.closed)

    def encode(self, texts: Sequence[str]) -> bytes:
        return _native.text_frames(list(texts), masked=self._connection.masked)

    def encode_as_is(self, texts: Sequence[str]) -> bytes:
        """The frames of `texts` as they are, even when `encode` rewrites texts."""
        return FrameWriter.encode(self, texts)

    def encode_batch(
        self,
        batch: _native.Batch,
        heads: Sequence[str],
        tail: str,
        *,
        files_before: int = 0,
        progress_every: int = 0,
        progress: Callable[[int], str] | None = None,
    ) -> tuple[bytes, list[int]]:
        """The frames of `batch`'s records (`Batch.json_records`) with progress frames as
        `with_progress` places them, and the indexes of the files not encoded."""
        if not self.rewrites:
            return batch.json_frames(
                list(heads),
                tail,
                masked=self._connection.masked,
                files_before=files_before,
                progress_every=progress_every,
                progress=progress,
            )
        records, not_utf8 = batch.json_records(list(heads), tail)
        if progress is not None:
            records = with_progress(records, files_before, progress_every, progress)
        return self.encode(records), not_utf8

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send each of `texts` as one text message, all in one write.

        Raises ConnectionClosed when the connection is (or becomes) closed; then an unknown
        prefix of `texts` may have reached the peer.
        """
        if not texts:
            return
        self._check_open()
        await self.send_encoded(self.encode(texts))

    async def send_text(self, text: str) -> None:
        await self.send_texts((text,))

    async def send_encoded(self, data: bytes) -> None:
        """Write frames built by `encode` or `encode_batch`. Raises ConnectionClosed."""
        await self._connection.send_frames(data)
