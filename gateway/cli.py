"""The `sealgate` command: one entry point, one subcommand per operator action.

    sealgate bubble init   --home ADMIN --domain DOMAIN
    sealgate relay serve   --home RELAY --listen HOST:PORT [--trust-root FILE ...]
                           [--quota SIZE] [--retention DURATION] [--db postgresql://...]
    sealgate relay status  --url URL [--json]
    sealgate relay drain   URL --bubble ADMIN [--relay URL ...]   (planned maintenance)
    sealgate relay undrain URL --bubble ADMIN [--relay URL ...]
    sealgate account add   ADDRESS --gateway GW --bubble ADMIN --relay URL [...]
                           --password-file FILE [--kdf-cost moderate|interactive|minimum]
    sealgate account rotate ADDRESS --gateway GW --bubble ADMIN --password-file FILE
    sealgate account revoke ADDRESS --bubble ADMIN --relay URL [...]
    sealgate account request ADDRESS --gateway GW --relay URL [...] --password-file FILE
                           --out REQ [--rotate]            (two-step enrolment, 1)
    sealgate bubble sign   REQ --bubble ADMIN --out SIGNED (2, where the root key is)
    sealgate account import SIGNED --gateway GW            (3)
    sealgate gateway serve --home GW --smtp HOST:PORT --imap HOST:PORT
                           [--smtps HOST:PORT] [--imaps HOST:PORT] [--inbound HOST:PORT]
                           [--smarthost HOST:PORT]
    sealgate gateway revoke --bubble ADMIN (--gateway-key HEX | --gateway GW) --relay URL [...]
    sealgate demo          --dir DIR [--port-base N]
    sealgate migrate mbox|maildir|imap ...  (gateway.migrate.cli)
    sealgate pgp export|import|keygen|list|remove|publish|unpublish ...  (gateway.pgp.cli)

Errors are one line on stderr (`sealgate: error: ...`) and exit status 1; usage
errors exit 2. Serving commands run until SIGINT or SIGTERM and then exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import BridgeError
from bridge.settings import SettingsError, load_settings, parse_host_port, read_toml
from gateway.homes import AdminHome, HomeError, Membership, load_root_public
from gateway.migrate.cli import add_migrate_commands
from gateway.migrate.errors import MigrateError
from gateway.operator import KDF_COSTS, ProvisionError
from gateway.pgp.cli import add_pgp_commands

if TYPE_CHECKING:
    from bridge.relay.config import RelayConfig
    from bridge.relay.metrics import RelayStatus
    from gateway.config import GatewayConfig

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
    from bridge.relay.config import RelayConfig

    host, port = parse_host_port(args.listen, "listen")
    base = load_settings(
        RelayConfig,
        _file_values(args.config),
        {"home": args.home, "host": host, "port": port, "quota": args.quota,
         "retention": args.retention, "db": args.db},
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
    from bridge.relay.server import RelayServer

    config = relay_config(args)
    if not config.trusted_roots:
        raise CliError("a relay needs at least one --trust-root (the bubble's root.pub)")
    server = RelayServer(config)

    async def start() -> None:
        await server.start()
        print(f"relay listening on http://{config.host}:{server.port}", flush=True)

    asyncio.run(run_until_signal(start, server.stop))


def cmd_relay_status(args: argparse.Namespace) -> None:
    from bridge.errors import RelayUnavailable
    from bridge.relay.client import RelayClient
    from bridge.relay.operator import status_table

    async def fetch() -> RelayStatus:
        async with RelayClient(args.url, timeout=10, ca_file=args.relay_ca) as client:
            return await client.status()

    try:
        status = asyncio.run(fetch())
    except RelayUnavailable as e:
        raise CliError(f"relay {args.url} unreachable: {e}") from None
    except ValueError as e:
        raise CliError(str(e)) from None
    print(json.dumps(status.to_json()) if args.json else status_table(status))


def cmd_relay_drain(args: argparse.Namespace) -> None:
    from gateway.provision import drain_relay

    draining = args.action == "drain"
    admin = AdminHome.load(args.bubble)
    statement = asyncio.run(drain_relay(
        args.url, draining=draining, admin=admin, relays=args.relay,
        relay_ca_file=args.relay_ca,
    ))
    if draining:
        print(f"relay {statement.relay} drained (statement version {statement.version}): "
              "gateways stop depositing to it at their next directory sync and keep "
              "fetching what it holds")
    else:
        print(f"relay {statement.relay} undrained (statement version {statement.version}): "
              "gateways deposit to it again at their next directory sync")


def cmd_account_add(args: argparse.Namespace) -> None:
    from gateway.provision import add_account, read_password_file

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


def cmd_account_rotate(args: argparse.Namespace) -> None:
    from gateway.provision import read_password_file, rotate_account

    admin = AdminHome.load(args.bubble)
    password = read_password_file(args.password_file)
    entry = asyncio.run(rotate_account(
        args.address, gateway_home=args.gateway, admin=admin, password=password,
        revoke_previous=args.revoke_previous, relay_ca_file=args.relay_ca,
    ))
    kept = "revoked" if args.revoke_previous else "still accepted for mail signed before"
    print(f"account {entry.address} rotated: directory version {entry.version}, "
          f"new signing key {entry.keys.signing_key.hex()[:16]}...; old signing keys {kept}")


def cmd_account_revoke(args: argparse.Namespace) -> None:
    from gateway.provision import revoke_account

    admin = AdminHome.load(args.bubble)
    entry = asyncio.run(revoke_account(
        args.address, admin=admin, relays=args.relay, relay_ca_file=args.relay_ca
    ))
    print(f"account {entry.address} revoked: directory version {entry.version} "
          f"published to {len(args.relay)} relay(s)")


def cmd_account_request(args: argparse.Namespace) -> None:
    from gateway.enrolment import request_account
    from gateway.provision import read_password_file

    password = read_password_file(args.password_file)
    request = request_account(
        args.address, gateway_home=args.gateway, relays=args.relay, password=password,
        out=args.out, rotate=args.rotate, revoke_previous=args.revoke_previous,
        cost=KDF_COSTS[args.kdf_cost]() if args.kdf_cost else None,
    )
    what = "rotation" if args.rotate else "enrolment"
    print(f"{what} request for {request.address} written to {args.out}")
    print(f"gateway key: {request.gateway_key.hex()}")
    print("next: sealgate bubble sign REQ --bubble ADMIN --out SIGNED, where the root key is")


def cmd_bubble_sign(args: argparse.Namespace) -> None:
    from gateway.enrolment import sign_request

    admin = AdminHome.load(args.bubble)
    request, version = sign_request(args.request, admin=admin, out=args.out)
    what = "rotation of" if request.rotates is not None else "enrolment of"
    print(f"signed {what} {request.address} (directory version {version}) into {args.out}")
    print(f"gateway key: {request.gateway_key.hex()}")
    print(f"{args.out} holds the bubble's directory key: carry it like a secret, "
          "delete it after import")


def cmd_account_import(args: argparse.Namespace) -> None:
    from gateway.enrolment import import_grant

    pinned = load_root_public(args.trust_root) if args.trust_root else None
    entry, membership = asyncio.run(import_grant(
        args.signed, gateway_home=args.gateway, trusted_root=pinned, relay_ca_file=args.relay_ca
    ))
    mailbox = entry.keys.mailbox_id.hex()[:16]
    rotated = bool(entry.previous_signing or entry.revoked_signing)  # lists a replaced key
    done = "rotated on" if rotated else "added to"
    print(f"account {entry.address} {done} {args.gateway} (mailbox {mailbox}..., "
          f"directory version {entry.version})")
    print(f"bubble root: {membership.root_public.hex()}")
    print(f"gateway key: {membership.credential.verify_key.hex()}")


def cmd_gateway_revoke(args: argparse.Namespace) -> None:
    from gateway.provision import revoke_gateway

    admin = AdminHome.load(args.bubble)
    if args.gateway is not None:
        key = Membership.load(args.gateway).credential.verify_key
    else:
        try:
            key = bytes.fromhex(args.gateway_key)
        except ValueError:
            raise CliError("--gateway-key must be 64 hex digits") from None
        if len(key) != 32:
            raise CliError("--gateway-key must be 64 hex digits")
    asyncio.run(revoke_gateway(key, admin=admin, relays=args.relay, relay_ca_file=args.relay_ca))
    print(f"gateway key {key.hex()} revoked on {len(args.relay)} relay(s)")


def gateway_config(args: argparse.Namespace) -> GatewayConfig:
    from gateway.config import GatewayConfig

    overrides: dict[str, Any] = {"home": args.home}
    if args.smtp:
        overrides["smtp_host"], overrides["smtp_port"] = parse_host_port(args.smtp, "smtp")
    if args.imap:
        overrides["imap_host"], overrides["imap_port"] = parse_host_port(args.imap, "imap")
    for name in ("smtps", "imaps", "inbound", "smarthost"):
        if getattr(args, name):
            host_port = parse_host_port(getattr(args, name), name)
            overrides[f"{name}_host"], overrides[f"{name}_port"] = host_port
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
            f"imap on {gateway.config.imap_host}:{gateway.imap_port}"
            + (f", smtps on {gateway.config.smtps_host}:{gateway.smtps_port}"
               if gateway.smtps_port is not None else "")
            + (f", imaps on {gateway.config.imaps_host}:{gateway.imaps_port}"
               if gateway.imaps_port is not None else "")
            + (f", inbound on {gateway.config.inbound_host}:{gateway.inbound_port}"
               if gateway.inbound_port is not None else ""),
            flush=True,
        )

    asyncio.run(run_until_signal(start, gateway.stop))


def cmd_demo(args: argparse.Namespace) -> None:
    from gateway.demo import run_demo

    asyncio.run(run_demo(args.dir, port_base=args.port_base, run=run_until_signal))


def _kdf_cost_argument(p: argparse.ArgumentParser, default: str | None) -> None:
    kept = "" if default else " (default: moderate; with --rotate, the cost the keys have)"
    p.add_argument(
        "--kdf-cost",
        choices=list(KDF_COSTS),
        default=default,
        help="Argon2id cost the account's keys are sealed with (moderate: ~0.5 s and "
        f"256 MiB per login check; the cheaper ones are for demos and tests){kept}",
    )


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
    p.add_argument("--quota", metavar="SIZE",
                   help="envelope bytes kept at most, e.g. 20GiB (then the oldest are purged)")
    p.add_argument("--retention", metavar="DURATION",
                   help="how long envelopes and tombstones are kept, e.g. 30d (default)")
    p.add_argument("--db", metavar="URL",
                   help="postgresql://USER@HOST/DB: keep everything in PostgreSQL, shared "
                   "by every relay process given it (default: SQLite + files in --home)")
    p.add_argument("--config", type=Path, help="TOML file with relay settings")
    p.set_defaults(func=cmd_relay_serve)
    p = relay.add_parser("status", help="a relay's storage, traffic and purge figures")
    p.add_argument("--url", required=True, help="the relay's base URL")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _relay_ca_argument(p)
    p.set_defaults(func=cmd_relay_status)
    for action, what in (("drain", "stop depositing to a relay (gateways keep fetching it)"),
                         ("undrain", "deposit to a drained relay again")):
        p = relay.add_parser(action, help=what)
        p.add_argument("url", metavar="URL", help="the relay, as the accounts name it")
        p.add_argument("--bubble", type=Path, required=True, help="bubble admin directory")
        p.add_argument("--relay", action="append", default=[], metavar="URL",
                       help="another relay to publish the statement to; repeatable")
        _relay_ca_argument(p)
        p.set_defaults(func=cmd_relay_drain)

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
    _kdf_cost_argument(p, default="moderate")
    p.add_argument(
        "--relay-ca", type=Path, metavar="FILE",
        help="for https relays: trust only the certificates in FILE",
    )
    p.set_defaults(func=cmd_account_add)

    _add_directory_commands(bubble, account)

    gateway = sub.add_parser("gateway", help="run a gateway").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = gateway.add_parser("serve", help="serve SMTP submission and IMAP until SIGINT/SIGTERM")
    p.add_argument("--home", type=Path, required=True, help="gateway state directory")
    p.add_argument("--smtp", metavar="HOST:PORT", help="SMTP submission listener (port 0: any)")
    p.add_argument("--imap", metavar="HOST:PORT", help="IMAP listener (port 0: any)")
    p.add_argument("--smtps", metavar="HOST:PORT",
                   help="SMTP submission over implicit TLS (port 465 style)")
    p.add_argument("--imaps", metavar="HOST:PORT", help="IMAP over implicit TLS (port 993 style)")
    p.add_argument("--inbound", metavar="HOST:PORT",
                   help="SMTP listener for the organisation's MX: mail from outside")
    p.add_argument("--smarthost", metavar="HOST:PORT",
                   help="the legacy smarthost that takes OpenPGP mail to recipients outside")
    p.add_argument("--hostname", help="name in the SMTP greeting and the TLS certificate")
    p.add_argument("--poll-interval", type=float, help="seconds between relay fetches")
    p.add_argument("--config", type=Path, help="TOML file with gateway settings")
    p.set_defaults(func=cmd_gateway_serve)
    p = gateway.add_parser("revoke", help="revoke a gateway's deposit credential on relays")
    p.add_argument("--bubble", type=Path, required=True, help="bubble admin directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--gateway-key", metavar="HEX", help="the gateway key (64 hex digits)")
    which.add_argument("--gateway", type=Path, metavar="GW", help="read the key from GW")
    _relay_arguments(p)
    p.set_defaults(func=cmd_gateway_revoke)

    p = sub.add_parser("demo", help="run a relay and two gateways (alice, bob) on loopback")
    p.add_argument("--dir", type=Path, required=True, help="state directory (reused on later runs)")
    p.add_argument("--port-base", type=int, help="use ports N..N+6 instead of free ones")
    p.set_defaults(func=cmd_demo)
    add_migrate_commands(sub)
    add_pgp_commands(sub)
    return parser


def _relay_arguments(p: argparse.ArgumentParser, help_text: str = "a relay to publish to; "
                     "repeatable (give every relay of the bubble)") -> None:
    p.add_argument("--relay", action="append", required=True, metavar="URL", help=help_text)
    _relay_ca_argument(p)


def _relay_ca_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relay-ca", type=Path, metavar="FILE",
                   help="for https relays: trust only the certificates in FILE")


def _add_directory_commands(bubble: Any, account: Any) -> None:
    """Rotation, revocation and two-step enrolment."""
    p = account.add_parser("rotate", help="new encryption and signing keys for an account")
    p.add_argument("address")
    p.add_argument("--gateway", type=Path, required=True, help="gateway state directory")
    p.add_argument("--bubble", type=Path, required=True, help="bubble admin directory")
    p.add_argument("--password-file", type=Path, required=True,
                   help="file whose first line is the account's password")
    p.add_argument("--revoke-previous", action="store_true",
                   help="refuse mail signed by the old keys (they may be compromised)")
    _relay_ca_argument(p)
    p.set_defaults(func=cmd_account_rotate)

    p = account.add_parser("revoke", help="revoke an address and all its keys")
    p.add_argument("address")
    p.add_argument("--bubble", type=Path, required=True, help="bubble admin directory")
    _relay_arguments(p)
    p.set_defaults(func=cmd_account_revoke)

    p = account.add_parser("request", help="enrolment step 1: keys on the gateway, a request")
    p.add_argument("address")
    p.add_argument("--gateway", type=Path, required=True, help="gateway state directory")
    p.add_argument("--relay", action="append", default=[], metavar="URL",
                   help="home relay of the mailbox, in priority order; repeatable "
                   "(needed for a new account)")
    p.add_argument("--password-file", type=Path, required=True,
                   help="file whose first line is the account's password")
    p.add_argument("--out", type=Path, required=True, metavar="REQ", help="request file to write")
    p.add_argument("--rotate", action="store_true",
                   help="ask for new keys for an account of this gateway instead")
    p.add_argument("--revoke-previous", action="store_true",
                   help="with --rotate: refuse mail signed by the old keys")
    _kdf_cost_argument(p, default=None)
    p.set_defaults(func=cmd_account_request)

    p = account.add_parser("import", help="enrolment step 3: import the signed file, publish")
    p.add_argument("signed", type=Path, metavar="SIGNED")
    p.add_argument("--gateway", type=Path, required=True, help="gateway state directory")
    p.add_argument("--trust-root", type=Path, metavar="FILE",
                   help="refuse the file unless signed by this root (ADMIN/root.pub)")
    _relay_ca_argument(p)
    p.set_defaults(func=cmd_account_import)

    p = bubble.add_parser("sign", help="enrolment step 2: sign a gateway's request (offline)")
    p.add_argument("request", type=Path, metavar="REQ")
    p.add_argument("--bubble", type=Path, required=True, help="bubble admin directory")
    p.add_argument("--out", type=Path, required=True, metavar="SIGNED",
                   help="signed file to write (mode 0600: it holds the directory key)")
    p.set_defaults(func=cmd_bubble_sign)


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
    except (
        CliError, SettingsError, HomeError, ProvisionError, BridgeError, MigrateError, OSError
    ) as e:
        message = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
        print(f"sealgate: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
