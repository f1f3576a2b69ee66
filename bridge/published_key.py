"""Root-signed statements that publish a correspondent's OpenPGP key, or withdraw it.

The bubble's root vouches for the public key of someone outside the bubble, so that
every gateway can encrypt mail to them (`sealgate pgp publish`). Like drain statements
(`bridge.drain`) they travel as directory records (`bridge.statement`):

    lookup_id = BLAKE2b(key = directory key, person = "sg-openpgp-key", address)
    body      = {"kind": "openpgp-key", "address": ADDRESS,
                 "fingerprint": HEX or null, "key": base64 of the binary key or null}

A relay cannot tell such a record from an address's record nor learn the address; a
gateway that lists its replica finds the published keys by opening each record
(`open_any`), and the lookup id must be the one of the address inside. A withdrawal is
a higher version with `key` null. Keys are not parsed here (no OpenPGP code in
`bridge`): the publisher checked it, a gateway checks its expiry before use. This
module does no I/O.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from bridge.directory import DirectoryRecord, normalize_address
from bridge.errors import DirectoryError
from bridge.keys import RootKey
from bridge.statement import open_statement, seal_statement, statement_lookup_id, unseal_statement

_PERSON = b"sg-openpgp-key"
_KIND = "openpgp-key"
MAX_PUBLISHED_KEY = 96 * 1024  # binary key; its record stays within a relay's record limit
_MAX_STATEMENT = 2 * MAX_PUBLISHED_KEY


def published_key_lookup_id(directory_key: bytes, address: str) -> bytes:
    return statement_lookup_id(directory_key, _PERSON, normalize_address(address))


@dataclass(frozen=True)
class PublishedKey:
    address: str
    fingerprint: str | None  # None with key: withdrawn
    key: bytes | None
    version: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalize_address(self.address))
        if (self.key is None) != (self.fingerprint is None):
            raise ValueError("a published key has a fingerprint, a withdrawal neither")
        if self.key is not None and len(self.key) > MAX_PUBLISHED_KEY:
            raise ValueError(f"a published key is at most {MAX_PUBLISHED_KEY} bytes")

    def to_record(self, root: RootKey, directory_key: bytes) -> DirectoryRecord:
        body = {
            "kind": _KIND, "address": self.address, "fingerprint": self.fingerprint,
            "key": None if self.key is None else base64.b64encode(self.key).decode("ascii"),
        }
        return seal_statement(body, published_key_lookup_id(directory_key, self.address),
                              self.version, root, directory_key)

    @classmethod
    def from_record(
        cls, record: DirectoryRecord, address: str, directory_key: bytes,
        trusted_roots: tuple[bytes, ...],
    ) -> PublishedKey:
        """The statement about `address` in `record`; DirectoryError if it is not one."""
        if record.lookup_id != published_key_lookup_id(directory_key, address):
            raise DirectoryError("not a published key for this address")
        return cls._parse(open_statement(record, directory_key, trusted_roots, _MAX_STATEMENT),
                          record, directory_key)

    @classmethod
    def open_any(
        cls, record: DirectoryRecord, directory_key: bytes, trusted_roots: tuple[bytes, ...],
    ) -> PublishedKey | None:
        """The statement in `record` if it is one, None if the record is of another kind
        (an address, a drain); DirectoryError if it is one but the root did not sign it."""
        try:
            body = unseal_statement(record, directory_key, _MAX_STATEMENT)
        except DirectoryError:
            return None  # an address record (or unreadable): not a key statement
        if not isinstance(body, dict) or body.get("kind") != _KIND:
            return None
        record.verify_publisher(trusted_roots)
        return cls._parse(body, record, directory_key)

    @classmethod
    def _parse(cls, body: object, record: DirectoryRecord, directory_key: bytes) -> PublishedKey:
        if not isinstance(body, dict) or body.get("kind") != _KIND:
            raise DirectoryError("malformed published key")
        address, fingerprint, key = body.get("address"), body.get("fingerprint"), body.get("key")
        try:
            if not isinstance(address, str) \
                    or record.lookup_id != published_key_lookup_id(directory_key, address):
                raise ValueError("filed under another lookup id")
            if not (fingerprint is None or isinstance(fingerprint, str)) \
                    or not (key is None or isinstance(key, str)):
                raise ValueError("fingerprint and key are strings")
            raw = None if key is None else base64.b64decode(key, validate=True)
            return cls(address, fingerprint, raw, record.version)
        except ValueError:
            raise DirectoryError("malformed published key") from None
