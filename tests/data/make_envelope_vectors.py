"""Make tests/data/envelope_vectors.json: a second implementation of docs/envelope.md.

This script does not import `bridge`. It builds keys, lookup ids, buckets and
envelopes from the written spec with hashlib and raw libsodium calls
(`nacl.bindings`), using fixed seeds and a fixed ephemeral key per envelope, so
its output is deterministic. The tests open its envelopes with `bridge.envelope`,
compare `bridge.keys` / `bridge.directory` against its keys and lookup ids, and
check that running it again reproduces the file byte for byte.

    .venv/bin/python tests/data/make_envelope_vectors.py          # rewrite the file
    .venv/bin/python tests/data/make_envelope_vectors.py --check  # exit 1 if it differs

Every secret in the file is a test secret derived from a public label:
seed(label) = SHA-256("sealgate test vector " || label).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings as sodium

VECTORS_PATH = Path(__file__).with_name("envelope_vectors.json")

MAGIC = b"SGE\x01"
SEAL_OVERHEAD = 48
SIGNATURE_CONTEXT = b"sealgate-envelope-v1\0"
DIGEST_PERSON = b"sg-envelope-v1\0\0"
LOOKUP_ID_PERSON = b"sg-lookup-id\0\0\0\0"
MIB = 1024 * 1024


def seed(label: str) -> bytes:
    return hashlib.sha256(b"sealgate test vector " + label.encode()).digest()


# --- keys (docs/envelope.md, "Account keys") -------------------------------------------

def derive(account_seed: bytes, purpose: bytes) -> bytes:
    return hashlib.blake2b(
        b"", digest_size=32, key=account_seed, person=purpose.ljust(16, b"\0")
    ).digest()


@dataclass(frozen=True)
class Account:
    seed: bytes

    @property
    def encryption_secret(self) -> bytes:
        return derive(self.seed, b"sg-encryption")

    @property
    def encryption_public(self) -> bytes:
        return sodium.crypto_scalarmult_base(self.encryption_secret)

    def _ed25519(self, purpose: bytes) -> tuple[bytes, bytes]:
        return sodium.crypto_sign_seed_keypair(derive(self.seed, purpose))

    @property
    def signing_public(self) -> bytes:
        return self._ed25519(b"sg-signing")[0]

    def sign(self, message: bytes) -> bytes:
        return sodium.crypto_sign(message, self._ed25519(b"sg-signing")[1])[:64]

    @property
    def mailbox_public(self) -> bytes:
        return self._ed25519(b"sg-mailbox")[0]

    @property
    def mailbox_id(self) -> bytes:
        return hashlib.blake2b(
            self.mailbox_public, digest_size=32, person=b"sg-mailbox-id".ljust(16, b"\0")
        ).digest()


# --- buckets, lookup ids -----------------------------------------------------------------

def bucket(inner_len: int) -> int:
    need = inner_len + 1 + SEAL_OVERHEAD
    size = 4096
    while size < need and size < MIB:
        size *= 2
    if size >= need:
        return size
    return ((need + MIB - 1) // MIB) * MIB


def normalize(address: str) -> str:
    return unicodedata.normalize("NFC", address.strip().lower())


def lookup_id(directory_key: bytes, address: str) -> bytes:
    return hashlib.blake2b(
        normalize(address).encode("utf-8"), digest_size=32, key=directory_key,
        person=LOOKUP_ID_PERSON,
    ).digest()


# --- envelopes ---------------------------------------------------------------------------

@dataclass
class Inner:
    """Every field of an inner record, with knobs to build broken ones on purpose."""

    sender: bytes
    sender_key: bytes
    timestamp: int
    message: bytes
    version: int = 1
    message_len: int | None = None  # declared length, if not the real one
    signature: bytes | None = None  # a fixed signature, if not a real one

    def signed_part(self) -> bytes:
        declared = len(self.message) if self.message_len is None else self.message_len
        return (
            struct.pack(">BH", self.version, len(self.sender)) + self.sender
            + struct.pack(">32sQI", self.sender_key, self.timestamp, declared) + self.message
        )


def digest(envelope_id: bytes, mailbox_id: bytes, signed_part: bytes) -> bytes:
    return hashlib.blake2b(
        envelope_id + mailbox_id + signed_part, digest_size=64, person=DIGEST_PERSON
    ).digest()


def inner_bytes(inner: Inner, signer: Account, envelope_id: bytes, mailbox_id: bytes) -> bytes:
    signed = inner.signed_part()
    signature = inner.signature
    if signature is None:
        signature = signer.sign(SIGNATURE_CONTEXT + digest(envelope_id, mailbox_id, signed))
    return signed + signature


def pad(unpadded: bytes, to_bucket: int | None = None) -> bytes:
    size = bucket(len(unpadded)) if to_bucket is None else to_bucket
    return unpadded + b"\x80" + bytes(size - SEAL_OVERHEAD - len(unpadded) - 1)


def sealed_box(plaintext: bytes, recipient_public: bytes, ephemeral_secret: bytes) -> bytes:
    """libsodium crypto_box_seal with a chosen ephemeral key."""
    ephemeral_public = sodium.crypto_scalarmult_base(ephemeral_secret)
    nonce = hashlib.blake2b(ephemeral_public + recipient_public, digest_size=24).digest()
    return ephemeral_public + sodium.crypto_box_easy(
        plaintext, nonce, recipient_public, ephemeral_secret
    )


def envelope(
    envelope_id: bytes, mailbox_id: bytes, ciphertext: bytes, magic: bytes = MAGIC
) -> bytes:
    return magic + envelope_id + mailbox_id + struct.pack(">I", len(ciphertext)) + ciphertext


# --- the vectors -------------------------------------------------------------------------

SIMPLE_MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: Hello\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <4f1c2a@sealgate.invalid>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hi Bob,\r\nthe keys are in the usual place.\r\n"
)

NON_ASCII_MESSAGE = (
    "From: Jürgen <jürgen@bücher.example>\r\n"
    "To: Zoë <zoë@example.org>\r\n"
    "Subject: Grüße aus Köln — 東京で会いましょう 🚀\r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "Message-ID: <9a8b7c@sealgate.invalid>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Liebe Zoë,\r\nçà et là: ½ € — 日本語のテキスト — Ελληνικά — עברית.\r\n"
).encode()


def filler(n: int) -> bytes:
    """A deterministic RFC 5322 message of exactly n bytes."""
    head = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: filler\r\n\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-+\r\n"
    body = (line * (n // len(line) + 1))[: n - len(head)]
    return head + body


ALICE = Account(seed("alice"))
BOB = Account(seed("bob"))
MALLORY = Account(seed("mallory"))
TIMESTAMP = 1_700_000_000


def _inner_overhead(sender: bytes) -> int:
    return 3 + len(sender) + 44 + 64


def valid_cases() -> list[dict[str, Any]]:
    alice_addr = b"alice@example.org"
    exact = 4096 - SEAL_OVERHEAD - 1 - _inner_overhead(alice_addr)  # fills 4 KiB exactly
    return [
        dict(name="small-ascii", sender="alice@example.org", message=SIMPLE_MESSAGE),
        dict(name="non-ascii", sender="jürgen@bücher.example", message=NON_ASCII_MESSAGE),
        dict(name="empty-message", sender="alice@example.org", message=b""),
        dict(name="fills-4KiB-exactly", sender="alice@example.org", message=filler(exact)),
        dict(name="one-byte-over-4KiB", sender="alice@example.org", message=filler(exact + 1)),
        dict(name="multi-bucket-16KiB", sender="alice@example.org", message=filler(9_000)),
    ]


def make_valid(index: int, case: dict[str, Any]) -> dict[str, Any]:
    envelope_id = seed(f"envelope id {index}")[:16]
    ephemeral = seed(f"ephemeral {index}")
    timestamp = TIMESTAMP + index
    inner = Inner(
        sender=case["sender"].encode("utf-8"), sender_key=ALICE.signing_public,
        timestamp=timestamp, message=case["message"],
    )
    plaintext = pad(inner_bytes(inner, ALICE, envelope_id, BOB.mailbox_id))
    ciphertext = sealed_box(plaintext, BOB.encryption_public, ephemeral)
    return {
        "name": case["name"],
        "recipient_seed": BOB.seed.hex(),
        "sender_seed": ALICE.seed.hex(),
        "ephemeral_secret": ephemeral.hex(),
        "envelope_id": envelope_id.hex(),
        "mailbox_id": BOB.mailbox_id.hex(),
        "sender": case["sender"],
        "sender_signing_key": ALICE.signing_public.hex(),
        "timestamp": timestamp,
        "message_hex": case["message"].hex(),
        "bucket": len(ciphertext),
        "envelope_hex": envelope(envelope_id, BOB.mailbox_id, ciphertext).hex(),
    }


def make_invalid() -> list[dict[str, Any]]:
    """Envelopes to Bob that decrypt (or nearly) but must still be refused."""
    cases: list[dict[str, Any]] = []

    def add(name: str, reason: str, data: bytes) -> None:
        cases.append({
            "name": name, "reason": reason, "recipient_seed": BOB.seed.hex(),
            "envelope_hex": data.hex(),
        })

    def base(**changes: Any) -> Inner:
        fields: dict[str, Any] = dict(
            sender=b"alice@example.org", sender_key=ALICE.signing_public,
            timestamp=TIMESTAMP, message=SIMPLE_MESSAGE,
        )
        fields.update(changes)
        return Inner(**fields)

    def to_bob(index: int, plaintext: bytes, magic: bytes = MAGIC, variant: str = "") -> bytes:
        eid = seed(f"invalid envelope id {index}")[:16]
        ephemeral = seed(f"invalid eph {index}{variant}")
        return envelope(eid, BOB.mailbox_id,
                        sealed_box(plaintext, BOB.encryption_public, ephemeral), magic)

    def signed_for_bob(index: int, inner: Inner, signer: Account = ALICE) -> bytes:
        eid = seed(f"invalid envelope id {index}")[:16]
        return inner_bytes(inner, signer, eid, BOB.mailbox_id)

    # 1. Alice wrote to Mallory; Mallory re-seals the signed inner record to Bob.
    eid = seed("invalid envelope id 1")[:16]
    for_mallory = pad(inner_bytes(base(), ALICE, eid, MALLORY.mailbox_id))
    add("re-addressed", "signature binds Mallory's mailbox id, outside says Bob's",
        envelope(eid, BOB.mailbox_id,
                 sealed_box(for_mallory, BOB.encryption_public, seed("invalid eph 1"))))
    add("foreign-mailbox-id", "outside mailbox id is not the opener's own",
        envelope(eid, MALLORY.mailbox_id,
                 sealed_box(for_mallory, BOB.encryption_public, seed("invalid eph 1b"))))
    # 2. The envelope id on the outside is not the one that was signed.
    good = pad(signed_for_bob(2, base()))
    add("envelope-id-changed", "signature binds another envelope id",
        envelope(seed("some other id")[:16], BOB.mailbox_id,
                 sealed_box(good, BOB.encryption_public, seed("invalid eph 2"))))
    add("wrong-magic", "magic is SGE\\x02", to_bob(2, good, magic=b"SGE\x02", variant="b"))
    # 3. Signed by Mallory's key while claiming Alice's.
    add("signature-by-other-key", "signature made with a key other than the one inside",
        to_bob(3, pad(signed_for_bob(3, base(), signer=MALLORY))))
    # 4. Signature over the right fields without the context string.
    eid4 = seed("invalid envelope id 4")[:16]
    no_context = ALICE.sign(digest(eid4, BOB.mailbox_id, base().signed_part()))
    add("signature-without-context", "signed digest lacks the context prefix",
        to_bob(4, pad(signed_for_bob(4, base(signature=no_context)))))
    add("inner-version-2", "unknown inner version",
        to_bob(5, pad(signed_for_bob(5, base(version=2)))))
    add("empty-sender", "sender length 0", to_bob(6, pad(signed_for_bob(6, base(sender=b"")))))
    add("sender-not-utf8", "sender is not UTF-8",
        to_bob(7, pad(signed_for_bob(7, base(sender=b"al\xffce@example.org")))))
    add("message-length-overruns", "declared message length runs past the plaintext",
        to_bob(8, pad(signed_for_bob(8, base(message_len=5000)))))
    unpadded = signed_for_bob(9, base())
    add("padding-mark-missing", "byte after the signature is 0x00, not 0x80",
        to_bob(9, unpadded + bytes(4096 - SEAL_OVERHEAD - len(unpadded))))
    padded = bytearray(pad(unpadded))
    padded[-1] = 0x01
    add("padding-not-zero", "a padding byte after 0x80 is not zero",
        to_bob(9, bytes(padded), variant="b"))
    add("bucket-not-minimal", "padded to 8 KiB although 4 KiB fits",
        to_bob(10, pad(signed_for_bob(10, base()), to_bucket=8192)))
    add("length-not-a-bucket", "ciphertext length 5000 is not a bucket",
        to_bob(11, pad(signed_for_bob(11, base()), to_bucket=5000)))
    add("not-sealed-to-bob", "sealed to Mallory's encryption key",
        envelope(seed("invalid envelope id 12")[:16], BOB.mailbox_id,
                 sealed_box(pad(signed_for_bob(12, base())), MALLORY.encryption_public,
                            seed("invalid eph 12"))))
    return cases


def build() -> dict[str, Any]:
    directory_key = seed("directory key")
    addresses = ["alice@example.org", "  Alice@Example.ORG ", "jürgen@bücher.example",
                 "JU\u0308RGEN@BU\u0308CHER.EXAMPLE", "zoë@example.org"]
    sizes = [0, 1, 4046, 4047, 4048, 8143, 8144, 200_000, 1_048_527, 1_048_528,
             5_000_000, 67_109_999]
    return {
        "format": "sealgate envelope v1 test vectors",
        "spec": "docs/envelope.md",
        "generator": "tests/data/make_envelope_vectors.py",
        "secrets": "seed(label) = SHA-256('sealgate test vector ' || label); test use only",
        "accounts": [
            {
                "label": name,
                "seed": acct.seed.hex(),
                "encryption_public": acct.encryption_public.hex(),
                "signing_public": acct.signing_public.hex(),
                "mailbox_public": acct.mailbox_public.hex(),
                "mailbox_id": acct.mailbox_id.hex(),
                "storage_key": derive(acct.seed, b"sg-storage").hex(),
                "message_id_key": derive(acct.seed, b"sg-message-id").hex(),
            }
            for name, acct in (("alice", ALICE), ("bob", BOB), ("mallory", MALLORY))
        ],
        "lookup_ids": [
            {
                "directory_key": directory_key.hex(),
                "address": address,
                "normalized": normalize(address),
                "lookup_id": lookup_id(directory_key, address).hex(),
            }
            for address in addresses
        ],
        "padded_size": [{"inner_len": n, "bucket": bucket(n)} for n in sizes],
        "envelopes": [make_valid(i, case) for i, case in enumerate(valid_cases())],
        "invalid_envelopes": make_invalid(),
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        return 0 if VECTORS_PATH.read_text(encoding="utf-8") == text else 1
    VECTORS_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
