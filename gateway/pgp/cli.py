"""`sealgate pgp ...`: an operator's commands for OpenPGP keys on a gateway.

    sealgate pgp export ADDRESS --gateway GW          print an account's public key
    sealgate pgp import ADDRESS KEYFILE --gateway GW  keep a correspondent's public key
    sealgate pgp keygen ADDRESS --gateway GW --password-file FILE
                                                      make an account's key now
    sealgate pgp list   --gateway GW                  accounts' and correspondents' keys
    sealgate pgp remove ADDRESS --gateway GW          forget a correspondent's key

Errors are `ProvisionError`s: one line, exit status 1 (`gateway.cli.main`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import WrongPassphrase
from bridge.keys import AccountKeys, unseal_seed
from gateway.homes import HomeError, Membership, gateway_database_url
from gateway.pgp.keyring import OpenPgpKeys
from gateway.pgp.keys import OpenPgpKeyError, fingerprint_of, public_armored
from gateway.provision import ProvisionError, read_password_file
from gateway.store.accounts import AccountStore, normalize_address
from gateway.store.db import InvalidValue, open_engine
from gateway.store.openpgp import OpenPgpStore


@dataclass(frozen=True)
class _Gateway:
    domain: str
    accounts: AccountStore
    store: OpenPgpStore
    keys: OpenPgpKeys


@contextmanager
def _open(gateway: Path) -> Iterator[_Gateway]:
    try:
        domain = Membership.load(gateway).domain
    except HomeError as e:
        raise ProvisionError(str(e)) from None
    engine = open_engine(gateway_database_url(gateway))
    try:
        store = OpenPgpStore(engine)
        yield _Gateway(domain, AccountStore(engine), store, OpenPgpKeys(store))
    finally:
        engine.dispose()


def _address(text: str) -> str:
    try:
        return normalize_address(text)
    except InvalidValue as e:
        raise ProvisionError(f"bad address: {e}") from None


def cmd_pgp_export(args: argparse.Namespace) -> None:
    address = _address(args.address)
    with _open(args.gateway) as gw:
        if gw.accounts.get(address) is None:
            raise ProvisionError(f"{address} is not an account of this gateway")
        public = gw.keys.public(address)
    if public is None:
        raise ProvisionError(
            f"{address} has no OpenPGP key yet: it gets one at its next login, or run "
            f"`sealgate pgp keygen {address} --gateway {args.gateway} --password-file FILE`"
        )
    print(public_armored(public), end="")


def cmd_pgp_import(args: argparse.Namespace) -> None:
    address = _address(args.address)
    try:
        data = args.keyfile.read_bytes()
    except OSError as e:
        raise ProvisionError(f"cannot read {args.keyfile}: {e.strerror}") from None
    with _open(args.gateway) as gw:
        if address.rpartition("@")[2] == gw.domain:
            raise ProvisionError(
                f"{address} is in the bubble ({gw.domain}): mail to it is sealed, not OpenPGP"
            )
        try:
            peer = gw.keys.import_peer(address, data)
        except OpenPgpKeyError as e:
            raise ProvisionError(f"{args.keyfile}: {e}") from None
    print(f"imported key {peer.fingerprint} for {address}")
    if not peer.names(address):
        print(f"note: none of the key's user ids names {address}: "
              f"{', '.join(peer.user_ids) or 'it has none'}")


def cmd_pgp_keygen(args: argparse.Namespace) -> None:
    address = _address(args.address)
    password = read_password_file(args.password_file)
    with _open(args.gateway) as gw:
        account = gw.accounts.get(address)
        if account is None:
            raise ProvisionError(f"{address} is not an account of this gateway")
        try:
            seeds = unseal_seed(account.sealed_seed, password.encode("utf-8"))
        except WrongPassphrase:
            raise ProvisionError(f"wrong password for {address}") from None
        had = gw.keys.has_own(address)
        fingerprint = fingerprint_of(gw.keys.own(address, AccountKeys.unpack(seeds)))
    print(f"{address} {'already had' if had else 'now has'} OpenPGP key {fingerprint}")


def cmd_pgp_list(args: argparse.Namespace) -> None:
    with _open(args.gateway) as gw:
        for account in gw.accounts.all():
            stored = gw.store.account_key(account.address)
            print(f"account {account.address} "
                  f"{stored.fingerprint if stored else '(no key yet: next login)'}")
        for address, peer in gw.store.peers():
            print(f"correspondent {address} {peer.fingerprint}")


def cmd_pgp_remove(args: argparse.Namespace) -> None:
    address = _address(args.address)
    with _open(args.gateway) as gw:
        if not gw.store.remove_peer_key(address):
            raise ProvisionError(f"no correspondent key is held for {address}")
    print(f"forgot the key of {address}")


def add_pgp_commands(sub: Any) -> None:
    pgp = sub.add_parser(
        "pgp", help="OpenPGP keys: export an account's, import a correspondent's"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")

    def gateway_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", type=Path, required=True, metavar="GW",
                       help="gateway state directory")

    p = pgp.add_parser("export", help="print an account's OpenPGP public key (armored)")
    p.add_argument("address")
    gateway_argument(p)
    p.set_defaults(func=cmd_pgp_export)

    p = pgp.add_parser("import", help="keep a correspondent's public key: mail to them is "
                       "sent encrypted to it")
    p.add_argument("address")
    p.add_argument("keyfile", type=Path, metavar="KEYFILE",
                   help="the public key, armored or binary (RSA, Ed25519, ...)")
    gateway_argument(p)
    p.set_defaults(func=cmd_pgp_import)

    p = pgp.add_parser("keygen", help="make an account's OpenPGP key now (else: at its "
                       "next login)")
    p.add_argument("address")
    gateway_argument(p)
    p.add_argument("--password-file", type=Path, required=True,
                   help="file whose first line is the account's password")
    p.set_defaults(func=cmd_pgp_keygen)

    p = pgp.add_parser("list", help="the accounts' and the correspondents' key fingerprints")
    gateway_argument(p)
    p.set_defaults(func=cmd_pgp_list)

    p = pgp.add_parser("remove", help="forget a correspondent's key")
    p.add_argument("address")
    gateway_argument(p)
    p.set_defaults(func=cmd_pgp_remove)
