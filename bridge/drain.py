"""Root-signed statements that a relay is drained (for planned maintenance), or not.

A drained relay gets no new deposits from the bubble's gateways, which go on fetching
what it still holds. The statement travels as a directory record, so relays store,
version and serve it with the directory they already keep (no relay change) and
gateways receive it with their directory replica:

    lookup_id = BLAKE2b(key = directory key, person = "sg-relay-drain", relay URL)
    sealed    = nonce(24) || XChaCha20-Poly1305(directory key, nonce,
                                                {"relay": URL, "draining": bool}, ad=lookup_id)
    record    = lookup_id, version, sealed, Ed25519(root, RECORD_CONTEXT || ...)

(`bridge.statement`). The lookup id is keyed, so a relay cannot tell a drain statement
from an address's record, nor which relay it names. Versions only grow
(`AdminHome.claim_version`); the highest verified statement for a URL is the one in
force. URLs are compared without a trailing slash. This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.directory import DirectoryRecord
from bridge.errors import DirectoryError
from bridge.keys import RootKey
from bridge.statement import open_statement, seal_statement, statement_lookup_id

_PERSON = b"sg-relay-drain"
_MAX_STATEMENT = 4096


def relay_key(url: str) -> str:
    """The form of a relay URL that statements and accounts are compared in."""
    return url.rstrip("/")


def drain_lookup_id(directory_key: bytes, url: str) -> bytes:
    return statement_lookup_id(directory_key, _PERSON, relay_key(url))


@dataclass(frozen=True)
class DrainStatement:
    relay: str
    draining: bool
    version: int

    def to_record(self, root: RootKey, directory_key: bytes) -> DirectoryRecord:
        body = {"relay": relay_key(self.relay), "draining": self.draining}
        return seal_statement(body, drain_lookup_id(directory_key, self.relay), self.version,
                              root, directory_key)

    @classmethod
    def from_record(
        cls, record: DirectoryRecord, url: str, directory_key: bytes,
        trusted_roots: tuple[bytes, ...],
    ) -> DrainStatement:
        """The statement about `url` in `record`; DirectoryError if it is not one."""
        if record.lookup_id != drain_lookup_id(directory_key, url):
            raise DirectoryError("not a drain statement for this relay")
        data = open_statement(record, directory_key, trusted_roots, _MAX_STATEMENT)
        if not isinstance(data, dict) or data.get("relay") != relay_key(url) \
                or type(data.get("draining")) is not bool:
            raise DirectoryError("malformed drain statement")
        return cls(relay_key(url), data["draining"], record.version)
