"""The §6 name filters for single names, with the same rules as the native walker.

A file is reported when its name is not hidden (leading ``.``), not temporary (``*.part *.tmp
*.download *.!qB``), not metadata (``*.nfo *.jpg *.png *.srt *.sub *.idx``) and its extension — the
text after the last ``.`` — is one of the wanted ones, all compared without regard to case. A
directory is entered (and watched) when it is not hidden and not a NAS/OS system directory
(``@eaDir``, ``.Trash-*``, ``$RECYCLE.BIN``, ``System Volume Information``).
"""

from __future__ import annotations

from collections.abc import Iterable

TEMP_SUFFIXES: tuple[str, ...] = (".part", ".tmp", ".download", ".!qb")
METADATA_SUFFIXES: tuple[str, ...] = (".nfo", ".jpg", ".png", ".srt", ".sub", ".idx")


def _lower_tail(name: str) -> str:
    """The end of `name` (enough for every suffix), ASCII letters lower-cased as the native
    engine compares suffixes."""
    tail = name[-10:]
    if tail.isascii():
        return tail.lower()
    return "".join(char.lower() if char.isascii() else char for char in tail)


def is_system_dir(name: str) -> bool:
    lowered = name.lower()
    return (
        name == "@eaDir"
        or name.startswith(".Trash-")
        or lowered == "$recycle.bin"
        or lowered == "system volume information"
    )


class MediaFilter:
    """Decides which names are media files to report and which directories to watch."""

    __slots__ = ("extensions",)

    def __init__(self, extensions: Iterable[str]) -> None:
        # Extensions may come with or without a leading dot, in any case.
        self.extensions: frozenset[str] = frozenset(
            extension.removeprefix(".").lower() for extension in extensions
        )

    def accepts_file(self, name: str) -> bool:
        """Whether a regular file with this name is a media file to report."""
        if name.startswith("."):
            return False
        dot = name.rfind(".")
        if dot < 0:
            return False
        lowered = _lower_tail(name)
        if lowered.endswith(TEMP_SUFFIXES) or lowered.endswith(METADATA_SUFFIXES):
            return False
        return name[dot + 1 :].lower() in self.extensions

    def accepts_dir(self, name: str) -> bool:
        """Whether a directory with this name is entered and watched."""
        return not name.startswith(".") and not is_system_dir(name)


def is_utf8(text: str) -> bool:
    """Whether a name decoded with ``os.fsdecode`` was valid UTF-8 (so it can be sent as JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
