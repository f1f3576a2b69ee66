"""PGP/MIME (RFC 3156) with protected headers: the message a correspondent outside gets,
and the message an account reads of what such a correspondent sent.

Outgoing (`encrypt_message`): the whole message as the gateway sealed it for the bubble
(already stripped of routing metadata) becomes the encrypted part, its Content-Type
marked `protected-headers="v1"`, so Subject and every other field travel inside.
Outside stay the fields a mail system needs to deliver and thread it (From, To, Cc,
Date, Message-ID, In-Reply-To, References), `Subject: ...`, and an `Autocrypt` field
with the account's public key (an `Autocrypt` field of the client's own is dropped:
answers must be encrypted to the key the gateway holds). The inner message is signed
by the sender's key and encrypted to the recipient's in one OpenPGP message (RFC 3156
6.2, the combined form), uncompressed: compression costs 4-8x the encryption and gains
little on mail.

Incoming (`decrypt_message`): a `multipart/encrypted` message that opens with one of the
account's keys becomes the inner message: its fields replace the outer ones of the
same name (protected headers; inner `Sealgate-*` fields are dropped), the outer
Content-* fields go, and a
`Sealgate-OpenPGP` field on top says it was decrypted and whether a known key signed
it. Anything else, or what does not open, is returned unchanged (the reader sees the
ciphertext, as any mail client without the key would).

Pure functions over bytes and pgpy keys: no I/O, never logs.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.headers import Field, HeaderBlock, parse_header
from gateway.pgp.keys import armor, cipher_for, dearmor, fingerprint_of
from gateway.pgp.lib import CompressionAlgorithm, PGPError, pgpy

# Fields kept outside the encryption: what delivery and threading need, nothing more.
OUTER_FIELDS = ("from", "to", "cc", "date", "message-id", "in-reply-to", "references")
_CONTENT_FIELDS = ("content-type", "content-transfer-encoding", "mime-version")
STATUS_FIELD = "Sealgate-OpenPGP"
WARNING_FIELD = "Sealgate-Warning"
_PROTOCOL = re.compile(rb'protocol\s*=\s*"?application/pgp-encrypted"?', re.IGNORECASE)
_ENCRYPTED = re.compile(rb"^\s*multipart/encrypted\b", re.IGNORECASE)
_AUTOCRYPT_LINE = 76


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def autocrypt_field(address: str, public: bytes) -> bytes:
    """`Autocrypt: addr=...; prefer-encrypt=mutual; keydata=...` (Autocrypt 1.1), folded."""
    data = base64.b64encode(public).decode("ascii")
    lines = [data[i : i + _AUTOCRYPT_LINE] for i in range(0, len(data), _AUTOCRYPT_LINE)]
    return (f"Autocrypt: addr={address}; prefer-encrypt=mutual; keydata=\r\n "
            + "\r\n ".join(lines) + "\r\n").encode("ascii")


def _protected_inner(message: bytes, header: HeaderBlock) -> bytes:
    """The message itself, its Content-Type marked as carrying protected headers."""
    body = message[header.end :] if header.body_start is not None else b""
    lines: list[bytes] = []
    marked = False
    for field in header.fields:
        if field.name == "autocrypt":
            continue  # the client's key: answers must come to the gateway's (outside)
        raw = field.raw if field.raw.endswith(b"\n") else field.raw + b"\r\n"
        if field.name == "content-type" and not marked:
            raw = raw.rstrip(b"\r\n") + b'; protected-headers="v1"\r\n'
            marked = True
        lines.append(raw)
    if not marked:
        lines.append(b'Content-Type: text/plain; charset="utf-8"; protected-headers="v1"\r\n')
    return _crlf(b"".join(lines) + b"\r\n" + body)


def _outer_fields(header: HeaderBlock) -> list[bytes]:
    kept = [f.raw if f.raw.endswith(b"\n") else f.raw + b"\r\n"
            for f in header.fields if f.name in OUTER_FIELDS]
    return [_crlf(raw) for raw in kept]


def sign_and_encrypt(data: bytes, signer: Any, recipient: Any) -> bytes:
    """One OpenPGP message: `data` as binary literal, signed by `signer`, encrypted to
    `recipient` (pgpy keys) with AES (`cipher_for`), uncompressed. Returns it binary."""
    literal = pgpy.PGPMessage.new(data, format="b", compression=CompressionAlgorithm.Uncompressed)
    literal |= signer.sign(literal)
    return bytes(recipient.encrypt(literal, cipher=cipher_for(recipient)))


def encrypt_message(
    message: bytes, *, sender: str, signer: Any, sender_public: bytes, recipient: Any,
    boundary: str | None = None,
) -> bytes:
    """The PGP/MIME message for one recipient outside (see the module docstring)."""
    header = parse_header(message, limit=None)
    ciphertext = sign_and_encrypt(_protected_inner(message, header), signer, recipient)
    boundary = boundary or "sealgate-" + secrets.token_hex(12)
    outer = b"".join(_outer_fields(header)) + (
        b"Subject: ...\r\nMIME-Version: 1.0\r\n"
        + autocrypt_field(sender, sender_public)
        + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        + f' boundary="{boundary}"\r\n\r\n'.encode("ascii")
    )
    body = (
        "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
        f"--{boundary}\r\n"
        "Content-Type: application/pgp-encrypted\r\n"
        "Content-Description: PGP/MIME version identification\r\n\r\n"
        "Version: 1\r\n\r\n"
        f"--{boundary}\r\n"
        'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        "Content-Description: OpenPGP encrypted message\r\n"
        'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        + armor("MESSAGE", ciphertext).replace("\n", "\r\n")
        + f"\r\n--{boundary}--\r\n"
    )
    return outer + body.encode("ascii")


def plaintext_message(message: bytes, *, sender: str, sender_public: bytes) -> bytes:
    """The message as it goes to a domain the operator allows plaintext to: marked so,
    with the account's key in `Autocrypt` instead of any the client put there."""
    message = without_fields(message, parse_header(message, limit=None), "autocrypt")
    return (
        f"{WARNING_FIELD}: this message left the bubble without encryption; anyone on "
        "its way to you could read it\r\n"
    ).encode("ascii") + autocrypt_field(sender, sender_public) + message


def without_fields(message: bytes, header: HeaderBlock, *names: str) -> bytes:
    """`message` (whose parsed header is `header`) without the fields `names` (lower case)."""
    if not any(header.first(name) is not None for name in names):
        return message
    kept = b"".join(f.raw if f.raw.endswith(b"\n") else f.raw + b"\r\n"
                    for f in header.fields if f.name not in names)
    body = message[header.end :] if header.body_start is not None else b""
    return kept + b"\r\n" + body


def without_status(message: bytes, header: HeaderBlock) -> bytes:
    """`message` without any `Sealgate-OpenPGP` field: only this gateway writes one."""
    return without_fields(message, header, STATUS_FIELD.lower())


def is_pgp_mime(header: HeaderBlock) -> bool:
    content_type = header.first("content-type")
    return (
        content_type is not None
        and _ENCRYPTED.match(content_type.value) is not None
        and _PROTOCOL.search(content_type.value) is not None
    )


def _literal_bytes(message: Any) -> bytes:
    data = message.message
    if isinstance(data, str):  # a text literal ('t': latin-1 in pgpy, 'u': UTF-8)
        return data.encode("utf-8" if message._message.format == "u" else "latin-1")
    return bytes(data)


def _signed_by(opened: Any, peers: Iterable[Any]) -> str:
    if not opened.signatures:
        return "not signed"
    signer = opened.signatures[0].signer
    for peer in peers:
        if signer in (peer.fingerprint.keyid, *(k for k in peer.subkeys)):
            try:
                if peer.verify(opened):
                    return f"signed by {fingerprint_of(peer)} (signature good)"
            except PGPError:
                pass
            return f"signed by {fingerprint_of(peer)} (signature BAD)"
    return f"signed by key {signer} (not a key this gateway knows)"


def decrypt_message(message: bytes, keys: Sequence[Any], peers: Iterable[Any] = ()) -> bytes:
    """The readable form of PGP/MIME `message` if one of `keys` opens it, else `message`.

    `peers` are the correspondents' public keys (pgpy) the signature is checked against.
    """
    header = parse_header(message, limit=None)
    if not is_pgp_mime(header) or header.body_start is None:
        return message
    try:
        _kind, binary = dearmor(message[header.body_start :])
        encrypted = pgpy.PGPMessage.from_blob(binary)
    except (ValueError, PGPError, TypeError, IndexError, KeyError, NotImplementedError):
        return message
    for key in keys:
        try:
            opened = key.decrypt(encrypted)
            inner = _literal_bytes(opened)
        except (ValueError, PGPError, TypeError, IndexError, KeyError, NotImplementedError):
            continue
        status = f"decrypted by this gateway; {_signed_by(opened, peers)}"
        return _merge(header, message, inner, status)
    return message


def _merge(outer: HeaderBlock, message: bytes, inner: bytes, status: str) -> bytes:
    inner = _crlf(inner) if b"\r\n" not in inner[:2048] else inner
    inner_header = parse_header(inner, limit=None)
    inner_names = {f.name for f in inner_header.fields}
    keep: list[Field] = [
        f for f in outer.fields
        if f.name not in _CONTENT_FIELDS and f.name not in inner_names
        and f.name != STATUS_FIELD.lower() and not (f.name == "subject" and f.text == "...")
    ]
    head = b"".join(f.raw if f.raw.endswith(b"\n") else f.raw + b"\r\n" for f in keep)
    body = inner[inner_header.end :] if inner_header.body_start is not None else b""
    inner_head = b"".join(  # a sender outside cannot speak for this gateway
        f.raw if f.raw.endswith(b"\n") else f.raw + b"\r\n" for f in inner_header.fields
        if not f.name.startswith("sealgate-")
    )
    return (f"{STATUS_FIELD}: {status}\r\n".encode("ascii") + head + inner_head + b"\r\n"
            + body)
