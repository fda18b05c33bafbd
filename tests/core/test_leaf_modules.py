"""The leaf modules load without the agent: metrics, doctor, the HTTP server, volume paths."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["scanarr.metrics", "scanarr.doctor", "scanarr.httpd", "scanarr.volume_paths"]
)
def test_a_leaf_module_imports_nothing_from_the_agent(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "agent = sorted(name for name in sys.modules if name.startswith('scanarr.agent'))\n"
        "print(','.join(agent))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
