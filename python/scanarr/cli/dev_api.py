"""`scanarr dev-api`: a local stand-in for the Scanarr API, to try the watcher end to end.

It listens for one watcher, checks its token, sends a config made of the ``--volume ID=PATH``
options, prints every message it receives (and appends them to ``--record FILE`` as JSON lines),
and reads commands from standard input:

    scan VOLUME_ID [SCAN_ID]      command.scan
    scan-all [SCAN_ID]            command.scan.all
    add VOLUME_ID=PATH            add a volume and push the new config
    remove VOLUME_ID              remove a volume and push the new config
    extensions mkv,mp4,...        change scan_extensions and push the new config
    config                        push the current config again
    send JSON                     send a raw frame (e.g. a command.files.delete)
    drop                          kill the connection without a close frame
    help | quit

With ``--dialect v1.5`` it speaks the released Scanarr API's dialect (PROTOCOL-V15.md) to any
number of watchers: ``--volume PATH`` (or ``ID=PATH``, the id is ignored) are the watch paths, a new
watcher waits for approval, and standard input takes:

    watchers                      list watchers (pending, approved, revoked)
    approve WATCHER_ID            approve (its token goes to its open connection, once)
    revoke WATCHER_ID             revoke
    scan PATH [SCAN_ID]           command.scan, to every watcher
    delete DELETION_ID MEDIA_FILE_ID VOLUME_PATH FILE_PATH [MEDIA_FILE_ID VOLUME_PATH FILE_PATH...]
    hardlink DELETION_ID SOURCE_PATH TARGET_PATH VOLUME_PATH
    files                         the server's file table
    send JSON | quit
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio

from scanarr.dev_api import DevApiServer, ReceivedMessage, parse_volume_option
from scanarr.dev_api_v15 import DevApiV15Server
from scanarr.protocol import (
    DEFAULT_SCAN_EXTENSIONS,
    CommandScan,
    CommandScanAll,
    WatcherConfig,
    WatchPath,
)

HELP = __doc__.split("standard input:", 1)[1] if __doc__ else ""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev-api",
        help="a local stand-in for the Scanarr API (for trials and tests)",
        description=(
            "Serve the API side of the watcher protocol on HOST:PORT, send a config built from "
            "--volume options and print what the watcher sends. Type 'help' for commands."
        ),
    )
    parser.add_argument(
        "--dialect",
        choices=("v2", "v1.5"),
        default="v2",
        help="v2 (PROTOCOL.md, default) or v1.5 (the released Scanarr API, PROTOCOL-V15.md)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="port (0 picks a free one)")
    parser.add_argument(
        "--token",
        default=os.environ.get("SCANARR_AUTH_TOKEN"),
        help="the token watchers must present (default: $SCANARR_AUTH_TOKEN; none: any)",
    )
    parser.add_argument(
        "--volume",
        action="append",
        default=[],
        metavar="ID=PATH",
        help="a volume of the config (repeatable)",
    )
    parser.add_argument(
        "--extensions",
        default=",".join(DEFAULT_SCAN_EXTENSIONS),
        help="comma-separated scan_extensions",
    )
    parser.add_argument("--scan-on-start", action="store_true", help="set scan_on_start")
    parser.add_argument("--disable-deletion", action="store_true", help="set disable_deletion")
    parser.add_argument("--record", metavar="FILE", help="append every received message (JSONL)")
    parser.add_argument(
        "--quiet-files",
        action="store_true",
        help="do not print scan.file messages (they are still recorded)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dialect == "v1.5":
        return _run_v15(args)
    try:
        volumes = [parse_volume_option(text) for text in args.volume]
    except ValueError as error:
        print(f"scanarr dev-api: --volume: {error}", file=sys.stderr)
        return 2
    config = WatcherConfig(
        watch_paths=[
            WatchPath(id=volume_id, path=os.path.abspath(path), name=volume_id)
            for volume_id, path in volumes
        ],
        scan_extensions=[item for item in args.extensions.split(",") if item],
        scan_on_start=args.scan_on_start,
        disable_deletion=args.disable_deletion,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_serve, args, config)
    return 0


def _printer(quiet_files: bool) -> Any:
    def print_message(message: ReceivedMessage) -> None:
        if quiet_files and message.type == "scan.file":
            return
        print(f"<- {message.raw}", flush=True)

    return print_message


async def _serve(args: argparse.Namespace, config: WatcherConfig) -> None:
    server = DevApiServer(
        token=args.token,
        config=config,
        record_path=args.record,
        on_message=_printer(args.quiet_files),
        on_event=lambda text: print(f"** {text}", flush=True),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, args.host, args.port)
        await _read_lines(
            lambda line: _console_line(line, partial(_command, server), (RuntimeError, ValueError))
        )
        with trio.move_on_after(2):
            await server.close_connection(1001, "dev-api stopping")
        nursery.cancel_scope.cancel()


async def _console_line(
    line: str,
    command: Callable[[str, str], Awaitable[bool]],
    errors: tuple[type[Exception], ...],
) -> bool:
    """One stdin line of either console: quit, help and unknown words here, the dialect's own
    commands in `command` (False: not one of them), `errors` shown, not raised. False to quit."""
    if not line:
        return True
    word, _, rest = line.partition(" ")
    try:
        if word in ("quit", "exit"):
            return False
        if word == "help":
            print(HELP, flush=True)
        elif not await command(word, rest):
            print(f"** unknown command {word!r}; type 'help'", flush=True)
    except errors as error:
        print(f"** {error or 'missing argument'}", flush=True)
    return True


async def _command(server: DevApiServer, word: str, rest: str) -> bool:
    """Carry out one command of the V2 console; False when `word` is none."""
    rest = rest.strip()
    if word == "scan":
        volume_id, _, scan_id = rest.partition(" ")
        await server.send(
            CommandScan(volume_id=volume_id, scan_id=scan_id.strip() or str(uuid.uuid4()))
        )
    elif word == "scan-all":
        await server.send(CommandScanAll(scan_id=rest or str(uuid.uuid4())))
    elif word == "add":
        volume_id, path = parse_volume_option(rest)
        volume = WatchPath(id=volume_id, path=os.path.abspath(path), name=volume_id)
        kept = [item for item in server.config.watch_paths if item.id != volume_id]
        await _push(server, attrs.evolve(server.config, watch_paths=[*kept, volume]))
    elif word == "remove":
        kept = [item for item in server.config.watch_paths if item.id != rest]
        await _push(server, attrs.evolve(server.config, watch_paths=kept))
    elif word == "extensions":
        extensions = [item for item in rest.split(",") if item]
        await _push(server, attrs.evolve(server.config, scan_extensions=extensions))
    elif word == "config":
        await server.send_config()
    elif word == "send":
        json.loads(rest)  # refuse what is not JSON before sending it
        await server.send(rest)
    elif word == "drop":
        await server.drop_connection()
    else:
        return False
    return True


async def _push(server: DevApiServer, config: WatcherConfig) -> None:
    server.config = config
    if server.connected:
        await server.send_config()
    else:
        print("** no watcher connected; the new config is sent at its next connection", flush=True)


# --- the V1.5 dialect -------------------------------------------------------------------------


def _run_v15(args: argparse.Namespace) -> int:
    paths = [
        os.path.abspath(text.partition("=")[2] if "=" in text else text) for text in args.volume
    ]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = DevApiV15Server(
        watch_paths=paths,
        scan_on_start=True,
        disable_deletion=args.disable_deletion,
        record_path=args.record,
        on_message=_printer(args.quiet_files),
        on_event=lambda text: print(f"** {text}", flush=True),
    )
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_serve_v15, args, server)
    return 0


async def _serve_v15(args: argparse.Namespace, server: DevApiV15Server) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, args.host, args.port)
        await _read_lines(
            lambda line: _console_line(
                line,
                partial(_command_v15, server),
                (RuntimeError, ValueError, IndexError, TypeError),
            )
        )
        with trio.move_on_after(2):
            await server.drop_all()
        nursery.cancel_scope.cancel()


async def _read_lines(handle: Callable[[str], Awaitable[bool]]) -> None:
    """Feed each console line to `handle` until end of input or `handle` returns False."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stdin:
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not await handle(line.decode("utf-8", "replace").strip()):
                    return


async def _command_v15(server: DevApiV15Server, word: str, rest: str) -> bool:
    """Carry out one command of the V1.5 console (IndexError: an argument is missing); False
    when `word` is none."""
    words = rest.split()
    if word == "watchers":
        for watcher in server.watchers.values():
            print(f"** {watcher.watcher_id}: {watcher.status}", flush=True)
    elif word == "approve":
        if not words:
            raise ValueError("approve WATCHER_ID")
        await server.approve(words[0])
    elif word == "revoke":
        await server.revoke(words[0])
    elif word == "scan":
        await server.scan(words[0], words[1] if len(words) > 1 else None)
    elif word == "delete":
        deletion_id, items = words[0], words[1:]
        if not items or len(items) % 3:
            raise ValueError("delete DELETION_ID (MEDIA_FILE_ID VOLUME_PATH FILE_PATH)...")
        await server.delete(
            deletion_id,
            [
                {
                    "media_file_id": items[i],
                    "volume_path": items[i + 1],
                    "file_path": items[i + 2],
                }
                for i in range(0, len(items), 3)
            ],
        )
    elif word == "hardlink":
        await server.hardlink(*words[:4])
    elif word == "files":
        for path in sorted(server.files):
            print(f"** {path}", flush=True)
    elif word == "send":
        json.loads(rest)
        await server.send_raw(rest)
    else:
        return False
    return True
