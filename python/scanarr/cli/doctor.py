"""`scanarr doctor [VOLUME ...]`: is this machine ready to run the watcher? (scanarr.doctor)

One line per check — ``ok``, ``note``, ``ACTION`` or ``skip`` — and, under a line that needs
action, what to do. Settings come from the environment, or from the service's environment file
with ``--env-file`` (run it as the service's user: ``sudo -u scanarr scanarr doctor ...``).

Exit codes: 0 when nothing needs action, 1 when something does, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from scanarr import transport
from scanarr.agent.session import (
    HandshakeFailed,
    HandshakeRejected,
    OtherDialect,
    handshake,
    watcher_hello,
)
from scanarr.cli.common import positive_int
from scanarr.doctor import (
    ApiAnswer,
    ApiHandshakeFailed,
    DoctorOptions,
    Verdict,
    exit_code,
    parse_volume_argument,
    read_environment_file,
    run_checks,
)
from scanarr.logs import RedactSecrets
from scanarr.protocol import WatcherAuth
from scanarr.wsframes import FrameWriter

LABELS = {"ok": "ok", "note": "note", "action": "ACTION", "skip": "skip"}
LABEL_WIDTH = max(len(label) for label in LABELS.values()) + 2


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check inotify limits, filesystems, hardlinks, the state file and the API",
        description=(
            "Check what the watcher needs on this machine: the API is reachable and accepts the "
            "token, the state file's directory is writable, each volume is readable and on a "
            "filesystem where inotify works, fs.inotify.max_user_watches covers every "
            "directory, and which volumes can hardlink to each other. VOLUMEs (ID=PATH or "
            "PATH) default to the config the API sends, else the state file's last config. "
            "Exit code 1 when something needs action."
        ),
    )
    parser.add_argument("volumes", nargs="*", metavar="VOLUME", help="ID=PATH or PATH to check")
    parser.add_argument(
        "--env-file",
        metavar="FILE",
        help="read SCANARR_* variables from this file too (the service's EnvironmentFile)",
    )
    parser.add_argument(
        "--state-file", metavar="FILE", help="overrides SCANARR_STATE_FILE for the state check"
    )
    parser.add_argument(
        "--max-user-watches",
        type=positive_int,
        metavar="N",
        help="compare with this limit instead of fs.inotify.max_user_watches (what-if)",
    )
    parser.add_argument(
        "--skip-api",
        action="store_true",
        help="do not connect to the API (the check connects as this watcher for a moment)",
    )
    parser.add_argument(
        "--no-link-test",
        action="store_true",
        help="do not write test files to check hardlinks; compare devices only",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long the API has to answer (default: 10)",
    )
    parser.set_defaults(func=run)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return value


def render(verdicts: list[Verdict], out: TextIO, redact: RedactSecrets | None = None) -> None:
    def write(line: str) -> None:
        out.write((redact.redact(line) if redact else line) + "\n")

    for verdict in verdicts:
        label = f"[{LABELS[verdict.status]}]".ljust(LABEL_WIDTH + 1)
        write(f"{label} {verdict.check}: {verdict.summary}")
        if verdict.action and verdict.status in ("action", "note"):
            write(f"{' ' * len(label)}   -> {verdict.action}")
    needing = sum(1 for verdict in verdicts if verdict.needs_action)
    write(
        f"{len(verdicts)} checks, "
        + (f"{needing} need{'s' if needing == 1 else ''} action" if needing else "nothing to fix")
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    environ = dict(os.environ)
    if args.env_file:
        try:
            environ.update(read_environment_file(args.env_file))
        except (OSError, ValueError) as error:
            print(f"scanarr doctor: {args.env_file}: {error}", file=sys.stderr)
            return 2
    try:
        volumes = [parse_volume_argument(text, index) for index, text in enumerate(args.volumes)]
    except ValueError as error:
        print(f"scanarr doctor: {error}", file=sys.stderr)
        return 2
    options = DoctorOptions(
        volumes=volumes,
        environ=environ,
        state_file=args.state_file,
        max_user_watches=args.max_user_watches,
        check_api=not args.skip_api,
        link_test=not args.no_link_test,
        timeout=args.timeout,
        api_handshake=agent_handshake,
    )
    verdicts = run_checks(options)
    token = environ.get("SCANARR_AUTH_TOKEN", "").strip()
    render(verdicts, stream, RedactSecrets([token]) if token else None)
    stream.flush()
    return exit_code(verdicts)


async def agent_handshake(websocket: transport.WebSocket, token: str, timeout: float) -> ApiAnswer:
    """The watcher's own §2 handshake (`scanarr.agent.session.handshake`) for the API check."""
    try:
        result = await handshake(
            websocket, FrameWriter(websocket), watcher_hello(token), timeout=timeout
        )
    except HandshakeRejected as rejected:
        return ApiAnswer(WatcherAuth(status="rejected", reason=rejected.reason))
    except OtherDialect:
        raise ApiHandshakeFailed(
            "it answers in the V1.5 dialect (the released Scanarr API), which this check does "
            "not speak; the watcher does with SCANARR_PROTOCOL=auto or v1.5"
        ) from None
    except HandshakeFailed as failed:
        raise ApiHandshakeFailed(str(failed)) from None
    return ApiAnswer(result.auth, result.config)
