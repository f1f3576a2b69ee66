"""Operator actions on a bubble's directory (used by the CLI and the demo).

`add_account` generates the account's keys on the gateway, seals them under the
account passphrase, publishes the root-signed directory entry to the account's
home relays and only then records the account in the gateway's store, with its
OpenPGP key (`gateway.pgp`; an account enrolled in two steps gets it at first login).
`rotate_account` gives an account new encryption and signing keys and publishes a
newer record; `revoke_account` and `revoke_gateway` publish the root's revocations.
The two-step enrolment that keeps the root key off the gateway is in
`gateway.enrolment`. Every record the root signs takes its version from
`AdminHome.claim_version`, above any version found on the relays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from bridge.directory import (
    MAX_OLD_SIGNING_KEYS,
    DirectoryEntry,
    DirectoryRecord,
    lookup_id,
    make_record,
    normalize_address,
    open_record,
)
from bridge.drain import DrainStatement, drain_lookup_id
from bridge.errors import DirectoryError, RelayError, RelayRejected, WrongPassphrase
from bridge.keys import AccountKeys, AccountPublic, KdfCost, seal_seed, sealed_cost, unseal_seed
from bridge.relay.client import RelayClient
from bridge.revocation import GatewayRevocation
from gateway.homes import AdminHome, HomeError, Membership, gateway_database_url
from gateway.operator import KDF_COSTS as KDF_COSTS
from gateway.operator import ProvisionError as ProvisionError
from gateway.pgp.keyring import OpenPgpKeys
from gateway.store.accounts import AccountRow, AccountStore
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache
from gateway.store.openpgp import OpenPgpStore

MIN_PASSWORD_CHARS = 12


def check_password(password: str) -> str:
    """The password, if it is long enough to seal account keys under; counts characters
    (NFC code points), not bytes."""
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_PASSWORD_CHARS:
        raise ProvisionError(
            f"the password is too short: {length} characters, at least {MIN_PASSWORD_CHARS}"
        )
    return password


def check_relay_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) > 2000:
        raise ProvisionError(f"relay URL must start with http:// or https://: {url!r}")
    return url.rstrip("/")


def check_address(address: str, domain: str) -> str:
    try:
        address = normalize_address(address)
    except ValueError as e:
        raise ProvisionError(f"bad address: {e}") from None
    if address.rpartition("@")[2] != domain:
        raise ProvisionError(f"{address} is not in the bubble's domain {domain}")
    return address


def check_relays(relays: Sequence[str]) -> tuple[str, ...]:
    urls = tuple(check_relay_url(u) for u in relays)
    if not urls:
        raise ProvisionError("an account needs at least one --relay")
    return urls


async def publish(
    record: DirectoryRecord, urls: Sequence[str], what: str, relay_ca_file: Path | None = None
) -> None:
    """Publish to every relay; a relay that already holds exactly this record is fine."""
    for url in urls:
        client = RelayClient(url, ca_file=relay_ca_file)
        try:
            try:
                await client.publish(record)
            except RelayRejected as e:
                if e.status != 409 or await client.lookup(record.lookup_id) != record:
                    raise
        except RelayRejected as e:
            if e.status == 409:
                raise ProvisionError(
                    f"relay {url} holds a newer directory record for {what}; nothing changed there"
                ) from None
            raise ProvisionError(f"cannot publish {what} to relay {url}: {e}") from None
        except RelayError as e:
            raise ProvisionError(f"cannot publish {what} to relay {url}: {e}") from None
        finally:
            await client.close()


async def newest_entry(
    address: str, urls: Sequence[str], directory_key: bytes, root: bytes,
    relay_ca_file: Path | None = None, also: Sequence[DirectoryRecord] = (),
) -> DirectoryEntry | None:
    """The highest-version entry for `address` the relays (and `also`) hold, verified."""
    lid = lookup_id(directory_key, address)
    found: list[DirectoryRecord] = list(also)
    reached = False
    for url in urls:
        client = RelayClient(url, ca_file=relay_ca_file)
        try:
            record = await client.lookup(lid)
            reached = True
        except RelayError:
            continue
        finally:
            await client.close()
        if record is not None:
            found.append(record)
    if urls and not reached and not found:
        raise ProvisionError(f"no relay answered: {', '.join(urls)}")
    best: DirectoryEntry | None = None
    for record in found:
        try:
            entry = open_record(record, directory_key, (root,))
        except DirectoryError:
            continue
        if best is None or entry.version > best.version:
            best = entry
    return best


async def add_account(
    address: str,
    *,
    gateway_home: Path,
    admin: AdminHome,
    relays: Sequence[str],
    password: str,
    cost: KdfCost | None = None,
    relay_ca_file: Path | None = None,
) -> DirectoryEntry:
    address = check_address(address, admin.domain)
    check_password(password)
    urls = check_relays(relays)
    try:
        Membership.join(gateway_home, admin, urls)
    except HomeError as e:
        raise ProvisionError(str(e)) from None
    engine = open_engine(gateway_database_url(gateway_home))
    accounts = AccountStore(engine)
    if accounts.get(address) is not None:
        raise ProvisionError(f"{address} already exists on this gateway")
    keys = AccountKeys.generate()
    entry = DirectoryEntry(
        address=address, keys=keys.public, relays=urls, issued_at=int(time.time()),
        version=admin.claim_version(lookup_id(admin.directory_key, address)),
    )
    record = make_record(entry, admin.root, admin.directory_key)
    await publish(record, urls, address, relay_ca_file)
    DirectoryCache(engine).put_many([record])
    accounts.add(address, seal_seed(keys.pack(), password.encode("utf-8"), cost), keys.public, urls)
    OpenPgpKeys(OpenPgpStore(engine)).own(address, keys)  # its key for mail outside the bubble
    engine.dispose()
    return entry


def rotated_entry(
    current: DirectoryEntry, keys: AccountPublic, version: int, *, revoke_previous: bool
) -> DirectoryEntry:
    """The entry that replaces `current` with new keys: its signing key becomes a
    previous one (still accepted), or with `revoke_previous` every earlier one is revoked."""
    if keys.mailbox_key != current.keys.mailbox_key:
        raise ProvisionError(f"a rotation of {current.address} must keep its mailbox key")
    previous = (*current.previous_signing, current.keys.signing_key)
    revoked = current.revoked_signing
    if revoke_previous:
        previous, revoked = (), (*revoked, *previous)
    return DirectoryEntry(
        address=current.address, keys=keys, relays=current.relays, issued_at=int(time.time()),
        version=version, previous_signing=previous[-MAX_OLD_SIGNING_KEYS:],
        revoked_signing=revoked[-MAX_OLD_SIGNING_KEYS:],
    )


def unlock_for_rotation(account: AccountRow, password: str) -> AccountKeys:
    try:
        keys = AccountKeys.unpack(unseal_seed(account.sealed_seed, password.encode("utf-8")))
    except WrongPassphrase:
        raise ProvisionError(f"wrong password for {account.address}") from None
    if keys.public != account.public:
        raise ProvisionError(f"the sealed keys of {account.address} do not match its public keys")
    return keys


async def rotate_account(
    address: str,
    *,
    gateway_home: Path,
    admin: AdminHome,
    password: str,
    revoke_previous: bool = False,
    cost: KdfCost | None = None,
    relay_ca_file: Path | None = None,
) -> DirectoryEntry:
    """New encryption and signing keys for an account, published as a newer record.

    The gateway keeps every earlier generation (sealed with the new one) so mail
    sealed to old keys still opens; the mailbox and storage keys do not change. The
    old signing keys stay acceptable (`previous_signing`) unless `revoke_previous`.
    The new keys are stored before they are published: a failed publication leaves
    a gateway that still opens mail to either generation. Without `cost`, the seeds
    are sealed again at the Argon2id cost they had.
    """
    address = check_address(address, admin.domain)
    try:
        membership = Membership.load(gateway_home)
    except HomeError as e:
        raise ProvisionError(str(e)) from None
    if membership.root_public != admin.root.public:
        raise ProvisionError(f"{gateway_home} belongs to another bubble")
    engine = open_engine(gateway_database_url(gateway_home))
    try:
        accounts = AccountStore(engine)
        account = accounts.get(address)
        if account is None:
            raise ProvisionError(f"{address} is not an account of this gateway")
        keys = unlock_for_rotation(account, password)
        cache = DirectoryCache(engine)
        lid = lookup_id(admin.directory_key, address)
        cached = cache.get(lid)
        current = await newest_entry(
            address, account.relays, admin.directory_key, admin.root.public, relay_ca_file,
            also=() if cached is None else (cached,),
        )
        if current is None:
            raise ProvisionError(f"no directory record for {address} on its relays")
        if current.revoked:
            raise ProvisionError(f"{address} is revoked; a revoked address is not rotated")
        try:
            rotated = keys.rotated()
        except ValueError as e:
            raise ProvisionError(f"cannot rotate {address}: {e}") from None
        entry = rotated_entry(
            current, rotated.public, admin.claim_version(lid, floor=current.version),
            revoke_previous=revoke_previous,
        )
        record = make_record(entry, admin.root, admin.directory_key)
        cost = cost or sealed_cost(account.sealed_seed)
        sealed = seal_seed(rotated.pack(), password.encode("utf-8"), cost)
        accounts.set_keys(address, sealed, rotated.public)
        try:
            await publish(record, current.relays, address, relay_ca_file)
        except ProvisionError as e:
            raise ProvisionError(
                f"{e} (the gateway holds the new keys; run the rotation again to publish)"
            ) from None
        cache.put_many([record])
        return entry
    finally:
        engine.dispose()


async def revoke_account(
    address: str, *, admin: AdminHome, relays: Sequence[str], relay_ca_file: Path | None = None
) -> DirectoryEntry:
    """Publish a record that revokes `address` (and every key it had) to `relays`."""
    address = check_address(address, admin.domain)
    urls = check_relays(relays)
    current = await newest_entry(
        address, urls, admin.directory_key, admin.root.public, relay_ca_file
    )
    if current is None:
        raise ProvisionError(f"no directory record for {address} on these relays")
    entry = dataclasses.replace(
        current, revoked=True, issued_at=int(time.time()),
        version=admin.claim_version(lookup_id(admin.directory_key, address), current.version),
    )
    await publish(make_record(entry, admin.root, admin.directory_key), urls, address,
                  relay_ca_file)
    return entry


async def revoke_gateway(
    gateway_key: bytes, *, admin: AdminHome, relays: Sequence[str],
    relay_ca_file: Path | None = None,
) -> None:
    """Publish the root's revocation of a gateway's deposit key to `relays`."""
    try:
        revocation = GatewayRevocation.issue(admin.root, gateway_key)
    except ValueError as e:
        raise ProvisionError(str(e)) from None
    for url in check_relays(relays):
        client = RelayClient(url, ca_file=relay_ca_file)
        try:
            await client.revoke_gateway(revocation)
        except RelayError as e:
            raise ProvisionError(f"cannot publish the revocation to relay {url}: {e}") from None
        finally:
            await client.close()


async def published_version(
    lid: bytes, urls: Sequence[str], admin: AdminHome, relay_ca_file: Path | None = None
) -> int:
    """The highest version of a root-signed record filed under `lid` on the relays that
    answer (0 if none): a new statement must be above it."""
    floor = 0
    for relay in urls:
        client = RelayClient(relay, ca_file=relay_ca_file)
        try:
            record = await client.lookup(lid)
        except RelayError:
            continue
        finally:
            await client.close()
        if record is not None:
            with contextlib.suppress(DirectoryError):
                record.verify_publisher((admin.root.public,))
                floor = max(floor, record.version)
    return floor


async def drain_relay(
    url: str, *, draining: bool, admin: AdminHome, relays: Sequence[str] = (),
    relay_ca_file: Path | None = None,
) -> DrainStatement:
    """Sign that relay `url` is drained (or no longer) and publish it to `url` and `relays`.

    The version is above every one the admin home signed and every one the relays hold.
    """
    urls = tuple(dict.fromkeys(check_relays([url, *relays])))
    lid = drain_lookup_id(admin.directory_key, urls[0])
    floor = await published_version(lid, urls, admin, relay_ca_file)
    statement = DrainStatement(urls[0], draining, admin.claim_version(lid, floor))
    record = statement.to_record(admin.root, admin.directory_key)
    await publish(record, urls, f"the drain statement of {urls[0]}", relay_ca_file)
    return statement


def read_password_file(path: Path) -> str:
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise ProvisionError(f"cannot read password file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ProvisionError(f"password file {path} is not UTF-8 text") from None
    password = text.rstrip("\r\n")
    if not password:
        raise ProvisionError(f"password file {path} is empty")
    return password
