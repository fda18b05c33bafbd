"""``command.files.delete`` / ``command.files.hardlink`` handlers: the agent side of
`scanarr.file_commands` (PROTOCOL.md §7).

The disk work is `FileCommands` (blocking, one command at a time, replies remembered in a file
beside the state file so a re-sent ``request_id`` is replayed, not executed again); here it runs
in a worker thread, its ``files.delete.progress`` messages go out as they come (the thread waits
for each write: a slow API slows the deletion, nothing piles up), and the reply is sent when it
is done. The dispatcher runs these handlers one at a time.

`on_removing(volume_id, relative_path)` — given by whoever needs to know a path is about to be
unlinked (the live watcher, so that the deletion is not reported back as ``file.deleted``); it is
called in the trio thread, just before the unlink.

`clean_leftovers` is a service: after each config (the first one included) it removes, in a
worker thread, the temporary links a kill between link and rename left
(`FileCommands.clean_leftovers`; nothing is read from disk when there are none).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import trio

from scanarr.file_commands import FileCommands
from scanarr.protocol import CommandFilesDelete, CommandFilesHardlink, shown

from .dispatcher import CommandContext, Dispatcher

log = logging.getLogger(__name__)


def results_path_for(state_file: str) -> Path:
    """Where the replies of past commands are kept: beside the state file, same stem."""
    state = Path(state_file)
    return state.with_name(f"{state.stem}.command-results.json")


class FileCommandHandlers:
    def __init__(
        self, results_path: Path | None, *, on_removing: Callable[[str, str], None] | None = None
    ) -> None:
        self._on_removing = on_removing
        self.commands = FileCommands(
            results_path, on_removing=None if on_removing is None else self._removing_from_thread
        )
        self._config_applied = trio.Event()

    def register(self, dispatcher: Dispatcher) -> None:
        dispatcher.register_command(CommandFilesDelete, self.delete)
        dispatcher.register_command(CommandFilesHardlink, self.hardlink)

    def config_applied(self) -> None:
        """The volumes are known or changed: look for leftovers in them (soon, not here)."""
        self._config_applied.set()

    async def clean_leftovers(
        self,
        context: CommandContext,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        while True:
            await self._config_applied.wait()
            self._config_applied = trio.Event()
            try:
                await trio.to_thread.run_sync(
                    self.commands.clean_leftovers,
                    list(context.volumes.values()),
                    context.volume_devices,
                )
            except Exception:
                log.exception("cleaning temporary links failed")

    def _removing_from_thread(self, volume_id: str, relative_path: str) -> None:
        # FileCommands runs in a worker thread; the observer belongs to the trio thread.
        if self._on_removing is not None:
            trio.from_thread.run_sync(self._on_removing, volume_id, relative_path)

    async def delete(self, command: CommandFilesDelete, context: CommandContext) -> None:
        log.info(
            "deletion %s (request %s): %d media files",
            shown(command.deletion_id),
            shown(command.request_id),
            len(command.files),
        )
        reply = await trio.to_thread.run_sync(
            functools.partial(
                self.commands.delete,
                command,
                list(context.volumes.values()),
                context.volume_devices,
                context.disable_deletion,
                context.progress_sender(),
                media_extensions=context.scan_extensions,
            )
        )
        log.info(
            "deletion %s: %d deleted, %d failed, %d bytes freed",
            shown(command.deletion_id),
            reply.deleted,
            reply.failed,
            reply.freed_bytes,
        )
        await context.send(reply)

    async def hardlink(self, command: CommandFilesHardlink, context: CommandContext) -> None:
        reply = await trio.to_thread.run_sync(
            self.commands.hardlink,
            command,
            list(context.volumes.values()),
            context.volume_devices,
            context.disable_deletion,
        )
        log.info("hardlink %s: %s", shown(command.request_id), reply.status)
        await context.send(reply)
