"""seal_open: `bridge.envelope.seal` and `open_envelope` against a bare libsodium sealed box.

Ours: `seal(message, sender=..., sender_keys=..., recipient=...)` and
`open_envelope(envelope, recipient_keys)` with real account keys: an Ed25519
signature over a BLAKE2b digest of the message, padding to the size bucket, the
sealed box, the 56-byte outside; opening checks the bucket, the padding and the
signature.

Baseline: `nacl.public.SealedBox(public).encrypt(message)` and
`SealedBox(private).decrypt(ciphertext)` of the same message: the encryption alone,
with no signature, padding or framing.

Sizes: 10 KB, 100 KB, 1 MB (10,000, 100,000 and 1,000,000 bytes). The envelope pads
them to 16 KiB, 128 KiB and 1 MiB buckets, so ours encrypts 1.6x, 1.3x and 1.05x the
bytes the baseline does (a message of exactly 1 MiB would go to the 2 MiB bucket).

Ratio: our median time per call over the baseline's. Target: <= 2.5 at every size,
for sealing and for opening. The design adds one BLAKE2b pass over the message, one
Ed25519 signature (or verification) and the padding on top of the sealed box, each
about the cost of the box itself at some size; more than 2.5x means a needless copy
or pass.
"""

from __future__ import annotations

from nacl.public import PrivateKey, SealedBox

from bench.common import KB, MB, Result, Settings, Target, make_message, paired_timings, time_ratio
from bridge.envelope import open_envelope, seal
from bridge.keys import AccountKeys

NAME = "seal_open"
SIZES = ((10 * KB, "10 KB"), (100 * KB, "100 KB"), (1 * MB, "1 MB"))
TARGET = Target("<=", 2.5)
SENDER = "alice@bench.bubble"


def run(settings: Settings) -> list[Result]:
    sender_keys, recipient_keys = AccountKeys.generate(), AccountKeys.generate()
    recipient_public = recipient_keys.public
    box_key = PrivateKey.generate()
    seal_box, open_box = SealedBox(box_key.public_key), SealedBox(box_key)
    budget = 0.05 if settings.quick else 0.2
    results: list[Result] = []
    for size, label in SIZES:
        message = make_message(size, sender=SENDER, recipient="bob@bench.bubble", number=size)
        envelope = seal(message, sender=SENDER, sender_keys=sender_keys,
                        recipient=recipient_public)
        ciphertext = seal_box.encrypt(message)
        # Both must round-trip before anything is timed.
        opened = open_envelope(envelope, recipient_keys)
        if opened.message != message or open_box.decrypt(ciphertext) != message:
            raise AssertionError("a round trip lost the message")

        def do_seal(message: bytes = message) -> object:
            return seal(message, sender=SENDER, sender_keys=sender_keys,
                        recipient=recipient_public)

        def do_open(envelope: bytes = envelope) -> object:
            return open_envelope(envelope, recipient_keys)

        def box_seal(message: bytes = message) -> object:
            return seal_box.encrypt(message)

        def box_open(ciphertext: bytes = ciphertext) -> object:
            return open_box.decrypt(ciphertext)

        t = paired_timings(
            {"seal": do_seal, "box_seal": box_seal, "open": do_open, "box_open": box_open},
            reps=settings.reps,
            budget=budget,
        )
        note = f"envelope {len(envelope):,} bytes vs sealed box {len(ciphertext):,}"
        results += [
            Result(NAME, f"seal {label}", "s", t["seal"], "SealedBox.encrypt", t["box_seal"],
                   time_ratio(t["seal"], t["box_seal"]), TARGET, (note,)),
            Result(NAME, f"open {label}", "s", t["open"], "SealedBox.decrypt", t["box_open"],
                   time_ratio(t["open"], t["box_open"]), TARGET),
        ]
    return results
