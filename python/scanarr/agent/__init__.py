"""The watcher agent (`scanarr watch`): one connection to the Scanarr API, services behind it.

Modules, in the order data flows:

- `session` — handshake (§2), `Session` (an authenticated connection) and `Link` (the current one);
- `dispatcher` — API → watcher messages routed to handlers; commands run one at a time;
- `volumes` — the config in force, its diffs (§3), nested roots;
- `scans` / `scan_walk` — the scan queue and one volume's walk streamed as ``scan.*`` (§4, §5);
- `live` — the outbound path of live events (and their ``scan.file`` copy during a scan);
- `status` — volume statuses and the ``watcher.status`` heartbeat (§9);
- `backoff` — reconnect delays;
- `app` — `WatcherAgent`, which ties them together (its docstring lists the plug points).
"""

from .app import WatcherAgent

__all__ = ["WatcherAgent"]
