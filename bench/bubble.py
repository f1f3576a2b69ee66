"""A whole bubble in this process for the socket benchmarks: one relay and one gateway.

Built the way `gateway.demo` builds one (`AdminHome.create`, a real `RelayServer`,
`add_account`, `Gateway`), on 127.0.0.1 with ports chosen by the OS, and with the
cheapest Argon2id cost so that AUTH and LOGIN do not dominate start-up. Logging goes
to a file under the bubble's directory at INFO, the level `sealgate` runs with by
default, so the gateway pays for its log lines as it would in service; aiosmtpd's
logger ("mail.log") is kept at WARNING, because at INFO it logs every command line,
MAIL FROM and RCPT TO addresses included.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BenchError
from bridge.keys import KdfCost
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from gateway.config import GatewayConfig
from gateway.homes import AdminHome, gateway_database_url
from gateway.provision import add_account
from gateway.service import Gateway
from gateway.store.db import open_engine
from gateway.store.outbox import Outbox
from gateway.tls import CERT_FILE, KEY_FILE, ensure_certificate, server_context

DOMAIN = "bench.bubble"


def log_to_file(path: Path) -> None:
    """Send every log record at INFO and above to `path` (replacing earlier handlers)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # INFO would log addresses


@dataclass
class Bubble:
    root: Path
    relay: RelayServer
    gateway: Gateway
    passwords: dict[str, str]  # address -> password

    @property
    def home(self) -> Path:
        return self.root / "gateway"

    @property
    def cert(self) -> Path:
        return self.home / "tls" / CERT_FILE

    @property
    def key(self) -> Path:
        return self.home / "tls" / KEY_FILE

    def server_tls(self) -> ssl.SSLContext:
        """The TLS context the gateway serves with (its own certificate)."""
        return server_context(self.cert, self.key)

    async def wait_outbox_empty(self, timeout: float) -> float:
        """Wait until the delivery worker has deposited everything; return the seconds waited."""
        engine = open_engine(gateway_database_url(self.home))
        outbox = Outbox(engine)
        start = time.perf_counter()
        try:
            while await asyncio.to_thread(outbox.pending_count) > 0:
                if time.perf_counter() - start > timeout:
                    raise BenchError(f"the outbox did not drain within {timeout:.0f} s")
                await asyncio.sleep(0.02)
        finally:
            engine.dispose()
        return time.perf_counter() - start

    async def stop(self) -> None:
        await self.gateway.stop()
        await self.relay.stop()


async def start_bubble(root: Path, users: Sequence[str], **gateway_settings: Any) -> Bubble:
    """Create and start a relay and a gateway holding `users` (local parts) in `root`."""
    admin = AdminHome.create(root / "admin", DOMAIN)
    relay = RelayServer(
        RelayConfig(home=root / "relay", host="127.0.0.1", port=0,
                    trusted_roots=(admin.root.public,))
    )
    await relay.start()
    home = root / "gateway"
    passwords: dict[str, str] = {}
    try:
        for user in users:
            address = f"{user}@{DOMAIN}"
            passwords[address] = secrets.token_urlsafe(12)
            await add_account(
                address,
                gateway_home=home,
                admin=admin,
                relays=[relay.url],
                password=passwords[address],
                cost=KdfCost.minimum(),
            )
        ensure_certificate(home / "tls", "sealgate.localhost")
        gateway = Gateway(GatewayConfig(home=home, smtp_port=0, imap_port=0, **gateway_settings))
        await gateway.start()
    except BaseException:
        await relay.stop()
        raise
    return Bubble(root=root, relay=relay, gateway=gateway, passwords=passwords)
