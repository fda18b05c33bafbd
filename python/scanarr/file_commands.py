"""``command.files.delete`` and ``command.files.hardlink`` (PROTOCOL.md §7).

Every disk operation goes through `scanarr.safefs` (see its docstring for the path guarantees).
This module adds what the protocol asks on top:

Deletion
  - Refused whole when ``disable_deletion`` is set: no progress, every result ``failed`` with
    ``deletion disabled by watcher config``, nothing stored (a later re-send is judged afresh).
  - A path is tried only when its ``volume_path`` is a configured volume (else ``unknown_volume``)
    whose root is present on its recorded device (else ``volume_unavailable``).
  - With ``inode``/``device_id`` given, a file whose current identity differs is left alone
    (``inode_mismatch``). A symlink, directory or special file at the name is refused
    (``not_a_regular_file``): the API only ever asks for media files.
  - A missing path counts as deleted only while the volume root, and the root of every nested
    volume the path passes through, is present on its recorded device (else
    ``volume_unavailable``); a volume with no recorded device yet cannot tell an empty root from
    an unmounted mount point, so its missing paths fail with ``volume_unverified``.
  - Identity is taken again right before each unlink, after ``on_removing`` (a round trip to the
    live watcher): a file put at the name meanwhile (re-downloaded) is left alone
    (``inode_mismatch``), a companion rewritten meanwhile is left in place.
  - After unlinking a path: companion metadata files (``nfo jpg png srt sub idx``, regular files,
    directly beside it) when no media file remains in that directory, then empty parent directories
    upward, never the volume root nor any configured volume root. Never recursive.
  - ``size_bytes`` is the size of the first file this command unlinked for the media file (0 if it
    unlinked none); ``freed_bytes`` adds a file's size when its link count was 1 just before the
    unlink, i.e. when the inode itself went. Companion files count in neither.

Hardlink
  - Source and target are resolved under their own volumes; the source must be a regular file.
  - Source and target volume on different devices or mounts → ``cross_device`` before anything is
    written (target directories are created only after that check).
  - Target already the source's inode → success. Target another regular file → replaced by
    link-then-rename (refused with ``disable_deletion``); a missing target is made through the
    same checked temporary link, never overwriting. The temporary link must be the source's
    inode as checked (else ``source_changed``) and, right before the rename, the target must
    still be the file checked or a link of the source (else ``target_changed``).
  - A failure leaves nothing behind: the old target, no temporary name, no target name, and
    none of the parent directories this command made. The directory of each temporary link is
    written down beside the replay store (``*.pending-links.json``) until the link is in
    place, so that one left by a kill is removed by `clean_leftovers` (the agent calls it after
    each config) or by the next command.

Both
  - Commands run one at a time (a lock), so the dispatcher may call from any worker thread.
  - A repeated ``request_id`` replays the stored reply (and, for deletion, its progress messages)
    without touching the disk. Replies of the last `max_results` commands are kept in a JSON file
    written atomically (mode 0600), so a re-send after a restart is not executed twice — a film
    re-downloaded to the same path must not be deleted by an old request.
  - Errors read ``"<reason>: <volume_path>/<relative_path>"``, one per failed path joined by
    ``"; "``; the reason is a protocol code (``unknown_volume``, ``invalid_path (…)``,
    ``volume_unavailable (…)``, ``volume_unverified (…)``, ``inode_mismatch (…)``,
    ``cross_device (…)``, ``symlink_on_path``, ``not_a_regular_file (…)``,
    ``source_changed (…)``, ``target_changed (…)``) or the errno text (``Permission denied``).

Observer hook: ``on_removing(volume_id, relative_path)`` is called just *before* this module
unlinks a file or renames over one (media paths, companions, replaced hardlink targets), with the
volume that owns the path (the longest matching configured root, as the live watcher attributes
events). It is called before, not after, because the watcher reads inotify in another thread and
may see the event before an "after" call returned; a removal that then fails produces no event, so
the watcher should let an unmatched expectation expire. It runs in the command's worker thread and
must be thread-safe and quick; an exception from it is logged and the command goes on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pathlib
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from scanarr import _native, safefs
from scanarr.atomic import atomic_write
from scanarr.protocol import (
    DEFAULT_SCAN_EXTENSIONS,
    CommandFilesDelete,
    CommandFilesHardlink,
    DeleteFile,
    DeletePath,
    DeleteResult,
    FilesDeleteCompleted,
    FilesDeleteProgress,
    FilesHardlinkCompleted,
    WatchPath,
    converter,
    deletion_counts,
    shown,
    storage_json,
)
from scanarr.results_store import ResultStore as _ResultStore

log = logging.getLogger(__name__)

# The scan's own vocabulary (rust/filter.rs): a companion is exactly a metadata file the scan
# leaves out, and a download in progress is a name the scan skips as temporary. What is decided
# with them differs: a scan skips both, a deletion removes companions and lets a partial
# download of a media file keep them alive.
COMPANION_EXTENSIONS = frozenset(suffix.removeprefix(".") for suffix in _native.METADATA_SUFFIXES)
TEMPORARY_SUFFIXES: tuple[str, ...] = _native.TEMP_SUFFIXES
DELETION_DISABLED: Final = "deletion disabled by watcher config"

RemovalObserver = Callable[[str, str], None]


class DeletionDisabled(safefs.Refused):
    """Refused because the config disables deletion (replacing a file is deleting one)."""

    def __init__(self, detail: str) -> None:
        super().__init__(DELETION_DISABLED, detail)


class PathFailure(Exception):
    """One path that could not be handled; `str()` is the text for the reply's `error`.
    `by_config`: refused by the config (`DeletionDisabled`), not by the disk."""

    def __init__(self, text: str, reason: str, *, by_config: bool = False) -> None:
        super().__init__(text)
        self.reason = reason
        self.by_config = by_config


def _location(volume_path: str, relative_path: str) -> str:
    return f"{volume_path.rstrip('/')}/{relative_path}"


def _errno_reason(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink_on_path (a directory on the way is a symbolic link)"
    if error.errno == errno.EXDEV:
        return "cross_device (the path crosses into another mount)"
    return error.strerror or str(error)


@contextlib.contextmanager
def _failures_at(location: str) -> Iterator[None]:
    """Turn a refusal or file-system error into a `PathFailure` naming `location`.

    The name is cut to what a valid path can be: the API may send a megabyte of path, and each
    error is stored with the reply and rewritten with the results file after every command.
    """
    location = shown(location, limit=2 * safefs.PATH_MAX)
    try:
        yield
    except safefs.Refused as refused:
        text = f"{refused.reason} ({refused.detail}): {location}"
        by_config = isinstance(refused, DeletionDisabled)
        raise PathFailure(text, refused.reason, by_config=by_config) from None
    except safefs.UnsafePath as unsafe:
        raise PathFailure(f"invalid_path ({unsafe}): {location}", "invalid_path") from None
    except OSError as error:
        reason = _errno_reason(error)
        raise PathFailure(f"{reason}: {location}", reason) from None


def _is_media_name(name: str, media_extensions: Collection[str]) -> bool:
    """Media by extension, also while it is a temporary download of one (``x.mkv.part``)."""
    lowered = name.lower()
    for suffix in TEMPORARY_SUFFIXES:
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
            break
    return lowered.rpartition(".")[2] in media_extensions if "." in lowered else False


def _is_companion_name(name: str) -> bool:
    """``x.nfo`` and the like; hidden names are never touched (the watcher ignores them too)."""
    stem, _dot, extension = name.rpartition(".")
    return bool(stem) and not name.startswith(".") and extension.lower() in COMPANION_EXTENSIONS


class _Volumes:
    """The configured volumes as one command sees them: roots opened once, closed at the end."""

    def __init__(self, volumes: Sequence[WatchPath], volume_devices: Mapping[str, int]) -> None:
        self._volumes = list(volumes)
        self._devices = volume_devices
        self._roots: dict[str, safefs.VolumeRoot | safefs.Refused] = {}
        self._protected: set[tuple[int, int]] | None = None

    def find(self, volume_path: str) -> WatchPath:
        for volume in self._volumes:
            if volume.path == volume_path:
                return volume
        wanted = volume_path.rstrip("/")
        for volume in self._volumes:
            if volume.path.rstrip("/") == wanted:
                return volume
        raise safefs.Refused("unknown_volume", "not a configured volume")

    def root(self, volume: WatchPath) -> safefs.VolumeRoot:
        if volume.id not in self._roots:
            try:
                self._roots[volume.id] = safefs.VolumeRoot(
                    volume.path, self._devices.get(volume.id)
                )
            except safefs.Refused as refused:
                self._roots[volume.id] = refused
        root = self._roots[volume.id]
        if isinstance(root, safefs.Refused):
            raise root
        return root

    def recorded(self, volume: WatchPath) -> int | None:
        """The device recorded for `volume` at its last completed scan, if any."""
        return self._devices.get(volume.id)

    def crossed(self, volume: WatchPath, names: Sequence[str]) -> list[WatchPath]:
        """The configured volumes nested in `volume` whose root the path `names` passes through."""
        absolute = _location(volume.path, "/".join(names))
        outer = volume.path.rstrip("/")
        return [
            candidate
            for candidate in self._volumes
            if len(candidate.path.rstrip("/")) > len(outer)
            and absolute.startswith(candidate.path.rstrip("/") + "/")
        ]

    def protected(self) -> set[tuple[int, int]]:
        """Identities of every configured root present now: never removed as an empty directory."""
        if self._protected is None:
            self._protected = set()
            for volume in self._volumes:
                with contextlib.suppress(OSError):
                    status = os.stat(volume.path)
                    self._protected.add((status.st_dev, status.st_ino))
        return self._protected

    def owner(self, volume: WatchPath, names: Sequence[str]) -> tuple[str, str]:
        """``(volume_id, relative_path)`` of the longest configured root holding this path."""
        absolute = _location(volume.path, "/".join(names))
        best_id, best_root = volume.id, volume.path.rstrip("/")
        for candidate in self._volumes:
            root = candidate.path.rstrip("/")
            if len(root) > len(best_root) and absolute.startswith(root + "/"):
                best_id, best_root = candidate.id, root
        return best_id, absolute[len(best_root) + 1 :]

    def close(self) -> None:
        for root in self._roots.values():
            if isinstance(root, safefs.VolumeRoot):
                root.close()
        self._roots.clear()


@attrs.define
class _MediaFileOutcome:
    paths_deleted: int = 0
    dirs_removed: int = 0
    size_bytes: int | None = None
    freed_bytes: int = 0
    failures: list[str] = attrs.field(factory=list)


class _PendingLinks:
    """Directories where a temporary link may exist, written down while it may.

    A kill between link and rename leaves a ``.scanarr-link-*.tmp`` name that keeps the file's
    space allocated after the API deletes its other names. Finding one by walking the volumes
    would read every directory of a million-file library at each start; instead the directory is
    written down (`atomic_write`) before the link and struck off once the link is in place, so a
    start reads one small file and lists only the directories in it (normally none). A failed
    link stays written down until the next cleanup: safefs removes its temporary name, but a
    cleanup that finds nothing costs one directory listing.
    """

    def __init__(self, path: pathlib.Path | None) -> None:
        self._path = path
        self._entries: list[tuple[str, str]] = []
        if path is None:
            return
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            self._entries = [(str(volume), str(directory)) for volume, directory in document]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as error:
            log.warning("ignoring unreadable pending links %s: %s", path, error)

    def entries(self) -> list[tuple[str, str]]:
        return list(self._entries)

    @contextlib.contextmanager
    def linking(self, volume_path: str, directory: Sequence[str]) -> Iterator[None]:
        entry = (volume_path, "/".join(directory))
        self._entries.append(entry)
        self._save()
        yield
        self.discard(*entry)

    def discard(self, volume_path: str, directory: str) -> None:
        self._entries.remove((volume_path, directory))
        self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        try:
            atomic_write(self._path, storage_json(self._entries))
        except OSError as error:
            # The link itself is still safe; only a kill in its middle would go uncleaned.
            log.error("cannot save pending links to %s: %s", self._path, error)


class FileCommands:
    """Runs deletion and hardlink commands one at a time and remembers their replies."""

    def __init__(
        self,
        results_path: pathlib.Path | None,
        *,
        max_results: int = 1000,
        on_removing: RemovalObserver | None = None,
    ) -> None:
        """`results_path`: the replay store beside the state file (None keeps it in memory)."""
        self._store = _ResultStore(results_path, max_results)
        self._pending = _PendingLinks(
            None
            if results_path is None
            else results_path.with_name(f"{results_path.stem}.pending-links.json")
        )
        self._lock = threading.Lock()
        self.on_removing = on_removing

    # --- deletion -----------------------------------------------------------------------

    def delete(
        self,
        command: CommandFilesDelete,
        volumes: Sequence[WatchPath],
        volume_devices: Mapping[str, int],
        disable_deletion: bool,
        on_progress: Callable[[FilesDeleteProgress], None],
        *,
        media_extensions: Collection[str] = DEFAULT_SCAN_EXTENSIONS,
    ) -> FilesDeleteCompleted:
        """Carry out (or replay) `command`; `on_progress` gets one message per media file.

        `media_extensions` (the config's ``scan_extensions``) decides which remaining files keep
        companion metadata files alive. An exception from `on_progress` stops the command with
        nothing stored; a re-send is then carried out again, and the paths already removed count
        as deleted (missing on a present volume).
        """
        with self._lock:
            stored = self._store.get(CommandFilesDelete.TYPE, command.request_id)
            if stored is not None:
                log.info("replaying deletion %s without touching the disk", command.request_id)
                for progress in stored["progress"]:
                    on_progress(converter.structure(progress, FilesDeleteProgress))
                return converter.structure(stored["reply"], FilesDeleteCompleted)
            if disable_deletion:
                log.warning("deletion %s refused: %s", command.request_id, DELETION_DISABLED)
                files = command.files
                refused = [untouched_result(f.media_file_id, DELETION_DISABLED) for f in files]
                return _completed(command, refused)
            extensions = frozenset(extension.lower() for extension in media_extensions)
            context = _Volumes(volumes, volume_devices)
            results: list[DeleteResult] = []
            progress_sent: list[dict[str, Any]] = []
            freed_inodes: set[tuple[int, int]] = set()
            try:
                self._clean_leftovers(context)
                for file in command.files:
                    outcome = self._delete_media_file(file, context, freed_inodes, extensions)
                    results.append(_result(file, outcome))
                    progress = FilesDeleteProgress(
                        request_id=command.request_id,
                        deletion_id=command.deletion_id,
                        media_file_id=file.media_file_id,
                        paths_deleted=outcome.paths_deleted,
                        paths_failed=len(file.paths) - outcome.paths_deleted,
                        dirs_removed=outcome.dirs_removed,
                    )
                    progress_sent.append(converter.unstructure(progress))
                    on_progress(progress)
            finally:
                context.close()
            completed = _completed(command, results)
            self._store.put(
                CommandFilesDelete.TYPE,
                command.request_id,
                {"reply": converter.unstructure(completed), "progress": progress_sent},
            )
            return completed

    def _delete_media_file(
        self,
        file: DeleteFile,
        context: _Volumes,
        freed_inodes: set[tuple[int, int]],
        media_extensions: frozenset[str],
    ) -> _MediaFileOutcome:
        outcome = _MediaFileOutcome()
        if not file.paths:
            outcome.failures.append("no_paths (the command names no path for this media file)")
        for path in file.paths:
            try:
                with _failures_at(_location(path.volume_path, path.relative_path)):
                    self._delete_path(file, path, context, outcome, freed_inodes, media_extensions)
            except PathFailure as failure:
                log.warning("not deleted: %s", failure)
                outcome.failures.append(str(failure))
        return outcome

    def _delete_path(
        self,
        file: DeleteFile,
        path: DeletePath,
        context: _Volumes,
        outcome: _MediaFileOutcome,
        freed_inodes: set[tuple[int, int]],
        media_extensions: frozenset[str],
    ) -> None:
        volume = context.find(path.volume_path)
        names = safefs.split_relative_path(path.relative_path)
        root = context.root(volume)
        # Each nested volume root on the way must be present on its recorded device too: an
        # unmounted one is an empty directory of the outer volume, where every file is "missing".
        on_the_way = [volume, *context.crossed(volume, names)]
        for crossed in on_the_way[1:]:
            context.root(crossed)
        try:
            parents = safefs.ParentDirectories(root, names[:-1])
        except FileNotFoundError:
            self._count_missing(context, on_the_way, outcome)
            return
        try:
            try:
                status = safefs.lstat_regular_file(parents.fd, names[-1], root.device)
                _check_identity(file, status)
                self._announce(context, volume, names)
                # Telling the live watcher is a round trip to the trio thread: the name may hold
                # another file by now (re-downloaded). Checked again right before the unlink.
                status = _same_file(parents.fd, names[-1], root.device, status)
            except FileNotFoundError:
                self._count_missing(context, on_the_way, outcome)
                return
            safefs.unlink_file(parents.fd, names[-1])
            identity = (status.st_dev, status.st_ino)
            log.info(
                "deleted %s (inode %d, %d bytes, %d link(s) before)",
                _location(volume.path, path.relative_path),
                status.st_ino,
                status.st_size,
                status.st_nlink,
            )
            outcome.paths_deleted += 1
            if outcome.size_bytes is None:
                outcome.size_bytes = status.st_size
            if status.st_nlink == 1 and identity not in freed_inodes:
                freed_inodes.add(identity)
                outcome.freed_bytes += status.st_size
            try:
                self._remove_companions(context, volume, root, parents, names, media_extensions)
                outcome.dirs_removed += self._remove_empty_parents(context, volume, root, parents)
            except OSError as error:
                # The media path is gone; leftovers are reported to the operator, not the API.
                log.warning(
                    "cleanup after deleting %s stopped: %s",
                    _location(volume.path, path.relative_path),
                    error,
                )
        finally:
            parents.close()

    @staticmethod
    def _count_missing(
        context: _Volumes, on_the_way: Sequence[WatchPath], outcome: _MediaFileOutcome
    ) -> None:
        """ENOENT means deleted only while every volume root on the way is the recorded one."""
        for volume in on_the_way:
            root = context.root(volume)
            if context.recorded(volume) is None:
                # Nothing tells an empty root from an unmounted mount point yet.
                raise safefs.Refused(
                    "volume_unverified", f"no device recorded for {volume.path} (not scanned yet)"
                )
            if not root.still_present():
                raise safefs.Refused("volume_unavailable", f"{root.path} is gone or was remounted")
        outcome.paths_deleted += 1

    def _remove_companions(
        self,
        context: _Volumes,
        volume: WatchPath,
        root: safefs.VolumeRoot,
        parents: safefs.ParentDirectories,
        names: Sequence[str],
        media_extensions: frozenset[str],
    ) -> None:
        remaining = os.listdir(parents.fd)
        if any(_is_media_name(name, media_extensions) for name in remaining):
            return
        for name in remaining:
            if not _is_companion_name(name):
                continue
            try:
                status = safefs.lstat_regular_file(parents.fd, name, root.device)
            except safefs.Refused:
                continue  # a symlink or directory named like metadata: not ours to remove
            companion = [*names[:-1], name]
            self._announce(context, volume, companion)
            try:
                _same_file(parents.fd, name, root.device, status)  # as for the media file
            except (safefs.Refused, FileNotFoundError) as changed:
                log.info(
                    "companion %s left: %s", _location(volume.path, "/".join(companion)), changed
                )
                continue
            safefs.unlink_file(parents.fd, name)
            log.info("deleted companion %s", _location(volume.path, "/".join(companion)))

    @staticmethod
    def _remove_empty_parents(
        context: _Volumes,
        volume: WatchPath,
        root: safefs.VolumeRoot,
        parents: safefs.ParentDirectories,
    ) -> int:
        protected = context.protected() | {root.identity}
        removed = 0
        for depth in range(len(parents.names), 0, -1):
            name = parents.names[depth - 1]
            if not safefs.remove_empty_directory(
                parents.fds[depth - 1], name, root.device, protected
            ):
                break
            removed += 1
            log.info(
                "removed empty directory %s",
                _location(volume.path, "/".join(parents.names[:depth])),
            )
        return removed

    def _announce(self, context: _Volumes, volume: WatchPath, names: Sequence[str]) -> None:
        if self.on_removing is None:
            return
        volume_id, relative_path = context.owner(volume, names)
        try:
            self.on_removing(volume_id, relative_path)
        except Exception:
            log.exception("on_removing observer failed for %s", relative_path)

    # --- hardlink -----------------------------------------------------------------------

    def hardlink(
        self,
        command: CommandFilesHardlink,
        volumes: Sequence[WatchPath],
        volume_devices: Mapping[str, int],
        disable_deletion: bool,
    ) -> FilesHardlinkCompleted:
        """Carry out (or replay) `command`."""
        with self._lock:
            stored = self._store.get(CommandFilesHardlink.TYPE, command.request_id)
            if stored is not None:
                log.info("replaying hardlink %s without touching the disk", command.request_id)
                return converter.structure(stored["reply"], FilesHardlinkCompleted)
            context = _Volumes(volumes, volume_devices)
            refused_by_config = False
            try:
                self._clean_leftovers(context)
                inode = self._hardlink(command, context, disable_deletion)
            except PathFailure as failure:
                refused_by_config = failure.by_config
                log.warning("hardlink %s failed: %s", command.request_id, failure)
                reply = FilesHardlinkCompleted(
                    request_id=command.request_id,
                    deletion_id=command.deletion_id,
                    status="failed",
                    error=str(failure),
                )
            else:
                reply = FilesHardlinkCompleted(
                    request_id=command.request_id,
                    deletion_id=command.deletion_id,
                    status="created",
                    source_inode=inode,
                    target_inode=inode,
                )
            finally:
                context.close()
            if not refused_by_config:  # judged afresh once the operator allows replacing
                self._store.put(
                    CommandFilesHardlink.TYPE,
                    command.request_id,
                    {"reply": converter.unstructure(reply)},
                )
            return reply

    def _hardlink(
        self, command: CommandFilesHardlink, context: _Volumes, disable_deletion: bool
    ) -> int:
        """The shared inode once the target is a link of the source; PathFailure otherwise."""
        source_at = _location(command.source_volume_path, command.source_relative_path)
        target_at = _location(command.target_volume_path, command.target_relative_path)
        with _failures_at(source_at):
            source_volume = context.find(command.source_volume_path)
            source_names = safefs.split_relative_path(command.source_relative_path)
        with _failures_at(target_at):
            target_volume = context.find(command.target_volume_path)
            target_names = safefs.split_relative_path(command.target_relative_path)
            target_root = context.root(target_volume)
        with _failures_at(source_at):
            source_root = context.root(source_volume)
            source_parents = safefs.ParentDirectories(source_root, source_names[:-1])
        try:
            with _failures_at(source_at):
                source = safefs.lstat_regular_file(
                    source_parents.fd, source_names[-1], source_root.device
                )
            with _failures_at(target_at):
                if source_root.device != target_root.device or (
                    source_root.mount is not None
                    and target_root.mount is not None
                    and source_root.mount != target_root.mount
                ):
                    raise safefs.Refused("cross_device", "source and target on different mounts")
                target_parents = safefs.ParentDirectories(
                    target_root, target_names[:-1], create=True
                )
                try:
                    self._link_into_place(
                        context,
                        target_volume,
                        target_names,
                        source_parents,
                        source_names[-1],
                        target_parents,
                        source,
                        disable_deletion,
                    )
                except BaseException:
                    target_parents.remove_created()  # a failed command leaves nothing behind
                    raise
                finally:
                    target_parents.close()
        finally:
            source_parents.close()
        log.info("hardlinked %s -> %s (inode %d)", source_at, target_at, source.st_ino)
        return source.st_ino

    def _link_into_place(
        self,
        context: _Volumes,
        target_volume: WatchPath,
        target_names: Sequence[str],
        source_parents: safefs.ParentDirectories,
        source_name: str,
        target_parents: safefs.ParentDirectories,
        source: os.stat_result,
        disable_deletion: bool,
    ) -> None:
        target_name = target_names[-1]
        source_identity = (source.st_dev, source.st_ino)
        try:
            existing = os.stat(target_name, dir_fd=target_parents.fd, follow_symlinks=False)
        except FileNotFoundError:
            with self._pending.linking(target_volume.path, target_names[:-1]):
                safefs.link_create(
                    source_parents.fd,
                    source_name,
                    target_parents.fd,
                    target_name,
                    source=source_identity,
                )
            return
        old_identity = (existing.st_dev, existing.st_ino)
        if old_identity == source_identity:
            return
        safefs.lstat_regular_file(target_parents.fd, target_name, source.st_dev)
        if disable_deletion:
            raise DeletionDisabled("the target exists with another inode")
        self._announce(context, target_volume, target_names)

        def target_unchanged() -> None:
            # After the round trip to the live watcher and the link: a file put at the target
            # name meanwhile (a new download) is not the one the API asked to replace.
            try:
                now = os.stat(target_name, dir_fd=target_parents.fd, follow_symlinks=False)
            except FileNotFoundError:
                return  # nothing left to lose: the rename makes the name
            if (now.st_dev, now.st_ino) not in (old_identity, source_identity):
                raise safefs.Refused("target_changed", "the target was replaced while linking")

        with self._pending.linking(target_volume.path, target_names[:-1]):
            safefs.link_replace(
                source_parents.fd,
                source_name,
                target_parents.fd,
                target_name,
                source=source_identity,
                before_rename=target_unchanged,
            )

    # --- leftovers ------------------------------------------------------------------------

    def clean_leftovers(
        self, volumes: Sequence[WatchPath], volume_devices: Mapping[str, int]
    ) -> None:
        """Remove the temporary links a kill between link and rename left (see `_PendingLinks`).

        Cheap when there are none (nothing on disk is read); a directory whose volume is not
        configured or not available now stays pending for the next call (every command makes
        one first).
        """
        with self._lock:
            context = _Volumes(volumes, volume_devices)
            try:
                self._clean_leftovers(context)
            finally:
                context.close()

    def _clean_leftovers(self, context: _Volumes) -> None:
        for volume_path, directory in self._pending.entries():
            where = _location(volume_path, directory) if directory else volume_path
            try:
                volume = context.find(volume_path)
                root = context.root(volume)
            except safefs.Refused as refused:
                log.info("temporary links in %s not checked yet: %s", where, refused)
                continue
            try:
                names = safefs.split_relative_path(directory) if directory else []
                parents = safefs.ParentDirectories(root, names)
            except (OSError, safefs.UnsafePath) as error:
                log.info("no temporary links to clean in %s: %s", where, error)
            else:
                try:
                    for name in safefs.remove_temporary_links(parents.fd, root.device):
                        log.warning("removed %s/%s, left by an interrupted hardlink", where, name)
                except OSError as error:
                    log.error("cannot clean temporary links in %s: %s", where, error)
                    continue
                finally:
                    parents.close()
            self._pending.discard(volume_path, directory)


def _same_file(dir_fd: int, name: str, device: int, checked: os.stat_result) -> os.stat_result:
    """The status of `name` now, or `Refused("inode_mismatch")` unless it is still `checked`."""
    status = safefs.lstat_regular_file(dir_fd, name, device)
    if (status.st_dev, status.st_ino) != (checked.st_dev, checked.st_ino):
        raise safefs.Refused(
            "inode_mismatch",
            f"replaced while being deleted: inode {status.st_ino}, checked {checked.st_ino}",
        )
    return status


def _check_identity(file: DeleteFile, status: os.stat_result) -> None:
    if (file.inode is not None and status.st_ino != file.inode) or (
        file.device_id is not None and status.st_dev != file.device_id
    ):
        raise safefs.Refused(
            "inode_mismatch",
            f"found inode {status.st_ino} on device {status.st_dev}, "
            f"expected {file.inode} on {file.device_id}",
        )


def untouched_result(media_file_id: str, error: str) -> DeleteResult:
    """A media file failed with nothing done to it: no path deleted, no byte freed."""
    return DeleteResult(
        media_file_id=media_file_id,
        status="failed",
        paths_deleted=0,
        dirs_removed=0,
        size_bytes=0,
        freed_bytes=0,
        error=error,
    )


def _result(file: DeleteFile, outcome: _MediaFileOutcome) -> DeleteResult:
    failed = bool(outcome.failures)
    return DeleteResult(
        media_file_id=file.media_file_id,
        status="failed" if failed else "deleted",
        paths_deleted=outcome.paths_deleted,
        dirs_removed=outcome.dirs_removed,
        size_bytes=outcome.size_bytes or 0,
        freed_bytes=outcome.freed_bytes,
        error="; ".join(outcome.failures) if failed else None,
    )


def _completed(command: CommandFilesDelete, results: list[DeleteResult]) -> FilesDeleteCompleted:
    return FilesDeleteCompleted(
        request_id=command.request_id,
        deletion_id=command.deletion_id,
        total_media_files=len(results),
        total_paths_deleted=sum(result.paths_deleted for result in results),
        freed_bytes=sum(result.freed_bytes for result in results),
        results=results,
        **deletion_counts(results),
    )
