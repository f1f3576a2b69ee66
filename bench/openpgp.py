"""openpgp: the gateway's PGP/MIME for recipients outside against its bubble envelope.

Ours: `gateway.pgp.mime.encrypt_message` (protected headers, an Ed25519 signature,
Curve25519 encryption with pgpy, uncompressed, armor with its CRC-24, the MIME around
it) and `decrypt_message` (armor off, decryption, the signature checked with the
sender's public key, the protected headers put back), per message.

Baseline: `bridge.envelope.seal` and `open_envelope` of the same message (what the
same message costs inside the bubble: PyNaCl's sealed box and an Ed25519 signature).

A third row per size shows what pgpy's default compression (ZLIB) would cost: ours
is sign+encrypt with ZLIB, the baseline the same uncompressed.

Sizes: 10 KB and 100 KB. Ratio: our median time per message over the baseline's.
Target: <= 40 (pgpy is pure Python around `cryptography`, ~2 ms of fixed work per call,
most of it recomputing key fingerprints; the envelope costs ~0.1 ms on an idle core).
"""

from __future__ import annotations

from bench.common import KB, Result, Settings, Target, make_message, paired_timings, time_ratio
from bridge.envelope import open_envelope, seal
from bridge.keys import AccountKeys
from gateway.pgp.keys import generate_account_key
from gateway.pgp.lib import CompressionAlgorithm, pgpy
from gateway.pgp.mime import decrypt_message, encrypt_message

NAME = "openpgp"
SIZES = ((10 * KB, "10 KB"), (100 * KB, "100 KB"))
TARGET = Target("<=", 40.0)
SENDER, RECIPIENT = "alice@bench.bubble", "carol@partner.example"


def run(settings: Settings) -> list[Result]:
    alice, carol = generate_account_key(SENDER), generate_account_key(RECIPIENT)
    alice_public = bytes(alice.pubkey)
    sender_keys, recipient_keys = AccountKeys.generate(), AccountKeys.generate()
    budget = 0.1 if settings.quick else 0.4
    results: list[Result] = []
    for size, label in SIZES:
        message = make_message(size, sender=SENDER, recipient=RECIPIENT, number=size)
        envelope = seal(message, sender=SENDER, sender_keys=sender_keys,
                        recipient=recipient_keys.public)
        pgp = encrypt_message(message, sender=SENDER, signer=alice, sender_public=alice_public,
                              recipient=carol.pubkey)
        if b"Sealgate-OpenPGP: decrypted" not in decrypt_message(pgp, [carol], [alice.pubkey]):
            raise AssertionError("a PGP/MIME round trip failed")

        def encrypt(message: bytes = message) -> object:
            return encrypt_message(message, sender=SENDER, signer=alice,
                                   sender_public=alice_public, recipient=carol.pubkey)

        def decrypt(pgp: bytes = pgp) -> object:
            return decrypt_message(pgp, [carol], [alice.pubkey])

        def envelope_seal(message: bytes = message) -> object:
            return seal(message, sender=SENDER, sender_keys=sender_keys,
                        recipient=recipient_keys.public)

        def envelope_open(envelope: bytes = envelope) -> object:
            return open_envelope(envelope, recipient_keys)

        def pgpy_with(compression: CompressionAlgorithm, message: bytes = message) -> object:
            literal = pgpy.PGPMessage.new(message, format="b", compression=compression)
            literal |= alice.sign(literal)
            return bytes(carol.pubkey.encrypt(literal))

        t = paired_timings(
            {"encrypt": encrypt, "seal": envelope_seal, "decrypt": decrypt,
             "open": envelope_open,
             "zlib": lambda: pgpy_with(CompressionAlgorithm.ZLIB),
             "plain": lambda: pgpy_with(CompressionAlgorithm.Uncompressed)},
            reps=settings.reps, budget=budget,
        )
        note = f"PGP/MIME {len(pgp):,} bytes vs envelope {len(envelope):,}"
        results += [
            Result(NAME, f"sign+encrypt {label}", "s", t["encrypt"], "envelope seal", t["seal"],
                   time_ratio(t["encrypt"], t["seal"]), TARGET, (note,)),
            Result(NAME, f"decrypt+verify {label}", "s", t["decrypt"], "envelope open",
                   t["open"], time_ratio(t["decrypt"], t["open"]), TARGET),
            Result(NAME, f"ZLIB {label}", "s", t["zlib"], "uncompressed", t["plain"],
                   time_ratio(t["zlib"], t["plain"]), None),
        ]
    return results
