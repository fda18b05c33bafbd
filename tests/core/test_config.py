"""Settings from the environment (PROTOCOL.md §1)."""

from __future__ import annotations

import logging

import pytest

from scanarr.config import (
    DEFAULT_STATE_FILE,
    SettingsError,
    load_settings,
    parse_api_url,
    parse_duration,
)

BASE = {"SCANARR_API_URL": "ws://localhost:8081/ws/watcher", "SCANARR_AUTH_TOKEN": "s3cret"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("1m0.5s", 60.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 s", "-5s", "5sec", "s", "1h-30m", "five"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.api_url.host == "localhost"
    assert settings.api_url.port == 8081
    assert settings.api_url.resource == "/ws/watcher"
    assert not settings.api_url.secure
    assert settings.reconnect_delay == 5.0
    assert settings.ping_interval == 30.0
    assert settings.log_level == "info"
    assert settings.state_file == DEFAULT_STATE_FILE
    assert settings.hello_timeout == 30.0
    assert settings.status_interval == 60.0
    assert settings.reconnect_max_delay == 60.0
    assert settings.rejected_max_delay == 300.0


def test_every_variable_is_read() -> None:
    settings = load_settings(
        {
            **BASE,
            "SCANARR_API_URL": "wss://api.example.org/ws/watcher?v=2",
            "SCANARR_RECONNECT_DELAY": "500ms",
            "SCANARR_PING_INTERVAL": "10s",
            "SCANARR_LOG_LEVEL": "DEBUG",
            "SCANARR_STATE_FILE": "/tmp/x/state.json",
        }
    )
    assert settings.api_url.secure and settings.api_url.port == 443
    assert settings.api_url.resource == "/ws/watcher?v=2"
    assert settings.reconnect_delay == 0.5
    assert settings.ping_interval == 10.0
    assert settings.log_level == "debug"
    assert settings.state_file == "/tmp/x/state.json"


def test_overrides_win_over_the_environment() -> None:
    settings = load_settings(BASE, {"SCANARR_PING_INTERVAL": "1s", "SCANARR_LOG_LEVEL": None})
    assert settings.ping_interval == 1.0
    assert settings.log_level == "info"


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"SCANARR_AUTH_TOKEN": "x"}, "SCANARR_API_URL"),
        ({"SCANARR_API_URL": "ws://h/ws"}, "SCANARR_AUTH_TOKEN"),
        ({**BASE, "SCANARR_AUTH_TOKEN": "   "}, "SCANARR_AUTH_TOKEN"),
        ({**BASE, "SCANARR_API_URL": "http://h/ws"}, "SCANARR_API_URL"),
        ({**BASE, "SCANARR_API_URL": "ws://:80/ws"}, "SCANARR_API_URL"),
        ({**BASE, "SCANARR_API_URL": "ws://h:99999/ws"}, "SCANARR_API_URL"),
        ({**BASE, "SCANARR_RECONNECT_DELAY": "soon"}, "SCANARR_RECONNECT_DELAY"),
        ({**BASE, "SCANARR_PING_INTERVAL": "0"}, "SCANARR_PING_INTERVAL"),
        ({**BASE, "SCANARR_LOG_LEVEL": "loud"}, "SCANARR_LOG_LEVEL"),
        ({**BASE, "SCANARR_HELLO_TIMEOUT": "1x"}, "SCANARR_HELLO_TIMEOUT"),
    ],
)
def test_bad_settings_name_the_variable(environment: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environment)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable + ":")


def test_token_is_not_in_repr() -> None:
    settings = load_settings(BASE)
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings)


def test_url_with_default_ports() -> None:
    assert parse_api_url("ws://nas/ws").port == 80
    assert parse_api_url("wss://nas").resource == "/"


def test_log_levels_map_to_logging() -> None:
    from scanarr.config import LOG_LEVELS

    assert LOG_LEVELS["warning"] == logging.WARNING
