"""The watcher agent: state, config, connection life and services under one nursery.

`WatcherAgent.run` loads the state file and applies its last config (so volumes are known even
while the API is unreachable), starts the services (scan runner, command runner, status
heartbeat) and keeps one connection to the API alive (§2, §9):

    connect (Authorization header) → hello → auth → first config → session attached
    → reader (dispatcher) + keepalive pings … connection lost → backoff → connect again

Failures back off exponentially with jitter from ``SCANARR_RECONNECT_DELAY`` up to 60 s; a
rejected token backs off up to 5 minutes; both reset after a good handshake. `request_stop`
(SIGTERM/SIGINT in the CLI) stops the services, closes the WebSocket with code 1000, saves the
state and returns, all within ``shutdown_timeout``.

Plug points for other services, all on the agent object:

- constructor arguments: ``metrics``, ``offline_store`` (live events kept while disconnected)
  and ``live_watcher`` (a factory given the agent's `LiveInputs`: it returns the live watcher,
  which the agent then feeds with volumes, waits for before each scan and tells about removals);
  `scanarr.agent.runtime` is where the watcher process builds them;
- ``agent.dispatcher.register_command(...)`` — command handlers (see `dispatcher`); the file
  commands are built in (``agent.file_commands``, `file_handlers`);
- ``agent.live.submit(event)`` / ``agent.live.request_rescan(volume_id, reason)`` — live events;
- ``agent.status.set_volume_status(volume_id, status)`` — volume statuses;
- ``agent.volumes.add_listener(callback)`` — follow config changes (volumes to watch);
- ``agent.scans.request(volume_id, reason=...)`` — scans.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import trio

from scanarr.config import Settings
from scanarr.logs import redact_url
from scanarr.metrics import Metrics
from scanarr.protocol import (
    CommandScan,
    CommandScanAll,
    Message,
    ScanFailed,
    ScanFailedReason,
    WatcherConfig,
    WatchPath,
)
from scanarr.state import WatcherState, load_state, save_state
from scanarr.transport import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocket,
    open_api_websocket,
)

from .backoff import Backoff
from .dialect import Dialect, WatcherRevoked
from .dispatcher import CommandContext, Dispatcher
from .file_handlers import FileCommandHandlers, results_path_for
from .live import LiveEvents, LiveInputs, LiveWatcherFactory, LiveWatching, OfflineStore
from .scans import RequestResult, ScanService
from .session import HandshakeFailed, HandshakeRejected, Link, Session
from .status import StatusBoard
from .volumes import ConfigChange, VolumeSet, duplicate_volume_ids

log = logging.getLogger(__name__)

# Largest message the watcher accepts from the API (a delete command for many files).
MAX_INCOMING_MESSAGE = 64 * 1024 * 1024
# Time for the API to answer our close frame before the socket is simply closed.
CLOSE_TIMEOUT = 1.0


class StateKeeper:
    """The in-memory state and its serialised saving to the state file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.state = WatcherState()
        self._lock = trio.Lock()

    async def load(self) -> None:
        self.state = await trio.to_thread.run_sync(load_state, self.path)

    async def save(self) -> bool:
        snapshot = WatcherState(
            self.state.last_config,
            dict(self.state.last_scan_timestamps),
            dict(self.state.volume_devices),
            dict(self.state.extra),
        )
        async with self._lock:
            try:
                await trio.to_thread.run_sync(save_state, self.path, snapshot)
            except OSError as error:
                log.error("cannot save the state file %s: %s", self.path, error)
                return False
        return True


class AgentContext:
    """The `CommandContext` handlers receive."""

    def __init__(self, agent: WatcherAgent) -> None:
        self._agent = agent

    @property
    def volumes(self) -> Mapping[str, WatchPath]:
        return self._agent.volumes.volumes

    @property
    def volume_devices(self) -> Mapping[str, int]:
        return dict(self._agent.state_keeper.state.volume_devices)

    @property
    def disable_deletion(self) -> bool:
        return self._agent.volumes.disable_deletion

    @property
    def scan_extensions(self) -> list[str]:
        return self._agent.volumes.scan_extensions

    async def send(self, message: Message) -> None:
        if await self._agent.dialect.send_reply(message):
            return  # V1.5: translated, and kept on disk when it could not be sent
        if not await self._agent.link.send_if_connected(message):
            log.warning("not connected: %s dropped", message.TYPE)

    def progress_sender(self) -> Callable[[Message], None]:
        def send_from_thread(message: Message) -> None:
            trio.from_thread.run(self.send, message)

        return send_from_thread


class WatcherAgent:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        file_commands: bool = True,
        offline_store: OfflineStore | None = None,
        live_watcher: LiveWatcherFactory | None = None,
    ) -> None:
        self.settings = settings
        # What /metrics shows (scanarr.metrics); served by the CLI when SCANARR_METRICS_ADDR is set.
        self.metrics = metrics if metrics is not None else Metrics()
        self.link = Link()
        self.link.add_listener(lambda session: self.metrics.set_connected(session is not None))
        self.metrics.set_connected(False)
        self.volumes = VolumeSet()
        self.status = StatusBoard(self.link, interval=settings.status_interval)
        self.state_keeper = StateKeeper(settings.state_file)
        self.scans = ScanService(
            self.link,
            self.volumes,
            self.status,
            recorded_devices=lambda: self.state_keeper.state.volume_devices,
            record_scan=self._record_scan,
            progress_interval=settings.progress_interval,
            before_scan=None if live_watcher is None else self._live_watches_applied,
        )
        self.live = LiveEvents(
            self.link, self.volumes, self.scans, self.metrics, offline_store=offline_store
        )
        self.live_watching: LiveWatching | None = None
        if live_watcher is not None:
            inputs = LiveInputs(self.live.submit, self.live.request_rescan, self._set_degraded)
            self.live_watching = watching = live_watcher(inputs)
            self.volumes.add_listener(
                lambda volumes, _change: watching.set_volumes(
                    volumes.ordered(), volumes.scan_extensions
                )
            )
        self.context: CommandContext = AgentContext(self)
        self.dispatcher = Dispatcher(on_handled=self.metrics.command_done)
        self.dispatcher.register(WatcherConfig, self._on_config)
        self.dispatcher.register(CommandScan, self._on_scan)
        self.dispatcher.register(CommandScanAll, self._on_scan_all)
        # command.files.delete / .hardlink, replies remembered beside the state file.
        self.file_commands: FileCommandHandlers | None = None
        if file_commands:
            # A path the delete command removes is reported by the command, not as file.deleted.
            self.file_commands = handlers = FileCommandHandlers(
                results_path_for(settings.state_file),
                on_removing=None
                if self.live_watching is None
                else self.live_watching.expect_removal,
            )
            self.file_commands.register(self.dispatcher)
            self.volumes.add_listener(lambda _volumes, _change: handlers.config_applied())
        # The V1.5 dialect at the connection's boundary, when the API speaks it.
        self.dialect = Dialect(settings, self.state_keeper, self.volumes, self.link)
        self.sessions_opened = 0
        self._api_config_seen = False
        self._stop_requested = trio.Event()
        self._stopping = False
        # The WebSocket of the connection attempt in progress (upgraded, maybe not yet
        # authenticated), and an event set once the attempt's upgrade has succeeded or failed.
        self._websocket: WebSocket | None = None
        self._upgrade_settled: trio.Event | None = None
        self._backoff = Backoff(settings.reconnect_delay, settings.reconnect_max_delay)
        self._rejected_backoff = Backoff(settings.reconnect_delay, settings.rejected_max_delay)

    # --- life ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop: close the connection with code 1000, save the state, return from `run`."""
        self._stop_requested.set()

    async def _live_watches_applied(self) -> None:
        if self.live_watching is not None:
            await self.live_watching.wait_applied()

    def _set_degraded(self, volume_id: str, reason: str | None) -> None:
        """The live watcher's health of a volume as its status (``degraded`` ⇄ ``watching``)."""
        base = self.status.base_status(volume_id)
        if reason is not None and base == "watching":
            log.warning("volume %s is degraded: %s", volume_id, reason)
            self.status.set_volume_status(volume_id, "degraded")
        elif reason is None and base == "degraded":
            self.status.set_volume_status(volume_id, "watching")

    def readiness(self) -> tuple[bool, str]:
        """/readyz (`scanarr.metrics`): connected, configured, at least one volume, none
        unavailable. Degraded volumes (part of a tree unwatched, a network filesystem) do not
        make it unready — rescans cover them — but the answer names them."""
        if self.link.current is None:
            return False, f"not connected to the API at {redact_url(self.settings.api_url.url)}"
        if self.volumes.config is None:
            return False, "connected, but no valid watcher.config was received yet"
        volumes = self.status.snapshot().volumes
        if not volumes:
            return False, "connected, but the API configured no volume for this watcher"
        unavailable = [volume for volume in volumes if volume.status == "unavailable"]
        if unavailable:
            names = ", ".join(f"{volume.id} ({volume.path})" for volume in unavailable)
            return False, f"volume unavailable: {names}"
        summary = ", ".join(f"{volume.id} {volume.status}" for volume in volumes)
        return True, f"ready: connected, {len(volumes)} volume(s): {summary}"

    async def run(
        self, *, task_status: trio.TaskStatus[WatcherAgent] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.state_keeper.load()
        await self.dialect.on_state_loaded()
        last_config = self.state_keeper.state.last_config
        if last_config is not None:
            log.info(
                "applying the last known config (%d volumes) until the API sends one",
                len(last_config.watch_paths),
            )
            await self.apply_config(last_config, from_api=False)
        try:
            async with trio.open_nursery() as nursery:
                services = trio.CancelScope()
                nursery.start_soon(self._run_services, services)
                nursery.start_soon(self._connection_loop)
                task_status.started(self)
                await self._stop_requested.wait()
                await self._close_gracefully(services)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self.settings.shutdown_timeout):
                await self.state_keeper.save()
        log.info("watcher stopped")

    async def _run_services(self, scope: trio.CancelScope) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.scans.run)
                await nursery.start(self.status.run)
                await nursery.start(self.live.run)
                await nursery.start(self.dispatcher.run_commands, self.context)
                if self.file_commands is not None:
                    await nursery.start(self.file_commands.clean_leftovers, self.context)

    async def _close_gracefully(self, services: trio.CancelScope) -> None:
        self._stopping = True
        deadline = trio.current_time() + max(self.settings.shutdown_timeout - 0.5, 0.1)
        services.cancel()
        with trio.move_on_at(deadline):
            # §9: a clean shutdown closes with 1000 in every phase of the connection, the
            # handshake included; an upgrade under way is given the deadline to finish so that
            # its socket can be closed properly too.
            if self._upgrade_settled is not None:
                await self._upgrade_settled.wait()
            websocket = self._websocket
            if websocket is not None and websocket.closed is None:
                log.info("closing the connection (1000)")
                await websocket.aclose(1000, "watcher shutting down")

    # --- config and state ----------------------------------------------------------------

    async def apply_config(self, config: WatcherConfig, *, from_api: bool) -> bool:
        """Apply a whole config (§3); False when it is refused and the previous one stays."""
        problem = _config_problem(config)
        if problem is not None:
            log.error("refusing watcher.config: %s; the previous config stays in force", problem)
            return False
        change = self.volumes.apply(config)
        self.status.set_volumes(config.watch_paths)
        state = self.state_keeper.state
        for volume in change.removed:
            state.volume_devices.pop(volume.id, None)
            state.last_scan_timestamps.pop(volume.id, None)
        for _old, new in change.moved:
            # Another path may be another filesystem: its device is learnt at the next scan.
            state.volume_devices.pop(new.id, None)
        _log_change(change)
        # §3: the first config from the API after start is governed by scan_on_start alone,
        # even for volumes the state file never saw (the API may know them already and asks
        # with command.scan when it wants); later configs scan what they add or move.
        first_from_api = from_api and not self._api_config_seen
        self.scans.on_config(change, scan_changes=from_api and not first_from_api)
        if first_from_api:
            self._api_config_seen = True
            if config.scan_on_start:
                self.scans.request_all(reason="scan_on_start")
            else:
                log.info("scan_on_start is off: no volume is scanned until the API asks")
        state.last_config = config
        await self.state_keeper.save()
        return True

    async def _record_scan(self, volume_id: str, device: int, timestamp: str) -> None:
        state = self.state_keeper.state
        state.volume_devices[volume_id] = device
        state.last_scan_timestamps[volume_id] = timestamp
        await self.state_keeper.save()

    # --- built-in handlers -----------------------------------------------------------------

    async def _on_config(self, config: WatcherConfig, context: CommandContext) -> None:
        await self.apply_config(config, from_api=True)

    async def _on_scan(self, command: CommandScan, context: CommandContext) -> None:
        if self.volumes.get(command.volume_id) is None:
            log.warning("command.scan for unknown volume %s", command.volume_id)
            await context.send(
                ScanFailed(
                    scan_id=command.scan_id,
                    volume_id=command.volume_id,
                    reason=ScanFailedReason.UNKNOWN_VOLUME.value,
                )
            )
            return
        result = self.scans.request(
            command.volume_id, command.scan_id, reason="command.scan", from_api=True
        )
        if result is RequestResult.REFUSED:
            await context.send(_coalesced(command.scan_id, command.volume_id))

    async def _on_scan_all(self, command: CommandScanAll, context: CommandContext) -> None:
        refused = self.scans.request_all(command.scan_id, reason="command.scan.all", from_api=True)
        for volume_id in refused:
            await context.send(_coalesced(command.scan_id, volume_id))

    # --- connection ------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        url_text = redact_url(self.settings.api_url.url)
        while not self._stopping:
            try:
                await self._connect_once()
                delay = self._backoff.next_delay()
            except HandshakeRejected as rejected:
                log.error("the API rejected this watcher's token: %s", rejected.reason)
                delay = self._rejected_backoff.next_delay()
                if isinstance(rejected, WatcherRevoked):
                    delay = max(delay, self.settings.rejected_max_delay)
            except ConnectionRejected as rejected:
                log.error("the API refused the WebSocket upgrade (HTTP %d)", rejected.status_code)
                backoff = (
                    self._rejected_backoff if rejected.status_code in (401, 403) else self._backoff
                )
                delay = backoff.next_delay()
            except (
                HandshakeFailed,
                HandshakeError,
                OSError,
                ConnectionClosed,
            ) as error:
                log.warning("connection to %s failed: %s", url_text, _describe(error))
                delay = self._backoff.next_delay()
            if self._stopping:
                return
            log.info("reconnecting in %.1f s", delay)
            await trio.sleep(delay)

    async def _connect_once(self) -> None:
        settings = self.settings
        headers = self.dialect.headers()
        upgrade_settled = self._upgrade_settled = trio.Event()
        try:
            async with open_api_websocket(
                settings.api_url,
                headers,
                max_message_size=MAX_INCOMING_MESSAGE,
                connect_timeout=settings.hello_timeout,
                close_timeout=CLOSE_TIMEOUT,
            ) as websocket:
                self._websocket = websocket
                upgrade_settled.set()
                await self._converse(websocket)
        finally:
            upgrade_settled.set()
            self._websocket = None

    async def _converse(self, websocket: WebSocket) -> None:
        settings = self.settings
        url = settings.api_url
        result, writer = await self.dialect.handshake(websocket, timeout=settings.hello_timeout)
        self._backoff.reset()
        self._rejected_backoff.reset()
        log.info(
            "connected to %s as %s (%s)",
            redact_url(url.url),
            result.auth.watcher_name or "?",
            result.auth.watcher_id or "?",
        )
        if result.config is not None:
            await self.apply_config(result.config, from_api=True)
        self.sessions_opened += 1
        session = Session(self.sessions_opened, websocket, writer, self.metrics)
        self.link.attach(session)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive, websocket)
                nursery.start_soon(self.dialect.run_session, session)
                for text in result.early_messages:
                    await self.dispatcher.dispatch(text, self.context)
                await self._read_messages(websocket)
                nursery.cancel_scope.cancel()
        finally:
            self.link.detach(session)
        log.warning("connection to %s lost (%s)", redact_url(url.url), websocket.closed)

    async def _read_messages(self, websocket: WebSocket) -> None:
        while True:
            try:
                text = await websocket.get_message()
            except ConnectionClosed:
                return
            for translated in await self.dialect.incoming(text):
                await self.dispatcher.dispatch(translated, self.context)

    async def _keepalive(self, websocket: WebSocket) -> None:
        interval = self.settings.ping_interval
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(2 * interval) as timer:
                try:
                    await websocket.ping()
                except ConnectionClosed:
                    return
            if timer.cancelled_caught:
                log.warning("no pong within %g s; reconnecting", 2 * interval)
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await websocket.aclose(1001, "no pong")
                return


def _coalesced(scan_id: str, volume_id: str) -> ScanFailed:
    return ScanFailed(
        scan_id=scan_id,
        volume_id=volume_id,
        reason=ScanFailedReason.COALESCED.value,
    )


def _config_problem(config: WatcherConfig) -> str | None:
    duplicates = duplicate_volume_ids(config)
    if duplicates:
        return f"duplicate volume id(s): {', '.join(duplicates)}"
    for volume in config.watch_paths:
        if not os.path.isabs(volume.path):
            return f"volume {volume.id} path is not absolute: {volume.path!r}"
        if "\0" in volume.path:
            return f"volume {volume.id} path contains a NUL character"
    return None


def _log_change(change: ConfigChange) -> None:
    for volume in change.added:
        log.info("volume %s added: %s", volume.id, volume.path)
    for volume in change.removed:
        log.info("volume %s removed: %s", volume.id, volume.path)
    if change.extensions_changed:
        log.info("scan extensions changed")


def _describe(error: BaseException) -> str:
    if isinstance(error, HandshakeError) and error.__cause__ is not None:
        return str(error.__cause__) or type(error.__cause__).__name__
    return str(error) or type(error).__name__
