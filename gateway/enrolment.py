"""Two-step enrolment: the gateway asks, the admin signs offline, the gateway imports.

    sealgate account request ADDRESS --gateway GW --relay URL ... --password-file F --out REQ
    sealgate bubble sign REQ --bubble ADMIN --out SIGNED          (the offline machine)
    sealgate account import SIGNED --gateway GW                    (publishes)

The same three steps rotate an account's keys with the root offline
(`account request ADDRESS --gateway GW --rotate --password-file F --out REQ`): the
request then carries the gateway's current record of the account, and the grant the
record that replaces it (`gateway.provision.rotated_entry`).

`request_account` generates the account keys (and, for a gateway that has no
membership yet, its deposit key) on the gateway, keeps the private halves in
GW/requests/<request id>.json (the seed sealed under the passphrase, mode 0600) and
writes the request: public keys, address, relays, gateway verify key. The request
holds no secret. `sign_request` (run where ADMIN/root.key is) answers with a grant:
the root-signed directory record, the gateway certificate, and what a gateway must
know of its bubble (domain, root public key, directory key, relays), all signed by
the root over the SHA-256 of the request it answers. The grant holds the directory
key, so it is a secret: written with mode 0600, carried like one, deleted after
import. `import_grant` checks that the grant answers a pending request of this
gateway, is signed by the root it names (and by the gateway's pinned root, if it
has one), and carries exactly the requested keys, then publishes and adds the
account.

Every refusal is a `ProvisionError` with one line. This module never sees the root
key on the gateway side and never logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import nacl.utils

from bridge.directory import (
    DIRECTORY_KEY_LEN,
    DirectoryEntry,
    DirectoryRecord,
    lookup_id,
    make_record,
    normalize_address,
    open_record,
)
from bridge.errors import BridgeError, DirectoryError
from bridge.keys import (
    GATEWAY_CERT_CONTEXT,
    AccountKeys,
    AccountPublic,
    GatewayCredential,
    KdfCost,
    seal_seed,
    sealed_cost,
    verify_root_signature,
)
from gateway.homes import AdminHome, HomeError, Membership, gateway_database_url, write_private
from gateway.provision import (
    ProvisionError,
    check_address,
    check_password,
    check_relays,
    publish,
    rotated_entry,
    unlock_for_rotation,
)
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache

REQUEST_FORMAT = "sealgate-enrolment-request-v1"
GRANT_FORMAT = "sealgate-enrolment-grant-v1"
GRANT_CONTEXT = b"sealgate-enrolment-grant-v1\0"
MAX_FILE_BYTES = 64 * 1024
REQUESTS_DIR = "requests"
_REQUEST_ID_LEN = 16


def _canonical(document: Mapping[str, object]) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def _read_document(path: Path, what: str) -> dict[str, object]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProvisionError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ProvisionError(f"{path} is not a {what}: too large")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProvisionError(f"{path} is not a {what}: not JSON") from None
    if not isinstance(document, dict):
        raise ProvisionError(f"{path} is not a {what}")
    return document


def _hex(document: dict[str, object], name: str, length: int) -> bytes:
    value = document.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != length or raw.hex() != value:
        raise ValueError(name)
    return raw


@dataclass(frozen=True)
class Request:
    """What a gateway asks the admin to sign. No secret in it."""

    request_id: bytes
    address: str
    relays: tuple[str, ...]
    keys: AccountPublic
    gateway_key: bytes
    created_at: int
    rotates: DirectoryRecord | None = None  # a rotation: the record it replaces
    revoke_previous: bool = False  # a rotation that revokes the old signing keys

    def to_json(self) -> dict[str, object]:
        return {
            "rotates": None if self.rotates is None else self.rotates.to_json(),
            "revoke_previous": self.revoke_previous,
            "format": REQUEST_FORMAT,
            "request_id": self.request_id.hex(),
            "address": self.address,
            "relays": list(self.relays),
            "keys": {
                "encryption": self.keys.encryption_key.hex(),
                "mailbox": self.keys.mailbox_key.hex(),
                "signing": self.keys.signing_key.hex(),
            },
            "gateway_key": self.gateway_key.hex(),
            "created_at": self.created_at,
        }

    def digest(self) -> bytes:
        return hashlib.sha256(_canonical(self.to_json())).digest()

    @classmethod
    def from_json(cls, document: dict[str, object]) -> Request:
        """ValueError (or KeyError/TypeError) for anything that is not a request."""
        if document.get("format") != REQUEST_FORMAT:
            raise ValueError("format")
        keys = document["keys"]
        relays = document["relays"]
        created_at = document["created_at"]
        if not isinstance(keys, dict) or not isinstance(relays, list):
            raise ValueError("keys")
        if not all(isinstance(r, str) for r in relays) or not isinstance(document["address"], str):
            raise ValueError("relays")
        if isinstance(created_at, bool) or not isinstance(created_at, int):
            raise ValueError("created_at")
        rotates, revoke_previous = document["rotates"], document["revoke_previous"]
        if not isinstance(revoke_previous, bool):
            raise ValueError("revoke_previous")
        return cls(
            rotates=None if rotates is None else DirectoryRecord.from_json(rotates),
            revoke_previous=revoke_previous,
            request_id=_hex(document, "request_id", _REQUEST_ID_LEN),
            address=document["address"],
            relays=tuple(relays),
            keys=AccountPublic(
                encryption_key=_hex(keys, "encryption", 32),
                signing_key=_hex(keys, "signing", 32),
                mailbox_key=_hex(keys, "mailbox", 32),
            ),
            gateway_key=_hex(document, "gateway_key", 32),
            created_at=created_at,
        )


def load_request(path: Path) -> Request:
    document = _read_document(path, "enrolment request")
    try:
        return Request.from_json(document)
    except (ValueError, KeyError, TypeError, BridgeError):
        raise ProvisionError(f"{path} is not a valid enrolment request") from None


def _pending_path(gateway_home: Path, request_id: bytes) -> Path:
    return gateway_home / REQUESTS_DIR / f"{request_id.hex()}.json"


def request_account(
    address: str,
    *,
    gateway_home: Path,
    relays: Sequence[str],
    password: str,
    out: Path,
    rotate: bool = False,
    revoke_previous: bool = False,
    cost: KdfCost | None = None,
) -> Request:
    """Generate the keys on the gateway, keep them pending, write the request to `out`.

    With `rotate`, the account exists here: its next key generation is made and the
    request asks for the record that replaces the gateway's current one.
    """
    membership: Membership | None = None
    if Membership.path_in(gateway_home).exists():
        try:
            membership = Membership.load(gateway_home)
        except HomeError as e:
            raise ProvisionError(str(e)) from None
        address = check_address(address, membership.domain)
    else:  # the domain is checked where the request is signed
        try:
            address = normalize_address(address)
        except ValueError as e:
            raise ProvisionError(f"bad address: {e}") from None
    if not rotate:  # a rotation keeps the password the keys are sealed under
        check_password(password)
    gateway_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = open_engine(gateway_database_url(gateway_home))
    try:
        account = AccountStore(engine).get(address)
        if rotate:
            if account is None or membership is None:
                raise ProvisionError(f"{address} is not an account of this gateway")
            keys = unlock_for_rotation(account, password).rotated()
            cost = cost or sealed_cost(account.sealed_seed)
            current = DirectoryCache(engine).get(lookup_id(membership.directory_key, address))
            if current is None:
                raise ProvisionError(f"this gateway holds no directory record for {address}")
            urls = tuple(account.relays)
        else:
            if account is not None:
                raise ProvisionError(f"{address} already exists on this gateway")
            keys, current, urls = AccountKeys.generate(), None, check_relays(relays)
    except ValueError as e:  # a rotation beyond the generations an account may have
        raise ProvisionError(f"cannot rotate {address}: {e}") from None
    finally:
        engine.dispose()
    gateway_seed = (
        membership.credential.seed if membership is not None else nacl.utils.random(32)
    )
    request = Request(
        request_id=nacl.utils.random(_REQUEST_ID_LEN),
        address=address,
        relays=urls,
        keys=keys.public,
        gateway_key=bytes(nacl.signing.SigningKey(gateway_seed).verify_key),
        created_at=int(time.time()),
        rotates=current,
        revoke_previous=revoke_previous and rotate,
    )
    pending = {
        "request": request.to_json(),
        "sealed_seed": seal_seed(keys.pack(), password.encode("utf-8"), cost).hex(),
        "gateway_seed": gateway_seed.hex(),
    }
    write_private(_pending_path(gateway_home, request.request_id), _canonical(pending))
    write_private(out, json.dumps(request.to_json(), indent=2).encode("utf-8") + b"\n")
    return request


def sign_request(request_file: Path, *, admin: AdminHome, out: Path) -> tuple[Request, int]:
    """Answer a request with a root-signed grant in `out` (mode 0600); returns the version."""
    request = load_request(request_file)
    address = check_address(request.address, admin.domain)
    if address != request.address:
        raise ProvisionError(f"{request_file}: the address is not in normalized form")
    urls = check_relays(request.relays)
    lid = lookup_id(admin.directory_key, address)
    if request.rotates is None:
        entry = DirectoryEntry(
            address=address, keys=request.keys, relays=urls, issued_at=int(time.time()),
            version=admin.claim_version(lid),
        )
    else:
        entry = _rotation(request, request.rotates, admin, lid)
    record = make_record(entry, admin.root, admin.directory_key)
    body: dict[str, object] = {
        "format": GRANT_FORMAT,
        "request_id": request.request_id.hex(),
        "request_sha256": request.digest().hex(),
        "domain": admin.domain,
        "root_public": admin.root.public.hex(),
        "directory_key": admin.directory_key.hex(),
        "relays": list(urls),
        "record": record.to_json(),
        "gateway_certificate": admin.root.certify_gateway(request.gateway_key).hex(),
    }
    signature = admin.root.sign(GRANT_CONTEXT, _canonical(body))
    body["signature"] = base64.b64encode(signature).decode("ascii")
    write_private(out, json.dumps(body, indent=2).encode("utf-8") + b"\n")
    return request, entry.version


def _rotation(
    request: Request, rotates: DirectoryRecord, admin: AdminHome, lid: bytes
) -> DirectoryEntry:
    """The entry a rotation request asks for, checked against the record it replaces."""
    try:
        current = open_record(rotates, admin.directory_key, (admin.root.public,))
    except DirectoryError as e:
        raise ProvisionError(f"the record the request rotates: {e}") from None
    if current.address != request.address:
        raise ProvisionError("the request rotates the record of another address")
    if current.revoked:
        raise ProvisionError(f"{current.address} is revoked; a revoked address is not rotated")
    signed_since = admin.last_version(lid)
    if signed_since > current.version:
        raise ProvisionError(
            f"the request rotates version {current.version} of {current.address}, but version "
            f"{signed_since} was signed since; let the gateway sync and request again"
        )
    return rotated_entry(
        current, request.keys, admin.claim_version(lid, floor=current.version),
        revoke_previous=request.revoke_previous,
    )


@dataclass(frozen=True)
class _Grant:
    request_id: bytes
    request_sha256: bytes
    domain: str
    root_public: bytes
    directory_key: bytes
    relays: tuple[str, ...]
    record: DirectoryRecord
    gateway_certificate: bytes


def _load_grant(path: Path) -> _Grant:
    document = _read_document(path, "signed enrolment file")
    bad = ProvisionError(f"{path} is not a valid signed enrolment file")
    try:
        if document.get("format") != GRANT_FORMAT:
            raise bad
        signature_text = document.pop("signature")
        if not isinstance(signature_text, str):
            raise bad
        signature = base64.b64decode(signature_text, validate=True)
        root_public = _hex(document, "root_public", 32)
        relays, domain = document["relays"], document["domain"]
        if not isinstance(relays, list) or not all(isinstance(r, str) for r in relays):
            raise bad
        if not isinstance(domain, str):
            raise bad
        grant = _Grant(
            request_id=_hex(document, "request_id", _REQUEST_ID_LEN),
            request_sha256=_hex(document, "request_sha256", 32),
            domain=domain,
            root_public=root_public,
            directory_key=_hex(document, "directory_key", DIRECTORY_KEY_LEN),
            relays=tuple(relays),
            record=DirectoryRecord.from_json(document["record"]),
            gateway_certificate=_hex(document, "gateway_certificate", 64),
        )
    except (ValueError, KeyError, TypeError, BridgeError):
        raise bad from None
    signed = _canonical(document)
    if verify_root_signature((root_public,), GRANT_CONTEXT, signed, signature) is None:
        raise ProvisionError(f"{path} is not signed by the root it names (altered?)")
    return grant


async def import_grant(
    grant_file: Path,
    *,
    gateway_home: Path,
    trusted_root: bytes | None = None,
    relay_ca_file: Path | None = None,
) -> tuple[DirectoryEntry, Membership]:
    """Check a grant against this gateway's pending request, then publish and add the account."""
    grant = _load_grant(grant_file)
    pending_path = _pending_path(gateway_home, grant.request_id)
    if not pending_path.exists():
        raise ProvisionError(
            f"{grant_file} answers request {grant.request_id.hex()[:12]}..., "
            "which this gateway has not made (or has imported already)"
        )
    pending = _read_document(pending_path, "pending request")
    try:
        document = pending["request"]
        if not isinstance(document, dict):
            raise TypeError("request")
        request = Request.from_json(document)
        sealed_seed = bytes.fromhex(str(pending["sealed_seed"]))
        gateway_seed = bytes.fromhex(str(pending["gateway_seed"]))
    except (ValueError, KeyError, TypeError, BridgeError):
        raise ProvisionError(f"{pending_path} is damaged") from None
    if request.digest() != grant.request_sha256:
        raise ProvisionError(f"{grant_file} answers another request than the one pending here")
    existing = Membership.load(gateway_home) if Membership.path_in(gateway_home).exists() else None
    pinned = {trusted_root, existing.root_public if existing is not None else None} - {None}
    if pinned - {grant.root_public}:
        raise ProvisionError(f"{grant_file} is signed by another bubble's root")
    try:
        entry = open_record(grant.record, grant.directory_key, (grant.root_public,))
    except DirectoryError as e:
        raise ProvisionError(f"{grant_file}: {e}") from None
    if (entry.address, entry.keys) != (request.address, request.keys):
        raise ProvisionError(f"{grant_file} carries other keys than the request")
    if verify_root_signature(
        (grant.root_public,), GATEWAY_CERT_CONTEXT, request.gateway_key, grant.gateway_certificate
    ) is None:
        raise ProvisionError(f"{grant_file} does not certify this gateway's key")
    credential = GatewayCredential(seed=gateway_seed, certificate=grant.gateway_certificate)
    if credential.verify_key != request.gateway_key:
        raise ProvisionError(f"{pending_path} is damaged")
    relays = grant.relays
    if existing is not None:
        relays = existing.relays + tuple(r for r in grant.relays if r not in existing.relays)
    membership = Membership(
        domain=grant.domain, root_public=grant.root_public, directory_key=grant.directory_key,
        credential=credential, relays=relays,
    )
    engine = open_engine(gateway_database_url(gateway_home))
    try:
        accounts = AccountStore(engine)
        account = accounts.get(entry.address)
        if request.rotates is None and account is not None:
            raise ProvisionError(f"{entry.address} already exists on this gateway")
        if request.rotates is not None:
            if account is None or account.public.mailbox_key != entry.keys.mailbox_key:
                raise ProvisionError(f"{entry.address} is not an account of this gateway")
            # Stored before it is published, as `rotate_account` does.
            accounts.set_keys(entry.address, sealed_seed, entry.keys)
        await publish(grant.record, entry.relays, entry.address, relay_ca_file)
        membership.save(gateway_home)
        DirectoryCache(engine).put_many([grant.record])
        if request.rotates is None:
            accounts.add(entry.address, sealed_seed, entry.keys, entry.relays)
    finally:
        engine.dispose()
    pending_path.unlink()
    return entry, membership
