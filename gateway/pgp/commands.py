"""The `sealgate pgp` commands' work (`gateway.pgp.cli` builds their parser).

Errors are `ProvisionError`s: one line, exit status 1 (`gateway.cli.main`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import WrongPassphrase
from bridge.keys import AccountKeys, unseal_seed
from bridge.published_key import MAX_PUBLISHED_KEY, PublishedKey, published_key_lookup_id
from gateway.homes import AdminHome, HomeError, Membership, gateway_database_url
from gateway.pgp.directory import published_keys
from gateway.pgp.keyring import OpenPgpKeys
from gateway.pgp.keys import (
    OpenPgpKeyError,
    PeerKey,
    fingerprint_of,
    public_armored,
    read_public_key,
)
from gateway.provision import (
    ProvisionError,
    check_relays,
    publish,
    published_version,
    read_password_file,
)
from gateway.store.accounts import AccountStore, normalize_address
from gateway.store.db import InvalidValue, open_engine
from gateway.store.directory_cache import DirectoryCache
from gateway.store.openpgp import OpenPgpStore


@dataclass(frozen=True)
class _Gateway:
    membership: Membership
    accounts: AccountStore
    store: OpenPgpStore
    keys: OpenPgpKeys
    directory: DirectoryCache

    @property
    def domain(self) -> str:
        return self.membership.domain


@contextmanager
def _open(gateway: Path) -> Iterator[_Gateway]:
    try:
        membership = Membership.load(gateway)
    except HomeError as e:
        raise ProvisionError(str(e)) from None
    engine = open_engine(gateway_database_url(gateway))
    try:
        store = OpenPgpStore(engine)
        yield _Gateway(membership, AccountStore(engine), store, OpenPgpKeys(store),
                       DirectoryCache(engine))
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


def _outside(address: str, domain: str) -> str:
    if address.rpartition("@")[2] == domain:
        raise ProvisionError(
            f"{address} is in the bubble ({domain}): members have bubble keys; mail to it "
            "is sealed, not OpenPGP"
        )
    return address


def _key_file(path: Path, read: Callable[[bytes], PeerKey] = read_public_key) -> PeerKey:
    """The correspondent's public key in `path`, checked (`read_public_key`)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProvisionError(f"cannot read {path}: {e.strerror}") from None
    try:
        return read(data)
    except OpenPgpKeyError as e:
        raise ProvisionError(f"{path}: {e}") from None


def _note_user_ids(peer: PeerKey, address: str) -> None:
    if not peer.names(address):
        print(f"note: none of the key's user ids names {address}: "
              f"{', '.join(peer.user_ids) or 'it has none'}")


def cmd_pgp_import(args: argparse.Namespace) -> None:
    address = _address(args.address)
    with _open(args.gateway) as gw:
        _outside(address, gw.domain)
        peer = _key_file(args.keyfile, lambda data: gw.keys.import_peer(address, data))
    print(f"imported key {peer.fingerprint} for {address}")
    _note_user_ids(peer, address)


async def _publish_statement(
    address: str, peer: PeerKey | None, admin: AdminHome, relays: list[str],
    relay_ca: Path | None,
) -> PublishedKey:
    urls = check_relays(relays)
    lid = published_key_lookup_id(admin.directory_key, address)
    version = admin.claim_version(lid, await published_version(lid, urls, admin, relay_ca))
    statement = PublishedKey(address, None if peer is None else peer.fingerprint,
                             None if peer is None else peer.public, version)
    await publish(statement.to_record(admin.root, admin.directory_key), urls,
                  f"the published OpenPGP key of {address}", relay_ca)
    return statement


def _admin(path: Path) -> AdminHome:
    try:
        return AdminHome.load(path)
    except HomeError as e:
        raise ProvisionError(str(e)) from None


def cmd_pgp_publish(args: argparse.Namespace) -> None:
    admin = _admin(args.bubble)
    address = _outside(_address(args.address), admin.domain)
    peer = _key_file(args.keyfile)
    if len(peer.public) > MAX_PUBLISHED_KEY:
        raise ProvisionError(
            f"{args.keyfile}: the key is {len(peer.public)} bytes, a published key at most "
            f"{MAX_PUBLISHED_KEY} (export it with gpg --export-options export-minimal)"
        )
    statement = asyncio.run(_publish_statement(address, peer, admin, args.relay, args.relay_ca))
    print(f"published key {peer.fingerprint} for {address} (statement version "
          f"{statement.version}): every gateway of the bubble uses it from its next "
          "directory sync, unless it imported a key of its own for that address")
    _note_user_ids(peer, address)


def cmd_pgp_unpublish(args: argparse.Namespace) -> None:
    admin = _admin(args.bubble)
    address = _outside(_address(args.address), admin.domain)
    statement = asyncio.run(_publish_statement(address, None, admin, args.relay, args.relay_ca))
    print(f"withdrew the published key of {address} (statement version {statement.version}): "
          "gateways stop using it at their next directory sync")


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
        imported = dict(gw.store.peers())
        for address, peer in imported.items():
            print(f"correspondent {address} {peer.fingerprint}")
        published, _bad = published_keys(
            gw.directory.all(), gw.membership.directory_key, (gw.membership.root_public,)
        )
        for address, key in sorted(published.items()):
            note = " (not used: imported here)" if address in imported else ""
            print(f"directory {address} {key.fingerprint}{note}")


def cmd_pgp_remove(args: argparse.Namespace) -> None:
    address = _address(args.address)
    with _open(args.gateway) as gw:
        if not gw.store.remove_peer_key(address):
            raise ProvisionError(f"no correspondent key is held for {address}")
    print(f"forgot the key of {address}")
