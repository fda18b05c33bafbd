"""scanarr: a fast file-system scanner and watcher agent for media libraries."""

from __future__ import annotations

__version__ = "0.1.0"


def native_version() -> str:
    """Version of the native engine, or why it cannot be loaded."""
    try:
        from scanarr import _native
    except ImportError as error:  # pragma: no cover - a broken install
        return f"unavailable: {error}"
    return _native.__version__
