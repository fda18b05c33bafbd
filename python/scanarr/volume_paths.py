"""Volume roots as paths: normalising them and which volume lies inside which.

One rule for nesting, used by the scans, the live watcher and `scanarr doctor`: a volume is
inside another when its *resolved* root (symlinks followed, `os.path.realpath`) is below the
other's resolved root. Two spellings of one directory — a root configured through a symlink,
the other through its target — are then the same tree, so a file is never reported by both.
A walk still starts from the root as configured, so a nested root is handed to it spelled under
that root (`nested_roots`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def normalise_root(path: str) -> str:
    """The path as compared textually: no trailing slash, no ``.``/``..`` parts."""
    return os.path.normpath(path) if path else path


def resolve_root(path: str) -> str:
    """The directory a root really is: normalised, symlinks followed (missing parts kept)."""
    return os.path.realpath(normalise_root(path))


def is_inside(path: str, root: str) -> bool:
    """True when `path` is `root` itself or below it (both normalised)."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def nested_roots(root: str, others: Iterable[str]) -> list[str]:
    """The roots among `others` strictly inside `root` (decided on resolved paths), each spelled
    under `root` as given, so that a walk of `root` skips them."""
    given = normalise_root(root)
    real = resolve_root(root)
    nested: set[str] = set()
    for other in others:
        real_other = resolve_root(other)
        if real_other != real and is_inside(real_other, real):
            relative = os.path.relpath(real_other, real)
            nested.add(os.path.join(given, relative))
    return sorted(nested)
