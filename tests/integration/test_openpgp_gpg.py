"""GnuPG opens what the gateway writes, and the gateway opens what GnuPG writes: the real
`gpg` binary against `gateway.pgp`, with a Curve25519 and an RSA correspondent."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from gateway.pgp.keys import generate_account_key, public_armored, read_public_key
from gateway.pgp.lib import pgpy
from gateway.pgp.mime import decrypt_message, encrypt_message
from tests.gpg import Gpg, pgp_mime

pytestmark = pytest.mark.integration

ALICE = "alice@bubble.test"
MESSAGE = (
    f"From: {ALICE}\r\nTo: carol@partner.example\r\nSubject: the plan\r\n"
    "Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <p1@bubble.test>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "the canary is gpg-owl-7\r\nsecond line, ümlaut\r\n"
).encode()


@pytest.fixture(scope="module")
def alice() -> object:
    return generate_account_key(ALICE)


@pytest.fixture(scope="module", params=["future-default", "rsa3072"])
def carol(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Gpg:
    gpg = Gpg(tmp_path_factory.mktemp("gpg"))
    gpg.generate("carol@partner.example", request.param)
    return gpg


def test_gpg_decrypts_and_verifies_what_the_gateway_sends(alice: object, carol: Gpg) -> None:
    public = bytes(alice.pubkey)  # type: ignore[attr-defined]
    carol.import_key(public_armored(public).encode())
    peer = read_public_key(carol.export("carol@partner.example"))
    recipient, _ = pgpy.PGPKey.from_blob(peer.public)
    out = encrypt_message(MESSAGE, sender=ALICE, signer=alice, sender_public=public,
                          recipient=recipient)
    assert b"gpg-owl-7" not in out and b"the plan" not in out
    outer = email.message_from_bytes(out, policy=email.policy.default)
    encrypted = outer.get_payload()[1].get_payload(decode=True)  # type: ignore[index]
    result = carol.decrypt(encrypted)
    status = result.stderr.decode()
    assert result.returncode == 0, status
    assert "[GNUPG:] GOODSIG" in status and "[GNUPG:] DECRYPTION_OKAY" in status
    assert str(alice.fingerprint).replace(" ", "") in status  # type: ignore[attr-defined]
    inner = email.message_from_bytes(result.stdout, policy=email.policy.default)
    assert inner["Subject"] == "the plan"
    assert inner.get_param("protected-headers") == "v1"
    assert "gpg-owl-7" in inner.get_content()


def test_the_gateway_reads_what_gpg_writes_compressed_and_signed(
    alice: object, carol: Gpg, tmp_path: Path
) -> None:
    carol.import_key(public_armored(bytes(alice.pubkey)).encode())  # type: ignore[attr-defined]
    inner = (b'Content-Type: text/plain; charset=utf-8; protected-headers="v1"\r\n'
             b"Subject: a reply\r\n\r\nthe canary is gpg-heron-9\r\n")
    armored = carol.encrypt_and_sign(inner, ALICE, "carol@partner.example")  # gpg compresses
    message = pgp_mime("carol@partner.example", ALICE, armored)
    carol_key, _ = pgpy.PGPKey.from_blob(
        read_public_key(carol.export("carol@partner.example")).public
    )
    back = decrypt_message(message, [alice], peers=[carol_key])
    got = email.message_from_bytes(back, policy=email.policy.default)
    assert got["Subject"] == "a reply"
    assert got["From"] == "carol@partner.example"
    assert "signature good" in got["Sealgate-OpenPGP"]
    assert got.get_content().strip() == "the canary is gpg-heron-9"


def test_a_key_that_lists_only_old_ciphers_still_gets_aes(
    alice: object, tmp_path: Path
) -> None:
    """pgpy would take CAST5, the first cipher this key lists; the gateway takes AES-128."""
    old = Gpg(tmp_path / "gpg")
    old.generate("olaf@old.example", prefs="CAST5 3DES SHA256 Uncompressed")
    recipient, _ = pgpy.PGPKey.from_blob(read_public_key(old.export("olaf@old.example")).public)
    old.import_key(public_armored(bytes(alice.pubkey)).encode())  # type: ignore[attr-defined]
    out = encrypt_message(MESSAGE, sender=ALICE, signer=alice,
                          sender_public=bytes(alice.pubkey),  # type: ignore[attr-defined]
                          recipient=recipient)
    encrypted = email.message_from_bytes(out, policy=email.policy.default).get_payload()[1]
    result = old.decrypt(encrypted.get_payload(decode=True))  # type: ignore[union-attr]
    status = result.stderr.decode()
    assert result.returncode == 0, status
    assert "[GNUPG:] DECRYPTION_INFO 2 7" in status  # MDC, AES-128 (7), not CAST5 (3)
