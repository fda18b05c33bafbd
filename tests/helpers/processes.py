"""`scanarr watch` as a real process, its output appended to a log file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

WATCH = [sys.executable, "-m", "scanarr", "watch"]


async def start_watch(
    nursery: trio.Nursery,
    environment: Mapping[str, str],
    log: Path,
    *,
    arguments: Sequence[str] = (),
    **options: Any,
) -> trio.Process:
    """Start ``scanarr watch ARGUMENTS`` with exactly `environment`, stdout and stderr into `log`;
    `options` go to `trio.run_process`."""
    # The child keeps its own copy of the log's descriptor; ours is closed once it runs.
    with log.open("ab") as output:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                [*WATCH, *arguments],
                env=dict(environment),
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
                task_status=task_status,
                **options,
            )
        )
    return process
