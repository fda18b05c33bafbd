"""The §6 name filters for single names: the native walker's own filter (``rust/filter.rs``).

A file is reported when its name is not hidden (leading ``.``), not temporary (``*.part *.tmp
*.download *.!qB``), not metadata (``*.nfo *.jpg *.png *.srt *.sub *.idx``) and its extension — the
text after the last ``.`` — is one of the wanted ones, all compared without regard to case. A
directory is entered (and watched) when it is not hidden and not a NAS/OS system directory
(``@eaDir``, ``.Trash-*``, ``$RECYCLE.BIN``, ``System Volume Information``).

The live watcher decides each event's name with the very code a scan walks with, so a scan and
the watcher cannot disagree on a name. Names are ``str`` as ``os.fsdecode`` gives them; one that
was not UTF-8 is judged on its original bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scanarr import _native

# Not hidden-sensitive: answers only "is this a NAS/OS system directory".
_SYSTEM_DIRS = _native.NameFilter(None, skip_hidden=False)


def is_system_dir(name: str) -> bool:
    """``@eaDir``, ``.Trash-*``, ``$RECYCLE.BIN``, ``System Volume Information``."""
    return not _SYSTEM_DIRS.accepts_dir(name)


class MediaFilter:
    """Decides which names are media files to report and which directories to watch."""

    __slots__ = ("accepts_dir", "accepts_file", "extensions")

    accepts_file: Callable[[str], bool]
    """Whether a regular file with this name is a media file to report."""
    accepts_dir: Callable[[str], bool]
    """Whether a directory with this name is entered and watched."""

    def __init__(self, extensions: Iterable[str]) -> None:
        # Extensions may come with or without a leading dot, in any case.
        native = _native.NameFilter(list(extensions))
        self.extensions: frozenset[str] = frozenset(native.extensions or ())
        # The native methods themselves, not wrappers: this runs once per inotify event.
        self.accepts_file = native.accepts_file
        self.accepts_dir = native.accepts_dir


def is_utf8(text: str) -> bool:
    """Whether a name decoded with ``os.fsdecode`` was valid UTF-8 (so it can be sent as JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
