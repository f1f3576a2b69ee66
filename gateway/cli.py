"""The `sealgate` command: one entry point, one subcommand per operator action.

    sealgate bubble init   --home ADMIN --domain DOMAIN
    sealgate relay serve   --home RELAY --listen HOST:PORT [--trust-root FILE ...]
    sealgate account add   ADDRESS --gateway GW --bubble ADMIN --relay URL [...]
                           --password-file FILE [--kdf-cost moderate|interactive|minimum]
    sealgate gateway serve --home GW --smtp HOST:PORT --imap HOST:PORT
    sealgate demo          --dir DIR [--port-base N]

Errors are one line on stderr (`sealgate: error: ...`) and exit status 1; usage
errors exit 2. Serving commands run until SIGINT or SIGTERM and then exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from bridge.settings import SettingsError, load_settings, parse_host_port, read_toml
from gateway.config import GatewayConfig
from gateway.homes import AdminHome, HomeError, load_root_public
from gateway.provision import KDF_COSTS, ProvisionError, add_account, read_password_file

log = logging.getLogger("sealgate")


class CliError(Exception):
    """A failure to report as one line."""


def _file_values(path: Path | None) -> dict[str, Any]:
    return read_toml(path) if path is not None else {}


async def run_until_signal(
    start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]
) -> None:
    """Start, then wait for SIGINT/SIGTERM, then stop."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
        await stopping.wait()
    finally:
        await stop()


def cmd_bubble_init(args: argparse.Namespace) -> None:
    domain = args.domain.strip().lower()
    if not domain or "@" in domain or any(c.isspace() for c in domain):
        raise CliError(f"bad domain {args.domain!r}")
    admin = AdminHome.create(args.home, domain)
    print(f"bubble {domain} created in {args.home}")
    print(f"root public key: {admin.root.public.hex()} ({admin.root_public_file})")


def relay_config(args: argparse.Namespace) -> RelayConfig:
    host, port = parse_host_port(args.listen, "listen")
    base = load_settings(
        RelayConfig,
        _file_values(args.config),
        {"home": args.home, "host": host, "port": port},
        source=str(args.config),
    )
    roots = tuple(load_root_public(Path(p)) for p in args.trust_root)
    tls = {}
    if args.tls_cert or args.tls_key:
        tls = {"tls_cert": args.tls_cert, "tls_key": args.tls_key}
    try:
        return dataclasses.replace(base, trusted_roots=base.trusted_roots + roots, **tls)
    except ValueError as e:
        raise SettingsError(str(e)) from None


def cmd_relay_serve(args: argparse.Namespace) -> None:
    config = relay_config(args)
    if not config.trusted_roots:
        raise CliError("a relay needs at least one --trust-root (the bubble's root.pub)")
    server = RelayServer(config)

    async def start() -> None:
        await server.start()
        print(f"relay listening on http://{config.host}:{server.port}", flush=True)

    asyncio.run(run_until_signal(start, server.stop))


def cmd_account_add(args: argparse.Namespace) -> None:
    admin = AdminHome.load(args.bubble)
    password = read_password_file(args.password_file)
    entry = asyncio.run(
        add_account(
            args.address,
            gateway_home=args.gateway,
            admin=admin,
            relays=args.relay,
            password=password,
            cost=KDF_COSTS[args.kdf_cost](),
            relay_ca_file=args.relay_ca,
        )
    )
    mailbox = entry.keys.mailbox_id.hex()[:16]
    print(f"account {entry.address} added to {args.gateway} (mailbox {mailbox}...)")


def gateway_config(args: argparse.Namespace) -> GatewayConfig:
    overrides: dict[str, Any] = {"home": args.home}
    if args.smtp:
        overrides["smtp_host"], overrides["smtp_port"] = parse_host_port(args.smtp, "smtp")
    if args.imap:
        overrides["imap_host"], overrides["imap_port"] = parse_host_port(args.imap, "imap")
    overrides["hostname"] = args.hostname
    overrides["poll_interval"] = args.poll_interval
    return load_settings(
        GatewayConfig, _file_values(args.config), overrides, source=str(args.config)
    )


def cmd_gateway_serve(args: argparse.Namespace) -> None:
    from gateway.service import Gateway

    gateway = Gateway(gateway_config(args))

    async def start() -> None:
        await gateway.start()
        print(
            f"gateway smtp on {gateway.config.smtp_host}:{gateway.smtp_port}, "
            f"imap on {gateway.config.imap_host}:{gateway.imap_port}",
            flush=True,
        )

    asyncio.run(run_until_signal(start, gateway.stop))


def cmd_demo(args: argparse.Namespace) -> None:
    from gateway.demo import run_demo

    asyncio.run(run_demo(args.dir, port_base=args.port_base, run=run_until_signal))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealgate",
        description="End-to-end encrypted mail for unchanged SMTP/IMAP clients.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bubble = sub.add_parser("bubble", help="administer a bubble").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = bubble.add_parser("init", help="create a bubble: root key and directory key")
    p.add_argument("--home", type=Path, required=True, help="admin directory to create")
    p.add_argument("--domain", required=True, help="mail domain of the bubble")
    p.set_defaults(func=cmd_bubble_init)

    relay = sub.add_parser("relay", help="run a relay").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = relay.add_parser("serve", help="serve the relay HTTP API until SIGINT/SIGTERM")
    p.add_argument("--home", type=Path, required=True, help="relay state directory")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on")
    p.add_argument(
        "--trust-root",
        action="append",
        default=[],
        metavar="FILE",
        help="a bubble root public key (ADMIN/root.pub) whose gateways may deposit; repeatable",
    )
    p.add_argument("--tls-cert", type=Path, metavar="FILE",
                   help="PEM certificate chain: serve HTTPS (needs --tls-key)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key for --tls-cert")
    p.add_argument("--config", type=Path, help="TOML file with relay settings")
    p.set_defaults(func=cmd_relay_serve)

    account = sub.add_parser("account", help="manage accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = account.add_parser("add", help="create an account on a gateway and publish it")
    p.add_argument("address")
    p.add_argument("--gateway", type=Path, required=True, help="gateway state directory")
    p.add_argument("--bubble", type=Path, required=True, help="bubble admin directory")
    p.add_argument(
        "--relay",
        action="append",
        required=True,
        metavar="URL",
        help="home relay of the mailbox, in priority order; repeatable",
    )
    p.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="file whose first line is the account's password (12 characters or more)",
    )
    p.add_argument(
        "--kdf-cost",
        choices=list(KDF_COSTS),
        default="moderate",
        help="Argon2id cost the account's keys are sealed with (default moderate: ~0.5 s "
        "and 256 MiB per login check; the cheaper ones are for demos and tests)",
    )
    p.add_argument(
        "--relay-ca", type=Path, metavar="FILE",
        help="for https relays: trust only the certificates in FILE",
    )
    p.set_defaults(func=cmd_account_add)

    gateway = sub.add_parser("gateway", help="run a gateway").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = gateway.add_parser("serve", help="serve SMTP submission and IMAP until SIGINT/SIGTERM")
    p.add_argument("--home", type=Path, required=True, help="gateway state directory")
    p.add_argument("--smtp", metavar="HOST:PORT", help="SMTP submission listener (port 0: any)")
    p.add_argument("--imap", metavar="HOST:PORT", help="IMAP listener (port 0: any)")
    p.add_argument("--hostname", help="name in the SMTP greeting and the TLS certificate")
    p.add_argument("--poll-interval", type=float, help="seconds between relay fetches")
    p.add_argument("--config", type=Path, help="TOML file with gateway settings")
    p.set_defaults(func=cmd_gateway_serve)

    p = sub.add_parser("demo", help="run a relay and two gateways (alice, bob) on loopback")
    p.add_argument("--dir", type=Path, required=True, help="state directory (reused on later runs)")
    p.add_argument("--port-base", type=int, help="use ports N..N+4 instead of free ones")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosmtpd logs every command line (addresses) at INFO and every DATA line at
    # DEBUG: neither may reach a log, whatever level the operator asks for.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        args.func(args)
    except (CliError, SettingsError, HomeError, ProvisionError, BridgeError, OSError) as e:
        message = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
        print(f"sealgate: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
