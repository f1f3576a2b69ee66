"""Relays in process for tests, on 127.0.0.1:0.

`serve_app` serves any aiohttp application (a fake or altered relay) and yields its
base URL; `relays` starts real RelayServers trusting one root, with a client for each.
Both stop everything they started on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from bridge.keys import RootKey
from bridge.relay.client import RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """`app` listening on 127.0.0.1 at a free port; its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def relays(
    home: Path, root: RootKey, count: int = 1, dead: Sequence[str] = ()
) -> AsyncIterator[tuple[list[RelayServer], dict[str, RelayClient]]]:
    """`count` relays trusting `root`, at home/r1, home/r2, …, and a client by URL for
    each of them and for each of the `dead` URLs (where nothing need listen)."""
    servers: list[RelayServer] = []
    clients: dict[str, RelayClient] = {}
    try:
        for n in range(1, count + 1):
            server = RelayServer(RelayConfig(home=home / f"r{n}", trusted_roots=(root.public,)))
            await server.start()
            servers.append(server)
        for url in [*(s.url for s in servers), *dead]:
            clients[url] = RelayClient(url, timeout=30)
        yield servers, clients
    finally:
        for client in clients.values():
            await client.close()
        for server in servers:
            await server.stop()
