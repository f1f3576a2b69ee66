"""A bubble for the socket benchmarks: a gateway in this process, a relay in its own.

Built the way `gateway.demo` builds one (`AdminHome.create`, `add_account`,
`Gateway`), with the relay as a `sealgate relay serve` process as operators run it,
on 127.0.0.1 with ports chosen by the OS, and with the cheapest Argon2id cost so
that AUTH and LOGIN do not dominate start-up. Logging goes to a file under the
bubble's directory at INFO, the level `sealgate` runs with by default, so the
gateway pays for its log lines as it would in service; aiosmtpd's logger
("mail.log") is kept at WARNING, because at INFO it logs every command line, MAIL
FROM and RCPT TO addresses included.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BenchError
from bridge.keys import KdfCost
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


class RelayProcess:
    """A relay as operators run it: its own `sealgate relay serve` process."""

    def __init__(self, home: Path, root_public: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "relay", "serve",
             "--home", str(home), "--listen", f"127.0.0.1:{self.port}",
             "--trust-root", str(root_public)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self._proc.poll() is not None:
                raise BenchError("the relay process exited at start")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise BenchError("the relay did not start listening")

    async def stop(self) -> None:
        self._proc.terminate()
        await asyncio.to_thread(self._proc.wait, 20)


@dataclass
class Bubble:
    root: Path
    relay: RelayProcess
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


async def start_bubble(
    root: Path, users: Sequence[str], *, cost: KdfCost | None = None, **gateway_settings: Any
) -> Bubble:
    """Create and start a relay and a gateway holding `users` (local parts) in `root`,
    their keys sealed at `cost` (default: the cheapest)."""
    admin = AdminHome.create(root / "admin", DOMAIN)
    relay = RelayProcess(root / "relay", admin.root_public_file)
    await relay.wait_ready()
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
                cost=cost or KdfCost.minimum(),
            )
        ensure_certificate(home / "tls", "sealgate.localhost")
        gateway = Gateway(GatewayConfig(home=home, smtp_port=0, imap_port=0, **gateway_settings))
        await gateway.start()
    except BaseException:
        await relay.stop()
        raise
    return Bubble(root=root, relay=relay, gateway=gateway, passwords=passwords)
