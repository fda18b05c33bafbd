"""One authenticated connection to the API (a `Session`) and the handshake that opens it (§2).

`handshake` sends ``watcher.hello`` (the token also rides in the ``Authorization`` header the
caller put on the upgrade request), waits for ``watcher.auth`` then the first ``watcher.config``,
and sends nothing else. A `Session` exists only after that, so nothing but the hello can leave
the watcher before authentication and the first config.

`Link` holds the current session. Services never keep a session across a disconnect: they send
through `Link.wait_session()` and, on `SessionLost`, wait for the next one.
"""

from __future__ import annotations

import logging
import platform
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from scanarr import __version__
from scanarr.protocol import (
    MalformedMessage,
    Message,
    ScanFile,
    UnknownMessageType,
    WatcherAuth,
    WatcherConfig,
    WatcherHello,
    decode,
    encode,
)
from scanarr.protocol_v15 import V15_HELLO_ANSWERS
from scanarr.transport import ConnectionClosed, WebSocket
from scanarr.wsframes import FrameWriter

if TYPE_CHECKING:
    from scanarr._native import Batch
    from scanarr.metrics import Metrics

log = logging.getLogger(__name__)

# Messages that may arrive between watcher.auth and the first watcher.config, kept for dispatch
# once the config is applied. More than this means the API is misbehaving.
EARLY_MESSAGE_LIMIT = 1000

# Go's GOARCH names for platform.machine() values, as the seed's hello example uses.
_GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "i386": "386",
    "i686": "386",
    "x86": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def go_os_name() -> str:
    platform_name = sys.platform
    if platform_name.startswith("linux"):
        return "linux"
    if platform_name.startswith("freebsd"):
        return "freebsd"
    return platform_name


def go_arch_name() -> str:
    machine = platform.machine().lower()
    return _GO_ARCH.get(machine, machine)


def watcher_hello(token: str) -> WatcherHello:
    return WatcherHello(
        hostname=socket.gethostname(),
        version=__version__,
        os=go_os_name(),
        arch=go_arch_name(),
        token=token,
    )


class SessionLost(Exception):
    """The session's connection closed; the caller waits for the next session."""


class HandshakeRejected(Exception):
    """The API answered ``watcher.auth`` with ``rejected``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the API rejected the watcher: {reason}")
        self.reason = reason


class HandshakeFailed(Exception):
    """The handshake did not complete: wrong message, closed connection, timeout."""


class HandshakeClosed(HandshakeFailed):
    """The API closed the connection before the handshake completed."""


class OtherDialect(HandshakeFailed):
    """The API answered the hello in the V1.5 dialect (`scanarr.agent.dialect`); `answer` is
    the frame it answered with."""

    def __init__(self, answer: str) -> None:
        super().__init__("the API speaks the V1.5 dialect")
        self.answer = answer


@attrs.frozen
class HandshakeResult:
    auth: WatcherAuth
    config: WatcherConfig | None  # None: the first config was malformed (previous stays)
    early_messages: list[str | bytes]  # commands that arrived before the config


async def handshake(
    websocket: WebSocket,
    writer: FrameWriter,
    hello: WatcherHello,
    *,
    timeout: float,
    reject_grace: float = 1.0,
) -> HandshakeResult:
    """Run §2 on an open WebSocket. Raises HandshakeRejected or HandshakeFailed."""
    try:
        with trio.fail_after(timeout):
            # The hello carries the token: never log its text.
            await writer.send_text(encode(hello))
            auth = await _receive_auth(websocket)
            if auth.status == "rejected":
                reason = auth.reason or "no reason given"
                # §2: the API closes the socket after a rejection; close it ourselves if the
                # API has not within `reject_grace`.
                with trio.move_on_after(reject_grace):
                    await _drain_until_closed(websocket)
                raise HandshakeRejected(reason)
            config, early = await _receive_first_config(websocket)
    except trio.TooSlowError:
        raise HandshakeFailed(
            f"no watcher.auth and watcher.config within {timeout:g} s of the hello"
        ) from None
    except ConnectionClosed as closed:
        raise HandshakeClosed(f"connection closed during the handshake ({closed.reason})") from None
    return HandshakeResult(auth=auth, config=config, early_messages=early)


async def _drain_until_closed(websocket: WebSocket) -> None:
    try:
        while True:
            await websocket.get_message()
    except ConnectionClosed:
        pass


async def _receive_auth(websocket: WebSocket) -> WatcherAuth:
    while True:
        text = await websocket.get_message()
        try:
            message = decode(text)
        except UnknownMessageType as unknown:
            if unknown.message_type in V15_HELLO_ANSWERS and isinstance(text, str):
                raise OtherDialect(text) from None
            log.debug("ignoring %s before watcher.auth", unknown.message_type)
            continue
        except MalformedMessage as error:
            if error.message_type == "watcher.auth":
                raise HandshakeFailed(f"malformed watcher.auth: {error.reason}") from None
            log.warning("ignoring a malformed message before watcher.auth: %s", error.reason)
            continue
        if isinstance(message, WatcherAuth):
            return message
        log.warning("ignoring %s received before watcher.auth", message.TYPE)


async def _receive_first_config(
    websocket: WebSocket,
) -> tuple[WatcherConfig | None, list[str | bytes]]:
    early: list[str | bytes] = []
    while True:
        text = await websocket.get_message()
        try:
            message = decode(text)
        except UnknownMessageType as unknown:
            log.debug("ignoring unknown message type %r", unknown.message_type)
            continue
        except MalformedMessage as error:
            if error.message_type == "watcher.config":
                log.error(
                    "malformed watcher.config (%s); the previous config stays in force",
                    error.reason,
                )
                return None, early
            # Answered by the dispatcher once the session is up.
            early.append(text)
            continue
        if isinstance(message, WatcherConfig):
            return message, early
        if len(early) >= EARLY_MESSAGE_LIMIT:
            raise HandshakeFailed(
                f"more than {EARLY_MESSAGE_LIMIT} messages before the first watcher.config"
            )
        early.append(text)


class Session:
    """An authenticated connection whose first config has been applied.

    Every frame leaves through `_write` and is counted in `metrics` (when given) by its type.
    """

    def __init__(
        self,
        number: int,
        websocket: WebSocket,
        writer: FrameWriter,
        metrics: Metrics | None = None,
    ) -> None:
        self.number = number
        self.websocket = websocket
        self.writer = writer
        self.metrics = metrics

    @property
    def alive(self) -> bool:
        return self.websocket.closed is None

    async def send(self, message: Message) -> None:
        """Send one message now. Raises SessionLost."""
        await self._write(self.writer.encode((encode(message),)))
        if self.metrics is not None:
            self.metrics.record_sent(message)

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send pre-encoded frames' texts, in order, in one write. Raises SessionLost."""
        if not texts:
            return
        await self._write(self.writer.encode(texts))
        if self.metrics is not None:
            self.metrics.frames_sent(texts)

    async def send_as_is(self, texts: Sequence[str]) -> None:
        """Send texts already in the connection's dialect (V1.5 replies and log lines): not
        rewritten by the writer. Raises SessionLost."""
        if not texts:
            return
        await self._write(self.writer.encode_as_is(texts))
        if self.metrics is not None:
            self.metrics.frames_sent(texts)

    async def send_scan_files(
        self,
        batch: Batch,
        head: str,
        tail: str,
        *,
        files_before: int,
        progress_every: int,
        progress: Callable[[int], str],
    ) -> list[int]:
        """Send a ``scan.file`` per file of `batch` (``head + fields + tail``, see
        `Batch.json_records`) with a ``scan.progress`` (``progress(files)``) after every
        `progress_every`-th file counted from `files_before`, in one write. Returns the indexes
        of the files not sent (their name is not UTF-8). Raises SessionLost."""
        data, not_utf8 = self.writer.encode_batch(
            batch,
            [head],
            tail,
            files_before=files_before,
            progress_every=progress_every,
            progress=progress,
        )
        files = len(batch) - len(not_utf8)
        if files:
            await self._write(data)
        if self.metrics is not None:
            self.metrics.message_sent(ScanFile.TYPE, files)
            if progress_every > 0:
                marks = (files_before + files) // progress_every - files_before // progress_every
                self.metrics.message_sent("scan.progress", marks)
        return not_utf8

    async def _write(self, data: bytes) -> None:
        try:
            await self.writer.send_encoded(data)
        except ConnectionClosed as closed:
            raise SessionLost(str(closed.reason)) from None

    def __repr__(self) -> str:
        return f"<Session {self.number}>"


class Link:
    """The current session, if any, and a way to wait for the next one."""

    def __init__(self) -> None:
        self.current: Session | None = None
        self._attached = trio.Event()
        # Set when the current session is detached (then replaced): a closed session is always
        # detached by the connection loop, so a waiter sleeps on this instead of polling.
        self._detached = trio.Event()
        self._listeners: list[Callable[[Session | None], None]] = []

    def add_listener(self, listener: Callable[[Session | None], None]) -> None:
        """Call `listener(session)` on attach and `listener(None)` on detach."""
        self._listeners.append(listener)

    def attach(self, session: Session) -> None:
        self.current = session
        self._attached.set()
        for listener in self._listeners:
            listener(session)

    def detach(self, session: Session) -> None:
        if self.current is session:
            self.current = None
            self._attached = trio.Event()
            self._detached.set()
            self._detached = trio.Event()
            for listener in self._listeners:
                listener(None)

    async def wait_session(self) -> Session:
        """The current session, waiting for one when disconnected."""
        while True:
            session = self.current
            if session is not None and session.alive:
                return session
            if session is not None:
                # Closed but not yet detached by the connection loop.
                await self._detached.wait()
                continue
            await self._attached.wait()

    async def send_if_connected(self, message: Message) -> bool:
        """Send on the current session; False (message dropped) when there is none."""
        session = self.current
        if session is None:
            return False
        try:
            await session.send(message)
        except SessionLost:
            return False
        return True
