"""Account keys, sealed seeds, the root key and gateway credentials (bridge/keys.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest

from bridge.errors import CannotOpen, WrongPassphrase
from bridge.keys import (
    GATEWAY_CERT_CONTEXT,
    MAX_KEY_GENERATIONS,
    SEALED_SEED_MAGIC,
    AccountKeys,
    AccountPublic,
    GatewayCredential,
    KdfCost,
    RootKey,
    derive,
    mailbox_id_for,
    seal_seed,
    sealed_cost,
    unseal_seed,
    verify_root_signature,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "envelope_vectors.json").read_text("utf-8")
)
FAST = KdfCost.minimum()
HEADER_LEN = 4 + 8 + 8 + 16


@pytest.mark.parametrize("row", VECTORS["accounts"], ids=lambda r: r["label"])
def test_derived_key_vectors(row: dict[str, str]) -> None:
    keys = AccountKeys(bytes.fromhex(row["seed"]))
    assert keys.public.encryption_key.hex() == row["encryption_public"]
    assert keys.public.signing_key.hex() == row["signing_public"]
    assert keys.public.mailbox_key.hex() == row["mailbox_public"]
    assert keys.public.mailbox_id.hex() == row["mailbox_id"]
    assert keys.storage_key.hex() == row["storage_key"]
    assert keys.message_id_key.hex() == row["message_id_key"]


def test_derived_keys_are_distinct_per_purpose_and_account() -> None:
    keys = AccountKeys(bytes(32))
    secrets = [
        keys.seed, bytes(keys.encryption), bytes(keys.signing), bytes(keys.mailbox),
        keys.storage_key, keys.message_id_key,
    ]
    publics = [keys.public.encryption_key, keys.public.signing_key, keys.public.mailbox_key,
               keys.public.mailbox_id]
    assert len(set(secrets + publics)) == len(secrets) + len(publics)
    other = AccountKeys(bytes(31) + b"\x01")
    assert not set(secrets[1:] + publics) & {
        bytes(other.encryption), bytes(other.signing), bytes(other.mailbox), other.storage_key,
        other.message_id_key, other.public.encryption_key, other.public.mailbox_id,
    }
    assert AccountKeys(bytes(32)).public == keys.public  # deterministic


def test_derive_and_key_shapes() -> None:
    assert derive(bytes(32), b"a") != derive(bytes(32), b"b")
    assert len(derive(bytes(32), b"a", 64)) == 64
    with pytest.raises(ValueError, match="16 bytes"):
        derive(bytes(32), b"x" * 17)
    with pytest.raises(ValueError, match="32 bytes"):
        AccountKeys(bytes(31))
    with pytest.raises(ValueError, match="signing_key"):
        AccountPublic(encryption_key=bytes(32), signing_key=bytes(31), mailbox_key=bytes(32))
    pub = AccountKeys.generate().public
    assert pub.mailbox_id == mailbox_id_for(pub.mailbox_key)
    assert AccountKeys.generate().seed != AccountKeys.generate().seed


def test_sealed_seed_round_trip() -> None:
    seed = AccountKeys.generate().seed
    blob = seal_seed(seed, "correct horse ✓".encode(), FAST)
    assert blob.startswith(SEALED_SEED_MAGIC)
    assert seed not in blob
    assert unseal_seed(blob, "correct horse ✓".encode()) == seed
    assert seal_seed(seed, b"pw", FAST) != seal_seed(seed, b"pw", FAST)  # fresh salt and nonce


def test_wrong_passphrase() -> None:
    blob = seal_seed(bytes(32), b"right", FAST)
    for wrong in (b"wrong", b"", b"right ", b"Right"):
        with pytest.raises(WrongPassphrase, match="wrong passphrase"):
            unseal_seed(blob, wrong)


def test_truncated_or_foreign_blob_cannot_open() -> None:
    blob = seal_seed(bytes(32), b"pw", FAST)
    for length in (0, 3, 4, HEADER_LEN - 1):
        with pytest.raises(CannotOpen, match="cannot open sealed keys"):
            unseal_seed(blob[:length], b"pw")
    with pytest.raises(CannotOpen, match="cannot open sealed keys"):
        unseal_seed(b"SGK2" + blob[4:], b"pw")


def test_damaged_box_never_opens() -> None:
    # Past the header a damaged box is indistinguishable from a wrong passphrase.
    blob = seal_seed(bytes(32), b"pw", FAST)
    for length in (HEADER_LEN, HEADER_LEN + 24, len(blob) - 1):
        with pytest.raises((WrongPassphrase, CannotOpen)):
            unseal_seed(blob[:length], b"pw")
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(WrongPassphrase):
        unseal_seed(bytes(flipped), b"pw")


def test_root_signatures_are_context_bound() -> None:
    root, other = RootKey(bytes(range(32))), RootKey.generate()
    assert RootKey(root.seed).public == root.public
    signature = root.sign(b"ctx\0", b"message")
    trusted = (other.public, root.public)
    assert verify_root_signature(trusted, b"ctx\0", b"message", signature) == root.public
    assert verify_root_signature(trusted, b"ctx2\0", b"message", signature) is None
    assert verify_root_signature(trusted, b"ctx\0", b"messagE", signature) is None
    assert verify_root_signature((other.public,), b"ctx\0", b"message", signature) is None
    assert verify_root_signature((b"short",), b"ctx\0", b"message", signature) is None


def test_gateway_credential_is_certified_by_the_root() -> None:
    root = RootKey.generate()
    credential = GatewayCredential.issue(root)
    assert verify_root_signature(
        (root.public,), GATEWAY_CERT_CONTEXT, credential.verify_key, credential.certificate
    ) == root.public
    assert verify_root_signature(
        (RootKey.generate().public,), GATEWAY_CERT_CONTEXT, credential.verify_key,
        credential.certificate,
    ) is None


# --- rotation ------------------------------------------------------------------------


def test_rotation_replaces_encryption_and_signing_and_keeps_the_rest() -> None:
    first = AccountKeys(bytes(32))
    rotated = first.rotated().rotated()
    assert rotated.generation == 2 and rotated.seed == first.seed
    assert rotated.encryption.public_key != first.encryption.public_key
    assert rotated.public.signing_key != first.public.signing_key
    assert rotated.public.mailbox_key == first.public.mailbox_key  # the relay mailbox stays
    assert rotated.storage_key == first.storage_key  # stored mail still opens
    assert rotated.message_id_key == first.message_id_key
    assert rotated.history()[-1].public == first.public
    assert [k.generation for k in rotated.history()] == [2, 1, 0]
    assert rotated.previous_signing_keys() == (
        first.public.signing_key, rotated.history()[1].public.signing_key
    )
    # A generation's keys are derived from its own seed with the usual labels.
    generation_seed = rotated.pack()[64:96]
    assert bytes(rotated.signing) == derive(generation_seed, b"sg-signing")


def test_rotated_seeds_pack_seal_and_unseal() -> None:
    keys = AccountKeys.generate().rotated()
    assert AccountKeys.unpack(keys.pack()).public == keys.public
    blob = seal_seed(keys.pack(), b"pw", FAST)
    assert AccountKeys.unpack(unseal_seed(blob, b"pw")).pack() == keys.pack()
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            AccountKeys.unpack(bad)
        with pytest.raises(ValueError):
            seal_seed(bad, b"pw", FAST)


def test_key_generations_are_bounded() -> None:
    keys = AccountKeys(bytes(32), [bytes([n]) * 32 for n in range(1, MAX_KEY_GENERATIONS)])
    with pytest.raises(ValueError, match="at most"):
        keys.rotated()
    with pytest.raises(ValueError):
        seal_seed(keys.pack() + bytes(32), b"pw", FAST)
    blob = seal_seed(keys.pack(), b"pw", FAST)
    assert sealed_cost(blob) == FAST
    with pytest.raises(CannotOpen):  # a body longer than the bound is not even tried
        unseal_seed(blob + bytes(32), b"pw")


def test_account_keys_are_sealed_at_the_moderate_cost_by_default(monkeypatch) -> None:
    costs = []
    real_kdf = nacl.pwhash.argon2id.kdf

    def recording_kdf(size, password, salt, *, opslimit, memlimit):
        costs.append((opslimit, memlimit))
        return real_kdf(size, password, salt, opslimit=FAST.opslimit, memlimit=FAST.memlimit)

    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", recording_kdf)
    blob = seal_seed(b"\x07" * 32, b"a passphrase")
    moderate = (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE)
    assert costs == [moderate]
    assert (KdfCost.moderate().opslimit, KdfCost.moderate().memlimit) == moderate
    # The cost is written into the blob, so unsealing pays it too.
    unseal_seed(blob, b"a passphrase")
    assert costs == [moderate, moderate]
