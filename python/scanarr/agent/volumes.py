"""The configured volumes: config diffs (§3) and nesting (a file belongs to the longest root).

`VolumeSet` is the configuration in force. `VolumeSet.apply(config)` replaces it whole and
returns a `ConfigChange` saying which volumes were added, removed, moved (path changed) and
whether the scan extensions changed. Services that follow the volumes (scans here, live watching
elsewhere) register a listener with `add_listener` and receive ``(volume_set, change)`` after each
change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from scanarr.protocol import WatcherConfig, WatchPath
from scanarr.volume_paths import is_inside, nested_roots, normalise_root


@attrs.frozen
class ConfigChange:
    added: tuple[WatchPath, ...] = ()
    removed: tuple[WatchPath, ...] = ()
    moved: tuple[tuple[WatchPath, WatchPath], ...] = ()  # (old, new): same id, new path
    renamed: tuple[WatchPath, ...] = ()  # same id and path, new display name
    extensions_changed: bool = False
    flags_changed: bool = False  # scan_on_start or disable_deletion

    @property
    def empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.moved
            or self.renamed
            or self.extensions_changed
            or self.flags_changed
        )


def diff_configs(old: WatcherConfig | None, new: WatcherConfig) -> ConfigChange:
    old_volumes = {volume.id: volume for volume in (old.watch_paths if old else [])}
    new_volumes = {volume.id: volume for volume in new.watch_paths}
    added = tuple(volume for key, volume in new_volumes.items() if key not in old_volumes)
    removed = tuple(volume for key, volume in old_volumes.items() if key not in new_volumes)
    moved = tuple(
        (old_volumes[key], volume)
        for key, volume in new_volumes.items()
        if key in old_volumes
        and normalise_root(old_volumes[key].path) != normalise_root(volume.path)
    )
    renamed = tuple(
        volume
        for key, volume in new_volumes.items()
        if key in old_volumes
        and normalise_root(old_volumes[key].path) == normalise_root(volume.path)
        and old_volumes[key].name != volume.name
    )
    extensions_changed = old is not None and sorted(set(old.scan_extensions)) != sorted(
        set(new.scan_extensions)
    )
    flags_changed = old is not None and (
        old.scan_on_start != new.scan_on_start or old.disable_deletion != new.disable_deletion
    )
    return ConfigChange(added, removed, moved, renamed, extensions_changed, flags_changed)


def duplicate_volume_ids(config: WatcherConfig) -> list[str]:
    seen: set[str] = set()
    duplicates: list[str] = []
    for volume in config.watch_paths:
        if volume.id in seen and volume.id not in duplicates:
            duplicates.append(volume.id)
        seen.add(volume.id)
    return duplicates


VolumeListener = Callable[["VolumeSet", ConfigChange], None]


class VolumeSet:
    """The configuration in force, with lookups by id and by path."""

    def __init__(self) -> None:
        self.config: WatcherConfig | None = None
        self._by_id: dict[str, WatchPath] = {}
        self._listeners: list[VolumeListener] = []

    def add_listener(self, listener: VolumeListener) -> None:
        self._listeners.append(listener)

    def apply(self, config: WatcherConfig) -> ConfigChange:
        """Replace the config whole; notify listeners; return what changed."""
        change = diff_configs(self.config, config)
        self.config = config
        self._by_id = {volume.id: volume for volume in config.watch_paths}
        for listener in self._listeners:
            listener(self, change)
        return change

    @property
    def volumes(self) -> dict[str, WatchPath]:
        return dict(self._by_id)

    def ordered(self) -> list[WatchPath]:
        """Volumes in config order."""
        return list(self._by_id.values())

    def get(self, volume_id: str) -> WatchPath | None:
        return self._by_id.get(volume_id)

    @property
    def scan_extensions(self) -> list[str]:
        return list(self.config.scan_extensions) if self.config else []

    @property
    def disable_deletion(self) -> bool:
        return bool(self.config and self.config.disable_deletion)

    def nested_roots(self, volume_id: str) -> list[str]:
        """Roots of the other volumes strictly inside `volume_id`'s root (its walk skips them)."""
        volume = self._by_id.get(volume_id)
        if volume is None:
            return []
        others = (other.path for other in self._by_id.values() if other.id != volume_id)
        return nested_roots(volume.path, others)

    def volume_for_path(self, path: str) -> tuple[WatchPath, str] | None:
        """The volume owning absolute `path` (longest root) and the path relative to it."""
        return owning_volume(self._by_id.values(), path)


def owning_volume(volumes: Iterable[WatchPath], path: str) -> tuple[WatchPath, str] | None:
    target = normalise_root(path)
    best: WatchPath | None = None
    best_root = ""
    for volume in volumes:
        root = normalise_root(volume.path)
        if is_inside(target, root) and len(root) > len(best_root):
            best, best_root = volume, root
    if best is None:
        return None
    if target == best_root:
        return best, ""
    relative = target[len(best_root) :].lstrip("/") if best_root != "/" else target.lstrip("/")
    return best, relative
