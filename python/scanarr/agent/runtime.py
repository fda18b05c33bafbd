"""The whole `scanarr watch` process: the agent and the services plugged into it.

`run_watcher` is the composition root: it builds every service with its constructor arguments
(nothing is patched in afterwards) and runs them under one nursery:

- the `Metrics` (scanarr.metrics), read by the agent and the endpoints;
- the offline event queue (`scanarr.offline_queue.OfflineQueue`) beside the state file, which
  the agent replays after each reconnection;
- the `WatcherAgent` (connection, config, scans, commands, status), given the metrics, the
  queue and a factory for the live watcher (`scanarr.live.LiveWatcher`), which the agent calls
  with its `LiveInputs`: events into ``agent.live.submit``, rescans into
  ``agent.live.request_rescan``, per-volume health into the volume statuses (``degraded`` while
  a root is missing or the watch limit bites); the agent feeds it the volumes of each config,
  waits for its watches before each scan, and announces its file commands' removals (no
  ``file.deleted`` echo);
- the metrics and health endpoints when ``SCANARR_METRICS_ADDR`` is set;
- SIGTERM/SIGINT: the first stops gracefully (close 1000, state saved), a second at once.

``SCANARR_LIVE_WATCH=off`` leaves the live watcher (and the offline queue) out: the watcher then
only scans, when asked and at start. For libraries on filesystems where inotify sees nothing
(NFS, SMB, FUSE) or too large for the memory the live index takes.

`check_environment` validates the variables these services read, so the CLI can refuse them
with exit code 2 before anything starts.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import trio

from scanarr.config import Settings, SettingsError

if TYPE_CHECKING:
    from scanarr.live import LiveWatcher
    from scanarr.metrics import Metrics
    from scanarr.offline_queue import OfflineQueue

from .app import WatcherAgent
from .live import LiveInputs

log = logging.getLogger(__name__)


LIVE_WATCH_VARIABLE = "SCANARR_LIVE_WATCH"
_SWITCH = {"on": True, "true": True, "1": True, "yes": True}
_SWITCH |= {"off": False, "false": False, "0": False, "no": False}


def live_watch_from_env(environ: Mapping[str, str]) -> bool:
    """``SCANARR_LIVE_WATCH``: on (default) or off. Raises SettingsError."""
    text = environ.get(LIVE_WATCH_VARIABLE, "").strip().lower() or "on"
    if text not in _SWITCH:
        raise SettingsError(LIVE_WATCH_VARIABLE, f"expected on or off, got {text!r}")
    return _SWITCH[text]


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise SettingsError for a bad variable of the plugged-in services."""
    from scanarr.metrics import metrics_address_from_env

    metrics_address_from_env(environ)
    if live_watch_from_env(environ):
        from scanarr.live.backend import choose_backend
        from scanarr.live.fanotify import FanotifyUnavailable
        from scanarr.live.settings import (
            LIVE_BACKEND_VARIABLE,
            live_backend_from_env,
            live_options_from_env,
        )

        live_options_from_env(environ)
        backend = live_backend_from_env(environ)
        if backend == "fanotify":
            # Asked for explicitly: unavailable is an error, not a quiet fall back to inotify.
            try:
                choose_backend(backend)
            except FanotifyUnavailable as error:
                raise SettingsError(
                    LIVE_BACKEND_VARIABLE, f"fanotify cannot be used: {error.reason}"
                ) from None


async def run_watcher(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[WatcherAgent] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the watcher until stopped (`WatcherAgent.request_stop`, or a signal)."""
    from scanarr.metrics import Metrics, MetricsServer, metrics_address_from_env
    from scanarr.offline_queue import OfflineQueue, queue_path_for

    environ = os.environ if environ is None else environ
    metrics_address = metrics_address_from_env(environ)
    metrics = Metrics()
    live_watching = live_watch_from_env(environ)
    queue: OfflineQueue | None = None
    watchers: list[LiveWatcher] = []  # the one the agent has built
    if live_watching:
        queue = OfflineQueue(queue_path_for(settings.state_file))
        metrics.count_queue_events(lambda: queue.pending if queue is not None else 0)
    else:
        log.info("live watching is off (%s): volumes are only scanned", LIVE_WATCH_VARIABLE)

    def build_live_watcher(inputs: LiveInputs) -> LiveWatcher:
        watcher = _live_watcher(inputs, metrics, environ)
        watchers.append(watcher)
        return watcher

    agent = WatcherAgent(
        settings,
        metrics=metrics,
        offline_store=queue,
        live_watcher=build_live_watcher if live_watching else None,
    )

    try:
        async with trio.open_nursery() as nursery:
            for watcher in watchers:
                await nursery.start(watcher.run)
            if metrics_address is not None:

                def readiness() -> tuple[bool, str]:
                    ready, why = agent.readiness()
                    for watcher in watchers:
                        choice = watcher.backend
                        if choice is not None:
                            why += f"; live watching with {choice.name} ({choice.reason})"
                    return ready, why

                server = MetricsServer(metrics_address, agent.metrics, readiness)
                await nursery.start(server.serve)
                log.info("metrics and health endpoints on %s", server.url)
            if handle_signals:
                signals = await nursery.start(_receive_signals)
                nursery.start_soon(_stop_on_signal, agent, signals, nursery.cancel_scope)
            task_status.started(agent)
            await agent.run()
            nursery.cancel_scope.cancel()
    finally:
        if queue is not None:
            queue.close()


def _live_watcher(inputs: LiveInputs, metrics: Metrics, environ: Mapping[str, str]) -> LiveWatcher:
    from scanarr.live import LiveWatcher
    from scanarr.live.settings import live_backend_from_env, live_options_from_env

    def health_changed() -> None:
        for volume_id, health in watcher.health().items():
            inputs.set_degraded(
                volume_id, (health.reason or "degraded") if health.degraded else None
            )

    options = live_options_from_env(environ)
    watcher = LiveWatcher(
        inputs.submit,
        inputs.request_rescan,
        health_changed=health_changed,
        fallback_rescan_interval=options["fallback_rescan_interval"],
        watch_retry_delay=options["watch_retry_delay"],
        watch_retry_max_delay=options["watch_retry_max_delay"],
        backend=live_backend_from_env(environ),
    )
    metrics.count_inotify_watches(lambda: watcher.stats().watches)
    metrics.live_backend_of(lambda: watcher.backend.name if watcher.backend else None)
    return watcher


async def _receive_signals(
    *, task_status: trio.TaskStatus[AsyncIterator[int]] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started(signals)
        await trio.sleep_forever()


async def _stop_on_signal(
    agent: WatcherAgent, signals: AsyncIterator[int], scope: trio.CancelScope
) -> None:
    """First signal: graceful stop. Second: stop now (the state is still saved)."""
    stopping = False
    async for signal_number in signals:
        if stopping:
            log.warning("second %s: stopping now", signal.Signals(signal_number).name)
            scope.cancel()
            return
        log.info("received %s; stopping", signal.Signals(signal_number).name)
        agent.request_stop()
        stopping = True


__all__ = ["LIVE_WATCH_VARIABLE", "check_environment", "live_watch_from_env", "run_watcher"]
