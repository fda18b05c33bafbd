"""Differential test of the native scan frames (`Batch.json_frames`) against the reference path.

Every frame of a batch, unmasked and parsed by wsproto (the reference decoder), must be exactly
``protocol.encode(ScanFile(...))`` of its file, over generated names: unicode, quotes,
backslashes, control characters, U+2028; names that are not UTF-8 are skipped, as by
`json_records`.
"""

from __future__ import annotations

import datetime
import json
import os
import random
from pathlib import Path

import attrs
import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from helpers.messages import completed_scan
from scanarr import _native
from scanarr.agent.scan_walk import ProgressText, scan_file_head, scan_file_prefix
from scanarr.protocol import (
    SCAN_FILE_SCAN_FIELDS,
    ScanFile,
    ScanProgress,
    WatcherHello,
    encode,
    frame_type,
)

SCAN_ID = 'scan "1" \\ é'
VOLUME_ID = "vol\u2028ume\x01\ud800"  # a lone surrogate goes out as U+FFFD
TIMESTAMP = "2026-12-03T14:00:00.123Z"
# Characters names are drawn from: every control character but NUL, quotes, backslash, DEL,
# Latin-1, BMP letters, line/paragraph separators, astral emoji.
ALPHABET = (
    [chr(code) for code in range(1, 0x20)]
    + list("\"'\\ {}[]:,.-_()#%&")
    + ["\x7f", "é", "ß", "ñ", "€", "中", "文", "\u2028", "\u2029", "\ufeff", "😀", "🎬", "𝄞"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789")
)
MTIMES_NS = [0, 1, 123_456_789, 500_000_000, 1_700_000_000_000_000_000, 1_700_000_000_999_999_999]


def reference_time(ns: int) -> str:
    """RFC 3339 UTC, fraction only when non-zero, trailing zeros trimmed (the protocol's rule)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def generated_names(count: int, seed: int) -> list[str]:
    chooser = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        name = "".join(chooser.choice(ALPHABET) for _ in range(chooser.randint(1, 40)))
        if name.startswith("."):
            name = "x" + name
        names.add(name + ".mkv")
    return sorted(names)


# Volume roots: quotes and accents; a byte that is not UTF-8 (a surrogate in the str path,
# sent as U+FFFD in volume_path by both paths).
VOLUME_NAMES = ['Vol "ume" é', os.fsdecode(b"Vol\xffume")]


def make_tree(root: Path, names: list[str], volume_name: str = VOLUME_NAMES[0]) -> Path:
    volume = root / volume_name
    for number, name in enumerate(names):
        directory = volume / f"d{number % 7}" / "sub\\dir"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_bytes(b"x" * (number % 5))
        os.utime(path, ns=(MTIMES_NS[number % 6], MTIMES_NS[number % 6]))
    # Names that are not UTF-8 (surrogate-escaped bytes in Python): skipped, never framed.
    for raw in (b"bad\xff.mkv", b"\xc3(.mkv", b"half\xed\xa0\x80.mkv"):
        with open(os.path.join(os.fsencode(volume), raw), "wb"):
            pass
    return volume


def head(volume_path: str) -> str:
    return scan_file_head(TIMESTAMP, scan_file_prefix(SCAN_ID, VOLUME_ID, volume_path))


def expected_text(volume_path: str, record: _native.FileRecord) -> str:
    relative_path = record.relative_path
    filename = record.filename
    assert isinstance(relative_path, str) and isinstance(filename, str)
    return encode(
        ScanFile(
            scan_id=SCAN_ID,
            volume_id=VOLUME_ID,
            volume_path=volume_path,
            relative_path=relative_path,
            filename=filename,
            inode=record.inode,
            device_id=record.device_id,
            size_bytes=record.size_bytes,
            hardlink_count=record.hardlink_count,
            mod_time=reference_time(record.mtime_ns),
        ),
        TIMESTAMP,
    )


def decode_masked(data: bytes) -> list[str]:
    """The texts of client frames, unmasked and checked by wsproto's server-side parser."""
    parser = FrameProtocol(client=False, extensions=[])
    parser.receive_bytes(data)
    texts: list[str] = []
    for frame in parser.received_frames():
        assert frame.opcode is Opcode.TEXT
        assert frame.frame_finished and frame.message_finished
        assert isinstance(frame.payload, str)
        texts.append(frame.payload)
    return texts


def batches(volume: Path, batch_size: int) -> list[_native.Batch]:
    walker = _native.Walker([str(volume)], batch_size=batch_size)
    found = []
    while (batch := walker.next_batch(5.0)) is not None:
        found.append(batch)
    assert walker.finished and not walker.cancelled
    return found


@pytest.mark.parametrize(
    ("seed", "volume_name"), [(1, VOLUME_NAMES[0]), (2, VOLUME_NAMES[1]), (3, VOLUME_NAMES[0])]
)
def test_every_frame_decodes_to_the_protocol_encoding(
    tmp_path: Path, seed: int, volume_name: str
) -> None:
    volume = make_tree(tmp_path, generated_names(300, seed), volume_name)
    volume_path = str(volume)
    sent: list[str] = []
    skipped: list[str | bytes] = []
    for batch in batches(volume, batch_size=64):
        data, not_utf8 = batch.json_frames([head(volume_path)], "}}", masked=True)
        skipped += [batch.files[index].relative_path for index in not_utf8]
        texts = decode_masked(data)
        encoded = [file for index, file in enumerate(batch.files) if index not in set(not_utf8)]
        assert texts == [expected_text(volume_path, record) for record in encoded]
        sent += texts
    assert len(sent) == 300
    assert sorted(os.fsencode(name).rpartition(b"/")[2] for name in skipped) == sorted(
        [b"bad\xff.mkv", b"\xc3(.mkv", b"half\xed\xa0\x80.mkv"]
    )


def test_native_frames_equal_the_plain_text_frames(tmp_path: Path) -> None:
    """The batch path and the generic path frame the same texts the same way (unmasked, the
    bytes are comparable)."""
    volume = make_tree(tmp_path, generated_names(100, 9))
    for batch in batches(volume, batch_size=30):
        records, _ = batch.json_records([head(str(volume))], "}}")
        data, _ = batch.json_frames([head(str(volume))], "}}", masked=False)
        assert data == _native.text_frames(records, masked=False)


def test_progress_frames_follow_every_nth_file(tmp_path: Path) -> None:
    volume = make_tree(tmp_path, generated_names(50, 4))
    files_before = 5
    for batch in batches(volume, batch_size=1000):
        data, not_utf8 = batch.json_frames(
            [head(str(volume))],
            "}}",
            masked=True,
            files_before=files_before,
            progress_every=7,
            progress=lambda files: f'{{"progress":{files}}}',
        )
        records, _ = batch.json_records([head(str(volume))], "}}")
        expected: list[str] = []
        for number, record in enumerate(records, start=files_before + 1):
            expected.append(record)
            if number % 7 == 0:
                expected.append(f'{{"progress":{number}}}')
        assert decode_masked(data) == expected
        assert len(not_utf8) == 3


def test_progress_needs_its_callable(tmp_path: Path) -> None:
    volume = make_tree(tmp_path, ["a.mkv"])
    (batch,) = batches(volume, batch_size=10)
    with pytest.raises(ValueError, match="progress"):
        batch.json_frames(["{"], "}", masked=True, progress_every=3)


def test_scan_file_fields_are_split_between_the_scan_and_the_native_encoder() -> None:
    """`protocol.ScanFile` is the one list of a scan.file's fields: the per-scan head and the
    native per-file encoder together write exactly its fields, in its order."""
    fields = tuple(field.name for field in attrs.fields(ScanFile))
    assert fields == SCAN_FILE_SCAN_FIELDS + _native.SCAN_FILE_FIELDS


def test_native_frames_carry_the_scan_file_members_in_order(tmp_path: Path) -> None:
    volume = make_tree(tmp_path, generated_names(20, 5))
    (batch,) = batches(volume, batch_size=100)
    data, _ = batch.json_frames([head(str(volume))], "}}", masked=True)
    fields = [field.name for field in attrs.fields(ScanFile)]
    for text in decode_masked(data):
        message = json.loads(text)
        assert list(message) == ["type", "timestamp", "data"]
        assert message["type"] == ScanFile.TYPE
        assert list(message["data"]) == fields


def test_progress_frames_are_the_protocol_encoding() -> None:
    text = ProgressText(SCAN_ID, VOLUME_ID)(TIMESTAMP, 12, 300)
    progress = ScanProgress(
        scan_id=SCAN_ID, volume_id=VOLUME_ID, files_scanned=300, dirs_scanned=12
    )
    assert text == encode(progress, TIMESTAMP)


def test_frame_type_reads_every_kind_of_frame() -> None:
    """Metrics count frames by `frame_type`: it reads the type of `encode`'s frames and of the
    scan's native ones."""
    completed = completed_scan()
    hello = WatcherHello(hostname="h", version="1", os="linux", arch="amd64", token="t")
    for message in (completed, hello):
        assert frame_type(encode(message)) == message.TYPE
    assert frame_type(head("/v") + '"relative_path":"a"}}') == ScanFile.TYPE
    assert frame_type('{"data":{},"type":"scan.file"}') == "unknown"
    assert frame_type("") == "unknown"
