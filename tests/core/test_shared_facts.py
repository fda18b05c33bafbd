"""Facts with one home: the default media extensions."""

from __future__ import annotations

from scanarr.protocol import WatcherConfig, decode
from scanarr.scan import DEFAULT_EXTENSIONS


def test_a_config_without_extensions_scans_what_scanarr_scan_does() -> None:
    config = decode('{"type":"watcher.config","data":{"watch_paths":[]}}')
    assert isinstance(config, WatcherConfig)
    assert config.scan_extensions == list(DEFAULT_EXTENSIONS)
