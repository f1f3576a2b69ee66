"""The signed directory: address -> public keys, mailbox id, home relays.

A relay stores and serves `DirectoryRecord`s without learning any address: the
record is found by `lookup_id` (a keyed hash of the address under the bubble's
directory key) and its content is sealed under that key. The root signs twice:
the entry inside (gateways verify it after opening) and the record outside
(relays verify it before accepting a publication).

    DirectoryEntry.to_bytes()   canonical JSON (sorted keys, no spaces, UTF-8)
    inner   = entry bytes || Ed25519(root, ENTRY_CONTEXT || entry bytes)
    sealed  = nonce(24) || XChaCha20-Poly1305(directory_key, nonce, inner, ad=lookup_id)
    record  = lookup_id, version, sealed,
              Ed25519(root, RECORD_CONTEXT || lookup_id || u64be(version) || sealed)

Every record of one lookup id carries a version that only grows: relays and
gateways keep the highest and refuse an older or equal one, so an old record
cannot be replayed after a rotation or a revocation. The version is outside (so a
relay can compare without opening) and inside the entry (checked equal on
opening). A rotation publishes a higher version with new keys and lists the
earlier signing keys as `previous_signing` (mail signed before the rotation still
verifies) or `revoked_signing`; a revocation is a higher version with
`revoked: true`, after which every key of the address counts as revoked.

`open_record` raises `DirectoryError` for anything wrong, with a short message that
never contains an address or key material. This module does no I/O.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import struct
import unicodedata
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.utils

from bridge.errors import DirectoryError
from bridge.keys import AccountPublic, RootKey, verify_root_signature

RECORD_CONTEXT = b"sealgate-directory-record-v2\0"
ENTRY_CONTEXT = b"sealgate-directory-entry-v2\0"
LOOKUP_ID_LEN = 32
LOOKUP_ID_PERSON = b"sg-lookup-id\0\0\0\0"  # BLAKE2b personalisation, 16 bytes
DIRECTORY_KEY_LEN = 32
ENTRY_VERSION = 2  # the entry format ("v"), not the record version
MAX_RECORD_VERSION = 2**63 - 1
MAX_ADDRESS_BYTES = 254
MAX_RELAYS = 16
MAX_OLD_SIGNING_KEYS = 16  # per list: previous_signing, revoked_signing
MAX_RELAY_URL_LEN = 2048
MAX_ENTRY_BYTES = 64 * 1024
_SIGNATURE_LEN = 64
_NONCE_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_TAG_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})
_VERSION = struct.Struct(">Q")


def _printable(text: str) -> bool:
    """No whitespace, control, format, surrogate or private-use characters."""
    if text.isascii():  # the rule for ASCII alone: "!" to "~" (every address, as a rule)
        return text.isprintable() and " " not in text
    return not any(
        char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in text
    )


def normalize_address(address: str) -> str:
    """The form of an address the directory is keyed by: stripped, lower-cased, NFC.

    Raises ValueError for an address that is empty, has no '@' (or nothing on one
    side of its last '@'), contains whitespace or control/format characters, or is
    longer than MAX_ADDRESS_BYTES in UTF-8.
    """
    normalized = unicodedata.normalize("NFC", address.strip().lower())
    if not normalized:
        raise ValueError("address is empty")
    local, at, domain = normalized.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("address needs a local part, '@' and a domain")
    if not _printable(normalized):
        raise ValueError("address contains whitespace or a control character")
    if len(normalized.encode("utf-8")) > MAX_ADDRESS_BYTES:
        raise ValueError(f"address is longer than {MAX_ADDRESS_BYTES} bytes")
    return normalized


def _check_directory_key(directory_key: bytes) -> None:
    if len(directory_key) != DIRECTORY_KEY_LEN:
        raise ValueError(f"directory key must be {DIRECTORY_KEY_LEN} bytes")


def lookup_id(directory_key: bytes, address: str) -> bytes:
    """The opaque id a record is filed under: keyed BLAKE2b-256 of the normalized address."""
    _check_directory_key(directory_key)
    return hashlib.blake2b(
        normalize_address(address).encode("utf-8"),
        digest_size=LOOKUP_ID_LEN, key=directory_key, person=LOOKUP_ID_PERSON,
    ).digest()


class KeyStatus(enum.Enum):
    """What a directory entry says of a signing key found in an envelope."""

    CURRENT = "current"
    PREVIOUS = "previous"  # replaced by a rotation, still good for mail signed with it
    REVOKED = "revoked"
    UNKNOWN = "unknown"

    @property
    def accepted(self) -> bool:
        return self in (KeyStatus.CURRENT, KeyStatus.PREVIOUS)


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("version must be an integer")
    if not 1 <= version <= MAX_RECORD_VERSION:
        raise ValueError(f"version must be from 1 to {MAX_RECORD_VERSION}")
    return version


def _key_list(keys: tuple[bytes, ...], name: str) -> tuple[bytes, ...]:
    keys = tuple(keys)
    if len(keys) > MAX_OLD_SIGNING_KEYS:
        raise ValueError(f"at most {MAX_OLD_SIGNING_KEYS} {name} keys")
    if any(not isinstance(k, bytes) or len(k) != 32 for k in keys):
        raise ValueError(f"{name} keys must be 32 bytes")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} keys repeat")
    return keys


@dataclass(frozen=True)
class DirectoryEntry:
    """What the directory says about one address. The address is kept normalized."""

    address: str
    keys: AccountPublic
    relays: tuple[str, ...]
    issued_at: int  # unix seconds
    version: int = 1  # the record's version; only grows per address
    previous_signing: tuple[bytes, ...] = ()  # earlier signing keys, still accepted
    revoked_signing: tuple[bytes, ...] = ()  # earlier signing keys, refused
    revoked: bool = False  # the address is revoked: every key of it is refused

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalize_address(self.address))
        relays = tuple(self.relays)
        if len(relays) > MAX_RELAYS:
            raise ValueError(f"at most {MAX_RELAYS} relays")
        for relay in relays:
            if not isinstance(relay, str) or not 0 < len(relay) <= MAX_RELAY_URL_LEN:
                raise ValueError("a relay is a non-empty string of bounded length")
            if not _printable(relay):
                raise ValueError("a relay contains whitespace or a control character")
        object.__setattr__(self, "relays", relays)
        if isinstance(self.issued_at, bool) or not isinstance(self.issued_at, int):
            raise ValueError("issued_at must be an integer")
        if self.issued_at < 0:
            raise ValueError("issued_at must not be negative")
        _check_version(self.version)
        previous = _key_list(self.previous_signing, "previous signing")
        revoked = _key_list(self.revoked_signing, "revoked signing")
        object.__setattr__(self, "previous_signing", previous)
        object.__setattr__(self, "revoked_signing", revoked)
        current = self.keys.signing_key
        if current in previous or current in revoked or set(previous) & set(revoked):
            raise ValueError("a signing key is listed twice")
        if not isinstance(self.revoked, bool):
            raise ValueError("revoked must be a boolean")

    @property
    def mailbox_id(self) -> bytes:
        return self.keys.mailbox_id

    def signing_key_status(self, key: bytes) -> KeyStatus:
        """Whether mail signed by `key` is from this address (CURRENT or PREVIOUS)."""
        known = key == self.keys.signing_key or key in self.previous_signing
        if self.revoked and (known or key in self.revoked_signing):
            return KeyStatus.REVOKED
        if key == self.keys.signing_key:
            return KeyStatus.CURRENT
        if key in self.previous_signing:
            return KeyStatus.PREVIOUS
        if key in self.revoked_signing:
            return KeyStatus.REVOKED
        return KeyStatus.UNKNOWN

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, UTF-8, keys as lower-case hex."""
        document = {
            "address": self.address,
            "issued_at": self.issued_at,
            "keys": {
                "encryption": self.keys.encryption_key.hex(),
                "mailbox": self.keys.mailbox_key.hex(),
                "signing": self.keys.signing_key.hex(),
            },
            "previous_signing": [key.hex() for key in self.previous_signing],
            "relays": list(self.relays),
            "revoked": self.revoked,
            "revoked_signing": [key.hex() for key in self.revoked_signing],
            "v": ENTRY_VERSION,
            "version": self.version,
        }
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> DirectoryEntry:
        """Parse canonical entry bytes; DirectoryError for anything else."""
        if len(data) > MAX_ENTRY_BYTES:
            raise DirectoryError("directory entry is too large")
        try:
            document = json.loads(data.decode("utf-8"))
            if not isinstance(document, dict) or document.get("v") != ENTRY_VERSION:
                raise ValueError("not a v2 entry")
            keys = document["keys"]
            if not isinstance(keys, dict):
                raise ValueError("keys is not an object")
            relays, previous, revoked = (
                document["relays"], document["previous_signing"], document["revoked_signing"]
            )
            if not all(isinstance(v, list) for v in (relays, previous, revoked)):
                raise ValueError("relays and key lists are lists")
            entry = cls(
                address=document["address"],
                keys=AccountPublic(
                    encryption_key=bytes.fromhex(keys["encryption"]),
                    signing_key=bytes.fromhex(keys["signing"]),
                    mailbox_key=bytes.fromhex(keys["mailbox"]),
                ),
                relays=tuple(relays),
                issued_at=document["issued_at"],
                version=document["version"],
                previous_signing=tuple(bytes.fromhex(k) for k in previous),
                revoked_signing=tuple(bytes.fromhex(k) for k in revoked),
                revoked=document["revoked"],
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError,
                RecursionError):
            raise DirectoryError("malformed directory entry") from None
        # Exactly one byte string per entry: anything else (extra fields, other
        # spacing, a non-normalized address, upper-case hex) is refused.
        if entry.to_bytes() != data:
            raise DirectoryError("directory entry is not in canonical form")
        return entry


@dataclass(frozen=True)
class DirectoryRecord:
    """What relays store: opaque id, version, sealed entry, root signature over all three."""

    lookup_id: bytes
    version: int
    sealed: bytes
    signature: bytes

    def publisher_message(self) -> bytes:
        return self.lookup_id + _VERSION.pack(self.version) + self.sealed

    def verify_publisher(self, trusted_roots: tuple[bytes, ...]) -> bytes:
        """Return the root that signed this record; DirectoryError if none did."""
        root = verify_root_signature(
            trusted_roots, RECORD_CONTEXT, self.publisher_message(), self.signature
        )
        if root is None:
            raise DirectoryError("directory record is not signed by a trusted root")
        return root

    def to_json(self) -> dict[str, str | int]:
        return {
            "lookup_id": self.lookup_id.hex(),
            "version": self.version,
            "sealed": base64.b64encode(self.sealed).decode("ascii"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: object) -> DirectoryRecord:
        if not isinstance(data, dict):
            raise DirectoryError("malformed directory record")
        try:
            lookup_id = bytes.fromhex(data["lookup_id"])
            version = _check_version(data["version"])
            sealed = base64.b64decode(data["sealed"], validate=True)
            signature = base64.b64decode(data["signature"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise DirectoryError("malformed directory record") from None
        if len(lookup_id) != LOOKUP_ID_LEN or len(signature) != 64:
            raise DirectoryError("malformed directory record")
        return cls(lookup_id=lookup_id, version=version, sealed=sealed, signature=signature)


def make_record(entry: DirectoryEntry, root: RootKey, directory_key: bytes) -> DirectoryRecord:
    """Sign `entry` with `root`, seal it under `directory_key`, sign the record."""
    _check_directory_key(directory_key)
    record_id = lookup_id(directory_key, entry.address)
    entry_bytes = entry.to_bytes()
    inner = entry_bytes + root.sign(ENTRY_CONTEXT, entry_bytes)
    nonce = nacl.utils.random(_NONCE_LEN)
    sealed = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        inner, record_id, nonce, directory_key
    )
    unsigned = DirectoryRecord(record_id, entry.version, sealed, b"")
    return DirectoryRecord(
        lookup_id=record_id,
        version=entry.version,
        sealed=sealed,
        signature=root.sign(RECORD_CONTEXT, unsigned.publisher_message()),
    )


def open_record(
    record: DirectoryRecord, directory_key: bytes, trusted_roots: tuple[bytes, ...]
) -> DirectoryEntry:
    """Verify, open and check a record; DirectoryError for any failure.

    The entry inside must be signed by the same trusted root that signed the record,
    must be filed under the lookup id of its own address and carry the record's version.
    """
    _check_directory_key(directory_key)
    root = record.verify_publisher(trusted_roots)
    if len(record.sealed) < _NONCE_LEN + _TAG_LEN + _SIGNATURE_LEN:
        raise DirectoryError("directory record is too short")
    nonce = record.sealed[:_NONCE_LEN]
    try:
        inner = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            record.sealed[_NONCE_LEN:], record.lookup_id, nonce, directory_key
        )
    except nacl.exceptions.CryptoError:
        raise DirectoryError("directory record does not open with this directory key") from None
    entry_bytes, signature = inner[:-_SIGNATURE_LEN], inner[-_SIGNATURE_LEN:]
    if verify_root_signature((root,), ENTRY_CONTEXT, entry_bytes, signature) is None:
        raise DirectoryError("directory entry is not signed by the record's root")
    entry = DirectoryEntry.from_bytes(entry_bytes)
    if lookup_id(directory_key, entry.address) != record.lookup_id:
        raise DirectoryError("directory entry is filed under another lookup id")
    if entry.version != record.version:
        raise DirectoryError("directory entry version does not match its record")
    return entry
