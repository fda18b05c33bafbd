"""Cost of the V1.5 dialect on the scan path: translating one ``scan.file`` frame.

In the V1.5 dialect every ``scan.file`` the native walker renders (V2 shape) is re-encoded by
`scanarr.agent.dialect_translate.Translator` with an absolute ``path``: one ``json.loads``, the
model, one ``json.dumps``. This prints the time per frame and frames per second on this machine,
to compare with the walk itself (``bench_scan.py``)::

    python bench/bench_v15.py [--frames 100000]
"""

from __future__ import annotations

import argparse
import time

from scanarr.agent.dialect_translate import Translator
from scanarr.agent.volumes import VolumeSet
from scanarr.protocol import WatcherConfig, WatchPath
from scanarr.protocol_v15 import encode15

FRAME = (
    '{"type":"scan.file","timestamp":"2026-01-01T00:00:00.000Z","data":{"scan_id":"s",'
    '"volume_id":"/data/media","volume_path":"/data/media",'
    '"relative_path":"Films/Some Film (2020)/Some.Film.2020.1080p.mkv",'
    '"filename":"Some.Film.2020.1080p.mkv","inode":123456,"device_id":2049,'
    '"size_bytes":123456789,"hardlink_count":2,"mod_time":"2024-01-02T03:04:05.123456789Z"}}'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    frames = parser.parse_args().frames
    volumes = VolumeSet()
    volumes.apply(WatcherConfig(watch_paths=[WatchPath(id="/data/media", path="/data/media")]))
    translator = Translator(volumes)
    start = time.perf_counter()
    for _ in range(frames):
        message = translator.outgoing(FRAME)
        assert message is not None
        encode15(message)
    elapsed = time.perf_counter() - start
    print(
        f"{frames} scan.file frames translated in {elapsed:.2f} s: "
        f"{elapsed / frames * 1e6:.1f} µs each, {frames / elapsed:,.0f} per second"
    )


if __name__ == "__main__":
    main()
