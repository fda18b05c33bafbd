"""Log lines: human and JSON formats, volume names, the token never written (scanarr.logs)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from helpers.agent import TOKEN, one_volume
from scanarr.config import SettingsError, parse_api_url
from scanarr.dev_api import DevApiServer
from scanarr.logs import (
    REDACTED,
    configure_logging,
    log_format_from_env,
    volume_logger,
)

log = logging.getLogger("scanarr.test")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers (pytest's capture among them): put them
    back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = output.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def test_log_format_from_env() -> None:
    assert log_format_from_env({}) == "human"
    assert log_format_from_env({"SCANARR_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(SettingsError) as error:
        log_format_from_env({"SCANARR_LOG_FORMAT": "logfmt"})
    assert error.value.variable == "SCANARR_LOG_FORMAT"


def test_json_lines_parse_with_fields_and_tracebacks(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    log.info("scan %s of volume %s started", "s1", "movies", extra={"volume_id": "movies"})
    log.warning('a "quoted" name\nand a second line: %s', "é")
    try:
        raise OSError(5, "Input/output error")
    except OSError:
        log.exception("cannot read")
    records = json_lines(stream.getvalue())
    assert len(records) == 3
    first, second, third = records
    assert first["message"] == "scan s1 of volume movies started"
    assert first["volume_id"] == "movies"
    assert first["level"] == "info" and first["logger"] == "scanarr.test"
    assert first["time"].endswith("Z")
    assert second["message"] == 'a "quoted" name\nand a second line: é'
    assert third["level"] == "error"
    assert "OSError: [Errno 5] Input/output error" in third["exception"]


def test_human_lines_name_the_volume(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", "human", stream=stream)
    movies = volume_logger(log, "movies", "/data/media/movies")
    movies.info("root is back")
    movies.warning("scan of volume movies failed")  # already named: not repeated
    movies.info("with more context", extra={"scan_id": "s1"})
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("INFO scanarr.test: root is back [volume=movies]")
    assert lines[1].endswith("scan of volume movies failed")
    assert lines[2].endswith("with more context [volume=movies]")


def test_the_volume_logger_merges_extra_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    volume_logger(log, "tv").info("rescan", extra={"reason": "overflow"})
    (record,) = json_lines(stream.getvalue())
    assert record["volume_id"] == "tv" and record["reason"] == "overflow"


@pytest.mark.parametrize("log_format", ["human", "json"])
@pytest.mark.parametrize("token", [TOKEN, 'tok"en\\with\tescapes'])
def test_the_token_never_appears(restore_logging: None, log_format: str, token: str) -> None:
    stream = io.StringIO()
    configure_logging("debug", log_format, secrets=[token], stream=stream)
    log.info("header Bearer %s", token)
    log.info(f"formatted in advance: {token}")
    log.info("in an extra field", extra={"authorization": f"Bearer {token}"})
    log.info("in a container argument: %r", {"token": token})
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        log.exception("failure")
    log.info("with a stack", stack_info=True, extra={"note": token})
    output = stream.getvalue()
    assert token not in output
    if log_format == "json":
        escaped = json.dumps(token)[1:-1]
        assert escaped not in output
        json_lines(output)
    # message, pre-formatted message, %r argument, exception (JSON adds the extra fields)
    assert output.count(REDACTED) >= (6 if log_format == "json" else 4)


async def test_a_running_watcher_logs_json_without_the_token(
    restore_logging: None,
    dev_api: DevApiServer,
    start_watcher: Any,
    make_volume: Any,
) -> None:
    """Debug level, a whole handshake and scan: every line parses, none carries the token, and
    the lines about the volume name it."""
    root = make_volume("movies", {"A/a.mkv": b"1", "b.mkv": b"22"})
    dev_api.config = one_volume("movies", root, scan_on_start=True)
    stream = io.StringIO()
    configure_logging("debug", "json", secrets=[TOKEN], stream=stream)
    await start_watcher()
    with trio.fail_after(10):
        await dev_api.wait_for_type("scan.completed", volume_id="movies")
    output = stream.getvalue()
    assert TOKEN not in output
    records = json_lines(output)
    about_the_volume = [record for record in records if str(root) in record["message"]]
    assert about_the_volume
    for record in about_the_volume:
        assert "movies" in record["message"] or record.get("volume_id") == "movies", record


def test_redact_url_keeps_query_values_and_user_info_out() -> None:
    from scanarr.logs import redact_url

    assert redact_url("ws://127.0.0.1:8081/ws/watcher") == "ws://127.0.0.1:8081/ws/watcher"
    assert (
        redact_url("wss://user:pw-secret@api.example:443/ws?token=q-secret&x#frag-secret")
        == f"wss://api.example:443/ws?token={REDACTED}&{REDACTED}#{REDACTED}"
    )


def test_a_short_token_does_not_mangle_every_line(restore_logging: None) -> None:
    """The scrub is a backstop for tokens of 8+ characters; a shorter one is kept out of the
    records where they are produced instead (a hello logged by mistake shows no token)."""
    from scanarr.agent.session import watcher_hello

    stream = io.StringIO()
    configure_logging("debug", "human", secrets=["t", "Zq7"], stream=stream)
    log.warning("watch limit reached on volume %s", "tv")
    log.debug("hello: %r", watcher_hello("Zq7"))
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("watch limit reached on volume tv")
    assert "Zq7" not in lines[1] and "watcher.hello" not in lines[1]
    assert REDACTED not in stream.getvalue()


@pytest.mark.parametrize("log_format", ["human", "json"])
async def test_a_watcher_with_a_short_token_logs_intact_lines_without_its_secrets(
    restore_logging: None,
    serve_dev_api: Any,
    start_watcher: Any,
    make_volume: Any,
    log_format: str,
) -> None:
    """A short token (not scrubbed) and a secret in the URL's query: neither reaches a line,
    because neither is put into a record; the lines themselves stay whole."""
    short_token = "t"
    server = await serve_dev_api(token=short_token)
    root = make_volume("movies", {"A/a.mkv": b"1"})
    server.config = one_volume("movies", root, scan_on_start=True)
    url = server.url + "?watcher_key=query-secret-42"
    stream = io.StringIO()
    configure_logging("debug", log_format, secrets=[short_token], stream=stream)
    await start_watcher(server=server, auth_token=short_token, api_url=parse_api_url(url))
    with trio.fail_after(10):
        await server.wait_for_type("scan.completed", volume_id="movies")
    output = stream.getvalue()
    assert server.connections[0].authorization == f"Bearer {short_token}"
    assert "query-secret-42" not in output
    assert "Bearer" not in output and "watcher.hello" not in output
    assert REDACTED in output  # only where the URL's query value was
    assert output.count(REDACTED) == output.count(f"watcher_key={REDACTED}")
    expected = (
        f"connected to ws://{server.host}:{server.port}/ws/watcher?watcher_key={REDACTED} "
        "as Development watcher (dev-watcher)"
    )
    assert expected in output
