"""Mounts made in a private mount namespace (``unshare --mount``), invisible to every other
process: for tests of what the watcher does when a volume's filesystem comes and goes."""

from __future__ import annotations

import functools
import shutil
import subprocess

# Prefix of a command run in its own mount namespace.
PRIVATE_MOUNTS = ["unshare", "--mount", "--propagation", "private"]


@functools.cache
def private_mounts_allowed(filesystem: str) -> bool:
    """Whether this process may mount a `filesystem` (tmpfs, ramfs) in a private namespace."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        [*PRIVATE_MOUNTS, "mount", "-t", filesystem, filesystem, "/mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0
