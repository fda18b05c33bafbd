"""The V1.5 dialect at the connection's boundary (PROTOCOL-V15.md), so nothing else learns it.

The scan, live and command machinery speaks V2 (PROTOCOL.md): volumes, ``volume_id``,
``relative_path``. When the API speaks V1.5, `Dialect` translates at three points only:

- the handshake (`Dialect.handshake`): the V1.5 hello, ``watcher.auth_required`` →
  ``watcher.auth``, ``watcher.pending`` (no timeout, the token arrives with the approval config),
  ``watcher.rejected``; in ``auto`` mode the V2 hello is sent first and a V1.5 answer switches the
  connection (and every later one: the choice is kept in the state file);
- outgoing frames (`TranslatingWriter`, the session's writer): every V2 frame the services write
  becomes its V1.5 shape — ``volume_id`` + ``relative_path`` → absolute ``path`` (a volume's id
  *is* its path), ``scan.failed`` → ``watcher.log`` at error level (the server has no
  ``scan.failed``), ``watcher.status`` with ``watcher_id`` and ``config_hash``;
- incoming frames (`Dialect.incoming`) and command replies (`Dialect.send_reply`): V1.5 commands
  become V2 commands for the paths that lie in this watcher's volumes, and their replies are
  translated back.

Rules of §6 on top of the server's: every watcher receives every command, so a command with
nothing in our volumes gets no reply at all, and a delete partly ours is answered for our items
only. Delete items carry no inode: each item becomes a V2 media file of one path (so its result
is the item's), and a path this watcher already deleted for a deletion is recognised by
``(deletion_id, media_file_id, path)`` — the server re-sends pending deletions with new request
ids — and answered ``deleted`` again without touching the disk. A reply that cannot be sent is
kept on disk (`ReplyStore`, beside the state file) and sent after the next handshake.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from scanarr import __version__
from scanarr.atomic import atomic_write
from scanarr.protocol import (
    FilesDeleteCompleted,
    FilesDeleteProgress,
    FilesHardlinkCompleted,
    Message,
    WatcherAuth,
    WatcherHello,
    encode,
    utc_timestamp,
)
from scanarr.protocol_v15 import (
    INCOMING_TYPES,
    Auth15,
    AuthRequired15,
    CommandDelete15,
    CommandHardlink15,
    CommandScan15,
    CommandWatchAdd15,
    CommandWatchRemove15,
    Config15,
    DeleteCompleted15,
    DeleteResult15,
    HardlinkCompleted15,
    Hello15,
    Log15,
    Malformed15,
    Pending15,
    Rejected15,
    Unknown15,
    decode_incoming,
    encode15,
    envelope_of,
    structure,
)
from scanarr.transport import ConnectionClosed, WebSocket
from scanarr.volume_paths import normalise_root
from scanarr.wsframes import FrameWriter

from .dialect_log import FORWARDED, LogForwarder
from .dialect_translate import TranslatingWriter, Translator, join_path
from .filter_parity import count_unreported
from .session import (
    HandshakeClosed,
    HandshakeFailed,
    HandshakeRejected,
    HandshakeResult,
    Link,
    OtherDialect,
    Session,
    SessionLost,
    handshake,
    watcher_hello,
)
from .volumes import VolumeSet

if TYPE_CHECKING:
    from scanarr.config import Settings

    from .app import StateKeeper

log = logging.getLogger(__name__)

V15 = "v1.5"
V2 = "v2"
# Keys of the state file (top level). `auth_token` and `config_hash` are the Go watcher's own
# names: its state file is read as is, and it can read ours back.
TOKEN_KEY = "auth_token"
CONFIG_HASH_KEY = "config_hash"
WATCHER_ID_KEY = "watcher_id"
PROTOCOL_KEY = "protocol"

MAX_REPLAY_KEYS = 20000  # deleted (deletion, media file, path) remembered
MAX_OUTBOX = 1000  # unsent replies kept


class WatcherRevoked(HandshakeRejected):
    """The server revoked this watcher: final until an operator acts, so retry only slowly."""


@attrs.frozen
class HelloWithWatcherId(WatcherHello):
    """The V2 hello plus ``watcher_id``, so that a V1.5 server recognises the watcher."""

    watcher_id: str = ""


def replies_path_for(state_file: str) -> Path:
    state = Path(state_file)
    return state.with_name(f"{state.stem}.v15-replies.json")


# --- the replies kept on disk -----------------------------------------------------------------


class ReplyStore:
    """Deleted ``(deletion_id, media_file_id, path)`` keys with their results, and replies not
    yet sent, in one JSON file written atomically (mode 0600). Blocking: call in a thread."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.deleted: collections.OrderedDict[tuple[str, str, str], dict[str, Any]] = (
            collections.OrderedDict()
        )
        self.outbox: list[str] = []

    def load(self) -> None:
        if self.path is None:
            return
        try:
            document = json.loads(self.path.read_bytes())
            deleted = document["deleted"]
            outbox = document["outbox"]
            for deletion_id, media_file_id, path, result in deleted:
                self.deleted[(str(deletion_id), str(media_file_id), str(path))] = dict(result)
            self.outbox = [str(text) for text in outbox]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("cannot read %s (%s); starting without kept replies", self.path, error)

    def save(self) -> None:
        if self.path is None:
            return
        while len(self.deleted) > MAX_REPLAY_KEYS:
            self.deleted.popitem(last=False)
        del self.outbox[:-MAX_OUTBOX]
        document = {
            "deleted": [[*key, result] for key, result in self.deleted.items()],
            "outbox": self.outbox,
        }
        atomic_write(self.path, json.dumps(document, ensure_ascii=False).encode("utf-8"))


# --- the dialect of the connection ----------------------------------------------------------


class Dialect:
    """Which dialect the connection speaks, and the V1.5 side of it. See the module docstring."""

    def __init__(
        self, settings: Settings, state_keeper: StateKeeper, volumes: VolumeSet, link: Link
    ) -> None:
        self.settings = settings
        self.state_keeper = state_keeper
        self.link = link
        self.translator = Translator(volumes)
        self.store = ReplyStore(replies_path_for(settings.state_file))
        self.forwarder: LogForwarder | None = None
        self._stored_token_refused = False
        self._store_loaded = False
        self._parity_due: set[str] = set()
        self._parity_done: set[str] = set()
        self._parity_wakeup = trio.Event()
        self.translator.on_scan_completed = self._scan_completed

    # --- choice ----------------------------------------------------------------------------

    @property
    def _extra(self) -> dict[str, Any]:
        return self.state_keeper.state.extra

    @property
    def speaks_v15(self) -> bool:
        if self.settings.protocol != "auto":
            return self.settings.protocol == V15
        return self._extra.get(PROTOCOL_KEY) == V15

    async def on_state_loaded(self) -> None:
        """After the state file is read: a Go watcher's state means a V1.5 server."""
        extra = self._extra
        if isinstance(extra.get(TOKEN_KEY), str) and PROTOCOL_KEY not in extra:
            log.info(
                "the state file holds a Go watcher's token: this watcher uses it "
                "(no new approval needed)"
            )
            if self.settings.protocol == "auto":
                extra[PROTOCOL_KEY] = V15
        self._refresh_redaction()
        if self.speaks_v15:
            await self._load_store()
            state = self.state_keeper.state
            go_config = extra.get("config")
            if state.last_config is None and isinstance(go_config, dict):
                # The Go watcher's last config: watch its paths until the server sends one.
                try:
                    config = structure(Config15.TYPE, go_config, INCOMING_TYPES)
                except (Malformed15, Unknown15) as error:
                    log.warning("the Go watcher's config in the state file is unusable: %s", error)
                else:
                    state.last_config = self.translator.config(config)

    async def _load_store(self) -> None:
        if not self._store_loaded:
            self._store_loaded = True
            await trio.to_thread.run_sync(self.store.load)

    async def _remember(self, protocol: str) -> None:
        if self.settings.protocol == "auto" and self._extra.get(PROTOCOL_KEY) != protocol:
            self._extra[PROTOCOL_KEY] = protocol
            await self.state_keeper.save()

    def headers(self) -> list[tuple[bytes, bytes]]:
        token = self.settings.auth_token
        if self.speaks_v15 or not token:
            return []
        return [(b"Authorization", b"Bearer " + token.encode("utf-8"))]

    # --- identity and token ----------------------------------------------------------------

    async def _watcher_id(self) -> str:
        watcher_id = self.settings.watcher_id or self._extra.get(WATCHER_ID_KEY)
        if not isinstance(watcher_id, str) or not watcher_id:
            watcher_id = str(uuid.uuid4())
            log.info("this watcher's id is %s (kept in the state file)", watcher_id)
        if self._extra.get(WATCHER_ID_KEY) != watcher_id:
            self._extra[WATCHER_ID_KEY] = watcher_id
            await self.state_keeper.save()
        self.translator.watcher_id = watcher_id
        return watcher_id

    def _token(self) -> str:
        stored = self._extra.get(TOKEN_KEY)
        if isinstance(stored, str) and stored and not self._stored_token_refused:
            return stored
        return self.settings.auth_token

    async def _keep_token(self, token: str) -> None:
        if self._extra.get(TOKEN_KEY) == token:
            return
        self._extra[TOKEN_KEY] = token
        self._stored_token_refused = False
        if await self.state_keeper.save():
            log.info("the token from the approval is kept in the state file")
        self._refresh_redaction()

    def _secrets(self) -> list[str]:
        stored = self._extra.get(TOKEN_KEY)
        return [secret for secret in (self.settings.auth_token, stored) if isinstance(secret, str)]

    def _refresh_redaction(self) -> None:
        from scanarr.logs import RedactSecrets

        # The token from the approval is a secret too, in every log line from now on: the
        # handlers' redaction filters (scanarr.logs) learn it.
        for handler in logging.getLogger().handlers:
            for candidate in list(handler.filters):
                if isinstance(candidate, RedactSecrets):
                    missing = [s for s in self._secrets() if s not in candidate.secrets]
                    if missing:
                        handler.removeFilter(candidate)
                        handler.addFilter(RedactSecrets([*candidate.secrets, *missing]))
        if self.forwarder is not None:
            self.forwarder.redact = RedactSecrets(self._secrets()).redact

    # --- handshake -------------------------------------------------------------------------

    async def handshake(
        self, websocket: WebSocket, *, timeout: float
    ) -> tuple[HandshakeResult, FrameWriter]:
        """§2 of the dialect in force; raises HandshakeRejected or HandshakeFailed."""
        if self.speaks_v15:
            return await self._handshake15(websocket, timeout)
        writer = FrameWriter(websocket)
        hello = watcher_hello(self.settings.auth_token)
        watcher_id = self.settings.watcher_id
        if watcher_id:
            # Lets `auto` tell the dialects apart on first contact; a V2 API ignores it.
            hello = HelloWithWatcherId(**attrs.asdict(hello), watcher_id=watcher_id)
        try:
            return await handshake(websocket, writer, hello, timeout=timeout), writer
        except OtherDialect as other:
            if self.settings.protocol != "auto":
                raise HandshakeFailed(
                    "the API answers in the V1.5 dialect (the released Scanarr API); "
                    "set SCANARR_PROTOCOL=v1.5 or auto"
                ) from None
            log.info("the API speaks the V1.5 dialect (the released Scanarr API); using it")
            await self._remember(V15)
            await self._load_store()
            return await self._handshake15(websocket, timeout, first=other.answer)
        except HandshakeClosed:
            if self.settings.protocol == "auto" and not watcher_id:
                # A V1.5 server closes on a hello without watcher_id (PROTOCOL-V15.md §2).
                log.info("the API closed on the V2 hello: trying the V1.5 dialect next")
                await self._remember(V15)
            raise

    async def _handshake15(
        self, websocket: WebSocket, timeout: float, *, first: str | None = None
    ) -> tuple[HandshakeResult, FrameWriter]:
        writer = TranslatingWriter(websocket, self.translator)
        watcher_id = await self._watcher_id()
        hostname = socket.gethostname()
        token_used: str | None = None
        try:
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                if first is None:
                    hello = Hello15(watcher_id=watcher_id, hostname=hostname, version=__version__)
                    await writer.send_raw([encode15(hello)])
                while True:
                    text = first if first is not None else await websocket.get_message()
                    first = None
                    if isinstance(text, bytes):
                        continue
                    try:
                        message = decode_incoming(text)
                    except Unknown15 as unknown:
                        if unknown.message_type == "watcher.auth" and self.settings.protocol == (
                            "auto"
                        ):
                            await self._remember(V2)
                            raise HandshakeFailed(
                                "the API answered in the V2 dialect; using it from now on"
                            ) from None
                        log.debug("ignoring %s during the handshake", unknown.message_type)
                        continue
                    except Malformed15 as error:
                        if error.message_type == "watcher.config":
                            log.error("malformed watcher.config (%s)", error.reason)
                            return self._result(watcher_id, hostname, None), writer
                        log.warning("ignoring a malformed message: %s", error.reason)
                        continue
                    if isinstance(message, AuthRequired15):
                        token = self._token()
                        if not token:
                            # Approved while it was not connected: the token was never
                            # delivered. Wait here for an approval that sends it again.
                            log.error(
                                "watcher %s is known to the server but has no token: an "
                                "operator must approve it again in the Scanarr UI while it is "
                                "connected (or set SCANARR_AUTH_TOKEN); waiting",
                                watcher_id,
                            )
                            scope.deadline = math.inf
                            continue
                        token_used = token
                        await writer.send_raw([encode15(Auth15(token=token))])
                    elif isinstance(message, Pending15):
                        log.warning(
                            "watcher %s is waiting for approval: an operator must approve it "
                            "in the Scanarr UI (waiting on this connection)",
                            watcher_id,
                        )
                        scope.deadline = math.inf
                    elif isinstance(message, Rejected15):
                        await self._rejected(websocket, message.reason or "no reason", token_used)
                    elif isinstance(message, Config15):
                        if message.auth_token:
                            await self._keep_token(message.auth_token)
                        return self._result(watcher_id, hostname, message), writer
                    else:
                        log.debug("ignoring %s before the first watcher.config", message.TYPE)
        except ConnectionClosed as closed:
            raise HandshakeClosed(
                f"connection closed during the handshake ({closed.reason})"
            ) from None
        raise HandshakeFailed(f"no answer to the hello within {timeout:g} s")

    async def _rejected(self, websocket: WebSocket, reason: str, token_used: str | None) -> None:
        with trio.move_on_after(1.0):
            try:
                while True:
                    await websocket.get_message()
            except ConnectionClosed:
                pass
        if reason == "revoked":
            log.error(
                "the Scanarr server revoked this watcher: it cannot be approved again; "
                "retrying only every %g s",
                self.settings.rejected_max_delay,
            )
            raise WatcherRevoked(reason)
        stored = self._extra.get(TOKEN_KEY)
        fallback = self.settings.auth_token
        if reason == "invalid_token" and token_used == stored and fallback and fallback != stored:
            log.warning("the kept token was refused; trying SCANARR_AUTH_TOKEN next")
            self._stored_token_refused = True
        raise HandshakeRejected(reason)

    def _result(self, watcher_id: str, hostname: str, message: Config15 | None) -> HandshakeResult:
        config = None
        if message is not None:
            config = self.translator.config(message)
            self._follow_config(message)
        self._install_forwarder()
        return HandshakeResult(
            auth=WatcherAuth(status="authenticated", watcher_id=watcher_id, watcher_name=hostname),
            config=config,
            early_messages=[],
        )

    def _follow_config(self, message: Config15) -> None:
        if self.forwarder is not None:
            self.forwarder.set_level_name(message.log_level)
        if message.config_hash is not None:
            self._extra[CONFIG_HASH_KEY] = message.config_hash

    def _install_forwarder(self) -> None:
        if self.forwarder is not None:
            return
        from scanarr.logs import RedactSecrets

        self.forwarder = LogForwarder(RedactSecrets(self._secrets()).redact)
        self.forwarder.set_level_name(self.translator.log_level)
        logging.getLogger().addHandler(self.forwarder)

    # --- incoming --------------------------------------------------------------------------

    async def incoming(self, text: str | bytes) -> list[str | bytes]:
        """The V2 frames to dispatch for one frame from the API."""
        if not self.speaks_v15:
            return [text]
        try:
            message = decode_incoming(text)
        except Unknown15 as unknown:
            log.debug("ignoring message of unknown type %r", unknown.message_type)
            return []
        except Malformed15 as error:
            log.warning("malformed %s message: %s", error.message_type or "(untyped)", error.reason)
            if error.message_type == CommandDelete15.TYPE:
                await self._answer_malformed_delete(text, error.reason)
            return []
        converted: Message | None = None
        if isinstance(message, Config15):
            if message.auth_token:
                await self._keep_token(message.auth_token)
            converted = self.translator.config(message)
            self._follow_config(message)
        elif isinstance(message, CommandScan15):
            converted = self.translator.scan(message)
        elif isinstance(message, CommandDelete15):
            converted = self.translator.delete(message, self.store.deleted)
        elif isinstance(message, CommandHardlink15):
            result = self.translator.hardlink(message)
            if isinstance(result, HardlinkCompleted15):
                await self._send_kept(encode15(result))
            else:
                converted = result
        elif isinstance(message, (CommandWatchAdd15, CommandWatchRemove15)):
            log.debug("ignoring %s %s: volumes come from watcher.config", message.TYPE, message)
        elif isinstance(message, Rejected15):
            log.error("the server rejected this watcher: %s", message.reason)
        else:
            log.debug("ignoring %s after the handshake", message.TYPE)
        return [] if converted is None else [encode(converted)]

    async def _answer_malformed_delete(self, text: str | bytes, reason: str) -> None:
        """A malformed delete is answered only for the items that are visibly ours."""
        try:
            _type, data = envelope_of(text)
        except Malformed15:
            return
        request_id, deletion_id = data.get("request_id"), data.get("deletion_id")
        if not all(type(value) in (str, int) for value in (request_id, deletion_id)):
            return
        results = []
        files = data.get("files")
        for item in files if isinstance(files, list) else []:
            if not isinstance(item, dict):
                continue
            media_file_id = item.get("media_file_id")
            volume_path, file_path = item.get("volume_path"), item.get("file_path")
            if not isinstance(media_file_id, (str, int)) or isinstance(media_file_id, bool):
                continue
            if not isinstance(volume_path, str) or not isinstance(file_path, str):
                continue
            if self.translator.resolve(normalise_root(join_path(volume_path, file_path))) is None:
                continue
            results.append(
                DeleteResult15(
                    media_file_id=media_file_id,
                    status="failed",
                    dirs_removed=0,
                    size_bytes=0,
                    error=f"malformed command: {reason}",
                )
            )
        if results:
            reply = DeleteCompleted15(
                request_id=request_id,  # type: ignore[arg-type]
                deletion_id=deletion_id,  # type: ignore[arg-type]
                total=len(results),
                deleted=0,
                failed=len(results),
                dirs_removed=0,
                results=results,
            )
            await self._send_kept(encode15(reply))

    # --- replies ---------------------------------------------------------------------------

    async def send_reply(self, message: Message) -> bool:
        """Send a command reply in V1.5; False when the message is not one (or V2 is spoken)."""
        if not self.speaks_v15:
            return False
        if isinstance(message, FilesDeleteProgress):
            progress = self.translator.delete_progress(message)
            if progress is not None:
                await self._send_now(encode15(progress))
            return True
        if isinstance(message, FilesDeleteCompleted):
            translated = self.translator.delete_completed(message)
            if translated is None:
                return True
            reply, remember = translated
            self.store.deleted.update(remember)
            await self._send_kept(encode15(reply), save=bool(remember))
            return True
        if isinstance(message, FilesHardlinkCompleted):
            hardlink = self.translator.hardlink_completed(message)
            if hardlink is not None:
                await self._send_kept(encode15(hardlink))
            return True
        return False

    async def _send_now(self, text: str) -> bool:
        session = self.link.current
        if session is None or not session.alive:
            return False
        if not isinstance(session.writer, TranslatingWriter):
            return False
        try:
            await session.send_as_is([text])
        except SessionLost:
            return False
        return True

    async def _send_kept(self, text: str, *, save: bool = False) -> None:
        """Send a reply, or keep it on disk for the next session (`save`: the replay keys
        changed, write the store even when the reply went out)."""
        if await self._send_now(text):
            if save:
                await self._save_store()
            return
        log.warning("not connected: the reply is kept and sent after the next handshake")
        self.store.outbox.append(text)
        await self._save_store()

    async def _save_store(self) -> None:
        try:
            await trio.to_thread.run_sync(self.store.save)
        except OSError as error:
            log.error("cannot save %s: %s", self.store.path, error)

    # --- per session -----------------------------------------------------------------------

    async def run_session(self, session: Session) -> None:
        """While `session` lives: send the kept replies, then forward log lines."""
        if not self.speaks_v15 or not isinstance(session.writer, TranslatingWriter):
            return
        if self.store.outbox:
            texts = list(self.store.outbox)
            try:
                await session.send_as_is(texts)
            except SessionLost:
                return
            log.info("sent %d replies kept while disconnected", len(texts))
            del self.store.outbox[: len(texts)]
            await self._save_store()
        forwarder = self.forwarder
        if forwarder is None:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._check_parity, forwarder)
            await self._forward_logs(session, forwarder)
            nursery.cancel_scope.cancel()

    async def _forward_logs(self, session: Session, forwarder: LogForwarder) -> None:
        while session.alive:
            while forwarder.kept:
                entry = forwarder.kept[0]
                try:
                    await session.send_as_is([encode15(entry)])
                except SessionLost:
                    return
                if forwarder.kept and forwarder.kept[0] is entry:
                    forwarder.kept.popleft()
            forwarder.wakeup = trio.Event()
            if not forwarder.kept:
                await forwarder.wakeup.wait()

    def _scan_completed(self, volume_id: str) -> None:
        if volume_id not in self._parity_done:
            self._parity_due.add(volume_id)
            self._parity_wakeup.set()

    async def _check_parity(self, forwarder: LogForwarder) -> None:
        """After the first completed scan of each volume: say what the server will drop."""
        while True:
            while not self._parity_due:
                self._parity_wakeup = trio.Event()
                await self._parity_wakeup.wait()
            volume_id = min(self._parity_due)
            volume = self.translator.volumes.get(volume_id)
            if volume is not None:
                unreported = await trio.to_thread.run_sync(
                    count_unreported,
                    volume.path,
                    self.translator.volumes.nested_roots(volume_id),
                    self.translator.volumes.scan_extensions,
                )
                if unreported.total:
                    message = (
                        f"{unreported.total} media files under {volume.path} are not reported "
                        f"by scanarr where the Go watcher reported them ({unreported.describe()});"
                        " the server drops their rows after each scan"
                    )
                    log.warning(message, extra={FORWARDED: True})
                    forwarder.keep(
                        Log15(
                            level="warning",
                            message=message,
                            timestamp=utc_timestamp(),
                            context={"path": volume.path, **attrs.asdict(unreported)},
                        )
                    )
            self._parity_due.discard(volume_id)
            self._parity_done.add(volume_id)


__all__ = [
    "Dialect",
    "HelloWithWatcherId",
    "LogForwarder",
    "ReplyStore",
    "TranslatingWriter",
    "Translator",
    "WatcherRevoked",
    "replies_path_for",
]
