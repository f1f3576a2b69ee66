"""OpenPGP keys: an account's own key pair and the public keys of correspondents outside.

An account's key is Ed25519 (certify, sign) with a Curve25519 encryption subkey, made
by pgpy; never RSA (pgpy's RSA private-key operations cost ~120 ms each). Its private
half is kept sealed (XChaCha20-Poly1305) under a key derived from the account's first
seed (`bridge.keys.derive`, purpose "sg-openpgp"), so it opens exactly when the
account's other keys do: after its passphrase unlocked them. Keys of correspondents
(`read_public_key`) may be of any algorithm pgpy reads, RSA included; they must be
public keys and able to encrypt.

Armor is written and read here (`armor`, `dearmor`): pgpy's own computes its CRC-24 in
Python, ~160 ms for 100 KB. GnuPG 2.2 refuses armor without the checksum (RFC 9580
makes it optional), so it is written, computed by anycrc (C, ~0.02 ms for 100 KB);
reading ignores it (the OpenPGP message has its own integrity check).

    OpenPgpKeyError       a key file is not a usable public key (one line, no key data)

This module does no I/O and never logs.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anycrc
import nacl.exceptions
import nacl.secret
import nacl.utils

from bridge.errors import CannotOpen
from bridge.keys import derive
from gateway.pgp.lib import (
    CompressionAlgorithm,
    EllipticCurveOID,
    HashAlgorithm,
    KeyFlags,
    PGPError,
    PubKeyAlgorithm,
    SymmetricKeyAlgorithm,
    pgpy,
)

MAX_KEY_FILE_BYTES = 1024 * 1024
_SEAL_PURPOSE = b"sg-openpgp"
_ARMOR_LINE = 64
_CRC24 = anycrc.Model("CRC24-OPENPGP")
_ARMOR = re.compile(
    rb"-----BEGIN PGP (?P<kind>[A-Z ]+)-----\r?\n(?P<body>.*?)-----END PGP (?P=kind)-----",
    re.DOTALL,
)


class OpenPgpKeyError(ValueError):
    """A key file cannot be used; the message says why in one line (never key data)."""


def armor(kind: str, data: bytes) -> str:
    """ASCII armor ("MESSAGE", "PUBLIC KEY BLOCK") of `data`, LF line ends."""
    text = base64.b64encode(data).decode("ascii")
    lines = [text[i : i + _ARMOR_LINE] for i in range(0, len(text), _ARMOR_LINE)]
    checksum = base64.b64encode(_CRC24.calc(data).to_bytes(3, "big")).decode("ascii")
    return (f"-----BEGIN PGP {kind}-----\n\n" + "\n".join(lines)
            + f"\n={checksum}\n-----END PGP {kind}-----\n")


def dearmor(data: bytes) -> tuple[str, bytes]:
    """(kind, binary) of the first armored block in `data`; ValueError if there is none.

    Armor headers are skipped; the optional "=XXXX" checksum line is ignored."""
    match = _ARMOR.search(data)
    if match is None:
        raise ValueError("no armored OpenPGP block")
    head, blank, body = match.group("body").replace(b"\r\n", b"\n").partition(b"\n\n")
    if not blank:  # no armor headers at all: the body starts at once
        body = head
    lines = [line.strip() for line in body.split(b"\n")]
    payload = b"".join(line for line in lines if line and not line.startswith(b"="))
    try:
        return match.group("kind").decode("ascii"), base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("armored OpenPGP block is not base64") from None


def _seal_box(seed: bytes) -> nacl.secret.Aead:
    return nacl.secret.Aead(derive(seed, _SEAL_PURPOSE))


def generate_account_key(address: str) -> Any:
    """A new pgpy key for `address`: Ed25519 primary, Curve25519 encryption subkey.

    Its self-signature asks correspondents for AES and no compression (compressing costs
    4-8x the encryption and gains little on mail that is mostly compressed already)."""
    key = pgpy.PGPKey.new(PubKeyAlgorithm.EdDSA, EllipticCurveOID.Ed25519)
    key.add_uid(
        pgpy.PGPUID.new(f"<{address}>"),  # as gpg writes a user id without a name
        usage={KeyFlags.Certify, KeyFlags.Sign},
        hashes=[HashAlgorithm.SHA512, HashAlgorithm.SHA256],
        ciphers=[SymmetricKeyAlgorithm.AES256, SymmetricKeyAlgorithm.AES128],
        compression=[CompressionAlgorithm.Uncompressed, CompressionAlgorithm.ZLIB],
        primary=True,
    )
    subkey = pgpy.PGPKey.new(PubKeyAlgorithm.ECDH, EllipticCurveOID.Curve25519)
    key.add_subkey(subkey, usage={KeyFlags.EncryptCommunications, KeyFlags.EncryptStorage})
    return key


@dataclass(frozen=True)
class SealedAccountKey:
    """What the store keeps of an account's OpenPGP key: nothing opens it without the seed."""

    fingerprint: str  # 40 hex digits, upper case, as gpg prints it
    public: bytes  # the transferable public key, binary
    sealed: bytes  # nonce || XChaCha20-Poly1305(derived key, private key), fingerprint as AD


def seal_account_key(key: Any, seed: bytes) -> SealedAccountKey:
    fingerprint = fingerprint_of(key)
    sealed = _seal_box(seed).encrypt(bytes(key), fingerprint.encode("ascii"))
    return SealedAccountKey(fingerprint, bytes(key.pubkey), bytes(sealed))


def open_account_key(stored: SealedAccountKey, seed: bytes) -> Any:
    """The private pgpy key; `CannotOpen` if the seed is not the one it was sealed with."""
    try:
        raw = _seal_box(seed).decrypt(stored.sealed, stored.fingerprint.encode("ascii"))
        key, _ = pgpy.PGPKey.from_blob(raw)
    except (nacl.exceptions.CryptoError, PGPError, ValueError):
        raise CannotOpen("OpenPGP key") from None
    if key.is_public or fingerprint_of(key) != stored.fingerprint:
        raise CannotOpen("OpenPGP key")
    return key


def fingerprint_of(key: Any) -> str:
    return str(key.fingerprint).replace(" ", "").upper()


def public_armored(public: bytes) -> str:
    return armor("PUBLIC KEY BLOCK", public)


_AES = (SymmetricKeyAlgorithm.AES256, SymmetricKeyAlgorithm.AES192,
        SymmetricKeyAlgorithm.AES128)


def cipher_for(recipient: Any) -> SymmetricKeyAlgorithm:
    """The AES variant the recipient's key prefers, else AES-128 (which every OpenPGP
    implementation must read, RFC 9580). pgpy would take the first cipher the key lists,
    TripleDES or CAST5 included, and TripleDES for a key that lists none."""
    uid = next(iter(recipient.userids), None)
    if uid is None and recipient.parent is not None:
        uid = next(iter(recipient.parent.userids), None)
    listed = list(uid.selfsig.cipherprefs) if uid is not None and uid.selfsig else []
    return next((c for c in listed if c in _AES), SymmetricKeyAlgorithm.AES128)


def _can_encrypt(key: Any) -> bool:
    """Whether pgpy finds a key in `key` whose flags allow encryption (it tries one)."""
    probe = pgpy.PGPMessage.new(b"probe", compression=CompressionAlgorithm.Uncompressed)
    try:
        key.encrypt(probe, cipher=cipher_for(key))
    except (PGPError, ValueError, TypeError, NotImplementedError, AttributeError):
        return False  # AttributeError: pgpy on a user id without a self-signature
    return True


@dataclass(frozen=True)
class Validity:
    """What decides whether a correspondent's key may be encrypted to at a given time."""

    revoked: bool
    expires_at: datetime | None

    @classmethod
    def of(cls, key: Any) -> Validity:
        return cls(any(True for _ in key.revocation_signatures), key.expires_at)

    def problem(self, now: datetime | None = None) -> str | None:
        """Why the key must not be encrypted to at `now` (revoked, expired), or None."""
        if self.revoked:
            return "is revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return f"expired on {self.expires_at:%Y-%m-%d}"
        return None


@dataclass(frozen=True)
class PeerKey:
    """A correspondent's public key as imported: binary, its fingerprint and user ids."""

    fingerprint: str
    public: bytes
    user_ids: tuple[str, ...]

    def names(self, address: str) -> bool:
        """Whether one of its user ids carries `address` (compared case-insensitively)."""
        return any(address.lower() in uid.lower() for uid in self.user_ids)


def parse_key(raw: bytes) -> Any:
    """The pgpy key in binary `raw`; `OpenPgpKeyError` if pgpy cannot read one."""
    try:
        key, _ = pgpy.PGPKey.from_blob(raw)
        bytes(key)  # a blob pgpy half-reads yields a key without its key packet
    except (PGPError, ValueError, TypeError, IndexError, KeyError, NotImplementedError,
            AttributeError):
        raise OpenPgpKeyError("not an OpenPGP key pgpy can read") from None
    return key


def peer_key(key: Any) -> PeerKey:
    uids = tuple(str(uid.userid) for uid in key.userids if uid.is_uid)
    return PeerKey(fingerprint_of(key), bytes(key), uids)


def read_public_key(data: bytes) -> PeerKey:
    """The public key in `data` (armored or binary); `OpenPgpKeyError` if it is unusable."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise OpenPgpKeyError(f"a key file is at most {MAX_KEY_FILE_BYTES} bytes")
    try:
        kind, raw = dearmor(data) if b"-----BEGIN PGP" in data else ("PUBLIC KEY BLOCK", data)
    except ValueError as e:
        raise OpenPgpKeyError(f"not an OpenPGP key: {e}") from None
    if kind == "PRIVATE KEY BLOCK":
        raise OpenPgpKeyError("this is a private key: import the correspondent's public key")
    if kind != "PUBLIC KEY BLOCK":
        raise OpenPgpKeyError(f"not an OpenPGP key but a PGP {kind.lower()}")
    key = parse_key(raw)
    if not key.is_public:
        raise OpenPgpKeyError("this is a private key: import the correspondent's public key")
    if not any(uid.is_uid for uid in key.userids):
        raise OpenPgpKeyError("this key has no user id")
    problem = Validity.of(key).problem()
    if problem is not None:
        raise OpenPgpKeyError(f"this key {problem}: ask for a current one")
    if not _can_encrypt(key):
        raise OpenPgpKeyError("this key has no encryption key (only signing)")
    return peer_key(key)
