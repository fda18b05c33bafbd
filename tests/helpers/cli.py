"""Running the `scanarr` command line as a user does: a subprocess, its output as text."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanarr", *args], capture_output=True, text=True, timeout=120
    )


def cli_json(*args: str) -> dict[str, Any]:
    """The JSON document a successful `scanarr ARGS` prints."""
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document
