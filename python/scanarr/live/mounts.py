"""Which filesystem a volume lives on, from the mount table (``/proc/self/mountinfo``).

inotify only sees changes made through this machine's kernel. On network and FUSE filesystems
(NFS, SMB/CIFS, sshfs, mergerfs, ...) a change made elsewhere produces no event, so such volumes
are also rescanned periodically.
"""

from __future__ import annotations

import logging
import os
import re

import attrs

log = logging.getLogger(__name__)

# Filesystems whose content can change without this kernel seeing it. `fuseblk` (ntfs-3g and
# exfat on a local disk) is not in the list: every change to it goes through this machine.
NETWORK_FILESYSTEMS: frozenset[str] = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "orangefs",
        "ocfs2",
        "gfs2",
        "fuse",
    }
)

MOUNTINFO_PATH = "/proc/self/mountinfo"

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@attrs.frozen
class Mount:
    mount_point: str
    filesystem_type: str
    source: str
    device: int  # st_dev of files on this mount


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount of a mountinfo text, in table order (later mounts hide earlier ones)."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            major, minor = (int(part) for part in fields[2].split(":"))
            mounts.append(
                Mount(
                    mount_point=_unescape(fields[4]),
                    filesystem_type=fields[separator + 1],
                    source=_unescape(fields[separator + 2]),
                    device=os.makedev(major, minor),
                )
            )
        except (ValueError, IndexError):
            continue  # a line we cannot read describes no volume we could match
    return mounts


def _contains(mount_point: str, path: str) -> bool:
    return (
        path == mount_point or mount_point == "/" or path.startswith(mount_point.rstrip("/") + "/")
    )


def mount_of(path: str, mounts: list[Mount], device: int | None = None) -> Mount | None:
    """The mount holding `path` (absolute, symlinks resolved): the longest mount point containing
    it, preferring mounts whose device is `device` (the ``st_dev`` of `path`) when given."""
    best: Mount | None = None
    for mount in mounts:
        if not _contains(mount.mount_point, path):
            continue
        if device is not None and mount.device != device:
            continue
        if best is None or len(mount.mount_point) >= len(best.mount_point):
            best = mount
    if best is None and device is not None:
        return mount_of(path, mounts)
    return best


def is_network_filesystem(filesystem_type: str) -> bool:
    return filesystem_type in NETWORK_FILESYSTEMS or filesystem_type.startswith("fuse.")


def filesystem_of(path: str, mount_table: str = MOUNTINFO_PATH) -> Mount | None:
    """The mount of an existing directory `path`, or None (logged) when the mount table or the
    directory cannot be read."""
    try:
        with open(mount_table, encoding="utf-8", errors="surrogateescape") as file:
            mounts = parse_mountinfo(file.read())
        real = os.path.realpath(path)
        device = os.stat(real).st_dev
    except OSError as error:
        log.warning("cannot tell which filesystem holds %s: %s", path, error)
        return None
    return mount_of(real, mounts, device)
