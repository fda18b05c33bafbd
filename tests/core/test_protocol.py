"""Protocol models: every type round-trips, bad input is classified, never crashes."""

from __future__ import annotations

import json
import os
import re

import pytest

from scanarr.protocol import (
    MESSAGE_TYPES,
    CommandFilesDelete,
    CommandScan,
    DeleteFile,
    DeletePath,
    MalformedMessage,
    ScanFile,
    UnknownMessageType,
    WatcherAuth,
    WatcherConfig,
    WatchPath,
    decode,
    encode,
    storage_json,
    utc_timestamp,
)


def test_every_type_is_in_the_table_under_its_wire_name() -> None:
    for wire_type, cls in MESSAGE_TYPES.items():
        assert wire_type == cls.TYPE
    assert {"watcher.hello", "watcher.config", "scan.file", "command.scan.all"} <= set(
        MESSAGE_TYPES
    )


def test_round_trip_of_a_nested_command() -> None:
    command = CommandFilesDelete(
        request_id="r1",
        deletion_id="d1",
        files=[
            DeleteFile(
                media_file_id="m1",
                paths=[DeletePath(volume_path="/data", relative_path="a/b.mkv")],
                inode=12,
                device_id=34,
            )
        ],
    )
    text = encode(command)
    envelope = json.loads(text)
    assert envelope["type"] == "command.files.delete"
    assert decode(text) == command


def test_timestamps_are_rfc3339_utc_with_z() -> None:
    envelope = json.loads(encode(CommandScan(volume_id="v", scan_id="s")))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["timestamp"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_timestamp())


def test_config_defaults_and_unknown_fields() -> None:
    config = decode(
        json.dumps(
            {
                "type": "watcher.config",
                "data": {
                    "watch_paths": [{"id": "v1", "path": "/m", "name": "M", "color": "red"}],
                    "future_option": 1,
                },
            }
        )
    )
    assert config == WatcherConfig(watch_paths=[WatchPath(id="v1", path="/m", name="M")])
    assert isinstance(config, WatcherConfig)
    assert config.scan_extensions == ["mkv", "mp4", "avi", "m4v", "ts", "wmv"]
    assert not config.scan_on_start and not config.disable_deletion


def test_extensions_are_lower_case_without_dot() -> None:
    config = WatcherConfig(scan_extensions=["MKV", ".Mp4"])
    assert config.scan_extensions == ["mkv", "mp4"]


def test_unknown_type() -> None:
    with pytest.raises(UnknownMessageType) as caught:
        decode('{"type": "command.reboot", "data": {}}')
    assert caught.value.message_type == "command.reboot"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"data": {}}',
        '{"type": 7}',
        '{"type": "command.scan", "data": []}',
        '{"type": "command.scan", "data": {"volume_id": "v"}}',
        '{"type": "command.scan", "data": {"volume_id": 1, "scan_id": "s"}}',
    ],
)
def test_malformed_frames(text: str) -> None:
    with pytest.raises(MalformedMessage):
        decode(text)


def test_malformed_command_keeps_its_request_id() -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode(
            '{"type": "command.files.delete",'
            ' "data": {"request_id": "r9", "deletion_id": "d", "files": "all"}}'
        )
    assert caught.value.request_id == "r9"
    assert caught.value.message_type == "command.files.delete"


def test_no_silent_coercion() -> None:
    data = {
        "scan_id": "s",
        "volume_id": "v",
        "volume_path": "/m",
        "relative_path": "a.mkv",
        "filename": "a.mkv",
        "inode": "12",
        "device_id": 1,
        "size_bytes": 1,
        "hardlink_count": 1,
        "mod_time": "2024-01-01T00:00:00Z",
    }
    with pytest.raises(MalformedMessage):
        decode(json.dumps({"type": "scan.file", "data": data}))
    data["inode"] = True
    with pytest.raises(MalformedMessage):
        decode(json.dumps({"type": "scan.file", "data": data}))
    data["inode"] = 12
    assert isinstance(decode(json.dumps({"type": "scan.file", "data": data})), ScanFile)


@pytest.mark.parametrize(
    "files", ["oops", "", {}, {"media_file_id": "m", "paths": []}, [5], [{"paths": "", "x": 1}]]
)
def test_arrays_and_objects_only_from_json_arrays_and_objects(files: object) -> None:
    frame = {"type": "command.files.delete", "data": {"request_id": "r", "deletion_id": "d"}}
    frame["data"]["files"] = files  # type: ignore[index]
    with pytest.raises(MalformedMessage) as raised:
        decode(json.dumps(frame))
    assert raised.value.request_id == "r"


def _delete_frame(request_id: str, relative_path: str) -> str:
    return json.dumps(
        {
            "type": "command.files.delete",
            "data": {
                "request_id": request_id,
                "deletion_id": "d\0",
                "files": [
                    {
                        "media_file_id": "m\udfff",
                        "paths": [{"volume_path": "/v", "relative_path": relative_path}],
                    }
                ],
            },
        }
    )


def test_text_with_a_surrogate_is_decoded_replaced() -> None:
    command = decode(_delete_frame("r\ud800", "a.mkv"))
    assert isinstance(command, CommandFilesDelete)
    assert command.request_id == "r\ufffd"
    assert command.deletion_id == "d\0"  # NUL is valid text: kept
    assert command.files[0].media_file_id == "m\ufffd"
    with pytest.raises(MalformedMessage) as raised:
        decode(json.dumps({"type": "command.files.delete", "data": {"request_id": "\ud800"}}))
    assert raised.value.request_id == "\ufffd"


@pytest.mark.parametrize("relative_path", ["a\ud800.mkv", "\udc80.mkv", "d/\udcff/x.mkv"])
def test_a_command_path_with_a_surrogate_names_no_file(relative_path: str) -> None:
    command = decode(_delete_frame("r", relative_path))
    assert isinstance(command, CommandFilesDelete)
    decoded = command.files[0].paths[0].relative_path
    assert "\ufffd" not in decoded  # never turned into another, possibly real, name
    with pytest.raises(UnicodeEncodeError):
        os.fsencode(decoded)  # what every file-system call does first
    # Echoed in a reply, it is sent replaced.
    assert "\ufffd" in encode(command)
    encode(command).encode("utf-8")


def test_a_config_path_with_a_surrogate_makes_the_config_malformed() -> None:
    frame = {
        "type": "watcher.config",
        "data": {"watch_paths": [{"id": "a", "path": "/ok"}, {"id": "b", "path": "/x\udc80"}]},
    }
    with pytest.raises(MalformedMessage, match=r"not valid Unicode text.*watch_paths\[1\]\.path"):
        decode(json.dumps(frame))
    frame["data"]["watch_paths"][1]["path"] = "/x"  # type: ignore[index]
    config = decode(json.dumps(frame))
    assert isinstance(config, WatcherConfig)


def test_encode_always_gives_utf8_text() -> None:
    message = ScanFile(
        scan_id="s\ud800",
        volume_id="v",
        volume_path="/v",
        relative_path="\udc80é.mkv",
        filename="é",
        inode=1,
        device_id=2,
        size_bytes=3,
        hardlink_count=1,
        mod_time="t",
    )
    text = encode(message)
    text.encode("utf-8")
    data = json.loads(text)["data"]
    assert data["scan_id"] == "s\ufffd"
    assert data["relative_path"] == "\ufffdé.mkv"


def test_storage_json_keeps_every_string_exactly() -> None:
    value = {"k\ud800": ["é", "\udc80", "\0", "x" * 10_000]}
    data = storage_json(value)
    assert json.loads(data.decode("utf-8")) == value
    assert "é".encode() in data  # readable, not \u00e9


@pytest.mark.parametrize("text", ["[" * 100_000, '{"type": "x", "data": ' + "[" * 100_000])
def test_deeply_nested_json_is_malformed_not_a_crash(text: str) -> None:
    with pytest.raises(MalformedMessage):
        decode(text)


def test_a_watcher_auth_status_outside_the_protocol_is_malformed() -> None:
    """Only "authenticated" and "rejected" exist (§2): anything else is refused at decoding,
    never taken for either."""
    rejected = decode('{"type": "watcher.auth", "data": {"status": "rejected"}}')
    assert isinstance(rejected, WatcherAuth) and rejected.status == "rejected"
    with pytest.raises(MalformedMessage, match="status") as raised:
        decode('{"type": "watcher.auth", "data": {"status": "Authenticated", "watcher_id": "w"}}')
    assert raised.value.message_type == "watcher.auth"
