"""The API side of the V1.5 dialect (PROTOCOL-V15.md §1–5), as the released server behaves.

`DevApiV15Server` serves ``/ws/watcher`` (any other path: HTTP 404) to any number of watchers:

- identity by the hello's ``watcher_id``; no hello within `hello_timeout` or one without
  ``watcher_id`` → closed. An unknown id is created *pending*: the connection stays open and
  everything else it sends is ignored until `approve` pushes, once, on that connection, a
  ``watcher.config`` carrying a fresh 64-hex ``auth_token`` (not re-sent to a watcher that is not
  connected then). A known id gets ``watcher.auth_required``; ``watcher.auth {token}`` is
  checked by token alone (``watcher.rejected invalid_token`` and close when unknown); a revoked
  watcher gets ``watcher.rejected revoked`` and close. On success: ``watcher.config``, then every
  deletion still waiting (of any watcher) re-sent with a new ``request_id``.
- Frames ``{"type", "data"}`` with no timestamp; the server never pings. Commands are not
  addressed: every authenticated connection receives every command (with a top-level
  ``target_watcher_id`` to ignore).
- What it does with watcher messages (§4): a file table by absolute path — ``scan.file`` marks a
  row seen, ``scan.completed`` deletes every row of that volume (the longest configured path
  containing it) not seen in that scan; live events insert, update, move or remove rows;
  ``files.delete.completed`` removes the rows whose item result is ``deleted`` and settles the
  deletion (failed only when nothing was deleted and something failed);
  ``files.hardlink.completed`` registers ``target_path``. There is no ``scan.failed``.

`scanarr dev-api --dialect v1.5` wraps it for humans (``approve WATCHER_ID`` on standard input).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from scanarr.dev_api import WATCHER_PATH, DevServerBase, ReceivedMessage


@attrs.define
class Watcher:
    watcher_id: str
    status: str = "pending"  # pending, approved or revoked
    token: str | None = None
    watch_paths: list[str] | None = None  # None: the server's default paths


@attrs.define
class Connection15:
    number: int
    websocket: WebSocketConnection
    watcher_id: str | None = None
    hello: dict[str, Any] | None = None
    state: str = "opening"  # opening, pending, awaiting_auth, authenticated, closed


@attrs.define
class Deletion:
    deletion_id: str
    files: list[dict[str, Any]]  # {media_file_id, volume_path, file_path}
    status: str = "pending"  # pending, completed or failed
    request_ids: list[str] = attrs.field(factory=list)


class DevApiV15Server(DevServerBase):
    _log_name = "dev-api v1.5"
    _listening_note = " (V1.5 dialect)"

    def __init__(
        self,
        *,
        watch_paths: Iterable[str] = (),
        scan_on_start: bool = True,
        disable_deletion: bool = False,
        log_level: str = "info",
        hello_timeout: float = 30.0,
        on_message: Callable[[ReceivedMessage], None] | None = None,
        on_event: Callable[[str], None] | None = None,
        record_path: str | None = None,
    ) -> None:
        super().__init__(on_message=on_message, on_event=on_event, record_path=record_path)
        self.watch_paths = list(watch_paths)
        self.scan_on_start = scan_on_start
        self.disable_deletion = disable_deletion
        self.log_level = log_level
        self.hello_timeout = hello_timeout
        self.watchers: dict[str, Watcher] = {}
        self.connections: list[Connection15] = []
        self.ignored: list[ReceivedMessage] = []  # sent by pending watchers
        self.files: dict[str, dict[str, Any]] = {}  # the file table, by absolute path
        self.deletions: dict[str, Deletion] = {}
        self.authenticated_total = 0  # connections authenticated so far
        self.accepting = True  # False: answer upgrades with HTTP 503 (the server is down)
        self._scans: dict[str, tuple[str, set[str]]] = {}  # scan_id → (path, paths seen)

    # --- serving ---------------------------------------------------------------------------

    async def _handle(self, request: WebSocketRequest) -> None:
        if request.path.split("?", 1)[0] != WATCHER_PATH:
            await request.reject(404)
            return
        if not self.accepting:
            await request.reject(503)
            return
        websocket = await request.accept()
        connection = Connection15(number=len(self.connections) + 1, websocket=websocket)
        self.connections.append(connection)
        self._changed_now()
        try:
            await self._converse(connection)
        except ConnectionClosed:
            pass
        finally:
            connection.state = "closed"
            self._notify(f"connection {connection.number} closed ({websocket.closed})")
            self._changed_now()

    async def _converse(self, connection: Connection15) -> None:
        websocket = connection.websocket
        with trio.move_on_after(self.hello_timeout):
            hello = await self._receive(connection)
        if hello is None or hello.type != "watcher.hello":
            await websocket.aclose(1008, "expected watcher.hello")
            return
        watcher_id = hello.data.get("watcher_id")
        connection.hello = hello.data
        if not isinstance(watcher_id, str) or not watcher_id:
            await websocket.aclose(1008, "watcher_id required")
            return
        connection.watcher_id = watcher_id
        watcher = self.watchers.get(watcher_id)
        if watcher is None:
            watcher = self.watchers[watcher_id] = Watcher(watcher_id)
            self._notify(
                f"watcher {watcher_id} is new: pending approval (type: approve {watcher_id})"
            )
        if watcher.status == "revoked":
            await self._reject(connection, "revoked")
            return
        if watcher.status == "pending":
            connection.state = "pending"
            await self._send_on(websocket, "watcher.pending", {"watcher_id": watcher_id})
        else:
            connection.state = "awaiting_auth"
            await self._send_on(websocket, "watcher.auth_required", {"watcher_id": watcher_id})
        self._changed_now()
        while True:
            message = await self._receive(connection)
            if message is None:
                continue
            if connection.state == "authenticated":
                self._apply(message)
                continue
            if message.type == "watcher.auth" and connection.state == "awaiting_auth":
                token = message.data.get("token")
                owner = self._watcher_by_token(token)
                if owner is None:
                    await self._reject(connection, "invalid_token")
                    return
                if owner.status == "revoked":
                    await self._reject(connection, "revoked")
                    return
                await self._authenticated(connection, owner)
                continue
            self.ignored.append(message)

    async def _authenticated(self, connection: Connection15, watcher: Watcher) -> None:
        connection.state = "authenticated"
        connection.watcher_id = watcher.watcher_id
        self.authenticated_total += 1
        self._notify(f"connection {connection.number}: watcher {watcher.watcher_id} authenticated")
        await self._send_on(connection.websocket, "watcher.config", self._config_of(watcher))
        for deletion in self.deletions.values():
            if deletion.status == "pending":
                await self._send_delete(deletion, [connection])
        self._changed_now()

    async def _reject(self, connection: Connection15, reason: str) -> None:
        self._notify(f"connection {connection.number}: rejected ({reason})")
        await self._send_on(connection.websocket, "watcher.rejected", {"reason": reason})
        await connection.websocket.aclose(1008, reason)

    def _watcher_by_token(self, token: Any) -> Watcher | None:
        if not isinstance(token, str):
            return None
        for watcher in self.watchers.values():
            if watcher.token is not None and secrets.compare_digest(watcher.token, token):
                return watcher
        return None

    def _config_of(self, watcher: Watcher) -> dict[str, Any]:
        paths = self.watch_paths if watcher.watch_paths is None else watcher.watch_paths
        config: dict[str, Any] = {
            "watch_paths": list(paths),
            "scan_on_start": self.scan_on_start,
            "log_level": self.log_level,
            "disable_deletion": self.disable_deletion,
            "ws_reconnect_delay_seconds": 5,
            "ws_ping_interval_seconds": 30,
            "log_retention_days": 30,
            "debug_log_retention_hours": 24,
        }
        config["config_hash"] = _hash(config)
        if watcher.token is not None:
            config["auth_token"] = watcher.token
        return config

    async def _receive(self, connection: Connection15) -> ReceivedMessage | None:
        message = self._parse(await connection.websocket.get_message(), connection.number)
        if message is None:
            return None
        if connection.state == "authenticated" or message.type in ("watcher.hello", "watcher.auth"):
            self._keep(message)
        self._changed_now()
        return message

    # --- what the server does with watcher messages (§4) -----------------------------------

    def volume_of(self, path: str) -> str | None:
        """The longest configured path containing `path` (the server's volume mapping)."""
        paths = set(self.watch_paths)
        for watcher in self.watchers.values():
            paths.update(watcher.watch_paths or ())
        best = None
        for root in paths:
            root = root.rstrip("/") or "/"
            if (path == root or path.startswith(root.rstrip("/") + "/")) and (
                best is None or len(root) > len(best)
            ):
                best = root
        return best

    def _apply(self, message: ReceivedMessage) -> None:
        data = message.data
        kind = message.type
        if kind == "scan.started":
            self._scans[str(data.get("scan_id"))] = (str(data.get("path")), set())
        elif kind == "scan.file":
            self._upsert(data)
            scan = self._scans.get(str(data.get("scan_id")))
            if scan is not None:
                scan[1].add(str(data.get("path")))
        elif kind == "scan.completed":
            scan = self._scans.pop(str(data.get("scan_id")), None)
            volume = self.volume_of(str(data.get("path")))
            if scan is not None and volume is not None:
                for path in list(self.files):
                    if self.volume_of(path) == volume and path not in scan[1]:
                        del self.files[path]
        elif kind in ("file.created", "file.modified"):
            self._upsert(data)
        elif kind == "file.deleted":
            self.files.pop(str(data.get("path")), None)
        elif kind == "file.renamed":
            row = self.files.pop(str(data.get("old_path")), None)
            new_path = str(data.get("new_path"))
            if row is not None and self.volume_of(new_path) is not None:
                self.files[new_path] = {**row, "path": new_path, "name": data.get("name")}
        elif kind == "files.delete.completed":
            self._delete_completed(data)
        elif kind == "files.hardlink.completed":
            deletion = self.deletions.get(str(data.get("deletion_id")))
            if data.get("status") == "failed":
                if deletion is not None:
                    deletion.status = "failed"
            elif isinstance(data.get("target_path"), str):
                target = data["target_path"]
                source = self.files.get(str(data.get("source_path")), {})
                self.files[target] = {**source, "path": target}

    def _upsert(self, data: dict[str, Any]) -> None:
        path = data.get("path")
        if isinstance(path, str) and self.volume_of(path) is not None:
            self.files[path] = dict(data)
            # The server keeps the link count of every row of the same inode in step.
            identity = (data.get("device_id"), data.get("inode"))
            for row in self.files.values():
                if (row.get("device_id"), row.get("inode")) == identity:
                    row["hardlink_count"] = data.get("hardlink_count")

    def _delete_completed(self, data: dict[str, Any]) -> None:
        deletion = self.deletions.get(str(data.get("deletion_id")))
        results = data.get("results")
        results = results if isinstance(results, list) else []
        if deletion is None:
            return
        deleted_ids = {
            str(result.get("media_file_id"))
            for result in results
            if isinstance(result, dict) and result.get("status") == "deleted"
        }
        for item in deletion.files:
            if str(item["media_file_id"]) in deleted_ids:
                path = item["volume_path"].rstrip("/") + "/" + item["file_path"]
                self.files.pop(path, None)
        deleted, failed = data.get("deleted"), data.get("failed")
        failed_whole = deleted == 0 and isinstance(failed, int) and failed > 0
        deletion.status = "failed" if failed_whole else "completed"

    # --- driving watchers --------------------------------------------------------------------

    async def approve(self, watcher_id: str) -> bool:
        """Approve a watcher; True when its token reached an open pending connection."""
        watcher = self.watchers.get(watcher_id)
        if watcher is None or watcher.status == "revoked":
            return False
        watcher.status = "approved"
        watcher.token = secrets.token_hex(32)
        delivered = False
        for connection in self.connections:
            waiting = connection.state in ("pending", "awaiting_auth")
            if waiting and connection.watcher_id == watcher_id:
                await self._authenticated(connection, watcher)
                delivered = True
        self._notify(
            f"watcher {watcher_id} approved"
            + ("" if delivered else " (not connected: its token was not delivered)")
        )
        return delivered

    async def revoke(self, watcher_id: str) -> None:
        watcher = self.watchers.setdefault(watcher_id, Watcher(watcher_id))
        watcher.status = "revoked"

    def authenticated(self) -> list[Connection15]:
        return [
            connection for connection in self.connections if connection.state == "authenticated"
        ]

    async def broadcast(self, message_type: str, data: dict[str, Any]) -> None:
        """Send a command to every authenticated connection (the server does not address them)."""
        for connection in self.authenticated():
            with contextlib.suppress(ConnectionClosed):
                await self._send_on(connection.websocket, message_type, data, command=True)

    async def scan(self, path: str, scan_id: str | None = None) -> str:
        scan_id = scan_id or str(uuid.uuid4())
        await self.broadcast("command.scan", {"path": path, "scan_id": scan_id})
        return scan_id

    async def delete(self, deletion_id: str, files: list[dict[str, Any]]) -> str:
        """Start a deletion: ``files`` are ``{media_file_id, volume_path, file_path}`` items."""
        deletion = self.deletions[deletion_id] = Deletion(deletion_id, [dict(f) for f in files])
        return await self._send_delete(deletion, self.authenticated())

    async def _send_delete(self, deletion: Deletion, connections: list[Connection15]) -> str:
        request_id = str(uuid.uuid4())
        deletion.request_ids.append(request_id)
        data = {
            "request_id": request_id,
            "deletion_id": deletion.deletion_id,
            "files": deletion.files,
        }
        for connection in connections:
            with contextlib.suppress(ConnectionClosed):
                await self._send_on(
                    connection.websocket, "command.files.delete", data, command=True
                )
        return request_id

    async def hardlink(
        self, deletion_id: str, source_path: str, target_path: str, volume_path: str
    ) -> str:
        request_id = str(uuid.uuid4())
        await self.broadcast(
            "command.files.hardlink",
            {
                "request_id": request_id,
                "deletion_id": deletion_id,
                "source_path": source_path,
                "target_path": target_path,
                "volume_path": volume_path,
            },
        )
        return request_id

    async def send_config(self, watcher_id: str | None = None) -> None:
        for connection in self.authenticated():
            if watcher_id is None or connection.watcher_id == watcher_id:
                watcher = self.watchers[connection.watcher_id or ""]
                await self._send_on(
                    connection.websocket, "watcher.config", self._config_of(watcher)
                )

    async def send_raw(self, text: str) -> None:
        for connection in self.authenticated():
            self._notify(f"-> {text[:500]}")
            await connection.websocket.send_message(text)

    async def drop_all(self) -> None:
        """Close every connection (the server restarting)."""
        for connection in self.connections:
            if connection.state != "closed":
                await connection.websocket.aclose(1001, "server restarting")

    async def _send_on(
        self,
        websocket: WebSocketConnection,
        message_type: str,
        data: dict[str, Any],
        *,
        command: bool = False,
    ) -> None:
        envelope: dict[str, Any] = {"type": message_type, "data": data}
        if command:
            envelope["target_watcher_id"] = None
        text = json.dumps(envelope, ensure_ascii=False)
        shown = text if "auth_token" not in data else text.replace(data["auth_token"], "[token]")
        self._notify(f"-> {shown if len(shown) < 500 else shown[:500] + '…'}")
        await websocket.send_message(text)

    # --- waiting and inspecting ------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_pending(self, watcher_id: str | None = None) -> Connection15:
        def pending() -> Connection15 | None:
            for connection in self.connections:
                if connection.state == "pending" and watcher_id in (None, connection.watcher_id):
                    return connection
            return None

        await self.wait_until(lambda: pending() is not None)
        found = pending()
        assert found is not None
        return found

    async def wait_authenticated(self, count: int = 1) -> None:
        """Until `count` connections have been authenticated in total and one is open."""
        await self.wait_until(
            lambda: self.authenticated_total >= count and bool(self.authenticated())
        )


def _hash(config: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["Connection15", "Deletion", "DevApiV15Server", "Watcher"]
