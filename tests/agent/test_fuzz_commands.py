"""A hostile API against the shipped `scanarr watch` process (PROTOCOL.md §7).

A few thousand generated frames — the command shapes with surrogates, NULs, huge strings, wrong
types and nested junk, unknown types, broken JSON — go to a running ``scanarr watch`` over a real
WebSocket on 127.0.0.1. Afterwards:

- the watcher is still connected on its first connection (and the process still runs);
- every delete/hardlink frame with a string ``request_id`` got exactly one reply, and no reply
  came for anything else;
- everything the watcher sent is valid text (no lone surrogate, even escaped);
- nothing outside the volumes changed (content, inode, link count, listing), and inside them
  nothing changed that no frame validly addressed: files never named, and *decoys* — files that
  frames name only in ways that must not act (a surrogate where the real name has U+FFFD, an
  escaped byte, ``..``/``//``/absolute forms, a symlinked folder, a wrong inode, a command that
  is malformed elsewhere, a volume path that is not a configured one).

The seed is printed (``SCANARR_FUZZ_SEED`` replays a run); ``SCANARR_FUZZ_FRAMES`` sets the count.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from helpers.agent import settings_environment, watcher_settings
from helpers.processes import start_watch
from helpers.text import assert_all_text
from scanarr.dev_api import DevApiServer, ReceivedMessage
from scanarr.protocol import WatcherConfig, WatchPath

FRAMES = int(os.environ.get("SCANARR_FUZZ_FRAMES", "3000"))
IN_FLIGHT = 32  # unanswered commands at most (the watcher queues 64 before pushing back)
SURROGATES = ("\ud800", "\udbff", "\udc80", "\udcff", "\udfff")
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLY_TYPES = {
    "command.files.delete": "files.delete.completed",
    "command.files.hardlink": "files.hardlink.completed",
}


def _as_sent(text: str) -> str:
    """What a string becomes on the way back: each surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


# --- the tree ------------------------------------------------------------------------------


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


class Tree:
    """Two volumes with victims (validly addressed by some frames), decoys and bystanders, and
    a sentinel tree outside them."""

    VICTIMS = 24

    def __init__(self, base: Path) -> None:
        self.base = base
        self.media = base / "media"
        self.torrents = base / "torrents"
        self.outside = base / "outside"
        self.evil = base / "media-evil"  # shares the volume path as a string prefix
        self.volumes = {"media": self.media, "torrents": self.torrents}
        for directory in (self.media, self.torrents, self.outside, self.evil):
            directory.mkdir(parents=True)
        # Outside: what a traversal would reach.
        for root in (self.outside, self.evil):
            _write(root / "x.mkv", b"outside film")
            _write(root / "x.nfo", b"outside metadata")
            _write(root / "victims/V0.mkv", b"outside lookalike")
            _write(root / "deep/dir/y.mkv", b"outside deep")
        # Bystanders: never named by any frame.
        for name, root in self.volumes.items():
            _write(root / "keep/Kept.Film.mkv", f"kept {name}".encode())
            _write(root / "keep/Kept.Film.nfo", b"kept metadata")
            _write(root / "keep/deeper/Other.mkv", b"kept other")
        # Victims: the only names valid commands use (deleting or linking them is allowed).
        self.victims: list[tuple[str, str]] = []
        for number in range(self.VICTIMS):
            volume = "media" if number % 2 == 0 else "torrents"
            relative = f"victims/d{number % 4}/V{number}.mkv"
            _write(self.volumes[volume] / relative, bytes([number]) * (number + 1))
            _write(self.volumes[volume] / f"victims/d{number % 4}/V{number}.nfo", b"nfo")
            self.victims.append((volume, relative))
        os.link(self.media / "victims/d0/V0.mkv", self.torrents / "victims/V0-link.mkv")
        self.victims.append(("torrents", "victims/V0-link.mkv"))
        _write(self.media / "final/Final.mkv", b"final")
        # Decoys: named only in forms that must not act.
        for prefix, root in (("M", self.media), ("T", self.torrents)):
            decoys = root / "decoys"
            _write(decoys / f"{prefix}-Film\ufffd.mkv", b"replacement-character name")
            _write(decoys / f"{prefix}-Lexical.mkv", b"lexical")
            _write(decoys / f"{prefix}-Mismatch.mkv", b"mismatch")
            _write(decoys / f"{prefix}-Malformed.mkv", b"malformed")
            _write(decoys / f"{prefix}-Malformed.nfo", b"malformed companion")
            raw = os.path.join(os.fsencode(decoys), f"{prefix}-\x80raw.mkv".encode("latin-1"))
            with open(raw, "wb") as file:
                file.write(b"raw byte name")
        os.symlink(self.outside, self.media / "decoys/escape")
        os.symlink(self.outside / "x.mkv", self.media / "decoys/escape.mkv")
        os.symlink("../../outside/deep", self.torrents / "decoys/T-escape")
        os.symlink(self.evil / "x.mkv", self.torrents / "decoys/T-escape.mkv")

    def config(self) -> WatcherConfig:
        return WatcherConfig(
            watch_paths=[WatchPath(id=name, path=str(root)) for name, root in self.volumes.items()],
            scan_on_start=True,
        )

    def snapshot(self, roots: list[Path]) -> dict[str, tuple[Any, ...]]:
        """Every name under `roots` with its kind, inode, links and content (or link target)."""
        seen: dict[str, tuple[Any, ...]] = {}
        for root in roots:
            for directory, dirnames, filenames in os.walk(os.fsencode(root)):
                for name in dirnames + filenames:
                    path = os.path.join(directory, name)
                    status = os.lstat(path)
                    if os.path.islink(path):
                        body: Any = os.readlink(path)
                    elif os.path.isfile(path):
                        with open(path, "rb") as file:
                            body = file.read()
                    else:
                        body = "dir"
                    seen[os.fsdecode(path)] = (status.st_ino, status.st_nlink, body)
        return seen

    def untouchable(self) -> list[Path]:
        roots = [self.outside, self.evil]
        for root in self.volumes.values():
            roots += [root / "keep", root / "decoys"]
        return roots


# --- the frames ----------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, rng: random.Random, tree: Tree) -> None:
        self.rng = rng
        self.tree = tree
        self.count = 0

    def request_id(self) -> str:
        self.count += 1
        suffix = self.rng.choice(["", "", "\0", *SURROGATES, "é", "😀", "x" * 300])
        return f"fz-{self.count}{suffix}"

    def text(self, huge: float = 0.0) -> str:
        """Untrusted text: usually short, sometimes with NUL or surrogates, rarely long; with
        probability `huge`, up to a megabyte (only where the reply is not stored: every stored
        reply is rewritten after each command)."""
        rng = self.rng
        roll = rng.random()
        if roll < huge:
            return "y" * rng.randint(100_000, 1_000_000)
        alphabet = "abc/._-\0 é😀\\%" + "".join(SURROGATES)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        return text + ("z" * rng.randint(1000, 5000) if roll < 0.05 else "")

    def junk(self, depth: int = 0) -> Any:
        rng = self.rng
        kinds = ["null", "bool", "int", "float", "text"] + (["list", "dict"] if depth < 3 else [])
        kind = rng.choice(kinds)
        if kind == "null":
            return None
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "int":
            return rng.choice([0, -1, 1, 2**63, -(2**70), rng.randint(-1000, 10**12)])
        if kind == "float":
            return rng.choice([0.5, -1e308, 1e-9, 12.0])
        if kind == "text":
            return self.text(huge=0.01)
        if kind == "list":
            return [self.junk(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.text(): self.junk(depth + 1) for _ in range(rng.randint(0, 4))}

    # Paths ---------------------------------------------------------------------------------

    def victim_path(self) -> dict[str, Any]:
        volume, relative = self.rng.choice(self.tree.victims)
        return {"volume_path": str(self.tree.volumes[volume]), "relative_path": relative}

    def existing_victim_path(self) -> dict[str, Any]:
        """A victim that exists now (most get deleted early), so some links are really made."""
        present = [
            (volume, relative)
            for volume, relative in self.tree.victims
            if os.path.lexists(self.tree.volumes[volume] / relative)
        ]
        if not present:
            return self.victim_path()
        volume, relative = self.rng.choice(present)
        return {"volume_path": str(self.tree.volumes[volume]), "relative_path": relative}

    def new_target(self) -> dict[str, Any]:
        volume = self.rng.choice(list(self.tree.volumes))
        relative = self.rng.choice(
            [
                f"victims/new-{self.rng.randint(0, 30)}.mkv",
                f"victims/sub{self.rng.randint(0, 5)}/deeper/new.mkv",
                self.rng.choice(self.tree.victims)[1],
            ]
        )
        if (volume, relative) not in self.tree.victims:
            self.tree.victims.append((volume, relative))  # later commands may address it
        return {"volume_path": str(self.tree.volumes[volume]), "relative_path": relative}

    def decoy_path(self) -> dict[str, Any]:
        """A path that names a decoy (or something outside) in a form that must not act."""
        rng = self.rng
        prefix, volume = rng.choice([("M", "media"), ("T", "torrents")])
        root = str(self.tree.volumes[volume])
        other = str(self.tree.volumes["torrents" if volume == "media" else "media"])
        relative = rng.choice(
            [
                f"decoys/{prefix}-Film{rng.choice(SURROGATES)}.mkv",
                f"decoys/{prefix}-\udc80raw.mkv",
                f"decoys/{prefix}-{rng.choice(SURROGATES)}raw.mkv",
                f"./decoys/{prefix}-Lexical.mkv",
                f"decoys//{prefix}-Lexical.mkv",
                f"decoys/{prefix}-Lexical.mkv/",
                f"decoys/../decoys/{prefix}-Lexical.mkv",
                f"/decoys/{prefix}-Lexical.mkv",
                f"{root}/decoys/{prefix}-Lexical.mkv",
                f"decoys/{prefix}-Lexical.mkv\0",
                f"decoys/{prefix}-Lexical.mkv\0.mkv",
                "../outside/x.mkv",
                "../media-evil/x.mkv",
                # Each volume's own symlinks: under the other volume these would be new names.
                *(
                    ["decoys/escape/x.mkv", "decoys/escape.mkv"]
                    if prefix == "M"
                    else ["decoys/T-escape/y.mkv", "decoys/T-escape.mkv"]
                ),
                "keep/../../outside/x.mkv",
                "decoys/" + "n" * 300 + ".mkv",
            ]
        )
        volume_path = rng.choice(
            [root] * 6
            + [
                other,  # the same name under another volume: not there
                root + "/.",
                root + "/../" + os.path.basename(root),
                root + rng.choice(SURROGATES),
                root + "\0",
                str(self.tree.outside),
                str(self.tree.evil),
                "/",
                "",
            ]
        )
        if volume_path == other and "Lexical" not in relative:
            volume_path = root  # keep decoys keyed to their own volume
        return {"volume_path": volume_path, "relative_path": relative}

    def decoy_by_identity(self) -> dict[str, Any]:
        """A valid path to a decoy, with an identity that does not match it."""
        prefix, volume = self.rng.choice([("M", "media"), ("T", "torrents")])
        root = self.tree.volumes[volume]
        status = os.lstat(root / f"decoys/{prefix}-Mismatch.mkv")
        identity = self.rng.choice(
            [
                {"inode": status.st_ino + 1, "device_id": status.st_dev},
                {"inode": status.st_ino, "device_id": status.st_dev + 1},
                {"inode": 0},
            ]
        )
        path = {"volume_path": str(root), "relative_path": f"decoys/{prefix}-Mismatch.mkv"}
        return {"media_file_id": self.text(), "paths": [path], **identity}

    def malformed_decoy_path(self) -> dict[str, Any]:
        prefix, volume = self.rng.choice([("M", "media"), ("T", "torrents")])
        root = str(self.tree.volumes[volume])
        return {"volume_path": root, "relative_path": f"decoys/{prefix}-Malformed.mkv"}

    # Commands ------------------------------------------------------------------------------

    def delete(self) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        data: dict[str, Any] = {"request_id": self.request_id(), "deletion_id": self.text()}
        if roll < 0.35:  # a well-formed command: victims and decoy forms side by side
            files = []
            for _ in range(rng.randint(1, 4)):
                choice = rng.random()
                if choice < 0.4:
                    paths = [self.victim_path() for _ in range(rng.randint(1, 2))]
                    files.append({"media_file_id": self.text(), "paths": paths})
                elif choice < 0.8:
                    paths = [self.decoy_path() for _ in range(rng.randint(1, 2))]
                    if rng.random() < 0.3:
                        paths.append(self.victim_path())
                    files.append({"media_file_id": self.text(), "paths": paths})
                else:
                    files.append(self.decoy_by_identity())
            data["files"] = files
            if rng.random() < 0.2:
                data[self.text()] = self.junk()  # unknown fields are ignored
        elif roll < 0.7:  # names a decoy validly, but is malformed somewhere
            item: dict[str, Any] = {
                "media_file_id": self.text(huge=0.02),
                "paths": [self.malformed_decoy_path()],
            }
            corruption = rng.randrange(9)
            if corruption == 0:
                data["files"] = rng.choice(["oops", "", {}, 5, True, None])
            elif corruption == 1:
                item["inode"] = rng.choice(["12", 12.5, True, [1], {}])
            elif corruption == 2:
                item["device_id"] = rng.choice(["1", False, 1.0])
            elif corruption == 3:
                item["media_file_id"] = rng.choice([1, None, [], {}])
            elif corruption == 4:
                item["paths"] = {"0": item["paths"][0]}
            elif corruption == 5:
                item["paths"].append(rng.choice([5, None, "x", {"volume_path": 1}]))
            elif corruption == 6:
                del data["deletion_id"]
            elif corruption == 7:
                data["deletion_id"] = rng.choice([1, None, [], {}])
            if corruption not in (0,):
                files = [item]
                if corruption == 8:
                    files.append(rng.choice([5, "x", [], None, {"paths": []}]))
                data["files"] = files
        else:  # random junk with a request_id
            data.update({self.text(): self.junk() for _ in range(rng.randint(0, 3))})
            if rng.random() < 0.5:
                data["files"] = self.junk()
            if rng.random() < 0.2:
                data["request_id"] = self.junk()  # maybe not a string: nothing to answer
        return {"type": "command.files.delete", "data": data}

    def hardlink(self) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()

        def pair(prefix: str, path: dict[str, Any]) -> dict[str, Any]:
            return {f"{prefix}_{key}": value for key, value in path.items()}

        data: dict[str, Any] = {"request_id": self.request_id(), "deletion_id": self.text()}
        if roll < 0.3:
            target = self.new_target()
            data.update(pair("source", self.existing_victim_path()) | pair("target", target))
        elif roll < 0.6:  # decoys as source or target, in forms that must not act
            source = self.victim_path() if rng.random() < 0.5 else self.decoy_path()
            target = self.decoy_path()
            if rng.random() < 0.5:
                source, target = target, self.new_target()
            data.update(pair("source", source) | pair("target", target))
        elif roll < 0.8:  # a valid-looking link onto a decoy, malformed elsewhere
            data.update(
                pair("source", self.victim_path()) | pair("target", self.malformed_decoy_path())
            )
            field = rng.choice(list(data))
            data[field] = rng.choice([1, None, [], {}, True])
            if field == "request_id" and rng.random() < 0.5:
                del data[field]
        else:
            data.update({self.text(): self.junk() for _ in range(rng.randint(0, 4))})
        return {"type": "command.files.hardlink", "data": data}

    def scan(self) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.1:
            return {"type": "command.scan.all", "data": {"scan_id": self.text()}}
        if roll < 0.2:
            return {"type": "command.scan.all", "data": rng.choice([{}, {"scan_id": 1}, []])}
        volume_id = rng.choice(["media", "torrents", self.text(), "media\ud800", 7, None])
        known = volume_id in self.tree.volumes
        data: dict[str, Any] = {"volume_id": volume_id, "scan_id": self.text(0 if known else 0.05)}
        if rng.random() < 0.2:
            data["scan_id"] = self.junk()
        return {"type": "command.scan", "data": data}

    def config(self) -> dict[str, Any]:
        """The config in force again, or one that is malformed for certain."""
        rng = self.rng
        paths: list[Any] = [
            {"id": name, "path": str(root), "name": self.text()}
            for name, root in self.tree.volumes.items()
        ]
        data: dict[str, Any] = {"watch_paths": paths}
        if rng.random() < 0.15:
            data["watch_paths"] = [{"id": n, "path": str(r)} for n, r in self.tree.volumes.items()]
            return {"type": "watcher.config", "data": data}
        paths.append({"id": "outside", "path": str(self.tree.outside)})
        corruption = rng.randrange(8)
        if corruption == 0:
            data["watch_paths"] = rng.choice(["all", {}, 5, None])
        elif corruption == 1:
            paths.append({"id": "bad", "path": str(self.tree.outside) + rng.choice(SURROGATES)})
        elif corruption == 2:
            paths.append({"id": "bad", "path": "relative/dir"})
        elif corruption == 3:
            paths.append({"id": "bad", "path": str(self.tree.outside) + "\0"})
        elif corruption == 4:
            paths.append({"id": "media", "path": str(self.tree.outside)})  # duplicate id
        elif corruption == 5:
            paths.append(rng.choice([5, None, "x", {"id": 1, "path": "/x"}, {"path": "/x"}]))
        elif corruption == 6:
            data["scan_on_start"] = rng.choice(["yes", 1, None])
        else:
            data["disable_deletion"] = rng.choice(["no", 0, []])
        return {"type": "watcher.config", "data": data}

    def unknown(self) -> dict[str, Any]:
        message_type = self.rng.choice(
            [
                self.text(),
                "command.files.delete ",
                "COMMAND.FILES.DELETE",
                "command.files",
                "watcher.hello",
                "watcher.auth",
                "scan.file",
                "files.delete.completed",
            ]
        )
        return {"type": message_type, "data": self.junk()}

    def raw(self) -> str | bytes:
        rng = self.rng
        return rng.choice(
            [
                "not json",
                "",
                "[]",
                "null",
                '{"type": 5}',
                '{"type": "command.files.delete", "data": "x"}',
                '{"type": "command.files.delete", "data": {"request_id": "cut"',
                "[" * rng.randint(1000, 100_000),
                '{"data": {"request_id": "no-type"}}',
                json.dumps(self.junk()),
                b'{"type": "command.scan.all", "data": {"scan_id": "binary"}}',
            ]
        )

    def frame(self) -> str | bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            message = self.delete()
        elif roll < 0.55:
            message = self.hardlink()
        elif roll < 0.67:
            message = self.scan()
        elif roll < 0.75:
            message = self.config()
        elif roll < 0.88:
            message = self.unknown()
        else:
            return self.raw()
        message.setdefault("timestamp", "2026-01-01T00:00:00Z")
        if rng.random() < 0.05:
            message["timestamp"] = self.junk()
        return json.dumps(message)  # ensure_ascii: surrogates travel as \\udXXX escapes


def _expected_reply(frame: str | bytes) -> tuple[str, str] | None:
    """(reply type, request_id as it must come back) when `frame` must be answered."""
    if isinstance(frame, bytes):
        return None
    try:
        envelope = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict) or envelope.get("type") not in REPLY_TYPES:
        return None
    data = envelope.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        return None
    return REPLY_TYPES[envelope["type"]], _as_sent(data["request_id"])


@pytest.fixture
def fuzz_base() -> Iterator[Path]:
    # tmpfs when there is one: the watcher fsyncs its results after every command.
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="scanarr-fuzz-", dir=parent))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_fuzzed_frames_against_the_running_watcher(
    dev_api: DevApiServer, nursery: trio.Nursery, fuzz_base: Path
) -> None:
    seed = int(os.environ.get("SCANARR_FUZZ_SEED", random.randrange(2**32)))
    print(f"fuzz seed {seed} (SCANARR_FUZZ_SEED={seed} replays it), {FRAMES} frames")
    rng = random.Random(seed)
    tree = Tree(fuzz_base / "lib")
    dev_api.config = tree.config()
    state_file = fuzz_base / "state" / "watcher-state.json"
    environment = settings_environment(watcher_settings(dev_api.url, state_file))
    environment["SCANARR_LOG_LEVEL"] = "info"
    keep = {key: value for key, value in os.environ.items() if not key.startswith("SCANARR_")}
    log = fuzz_base / "watch.log"
    process = await start_watch(nursery, {**keep, **environment}, log)
    try:
        with trio.fail_after(30):
            for volume in tree.volumes:
                await dev_api.wait_for_type("scan.completed", volume_id=volume)
        untouchable = tree.snapshot(tree.untouchable())
        fuzzer = Fuzzer(rng, tree)
        expected: Counter[tuple[str, str]] = Counter()
        replies = 0

        def count_replies(message: ReceivedMessage) -> None:
            nonlocal replies
            replies += message.type in REPLY_TYPES.values()

        dev_api.on_message = count_replies
        with trio.fail_after(120):
            for number in range(FRAMES):
                frame = fuzzer.frame()
                reply = _expected_reply(frame)
                if reply is not None:
                    expected[reply] += 1
                    # A bounded number of commands in flight, as an API has: the test server
                    # answers pings on the socket this loop writes to, so a flood that fills
                    # the watcher's command queue would stall both ends until the ping timeout.
                    while sum(expected.values()) - replies > IN_FLIGHT:
                        await trio.sleep(0.002)
                try:
                    await dev_api.send(frame)  # type: ignore[arg-type]  # bytes: a binary frame
                except (ConnectionClosed, RuntimeError):
                    tail = log.read_text(errors="replace")[-3000:]
                    pytest.fail(f"seed {seed}: the watcher hung up at frame {number}:\n{tail}")
            # Commands run in order: once this one is answered, every earlier one was.
            final = {
                "type": "command.files.delete",
                "data": {
                    "request_id": "final",
                    "deletion_id": "final",
                    "files": [
                        {
                            "media_file_id": "final",
                            "paths": [
                                {"volume_path": str(tree.media), "relative_path": "final/Final.mkv"}
                            ],
                        }
                    ],
                },
            }
            await dev_api.send(final)
            expected[("files.delete.completed", "final")] += 1
            last = await dev_api.wait_for_type("files.delete.completed", request_id="final")
        assert process.returncode is None, f"seed {seed}: the watcher exited"
        assert len(dev_api.connections) == 1 and dev_api.connected, f"seed {seed}: reconnected"
        # The config in force is still the original one, and commands still work.
        assert last.data["results"][0]["status"] == "deleted", (seed, last.data)
        assert not (tree.media / "final/Final.mkv").exists()
        answered = Counter(
            (message.type, message.data.get("request_id"))
            for message in dev_api.messages
            if message.type in REPLY_TYPES.values()
        )
        missing = expected - answered
        extra = answered - expected
        assert not missing, f"seed {seed}: not answered: {list(missing)[:5]}"
        assert not extra, f"seed {seed}: answered more than once or unasked: {list(extra)[:5]}"
        for message in dev_api.messages:
            assert_all_text(json.loads(message.raw))
        after = tree.snapshot(tree.untouchable())
        changed = [
            path
            for path in sorted(set(untouchable) | set(after))
            if untouchable.get(path) != after.get(path)
        ]
        assert not changed, f"seed {seed}: touched what no frame validly addressed: {changed[:5]}"
        deleted = sum(
            1
            for message in dev_api.of_type("files.delete.completed")
            for result in message.data.get("results", [])
            if result.get("status") == "deleted"
        )
        linked = len(dev_api.of_type("files.hardlink.completed", status="created"))
        print(f"{sum(expected.values())} commands answered: {deleted} deleted, {linked} linked")
        text = log.read_text(errors="replace")
        where = text.find("Traceback")
        assert where < 0, f"seed {seed}: {text[max(where - 500, 0) : where + 2500]}"
    finally:
        process.terminate()
        with trio.fail_after(10):
            await process.wait()
