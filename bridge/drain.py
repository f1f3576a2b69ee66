"""Root-signed statements that a relay is drained (for planned maintenance), or not.

A drained relay gets no new deposits from the bubble's gateways, which go on fetching
what it still holds. The statement travels as a directory record, so relays store,
version and serve it with the directory they already keep (no relay change) and
gateways receive it with their directory replica:

    lookup_id = BLAKE2b(key = directory key, person = "sg-relay-drain", relay URL)
    sealed    = nonce(24) || XChaCha20-Poly1305(directory key, nonce,
                                                {"relay": URL, "draining": bool}, ad=lookup_id)
    record    = lookup_id, version, sealed, Ed25519(root, RECORD_CONTEXT || ...)

The lookup id is keyed, so a relay cannot tell a drain statement from an address's
record, nor which relay it names. Versions only grow (`AdminHome.claim_version`); the
highest verified statement for a URL is the one in force. URLs are compared without a
trailing slash. This module does no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils

from bridge.directory import RECORD_CONTEXT, DirectoryRecord
from bridge.errors import DirectoryError
from bridge.keys import RootKey

_PERSON = b"sg-relay-drain".ljust(16, b"\0")
_NONCE_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_MAX_STATEMENT = 4096


def relay_key(url: str) -> str:
    """The form of a relay URL that statements and accounts are compared in."""
    return url.rstrip("/")


def drain_lookup_id(directory_key: bytes, url: str) -> bytes:
    return nacl.hash.blake2b(
        relay_key(url).encode("utf-8"), key=directory_key, person=_PERSON, digest_size=32,
        encoder=nacl.encoding.RawEncoder,
    )


@dataclass(frozen=True)
class DrainStatement:
    relay: str
    draining: bool
    version: int

    def to_record(self, root: RootKey, directory_key: bytes) -> DirectoryRecord:
        lookup_id = drain_lookup_id(directory_key, self.relay)
        body = json.dumps({"relay": relay_key(self.relay), "draining": self.draining},
                          sort_keys=True, separators=(",", ":")).encode("utf-8")
        nonce = nacl.utils.random(_NONCE_LEN)
        sealed = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            body, lookup_id, nonce, directory_key
        )
        unsigned = DirectoryRecord(lookup_id, self.version, sealed, b"")
        return DirectoryRecord(
            lookup_id, self.version, sealed,
            root.sign(RECORD_CONTEXT, unsigned.publisher_message()),
        )

    @classmethod
    def from_record(
        cls, record: DirectoryRecord, url: str, directory_key: bytes,
        trusted_roots: tuple[bytes, ...],
    ) -> DrainStatement:
        """The statement about `url` in `record`; DirectoryError if it is not one."""
        if record.lookup_id != drain_lookup_id(directory_key, url):
            raise DirectoryError("not a drain statement for this relay")
        record.verify_publisher(trusted_roots)
        if not _NONCE_LEN < len(record.sealed) <= _MAX_STATEMENT:
            raise DirectoryError("malformed drain statement")
        nonce = record.sealed[:_NONCE_LEN]
        try:
            body = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                record.sealed[_NONCE_LEN:], record.lookup_id, nonce, directory_key
            )
            data = json.loads(body)
        except (nacl.exceptions.CryptoError, ValueError):
            raise DirectoryError("malformed drain statement") from None
        if not isinstance(data, dict) or data.get("relay") != relay_key(url) \
                or type(data.get("draining")) is not bool:
            raise DirectoryError("malformed drain statement")
        return cls(relay_key(url), data["draining"], record.version)
