"""Signed relay requests: what a gateway adds to a request and what the relay checks.

Every request except health and directory reads carries three headers:

    Sealgate-Key         base64 of the 32-byte Ed25519 verify key that signed
    Sealgate-Time        unix seconds, decimal, no sign, no leading zeros
    Sealgate-Signature   base64 of the detached Ed25519 signature over

        b"sealgate-request-v1\\n" + METHOD + b"\\n" + PATH + b"\\n" + TIME + b"\\n"
        + sha256(body).hexdigest()

PATH is the request target as sent (percent-encoded path plus any query). A deposit
and an envelope status request add `Sealgate-Credential`: base64 of the root's gateway
certificate for that key.
Base64 is the standard alphabet, padded, canonical.

    RequestError (BridgeError)  the relay refuses the request; carries the HTTP status
    └── RequestAuthError        401 (who is asking is unknown) or 403 (not allowed)

This module is pure: no sockets, no files, no clock (callers pass `now`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from bridge.errors import BridgeError
from bridge.keys import (
    GATEWAY_CERT_CONTEXT,
    GatewayCredential,
    mailbox_id_for,
    verify_root_signature,
)

HEADER_KEY = "Sealgate-Key"
HEADER_TIME = "Sealgate-Time"
HEADER_SIGNATURE = "Sealgate-Signature"
HEADER_CREDENTIAL = "Sealgate-Credential"
SIGNATURE_PREFIX = b"sealgate-request-v1\n"

_KEY_LEN = 32
_SIGNATURE_LEN = 64
_TIME_RE = re.compile(r"0|[1-9][0-9]{0,11}")
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_HEADERS = (HEADER_KEY, HEADER_TIME, HEADER_SIGNATURE, HEADER_CREDENTIAL)
CERTIFICATES_KEPT = 1024  # gateway certificates whose check is remembered (least recent go)


class RequestError(BridgeError):
    """A request the relay refuses. `status` is the HTTP status, `reason` its short text."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def to_json(self) -> dict[str, str]:
        return {"error": self.reason}


class RequestAuthError(RequestError):
    """Authentication failed (401) or the authenticated key is not allowed (403)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(status, reason)


@dataclass(frozen=True)
class SignedHeaders:
    """The decoded authentication headers of one request (not yet verified)."""

    verify_key: bytes
    timestamp: int
    signature: bytes


def signing_input(method: str, path: str, timestamp: int, body: bytes) -> bytes:
    """The exact bytes a request signature covers. ValueError for a non-ASCII target."""
    if not _METHOD_RE.fullmatch(method):
        raise ValueError("method must be an upper-case token")
    if not path.startswith("/") or not path.isascii() or not path.isprintable() or " " in path:
        raise ValueError("path must be a percent-encoded request target")
    if timestamp < 0:
        raise ValueError("timestamp must not be negative")
    return SIGNATURE_PREFIX + b"\n".join((
        method.encode("ascii"),
        path.encode("ascii"),
        str(timestamp).encode("ascii"),
        hashlib.sha256(body).hexdigest().encode("ascii"),
    ))


def sign_request(
    signing_key: nacl.signing.SigningKey, method: str, path: str, body: bytes, now: float
) -> dict[str, str]:
    """The three signature headers for one request made at `now` (unix seconds)."""
    timestamp = int(now)
    signature = signing_key.sign(signing_input(method, path, timestamp, body)).signature
    return {
        HEADER_KEY: _b64(bytes(signing_key.verify_key)),
        HEADER_TIME: str(timestamp),
        HEADER_SIGNATURE: _b64(signature),
    }


def sign_deposit(
    credential: GatewayCredential, path: str, body: bytes, now: float
) -> dict[str, str]:
    """Headers for a deposit: the gateway's signature plus its root certificate."""
    return sign_gateway_request(credential, "POST", path, body, now)


def sign_gateway_request(
    credential: GatewayCredential, method: str, path: str, body: bytes, now: float
) -> dict[str, str]:
    """Headers for a request made as a gateway (a deposit, an envelope status)."""
    headers = sign_request(credential.signing_key, method, path, body, now)
    headers[HEADER_CREDENTIAL] = _b64(credential.certificate)
    return headers


def read_signed_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """Decode the signature headers (names case-insensitive); 401 if missing or malformed."""
    found = _auth_headers(headers)
    for name in (HEADER_KEY, HEADER_TIME, HEADER_SIGNATURE):
        if name not in found:
            raise RequestAuthError(f"missing {name}")
    time_text = found[HEADER_TIME]
    if not _TIME_RE.fullmatch(time_text):
        raise RequestAuthError(f"malformed {HEADER_TIME}")
    return SignedHeaders(
        verify_key=_decode(found, HEADER_KEY, _KEY_LEN),
        timestamp=int(time_text),
        signature=_decode(found, HEADER_SIGNATURE, _SIGNATURE_LEN),
    )


def check_fresh(signed: SignedHeaders, now: float, max_skew: int) -> None:
    """401 unless the request time is within `max_skew` seconds of `now`."""
    if abs(int(now) - signed.timestamp) > max_skew:
        raise RequestAuthError("request time outside the allowed clock skew")


def verify_request(
    headers: Mapping[str, str], method: str, path: str, body: bytes, now: float, max_skew: int
) -> bytes:
    """Check a request's signature and freshness; return the verify key that signed it."""
    signed = read_signed_headers(headers)
    check_fresh(signed, now, max_skew)
    try:
        message = signing_input(method, path, signed.timestamp, body)
    except ValueError:
        raise RequestAuthError("request cannot be signed") from None
    try:
        nacl.signing.VerifyKey(signed.verify_key).verify(message, signed.signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise RequestAuthError("bad request signature") from None
    return signed.verify_key


def check_gateway_credential(
    headers: Mapping[str, str], verify_key: bytes, trusted_roots: tuple[bytes, ...],
    revoked: Collection[bytes] = frozenset(),
) -> bytes:
    """Return the trusted root that certified `verify_key` as a gateway.

    401 if the credential header is missing or malformed, 403 if no trusted root
    certified this key or the key is in `revoked` (revocations the relay verified).
    """
    found = _auth_headers(headers)
    if HEADER_CREDENTIAL not in found:
        raise RequestAuthError(f"missing {HEADER_CREDENTIAL}")
    certificate = _decode(found, HEADER_CREDENTIAL, _SIGNATURE_LEN)
    root = _certifying_root(trusted_roots, verify_key, certificate)
    if root is None:
        raise RequestAuthError("gateway is not certified by a trusted root", 403)
    if verify_key in revoked:
        raise RequestAuthError("gateway credential is revoked", 403)
    return root


@functools.lru_cache(maxsize=CERTIFICATES_KEPT)
def _certifying_root(
    trusted_roots: tuple[bytes, ...], verify_key: bytes, certificate: bytes
) -> bytes | None:
    # A gateway presents the same certificate with every deposit: its signature is
    # checked once, not per request (the revocation check is never cached).
    return verify_root_signature(trusted_roots, GATEWAY_CERT_CONTEXT, verify_key, certificate)


def check_mailbox_owner(verify_key: bytes, mailbox_id: bytes) -> None:
    """403 unless `verify_key` is the mailbox key whose id is `mailbox_id`."""
    if mailbox_id_for(verify_key) != mailbox_id:
        raise RequestAuthError("key does not own this mailbox", 403)


def _auth_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The Sealgate headers by canonical name; 401 if one appears twice."""
    canonical = {name.lower(): name for name in _HEADERS}
    found: dict[str, str] = {}
    for name, value in headers.items():
        key = canonical.get(name.lower())
        if key is None:
            continue
        if key in found:
            raise RequestAuthError(f"duplicate {key}")
        found[key] = value
    return found


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decode(found: dict[str, str], name: str, length: int) -> bytes:
    text = found[name]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestAuthError(f"malformed {name}") from None
    if len(raw) != length or _b64(raw) != text:
        raise RequestAuthError(f"malformed {name}")
    return raw
