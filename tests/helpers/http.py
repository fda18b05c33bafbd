"""A free local port for a watcher process's metrics, and a plain HTTP GET of it."""

from __future__ import annotations

import socket
import urllib.request


def free_port() -> int:
    """A port nothing listens on now (for ``SCANARR_METRICS_ADDR`` of a child process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_text(url: str) -> str:
    """The body of a GET of `url` (blocking: call it in a thread from trio)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text
