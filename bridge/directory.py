"""The signed directory: address -> public keys, mailbox id, home relays.

A relay stores and serves `DirectoryRecord`s without learning any address: the
record is found by `lookup_id` (a keyed hash of the address under the bubble's
directory key) and its content is sealed under that key. The root signs twice:
the entry inside (gateways verify it after opening) and the record outside
(relays verify it before accepting a publication).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from bridge.errors import DirectoryError
from bridge.keys import verify_root_signature

RECORD_CONTEXT = b"sealgate-directory-record-v1\0"
LOOKUP_ID_LEN = 32


@dataclass(frozen=True)
class DirectoryRecord:
    """What relays store: opaque id, sealed entry, root signature over both."""

    lookup_id: bytes
    sealed: bytes
    signature: bytes

    def publisher_message(self) -> bytes:
        return self.lookup_id + self.sealed

    def verify_publisher(self, trusted_roots: tuple[bytes, ...]) -> bytes:
        """Return the root that signed this record; DirectoryError if none did."""
        root = verify_root_signature(
            trusted_roots, RECORD_CONTEXT, self.publisher_message(), self.signature
        )
        if root is None:
            raise DirectoryError("directory record is not signed by a trusted root")
        return root

    def to_json(self) -> dict[str, str]:
        return {
            "lookup_id": self.lookup_id.hex(),
            "sealed": base64.b64encode(self.sealed).decode("ascii"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: object) -> DirectoryRecord:
        try:
            assert isinstance(data, dict)  # noqa: S101 - caught below
            lookup_id = bytes.fromhex(data["lookup_id"])
            sealed = base64.b64decode(data["sealed"], validate=True)
            signature = base64.b64decode(data["signature"], validate=True)
        except (AssertionError, KeyError, TypeError, ValueError):
            raise DirectoryError("malformed directory record") from None
        if len(lookup_id) != LOOKUP_ID_LEN or len(signature) != 64:
            raise DirectoryError("malformed directory record")
        return cls(lookup_id=lookup_id, sealed=sealed, signature=signature)
