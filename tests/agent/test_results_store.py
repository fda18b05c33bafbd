"""The stored replies of file commands: what a restart loads, what is written."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from scanarr.protocol import FilesHardlinkCompleted, converter, is_text
from scanarr.results_store import ResultStore

HARDLINK = "command.files.hardlink"


def _hardlink_entry(request_id: str) -> dict[str, Any]:
    reply = FilesHardlinkCompleted(
        request_id=request_id, deletion_id="d", status="failed", error="x"
    )
    return {"type": HARDLINK, "request_id": request_id, "reply": converter.unstructure(reply)}


@pytest.mark.parametrize(
    "document",
    [b"{", b"[]", b'{"results": "none"}', b"\xff\xfe", b'{"results": {"a": 1}}'],
)
def test_an_unreadable_file_loads_as_empty(
    tmp_path: Path, document: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(document)
    store = ResultStore(path, 10)
    assert store.get(HARDLINK, "r") is None
    assert "command results" in caplog.text


def test_bad_entries_are_dropped_one_by_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.json"
    entries: list[Any] = [
        ["not", "an", "object"],
        {"type": HARDLINK, "request_id": "no-reply"},
        {"type": "command.reboot", "request_id": "odd", "reply": {}},
        {"type": HARDLINK, "request_id": 7, "reply": _hardlink_entry("x")["reply"]},
        _hardlink_entry("good"),
    ]
    path.write_text(json.dumps({"results": entries}))
    with caplog.at_level(logging.WARNING):
        store = ResultStore(path, 10)
    assert store.get(HARDLINK, "good") == _hardlink_entry("good")
    assert store.get(HARDLINK, "no-reply") is None
    assert "dropped 4 of 5 stored command results" in caplog.text


def test_what_is_stored_can_be_sent(tmp_path: Path) -> None:
    path = tmp_path / "state" / "results.json"
    store = ResultStore(path, 10)
    entry = _hardlink_entry("r\ud800")
    entry["reply"]["error"] = "invalid_path: /v/\udc80.mkv"
    store.put(HARDLINK, "r\ud800", {"reply": entry["reply"]})
    raw = path.read_bytes()
    document = json.loads(raw.decode("utf-8"))  # strict UTF-8
    stored = document["results"][0]
    assert all(is_text(text) for text in (stored["request_id"], stored["reply"]["error"]))
    assert stored["reply"]["error"] == "invalid_path: /v/\ufffd.mkv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Looked up as the decoded command carries it, before and after a restart.
    assert store.get(HARDLINK, "r\ufffd") == stored
    assert ResultStore(path, 10).get(HARDLINK, "r\ufffd") == stored
