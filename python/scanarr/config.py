"""The watcher's settings, read from the environment (PROTOCOL.md §1) and optional overrides.

`load_settings` validates everything before any connection is attempted and raises
`SettingsError`, which names the offending variable; the CLI prints it on one line and exits 2.

Besides the variables of §1, a few timings the protocol fixes (30 s hello timeout, 60 s status
period, 5 s progress period, 5 s shutdown deadline) can be shortened through extra
``SCANARR_*`` variables, so an operator on a slow link — and the test suite — can tune them.
Durations are Go-style: ``500ms``, ``5s``, ``2m``, ``1h30m``.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Collection, Mapping

import attrs

DEFAULT_STATE_FILE = "/var/lib/scanarr/watcher-state.json"
LOG_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN, as Go accepts
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class SettingsError(ValueError):
    """A setting that cannot be used; `variable` names where it came from."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def choice_from_env(
    environ: Mapping[str, str],
    variable: str,
    choices: Collection[str],
    default: str,
    *,
    expected: str | None = None,
) -> str:
    """`variable` lower-cased, `default` when unset or blank. Raises SettingsError unless it is
    one of `choices` (`expected` words them in the message, else "one of" lists them)."""
    value = environ.get(variable, "").strip().lower() or default
    if value not in choices:
        wanted = expected if expected is not None else f"one of {', '.join(choices)}"
        raise SettingsError(variable, f"expected {wanted}, got {value!r}")
    return value


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string (``1h30m``, ``500ms``, ``0``). Raises ValueError.

    Negative durations are refused: every duration here is a delay or a period.
    """
    value = text.strip()
    if value == "0":
        return 0.0
    if not value:
        raise ValueError("empty duration")
    if value.startswith("+"):
        value = value[1:]
    position = 0
    total = 0.0
    while position < len(value):
        match = _DURATION_PART.match(value, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (examples: 500ms, 5s, 2m, 1h30m)")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total


@attrs.frozen
class ApiUrl:
    """The parsed ``SCANARR_API_URL``: what trio-websocket needs to connect."""

    url: str
    host: str
    port: int
    resource: str  # path and query, at least "/"
    secure: bool


def parse_api_url(text: str) -> ApiUrl:
    """Validate a ``ws://`` or ``wss://`` URL. Raises ValueError."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"invalid URL: {error}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"expected a ws:// or wss:// URL, got {text!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {text!r}")
    if parts.username or parts.password:
        raise ValueError("credentials in the URL are not supported; use SCANARR_AUTH_TOKEN")
    secure = parts.scheme == "wss"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return ApiUrl(
        url=text.strip(),
        host=parts.hostname,
        port=port if port is not None else (443 if secure else 80),
        resource=resource,
        secure=secure,
    )


@attrs.frozen
class Settings:
    """Everything the watcher needs before it connects. The token is kept out of `repr`."""

    api_url: ApiUrl
    auth_token: str = attrs.field(repr=False, default="")  # "" only in V1.5 (PROTOCOL-V15.md)
    reconnect_delay: float = 5.0
    ping_interval: float = 30.0
    log_level: str = "info"
    state_file: str = DEFAULT_STATE_FILE
    # Timings fixed by the protocol, adjustable for slow links and tests.
    hello_timeout: float = 30.0  # §2: no auth/config within this → close and reconnect
    status_interval: float = 60.0  # §9: periodic watcher.status
    progress_interval: float = 5.0  # §4: scan.progress at least this often
    shutdown_timeout: float = 5.0  # SIGTERM → closed and saved within this
    reconnect_max_delay: float = 60.0  # §9 cap of the backoff
    rejected_max_delay: float = 300.0  # §2 cap of the backoff after a rejected token
    protocol: str = "auto"  # SCANARR_PROTOCOL: auto, v2 or v1.5 (scanarr.agent.dialect)
    watcher_id: str | None = None  # SCANARR_WATCHER_ID (V1.5 identity; sent in V2 hellos too)


PROTOCOLS = ("auto", "v2", "v1.5")
# (variable, alias): the Go watcher's name of a variable, used when the variable is not set.
VARIABLE_ALIASES: tuple[tuple[str, str], ...] = (
    ("SCANARR_API_URL", "SCANARR_WS_URL"),
    ("SCANARR_STATE_FILE", "SCANARR_STATE_PATH"),
)

# (attribute, variable, default text) of every duration setting.
DURATION_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("reconnect_delay", "SCANARR_RECONNECT_DELAY", "5s"),
    ("ping_interval", "SCANARR_PING_INTERVAL", "30s"),
    ("hello_timeout", "SCANARR_HELLO_TIMEOUT", "30s"),
    ("status_interval", "SCANARR_STATUS_INTERVAL", "60s"),
    ("progress_interval", "SCANARR_PROGRESS_INTERVAL", "5s"),
    ("shutdown_timeout", "SCANARR_SHUTDOWN_TIMEOUT", "5s"),
    ("reconnect_max_delay", "SCANARR_RECONNECT_MAX_DELAY", "60s"),
    ("rejected_max_delay", "SCANARR_REJECTED_MAX_DELAY", "5m"),
)


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Settings from `environ` (default: os.environ), where `overrides` (variable name → text,
    e.g. from command-line flags; None means "not given") win. Raises SettingsError."""
    source: dict[str, str] = dict(os.environ if environ is None else environ)
    for variable, text in (overrides or {}).items():
        if text is not None:
            source[variable] = text

    def required(variable: str) -> str:
        value = source.get(variable, "").strip()
        if not value:
            raise SettingsError(variable, "is required and not set")
        return value

    # The Go watcher's names (PROTOCOL-V15.md) are aliases, so its environment file works as is.
    for variable, alias in VARIABLE_ALIASES:
        if not source.get(variable, "").strip() and source.get(alias, "").strip():
            source[variable] = source[alias]
    protocol = (source.get("SCANARR_PROTOCOL", "").strip() or "auto").lower()
    if protocol not in PROTOCOLS:
        raise SettingsError(
            "SCANARR_PROTOCOL", f"expected one of {', '.join(PROTOCOLS)}, got {protocol!r}"
        )
    watcher_id = source.get("SCANARR_WATCHER_ID", "").strip() or None
    if watcher_id is not None and any(character in watcher_id for character in "\r\n\0"):
        raise SettingsError("SCANARR_WATCHER_ID", "contains a line break or NUL")

    url_text = required("SCANARR_API_URL")
    try:
        api_url = parse_api_url(url_text)
    except ValueError as error:
        raise SettingsError("SCANARR_API_URL", str(error)) from None
    # In V1.5 a new watcher gets its token by approval; `auto` with a watcher id may be V1.5.
    token_optional = protocol == "v1.5" or (protocol == "auto" and watcher_id is not None)
    token = source.get("SCANARR_AUTH_TOKEN", "").strip() if token_optional else ""
    if not token_optional:
        token = required("SCANARR_AUTH_TOKEN")
    if any(character in token for character in "\r\n\0"):
        raise SettingsError("SCANARR_AUTH_TOKEN", "contains a line break or NUL")

    durations: dict[str, float] = {}
    for attribute, variable, default in DURATION_VARIABLES:
        text = source.get(variable, "").strip() or default
        try:
            durations[attribute] = parse_duration(text)
        except ValueError as error:
            raise SettingsError(variable, str(error)) from None
    for attribute in ("ping_interval", "hello_timeout", "status_interval", "progress_interval"):
        if durations[attribute] <= 0:
            variable = next(v for a, v, _ in DURATION_VARIABLES if a == attribute)
            raise SettingsError(variable, "must be greater than zero")

    log_level = choice_from_env(source, "SCANARR_LOG_LEVEL", LOG_LEVELS, "info")
    state_file = source.get("SCANARR_STATE_FILE", "").strip() or DEFAULT_STATE_FILE

    return Settings(
        api_url=api_url,
        auth_token=token,
        log_level=log_level,
        state_file=state_file,
        protocol=protocol,
        watcher_id=watcher_id,
        **durations,
    )
