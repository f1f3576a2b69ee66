"""`sealgate demo`: a whole bubble on loopback in one process.

    DIR/admin/            the bubble root (domain demo.bubble)
    DIR/relay/            one relay
    DIR/gateways/alice/   alice's gateway      DIR/gateways/bob/   bob's gateway
    DIR/demo.json         ports and passwords chosen on the first run (mode 0600)
    DIR/clients.json      what a mail client needs, written once every listener is up;
                          each account's "inbound" is its gateway's listener for an MX

A second run on the same DIR reuses everything: keys, mail, ports and passwords.

The console shows start-up, then the account banner (addresses, passwords, ports) once
every listener is up; routine per-message lines are DEBUG, so it stays in view. SIGUSR1
prints the banner again (`kill -USR1 PID`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bridge.keys import KdfCost
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from gateway.config import GatewayConfig
from gateway.homes import AdminHome, HomeError, write_private
from gateway.provision import add_account
from gateway.service import Gateway

log = logging.getLogger(__name__)

DOMAIN = "demo.bubble"
USERS = ("alice", "bob")

Runner = Callable[[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]], Awaitable[None]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plan(path: Path, port_base: int | None) -> dict[str, Any]:
    """Ports and passwords: from DIR/demo.json when it exists, else chosen now."""
    if path.exists():
        try:
            plan: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except ValueError:
            raise HomeError(f"{path} is not valid JSON") from None
        if port_base is not None:
            plan["ports"] = _ports(port_base)
        for name, port in _ports(None).items():  # a plan from before a listener was added
            plan["ports"].setdefault(name, port)
        return plan
    return {
        "ports": _ports(port_base),
        "passwords": {user: secrets.token_urlsafe(12) for user in USERS},
    }


def _ports(base: int | None) -> dict[str, int]:
    names = ["relay"] + [f"{u}-{p}" for u in USERS for p in ("smtp", "imap")]
    names += [f"{u}-inbound" for u in USERS]
    if base is not None:
        if not 1024 <= base <= 65535 - len(names):
            raise HomeError(f"--port-base must be between 1024 and {65535 - len(names)}")
        return {name: base + i for i, name in enumerate(names)}
    return {name: _free_port() for name in names}


async def run_demo(directory: Path, *, port_base: int | None, run: Runner) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # clients.json means "every listener is up": never leave one from an earlier run.
    (directory / "clients.json").unlink(missing_ok=True)
    plan_path = directory / "demo.json"
    plan = _plan(plan_path, port_base)
    write_private(plan_path, json.dumps(plan, indent=2).encode())
    ports: dict[str, int] = plan["ports"]

    admin_dir = directory / "admin"
    admin = (
        AdminHome.load(admin_dir)
        if AdminHome.exists(admin_dir)
        else AdminHome.create(admin_dir, DOMAIN)
    )
    relay_url = f"http://127.0.0.1:{ports['relay']}"
    relay = RelayServer(
        RelayConfig(
            home=directory / "relay",
            host="127.0.0.1",
            port=ports["relay"],
            trusted_roots=(admin.root.public,),
        )
    )
    gateways: list[Gateway] = []

    async def start() -> None:
        await relay.start()
        for user in USERS:
            home = directory / "gateways" / user
            if not (home / "gateway.db").exists():
                await add_account(
                    f"{user}@{DOMAIN}",
                    gateway_home=home,
                    admin=admin,
                    relays=[relay_url],
                    password=plan["passwords"][user],
                    cost=KdfCost.interactive(),  # a demo on a laptop: quick logins
                )
            gateway = Gateway(
                GatewayConfig(
                    home=home,
                    smtp_port=ports[f"{user}-smtp"],
                    imap_port=ports[f"{user}-imap"],
                    inbound_port=ports[f"{user}-inbound"],
                    poll_interval=2.0,
                )
            )
            await gateway.start()
            gateways.append(gateway)
        clients = _clients(plan, relay_url)
        write_private(directory / "clients.json", json.dumps(clients, indent=2).encode())
        _print_summary(directory, clients)
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR1, _print_summary, directory, clients
        )

    async def stop() -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        for gateway in gateways:
            await gateway.stop()
        await relay.stop()

    await run(start, stop)


def _clients(plan: dict[str, Any], relay_url: str) -> dict[str, Any]:
    ports = plan["ports"]
    return {
        "accounts": [
            {
                "address": f"{user}@{DOMAIN}",
                "password": plan["passwords"][user],
                "smtp": {
                    "host": "127.0.0.1",
                    "port": ports[f"{user}-smtp"],
                    "security": "starttls",
                },
                "imap": {
                    "host": "127.0.0.1",
                    "port": ports[f"{user}-imap"],
                    "security": "starttls",
                },
                "inbound": {"host": "127.0.0.1", "port": ports[f"{user}-inbound"]},
            }
            for user in USERS
        ],
        "relays": [{"url": relay_url}],
    }


def _print_summary(directory: Path, clients: dict[str, Any]) -> None:
    lines = [f"Sealgate demo bubble '{DOMAIN}' is running (Ctrl-C stops it)."]
    for acc in clients["accounts"]:
        lines.append(
            f"  {acc['address']:<20} password {acc['password']}  "
            f"SMTP 127.0.0.1:{acc['smtp']['port']} (STARTTLS)  "
            f"IMAP 127.0.0.1:{acc['imap']['port']} (STARTTLS)  "
            f"inbound (for an MX) 127.0.0.1:{acc['inbound']['port']}"
        )
    lines.append(f"  relay {clients['relays'][0]['url']}")
    lines.append(f"Client settings: {directory / 'clients.json'}")
    lines.append(f"(kill -USR1 {os.getpid()} prints these lines again)")
    print("\n".join(lines), flush=True)
