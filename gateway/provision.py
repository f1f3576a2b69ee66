"""Operator actions that create a bubble and its accounts (used by the CLI and the demo).

`add_account` generates the account's keys on the gateway, seals them under the
account passphrase, publishes the root-signed directory entry to the account's
home relays and only then records the account in the gateway's store.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge.directory import DirectoryEntry, make_record, normalize_address
from bridge.errors import RelayError
from bridge.keys import AccountKeys, KdfCost, seal_seed
from bridge.relay.client import RelayClient
from gateway.homes import AdminHome, HomeError, Membership, gateway_database_url
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache


class ProvisionError(Exception):
    """An operator action could not be done; the message is one line for the operator."""


MIN_PASSWORD_CHARS = 12
# The Argon2id cost an account's keys are sealed with (`account add --kdf-cost`).
KDF_COSTS: dict[str, Callable[[], KdfCost]] = {
    "moderate": KdfCost.moderate,
    "interactive": KdfCost.interactive,
    "minimum": KdfCost.minimum,
}


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
    try:
        address = normalize_address(address)
    except ValueError as e:
        raise ProvisionError(f"bad address: {e}") from None
    if address.rpartition("@")[2] != admin.domain:
        raise ProvisionError(f"{address} is not in the bubble's domain {admin.domain}")
    check_password(password)
    urls = tuple(check_relay_url(u) for u in relays)
    if not urls:
        raise ProvisionError("an account needs at least one --relay")
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
        address=address, keys=keys.public, relays=urls, issued_at=int(time.time())
    )
    record = make_record(entry, admin.root, admin.directory_key)
    for url in urls:
        client = RelayClient(url, ca_file=relay_ca_file)
        try:
            await client.publish(record)
        except RelayError as e:
            raise ProvisionError(f"cannot publish {address} to relay {url}: {e}") from None
        finally:
            await client.close()
    DirectoryCache(engine).put_many([record])
    accounts.add(address, seal_seed(keys.seed, password.encode("utf-8"), cost), keys.public, urls)
    engine.dispose()
    return entry


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
