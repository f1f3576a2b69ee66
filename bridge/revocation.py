"""Root-signed revocations of gateway deposit credentials.

A gateway deposits with a key the root certified (`bridge.keys.GatewayCredential`).
The bubble administrator withdraws that right with a `GatewayRevocation`: the
root's signature over the gateway's verify key,

    signature = Ed25519(root, GATEWAY_REVOCATION_CONTEXT || gateway verify key)

Relays verify it against their trusted roots, keep it, serve it, and refuse
deposits signed by a revoked key with 403. A revocation names a key, never an
address, and is final: a gateway that may deposit again gets a new key.
(Accounts are revoked through the directory, `bridge.directory`.)

This module does no I/O.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from bridge.errors import DirectoryError
from bridge.keys import RootKey, verify_root_signature

GATEWAY_REVOCATION_CONTEXT = b"sealgate-gateway-revoked-v1\0"
_KEY_LEN = 32
_SIGNATURE_LEN = 64


@dataclass(frozen=True)
class GatewayRevocation:
    """The root's statement that `gateway_key` may no longer deposit."""

    gateway_key: bytes  # Ed25519 verify key of the gateway
    signature: bytes

    @classmethod
    def issue(cls, root: RootKey, gateway_key: bytes) -> GatewayRevocation:
        if len(gateway_key) != _KEY_LEN:
            raise ValueError("a gateway key is 32 bytes")
        return cls(gateway_key, root.sign(GATEWAY_REVOCATION_CONTEXT, gateway_key))

    def verify(self, trusted_roots: tuple[bytes, ...]) -> bytes:
        """The trusted root that made this revocation; DirectoryError if none did."""
        root = verify_root_signature(
            trusted_roots, GATEWAY_REVOCATION_CONTEXT, self.gateway_key, self.signature
        )
        if root is None:
            raise DirectoryError("revocation is not signed by a trusted root")
        return root

    def to_json(self) -> dict[str, str]:
        return {
            "gateway_key": self.gateway_key.hex(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: object) -> GatewayRevocation:
        if not isinstance(data, dict):
            raise DirectoryError("malformed revocation")
        try:
            key = bytes.fromhex(data["gateway_key"])
            signature = base64.b64decode(data["signature"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise DirectoryError("malformed revocation") from None
        if len(key) != _KEY_LEN or len(signature) != _SIGNATURE_LEN:
            raise DirectoryError("malformed revocation")
        if data["gateway_key"] != key.hex():
            raise DirectoryError("malformed revocation")
        return cls(key, signature)
