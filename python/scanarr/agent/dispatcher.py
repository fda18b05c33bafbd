"""API → watcher messages: decode, route by message class, and never die on bad input (§7).

`Dispatcher` maps a message class to an async handler ``handler(message, context)``. Two kinds:

- *immediate* handlers run in the connection's reader task, in arrival order, and must return
  quickly (the config, ``command.scan``: they only update state and queue work);
- *command* handlers (``register_command``) run one at a time, in arrival order, in the
  `CommandRunner` task, so a long deletion never stalls the reader (and with it pings).

Plugging in a command, e.g. the file commands::

    async def handle_delete(command: CommandFilesDelete, context: CommandContext) -> None:
        result = await trio.to_thread.run_sync(
            commands.delete, command, context.volumes, context.volume_devices,
            context.disable_deletion, context.progress_sender(),
        )
        await context.send(result)

    dispatcher.register_command(CommandFilesDelete, handle_delete, reply_when_malformed=...)

A known command type with no handler is answered as failed with
``not supported by this watcher`` when it carries a ``request_id``.

Unknown types are logged at debug and ignored. A malformed message is logged as a warning and,
when it carries a ``request_id``, answered through the reply builder registered for its type.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs
import trio

from scanarr.file_commands import untouched_result
from scanarr.protocol import (
    CommandFilesDelete,
    CommandFilesHardlink,
    FilesDeleteCompleted,
    FilesHardlinkCompleted,
    MalformedMessage,
    Message,
    UnknownMessageType,
    WatcherConfig,
    WatchPath,
    decode,
    shown,
    unstructure,
)

if TYPE_CHECKING:
    from scanarr.metrics import CommandResult

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
M_contra = TypeVar("M_contra", bound=Message, contravariant=True)

# Commands waiting for the runner; a flood beyond this back-pressures the reader.
COMMAND_QUEUE_SIZE = 64


class CommandContext(Protocol):
    """What a handler may use: the current configuration and a way to answer."""

    @property
    def volumes(self) -> Mapping[str, WatchPath]: ...  # by volume id
    @property
    def volume_devices(self) -> Mapping[str, int]: ...  # recorded st_dev by volume id
    @property
    def disable_deletion(self) -> bool: ...
    @property
    def scan_extensions(self) -> list[str]: ...
    async def send(self, message: Message) -> None:
        """Send on the current session; logs and drops the message when disconnected."""
        ...

    def progress_sender(self) -> Callable[[Message], None]:
        """A callable for worker threads: sends a message from a ``trio.to_thread`` thread."""
        ...


class Handler(Protocol[M_contra]):
    def __call__(self, message: M_contra, context: CommandContext, /) -> Awaitable[None]: ...


# Called with (message type, result) for every message from the API: ok, error, malformed,
# unsupported, unknown (scanarr.metrics.Metrics.command_done).
HandledCallback = Callable[[str, "CommandResult"], None]


def _not_counted(message_type: str, result: CommandResult) -> None:
    pass


# Builds the answer to a malformed message that carried a request_id: (request_id, raw data
# object, error text) → reply message.
MalformedReply = Callable[[str, Mapping[str, Any], str], Message]


@attrs.frozen
class _Route(Generic[M]):
    handler: Handler[M]
    queued: bool


def _text_field(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""


def delete_failed_reply(request_id: str, data: Mapping[str, Any], error: str) -> Message:
    """``files.delete.completed`` for a delete command that cannot be carried out at all:
    ``status: "failed"`` with `error`, and each media file that can be named failed too."""
    files = data.get("files")
    results = []
    if isinstance(files, list):
        for item in files:
            media_file_id = item.get("media_file_id") if isinstance(item, dict) else None
            if isinstance(media_file_id, str):
                results.append(untouched_result(media_file_id, error))
    return FilesDeleteCompleted(
        request_id=request_id,
        deletion_id=_text_field(data, "deletion_id"),
        total_media_files=len(results),
        deleted=0,
        failed=len(results),
        total_paths_deleted=0,
        dirs_removed=0,
        freed_bytes=0,
        results=results,
        status="failed",
        error=error,
    )


def hardlink_failed_reply(request_id: str, data: Mapping[str, Any], error: str) -> Message:
    return FilesHardlinkCompleted(
        request_id=request_id,
        deletion_id=_text_field(data, "deletion_id"),
        status="failed",
        error=error,
    )


class Dispatcher:
    """Routes decoded messages to handlers. See the module docstring."""

    def __init__(self, on_handled: HandledCallback = _not_counted) -> None:
        self._on_handled = on_handled
        self._routes: dict[type[Message], _Route[Any]] = {}
        self._malformed_replies: dict[str, MalformedReply] = {
            CommandFilesDelete.TYPE: delete_failed_reply,
            CommandFilesHardlink.TYPE: hardlink_failed_reply,
        }
        send, receive = trio.open_memory_channel[tuple[Handler[Any], Message]](COMMAND_QUEUE_SIZE)
        self._command_send = send
        self._command_receive = receive

    def register(self, message_class: type[M], handler: Handler[M]) -> None:
        """Handle `message_class` in the reader task (must be quick)."""
        self._routes[message_class] = _Route(handler, queued=False)

    def register_command(
        self,
        message_class: type[M],
        handler: Handler[M],
        *,
        reply_when_malformed: MalformedReply | None = None,
    ) -> None:
        """Handle `message_class` in the command runner, one command at a time."""
        self._routes[message_class] = _Route(handler, queued=True)
        if reply_when_malformed is not None:
            self._malformed_replies[message_class.TYPE] = reply_when_malformed

    def handles(self, message_class: type[Message]) -> bool:
        return message_class in self._routes

    async def dispatch(self, text: str | bytes, context: CommandContext) -> None:
        """Decode and route one frame. Never raises for bad input."""
        if isinstance(text, bytes):
            log.warning("ignoring a binary frame of %d bytes (the protocol uses text)", len(text))
            return
        try:
            message = decode(text)
        except UnknownMessageType as unknown:
            log.debug("ignoring message of unknown type %r", shown(unknown.message_type))
            self._on_handled(str(unknown.message_type), "unknown")
            return
        except MalformedMessage as error:
            self._on_handled(error.message_type or "untyped", "malformed")
            await self._answer_malformed(error, text, context)
            return
        route = self._routes.get(type(message))
        if route is None:
            self._on_handled(message.TYPE, "unsupported")
            await self._answer_unsupported(message, context)
            return
        if route.queued:
            await self._command_send.send((route.handler, message))
            return
        try:
            await route.handler(message, context)
        except Exception:
            log.exception("handling %s failed", message.TYPE)
            self._on_handled(message.TYPE, "error")
        else:
            self._on_handled(message.TYPE, "ok")

    async def _answer_malformed(
        self, error: MalformedMessage, text: str, context: CommandContext
    ) -> None:
        if error.message_type == WatcherConfig.TYPE:
            log.error(
                "malformed watcher.config (%s); the previous config stays in force",
                shown(error.reason),
            )
            return
        log.warning(
            "malformed %s message: %s",
            shown(error.message_type or "(untyped)"),
            shown(error.reason),
        )
        if error.request_id is None or error.message_type is None:
            return
        build = self._malformed_replies.get(error.message_type)
        if build is None:
            return
        data = _data_of(text)
        await context.send(build(error.request_id, data, f"malformed command: {error.reason}"))

    async def _answer_unsupported(self, message: Message, context: CommandContext) -> None:
        request_id = getattr(message, "request_id", None)
        log.warning("no handler for %s in this watcher", message.TYPE)
        build = self._malformed_replies.get(message.TYPE)
        if isinstance(request_id, str) and build is not None:
            await context.send(
                build(request_id, unstructure(message), "not supported by this watcher")
            )

    async def run_commands(
        self,
        context: CommandContext,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The command runner: executes queued commands one at a time, forever."""
        task_status.started()
        async with self._command_receive:
            async for handler, message in self._command_receive:
                try:
                    await handler(message, context)
                except Exception:
                    log.exception("command %s failed", message.TYPE)
                    self._on_handled(message.TYPE, "error")
                    request_id = getattr(message, "request_id", None)
                    build = self._malformed_replies.get(message.TYPE)
                    if isinstance(request_id, str) and build is not None:
                        await context.send(
                            build(request_id, unstructure(message), "internal error")
                        )
                else:
                    self._on_handled(message.TYPE, "ok")


def _data_of(text: str) -> Mapping[str, Any]:
    try:
        envelope = json.loads(text)
    except ValueError:
        return {}
    data = envelope.get("data") if isinstance(envelope, dict) else None
    return data if isinstance(data, dict) else {}
