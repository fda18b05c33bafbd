"""The one way scanarr replaces a file it owns (state, command results, offline-queue records).

`atomic_write(path, data)` leaves `path` holding either its old content or all of `data`, never a
mix, and leaves nothing else behind:

1. a fresh temporary file beside the target (same directory, so the rename stays on one
   filesystem), created with ``O_EXCL | O_NOFOLLOW`` and `mode`;
2. every byte written (short writes are resumed), then ``fsync``;
3. ``rename`` over the target, then ``fsync`` of the directory so the new name survives a crash.

Any failure (``ENOSPC`` half-way through, ``EDQUOT``, an interrupted ``fsync``) removes the
temporary file and re-raises; the old file is untouched. Blocking: call it from a worker thread
when on the trio thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o600, *, directory_mode: int = 0o700
) -> None:
    """Replace `path` with `data` atomically (see the module docstring). Raises OSError.

    Missing parent directories are created with `directory_mode`.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, mode=directory_mode, exist_ok=True)
    # Hidden and unique: never mistaken for the real file, never shared by two writers.
    temporary = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, _CREATE_FLAGS, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never wider than asked
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
