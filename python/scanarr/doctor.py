"""`scanarr doctor`: checks of what makes a watcher work on a NAS, each a one-line verdict.

Every check returns verdicts (`Verdict`): ``ok``, ``note`` (worth knowing, nothing to do: scanarr
compensates), ``action`` (something to fix; the verdict says what) or ``skip``. The checks:

- the API (`check_api`): the URL answers, the WebSocket opens with the token in the
  ``Authorization`` header, and ``watcher.hello`` is answered ``authenticated``;
- the state file's directory (`check_state_directory`): a file can really be created in it;
- each volume (`check_volume`): its root is a readable directory, and the filesystem type — on a
  network or FUSE filesystem changes made elsewhere make no inotify event, so the watcher
  rescans it periodically;
- the live backend (`check_live_backend`): fanotify (one mark per filesystem, no watch limit;
  needs CAP_SYS_ADMIN and Linux 5.17+) or inotify, and why, as ``SCANARR_LIVE_BACKEND`` would
  pick it;
- inotify watches (`check_watch_limit`, not under fanotify): the directories of every volume
  (one watch each), counted with the native walker, against ``fs.inotify.max_user_watches``;
- hardlinks (`check_hardlinks`): which volumes share a filesystem (same ``st_dev``), and, when
  allowed, a real link between them (two bind mounts of one filesystem share ``st_dev`` and
  still refuse links with EXDEV — the classic Docker mistake).

Volumes come from the command line, else the config the API sends during the API check, else the
state file's last config.
"""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Literal

import attrs
import trio

from scanarr import transport
from scanarr.config import DEFAULT_STATE_FILE, Settings, SettingsError, load_settings
from scanarr.protocol import (
    WatcherAuth,
    WatcherConfig,
    WatchPath,
)
from scanarr.volume_paths import nested_roots as _nested_roots

Status = Literal["ok", "note", "action", "skip"]

MAX_USER_WATCHES_PATH = "/proc/sys/fs/inotify/max_user_watches"
SYSCTL_FILE = "/etc/sysctl.d/60-scanarr.conf"
# The common recommendation (Syncthing, IDEs): about 0.5 KiB to 1 KiB of kernel memory per watch
# actually in use, nothing for the unused part of the limit.
RECOMMENDED_MIN_WATCHES = 524288
# Above this share of the limit there is no room left for growth and the user's other programs
# (the limit is per user: Plex, Syncthing... draw on it too).
WATCH_HEADROOM = 0.8
TEMP_PREFIX = ".scanarr-doctor-"  # hidden: neither scanned nor reported by a running watcher


@attrs.frozen
class Verdict:
    check: str  # what was checked, e.g. "volume movies"
    status: Status
    summary: str  # the one-line verdict
    action: str | None = None  # what to do, when status is "action" (or a hint for a note)

    @property
    def needs_action(self) -> bool:
        return self.status == "action"


# --- helpers -----------------------------------------------------------------------------------


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def _strerror(error: OSError) -> str:
    return error.strerror or str(error)


def parse_volume_argument(text: str, index: int) -> WatchPath:
    """``ID=PATH`` or ``PATH`` (its id is then the folder's name). Raises ValueError."""
    volume_id, separator, path = text.partition("=")
    if separator and volume_id and path and "/" not in volume_id:
        return WatchPath(id=volume_id, path=os.path.abspath(path))
    if not text:
        raise ValueError("empty volume path")
    path = os.path.abspath(text)
    return WatchPath(id=os.path.basename(path.rstrip("/")) or f"volume{index}", path=path)


def read_environment_file(path: str) -> dict[str, str]:
    """Variables of a systemd ``EnvironmentFile=`` (``KEY=VALUE`` lines, ``#``/``;`` comments,
    optional quotes). Raises OSError, or ValueError naming the bad line."""
    variables: dict[str, str] = {}
    with open(path, encoding="utf-8") as file:
        for number, raw_line in enumerate(file, 1):
            line = raw_line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            line = line.removeprefix("export ").lstrip()
            key, separator, value = line.partition("=")
            key = key.strip()
            if not separator or not key.replace("_", "").isalnum():
                raise ValueError(f"{path}:{number}: expected KEY=VALUE")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            variables[key] = value
    return variables


# --- inotify watches -----------------------------------------------------------------------------


def nested_roots(volume: WatchPath, volumes: Sequence[WatchPath]) -> list[str]:
    """Roots of the other volumes strictly inside `volume` (each is counted as its own)."""
    return _nested_roots(volume.path, (other.path for other in volumes))


def count_directories(volume: WatchPath, volumes: Sequence[WatchPath] = ()) -> tuple[int, int]:
    """(directories, errors) of a volume as the live watcher watches them: hidden and system
    directories, other filesystems and nested volumes left out. No file is looked at."""
    from scanarr.scan import Scan

    # No extension matches: the walker only reads directories.
    with Scan(
        [volume.path], extensions=[], exclude=nested_roots(volume, volumes), batch_size=4096
    ) as walk:
        while walk.next_batch(1.0) is not None:
            pass
        stats = walk.stats()
    return stats.dirs, stats.errors


def recommended_watch_limit(directories: int) -> int:
    """Twice the directories (growth, other programs), rounded up to a power of two."""
    wanted = max(RECOMMENDED_MIN_WATCHES, 2 * directories)
    return 1 << (wanted - 1).bit_length()


def sysctl_advice(limit: int) -> str:
    return (
        f"raise it persistently: echo fs.inotify.max_user_watches={limit} | sudo tee "
        f"{SYSCTL_FILE} && sudo sysctl --system (on the host, not in a container)"
    )


def check_watch_limit(
    volumes: Sequence[WatchPath], limit_override: int | None = None
) -> list[Verdict]:
    check = "inotify watches"
    available = [volume for volume in volumes if os.path.isdir(volume.path)]
    if not available:
        return [Verdict(check, "skip", "no readable volume to count directories in")]
    from scanarr.live.inotify import read_sysctl

    limit = limit_override if limit_override is not None else read_sysctl("max_user_watches")
    directories = 0
    errors = 0
    for volume in available:
        count, walk_errors = count_directories(volume, volumes)
        directories += count
        errors += walk_errors
    counted = (
        f"{_plural(directories, 'directory', 'directories')} in {_plural(len(available), 'volume')}"
    )
    if errors:
        counted += f" ({_plural(errors, 'unreadable entry', 'unreadable entries')} not counted)"
    if limit is None:
        return [
            Verdict(
                check,
                "note",
                f"{counted}; fs.inotify.max_user_watches cannot be read ({MAX_USER_WATCHES_PATH})",
            )
        ]
    source = "given" if limit_override is not None else "fs.inotify.max_user_watches"
    summary = f"{counted}, one watch each; limit {limit:,} ({source})"
    advice = sysctl_advice(recommended_watch_limit(directories))
    if directories > limit:
        return [
            Verdict(
                check,
                "action",
                f"{summary}: live watching would miss "
                f"{_plural(directories - limit, 'directory', 'directories')} "
                "(covered only by rescans)",
                advice,
            )
        ]
    if directories > limit * WATCH_HEADROOM:
        return [
            Verdict(
                check,
                "action",
                f"{summary}: under {100 - int(WATCH_HEADROOM * 100)}% left for new folders and "
                "the user's other programs",
                advice,
            )
        ]
    return [Verdict(check, "ok", summary)]


# --- live backend ------------------------------------------------------------------------------


def check_live_backend(
    volumes: Sequence[WatchPath], environ: Mapping[str, str]
) -> tuple[Verdict, str | None]:
    """Which backend ``scanarr watch`` would use with this environment, and why; with the
    backend's name (None when the variable is invalid or fanotify is asked for and unusable)."""
    from scanarr.live.fanotify import probe
    from scanarr.live.settings import LIVE_BACKEND_VARIABLE, live_backend_from_env

    check = "live backend"
    try:
        requested = live_backend_from_env(environ)
    except SettingsError as error:
        return Verdict(check, "action", str(error), "use auto, inotify or fanotify"), None
    if requested == "inotify":
        return Verdict(check, "ok", f"inotify ({LIVE_BACKEND_VARIABLE}=inotify)"), "inotify"
    why_not = probe([volume.path for volume in volumes if os.path.isdir(volume.path)])
    grant = (
        "grant CAP_SYS_ADMIN (systemd: AmbientCapabilities=CAP_SYS_ADMIN; Docker: "
        "--cap-add SYS_ADMIN) for fanotify: one mark per filesystem, no watch limit"
    )
    if why_not is None:
        return Verdict(check, "ok", "fanotify: whole filesystems watched, no watch limit"), (
            "fanotify"
        )
    if requested == "fanotify":
        return (
            Verdict(
                check,
                "action",
                f"{LIVE_BACKEND_VARIABLE}=fanotify, but {why_not}: scanarr watch would not start",
                grant,
            ),
            None,
        )
    return Verdict(check, "note", f"inotify, because {why_not}", grant), "inotify"


# --- volumes and filesystems -------------------------------------------------------------------


def check_volume(volume: WatchPath, mount_table: str | None = None) -> Verdict:
    """The root is a readable directory; which filesystem it is on."""
    from scanarr.live.mounts import MOUNTINFO_PATH, filesystem_of, is_network_filesystem

    check = f"volume {volume.id}"
    try:
        if not os.path.isdir(volume.path):
            problem = "is not a directory" if os.path.lexists(volume.path) else "does not exist"
            return Verdict(
                check,
                "action",
                f"{volume.path} {problem}",
                "mount the disk or share that holds it, or fix the path in the API",
            )
        os.listdir(volume.path)
    except OSError as error:
        return Verdict(
            check,
            "action",
            f"{volume.path} cannot be read: {_strerror(error)}",
            "give the user running scanarr read (and, for delete/hardlink commands, write) "
            "access; under systemd, add the path to ReadWritePaths=",
        )
    mount = filesystem_of(volume.path, mount_table or MOUNTINFO_PATH)
    if mount is None:
        return Verdict(
            check, "note", f"{volume.path}: filesystem type unknown (mount table unreadable)"
        )
    where = f"{volume.path} ({mount.filesystem_type} mounted on {mount.mount_point})"
    if is_network_filesystem(mount.filesystem_type):
        return Verdict(
            check,
            "note",
            f"{where}: a network/FUSE filesystem: changes made by other machines make no "
            "inotify event, so live events are unreliable; the watcher also rescans it "
            "periodically",
            "for live events, run scanarr on the machine that holds the disks",
        )
    return Verdict(check, "ok", f"{where}: local filesystem, live events reliable")


def _root_device(volume: WatchPath) -> int | None:
    try:
        return os.stat(volume.path).st_dev
    except OSError:
        return None


def link_test(source: WatchPath, target: WatchPath) -> tuple[Status, str]:
    """Create a hidden file in `source`, hardlink it into `target`, remove both.

    ("ok", ...) when the link worked, ("action", why) when the filesystem refused it, ("skip",
    why) when the test file could not be written (no write permission, read-only mount).
    """
    try:
        descriptor, source_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=source.path)
    except OSError as error:
        return "skip", f"cannot write a test file in {source.path}: {_strerror(error)}"
    os.close(descriptor)
    target_path = os.path.join(target.path, TEMP_PREFIX + secrets.token_hex(8))
    try:
        try:
            os.link(source_path, target_path)
        except OSError as error:
            if error.errno == errno.EXDEV:
                return "action", "EXDEV: same filesystem, but separate mounts refuse links"
            if error.errno in (errno.EACCES, errno.EROFS):
                return "skip", f"cannot write in {target.path}: {_strerror(error)}"
            return "action", f"the link failed: {_strerror(error)}"
        try:
            same = os.stat(source_path).st_ino == os.stat(target_path).st_ino
        finally:
            os.unlink(target_path)
        if not same:
            return "action", "the link did not give the same inode"
        return "ok", "a test link worked"
    finally:
        os.unlink(source_path)


def check_hardlinks(volumes: Sequence[WatchPath], *, link_test_allowed: bool) -> list[Verdict]:
    """Volumes grouped by filesystem; a real link from each group's first volume to the others."""
    check = "hardlinks"
    groups: dict[int, list[WatchPath]] = {}
    for volume in volumes:
        device = _root_device(volume)
        if device is not None:
            groups.setdefault(device, []).append(volume)
    if sum(len(members) for members in groups.values()) < 2:
        return [Verdict(check, "skip", "fewer than two readable volumes")]
    verdicts: list[Verdict] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        names = ", ".join(volume.id for volume in members)
        if not link_test_allowed:
            verdicts.append(
                Verdict(check, "ok", f"{names}: same filesystem (st_dev); link test not run")
            )
            continue
        first = members[0]
        failures: list[str] = []
        skipped: list[str] = []
        for other in members[1:]:
            status, detail = link_test(first, other)
            if status == "action":
                failures.append(f"{first.id} -> {other.id}: {detail}")
            elif status == "skip":
                skipped.append(f"{first.id} -> {other.id}: {detail}")
        if failures:
            verdicts.append(
                Verdict(
                    check,
                    "action",
                    f"{names} share a filesystem but cannot hardlink: {'; '.join(failures)}",
                    "mount their common parent once (e.g. one /data holding torrents/ and "
                    "media/) instead of one mount per folder",
                )
            )
        elif skipped:
            verdicts.append(
                Verdict(
                    check,
                    "note",
                    f"{names}: same filesystem (st_dev); link test not run: {'; '.join(skipped)}",
                )
            )
        else:
            verdicts.append(Verdict(check, "ok", f"{names}: same filesystem, a test link worked"))
    if len(groups) > 1:
        described = " | ".join(
            ", ".join(volume.id for volume in members) for members in groups.values()
        )
        verdicts.append(
            Verdict(
                check,
                "note",
                f"volumes on different filesystems cannot hardlink to each other: {described}",
                "keep folders that share files (torrents/ and media/) on one filesystem",
            )
        )
    return verdicts


# --- state file --------------------------------------------------------------------------------


def check_state_directory(state_file: str) -> Verdict:
    """A file can be created beside the state file (the watcher writes it atomically that way)."""
    check = "state file"
    path = os.path.abspath(state_file)
    directory = os.path.dirname(path)
    existing = directory
    while not os.path.isdir(existing) and existing != os.path.dirname(existing):
        existing = os.path.dirname(existing)
    fix = (
        f"make {directory} writable by the user running scanarr (under systemd the unit's "
        "StateDirectory= does it), or set SCANARR_STATE_FILE to a writable place"
    )
    try:
        if existing == directory:
            descriptor, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
            os.close(descriptor)
            os.unlink(probe)
        else:
            # The watcher creates the missing directories: try the first one for real.
            probe = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=existing)
            os.rmdir(probe)
    except OSError as error:
        place = directory if existing == directory else f"{existing} (to create {directory})"
        return Verdict(check, "action", f"cannot write in {place}: {_strerror(error)}", fix)
    summary = (
        f"{directory} is writable"
        if existing == directory
        else f"{directory} does not exist yet; the watcher can create it"
    )
    if os.path.exists(path):
        problem = _state_file_problem(path)
        if problem is not None:
            return Verdict(
                check,
                "note",
                f"{summary}, but {path} {problem}: the watcher starts empty and rescans",
            )
        summary += f"; {path} is readable"
    return Verdict(check, "ok", summary)


def _state_file_problem(path: str) -> str | None:
    import json

    try:
        with open(path, "rb") as file:
            document = json.loads(file.read())
    except OSError as error:
        return f"cannot be read ({_strerror(error)})"
    except (ValueError, UnicodeDecodeError):
        return "is not valid JSON"
    if not isinstance(document, dict):
        return "is not a JSON object"
    return None


def state_volumes(state_file: str) -> list[WatchPath]:
    """The volumes of the state file's last config (none when it is missing or corrupt)."""
    import logging

    from scanarr.state import load_state

    # load_state warns about a missing or corrupt file; the state check reports that instead.
    state_log = logging.getLogger("scanarr.state")
    previous = state_log.disabled
    state_log.disabled = True
    try:
        config = load_state(state_file).last_config
    finally:
        state_log.disabled = previous
    return list(config.watch_paths) if config is not None else []


# --- API ---------------------------------------------------------------------------------------


def api_settings(environ: Mapping[str, str]) -> Settings | SettingsError | None:
    """The watcher settings, the error in them, or None when no API is configured at all."""
    if (
        not environ.get("SCANARR_API_URL", "").strip()
        and not environ.get("SCANARR_AUTH_TOKEN", "").strip()
    ):
        return None
    try:
        return load_settings(environ)
    except SettingsError as error:
        return error


@attrs.frozen
class ApiAnswer:
    """What the API answered the watcher's hello."""

    auth: WatcherAuth  # status "authenticated" or "rejected"
    config: WatcherConfig | None = None  # the first config (None: not given, or malformed)


class ApiHandshakeFailed(Exception):
    """The handshake did not complete; the message says how (timeout, closed, wrong answer)."""


# (open WebSocket, token, timeout) → the answer; raises ApiHandshakeFailed. `scanarr doctor`
# passes the watcher's own handshake (`scanarr.cli.doctor.agent_handshake`), so the check says
# what the watcher would meet.
ApiHandshake = Callable[[transport.WebSocket, str, float], Awaitable[ApiAnswer]]


async def check_api(
    settings: Settings, timeout: float, handshake: ApiHandshake
) -> tuple[Verdict, WatcherConfig | None]:
    """Open the WebSocket as the watcher does, run its handshake (hello, ``watcher.auth``, the
    first ``watcher.config``), close with 1000."""
    check = "API"
    url = settings.api_url
    headers = [(b"Authorization", b"Bearer " + settings.auth_token.encode("utf-8"))]
    try:
        with trio.fail_after(timeout + 2.0):  # the handshake's own limit comes first
            async with transport.open_api_websocket(
                url, headers, connect_timeout=timeout, close_timeout=1.0
            ) as websocket:
                answer = await handshake(websocket, settings.auth_token, timeout)
                await websocket.aclose(1000, "scanarr doctor: check done")
    except (trio.TooSlowError, ApiHandshakeFailed) as error:
        problem = str(error) or f"no answer within {timeout:g} s"
        return (
            Verdict(
                check,
                "action",
                f"{url.url} did not complete the handshake: {problem}",
                "check that the URL points at the watcher endpoint of the API",
            ),
            None,
        )
    except transport.ConnectionRejected as rejected:
        if rejected.status_code in (401, 403):
            return (
                Verdict(
                    check,
                    "action",
                    f"{url.url} refused the token (HTTP {rejected.status_code})",
                    "copy the watcher's token from the Scanarr UI into SCANARR_AUTH_TOKEN",
                ),
                None,
            )
        return (
            Verdict(
                check,
                "action",
                f"{url.url} refused the WebSocket upgrade (HTTP {rejected.status_code})",
                "check the path of SCANARR_API_URL (e.g. /ws/watcher)",
            ),
            None,
        )
    except (transport.HandshakeError, OSError) as error:
        cause = error.__cause__ if error.__cause__ is not None else error
        return (
            Verdict(
                check,
                "action",
                f"cannot reach {url.url}: {cause or type(cause).__name__}",
                "check that the API runs and that this host can reach it (address, port, "
                "firewall, wss:// certificate)",
            ),
            None,
        )
    except transport.ConnectionClosed as closed:
        return (
            Verdict(
                check,
                "action",
                f"{url.url} closed the connection before answering ({closed.reason})",
                "check the API's logs",
            ),
            None,
        )
    auth, config = answer.auth, answer.config
    if auth.status != "authenticated":
        reason = auth.reason or "no reason given"
        return (
            Verdict(
                check,
                "action",
                f"{url.url} is reachable but rejected the token ({reason})",
                "copy the watcher's token from the Scanarr UI into SCANARR_AUTH_TOKEN"
                if reason in ("invalid_token", "revoked")
                else "check the API's logs",
            ),
            None,
        )
    who = auth.watcher_name or auth.watcher_id or "?"
    configured = (
        f"; {_plural(len(config.watch_paths), 'volume')} configured"
        if config is not None
        else "; no watcher.config received"
    )
    return Verdict(check, "ok", f"{url.url} reachable, token accepted as {who}{configured}"), config


# --- all together ------------------------------------------------------------------------------


@attrs.frozen
class DoctorOptions:
    volumes: Sequence[WatchPath] = ()  # given on the command line
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    state_file: str | None = None  # default: SCANARR_STATE_FILE, else the watcher's default
    max_user_watches: int | None = None  # instead of the sysctl (tests, what-if)
    check_api: bool = True
    link_test: bool = True
    timeout: float = 10.0
    mount_table: str | None = None
    api_handshake: ApiHandshake | None = None  # needed for the API check


def run_checks(options: DoctorOptions) -> list[Verdict]:
    verdicts: list[Verdict] = []
    settings = api_settings(options.environ) if options.check_api else None
    api_config: WatcherConfig | None = None
    if not options.check_api:
        verdicts.append(Verdict("API", "skip", "not checked (--skip-api)"))
    elif options.api_handshake is None:
        verdicts.append(Verdict("API", "skip", "not checked (no handshake to run)"))
    elif settings is None:
        verdicts.append(
            Verdict("API", "skip", "SCANARR_API_URL and SCANARR_AUTH_TOKEN are not set")
        )
    elif isinstance(settings, SettingsError):
        verdicts.append(
            Verdict("API", "action", str(settings), "fix the variable in the environment file")
        )
    else:
        verdict, api_config = trio.run(check_api, settings, options.timeout, options.api_handshake)
        verdicts.append(verdict)

    state_file = (
        options.state_file
        or options.environ.get("SCANARR_STATE_FILE", "").strip()
        or DEFAULT_STATE_FILE
    )
    verdicts.append(check_state_directory(state_file))

    volumes, origin = _volumes_to_check(options, api_config, state_file)
    if not volumes:
        verdicts.append(
            Verdict(
                "volumes",
                "skip",
                "no volume to check: name them (scanarr doctor /data/media) or configure the API",
            )
        )
        return verdicts
    verdicts.append(Verdict("volumes", "ok", f"{_plural(len(volumes), 'volume')} from {origin}"))
    verdicts.extend(check_volume(volume, options.mount_table) for volume in volumes)
    backend_verdict, backend = check_live_backend(volumes, options.environ)
    verdicts.append(backend_verdict)
    if backend == "fanotify" and options.max_user_watches is None:
        verdicts.append(
            Verdict("inotify watches", "skip", "not needed: fanotify has no per-directory watch")
        )
    else:
        verdicts.extend(check_watch_limit(volumes, options.max_user_watches))
    verdicts.extend(check_hardlinks(volumes, link_test_allowed=options.link_test))
    return verdicts


def _volumes_to_check(
    options: DoctorOptions, api_config: WatcherConfig | None, state_file: str
) -> tuple[list[WatchPath], str]:
    if options.volumes:
        return list(options.volumes), "the command line"
    if api_config is not None and api_config.watch_paths:
        return list(api_config.watch_paths), "the API's config"
    from_state = state_volumes(state_file)
    return from_state, f"the state file's last config ({state_file})"


def exit_code(verdicts: Iterable[Verdict]) -> int:
    """1 when anything needs action, else 0."""
    return 1 if any(verdict.needs_action for verdict in verdicts) else 0
