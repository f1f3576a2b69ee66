"""`sealgate pgp ...`: an operator's commands for OpenPGP keys on a gateway.

    sealgate pgp export ADDRESS --gateway GW          print an account's public key
    sealgate pgp import ADDRESS KEYFILE --gateway GW  keep a correspondent's public key
    sealgate pgp keygen ADDRESS --gateway GW --password-file FILE
                                                      make an account's key now
    sealgate pgp list   --gateway GW                  accounts' and correspondents' keys
    sealgate pgp remove ADDRESS --gateway GW          forget a correspondent's key
    sealgate pgp publish ADDRESS KEYFILE --bubble ADMIN --relay URL [...]
                                                      vouch for a correspondent's key
                                                      for every gateway of the bubble
    sealgate pgp unpublish ADDRESS --bubble ADMIN --relay URL [...]

Errors are `ProvisionError`s: one line, exit status 1 (`gateway.cli.main`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.operator import command


def _command(name: str) -> Any:
    return command("gateway.pgp.commands", name)


def add_pgp_commands(sub: Any) -> None:
    pgp = sub.add_parser(
        "pgp", help="OpenPGP keys: export an account's, import or publish a correspondent's"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")

    def gateway_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", type=Path, required=True, metavar="GW",
                       help="gateway state directory")

    p = pgp.add_parser("export", help="print an account's OpenPGP public key (armored)")
    p.add_argument("address")
    gateway_argument(p)
    p.set_defaults(func=_command("cmd_pgp_export"))

    p = pgp.add_parser("import", help="keep a correspondent's public key: mail to them is "
                       "sent encrypted to it")
    p.add_argument("address")
    p.add_argument("keyfile", type=Path, metavar="KEYFILE",
                   help="the public key, armored or binary (RSA, Ed25519, ...)")
    gateway_argument(p)
    p.set_defaults(func=_command("cmd_pgp_import"))

    p = pgp.add_parser("keygen", help="make an account's OpenPGP key now (else: at its "
                       "next login)")
    p.add_argument("address")
    gateway_argument(p)
    p.add_argument("--password-file", type=Path, required=True,
                   help="file whose first line is the account's password")
    p.set_defaults(func=_command("cmd_pgp_keygen"))

    p = pgp.add_parser("list", help="the accounts' and the correspondents' key fingerprints, "
                       "the directory's marked as such")
    gateway_argument(p)
    p.set_defaults(func=_command("cmd_pgp_list"))

    for action, what in (
        ("publish", "vouch, as the bubble's root, for a correspondent's key: every gateway "
         "encrypts mail to them with it"),
        ("unpublish", "withdraw a published key"),
    ):
        p = pgp.add_parser(action, help=what)
        p.add_argument("address")
        if action == "publish":
            p.add_argument("keyfile", type=Path, metavar="KEYFILE",
                           help="the public key, armored or binary")
        p.add_argument("--bubble", type=Path, required=True, help="bubble admin directory")
        p.add_argument("--relay", action="append", default=[], metavar="URL", required=True,
                       help="a relay the gateways sync their directory from; repeatable")
        p.add_argument("--relay-ca", type=Path, metavar="FILE",
                       help="for https relays: trust only the certificates in FILE")
        p.set_defaults(func=_command(f"cmd_pgp_{action}"))

    p = pgp.add_parser("remove", help="forget a correspondent's key")
    p.add_argument("address")
    gateway_argument(p)
    p.set_defaults(func=_command("cmd_pgp_remove"))
