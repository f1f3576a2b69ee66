"""OpenPGP on the gateway (`gateway.pgp`): keys sealed at rest, armor, PGP/MIME with
protected headers, and its reading back; pgpy on both sides (GnuPG in
tests/integration/test_openpgp_gpg.py)."""

from __future__ import annotations

import email
import email.policy

import nacl.utils
import pytest

from bridge.errors import CannotOpen
from gateway.pgp.keys import (
    OpenPgpKeyError,
    armor,
    dearmor,
    generate_account_key,
    open_account_key,
    public_armored,
    read_public_key,
    seal_account_key,
)
from gateway.pgp.lib import PubKeyAlgorithm, pgpy
from gateway.pgp.mime import decrypt_message, encrypt_message, plaintext_message
from gateway.pgp.smarthost import job_box, open_job, seal_job

MESSAGE = (
    b"From: alice@bubble.test\r\nTo: carol@partner.example\r\nSubject: quarterly figures\r\n"
    b"Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <abc@bubble.test>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nthe canary is tweety-42\r\n"
)


@pytest.fixture(scope="module")
def alice() -> object:
    return generate_account_key("alice@bubble.test")


@pytest.fixture(scope="module")
def carol() -> object:
    return generate_account_key("carol@partner.example")


def test_an_account_key_is_ed25519_with_a_cv25519_subkey_never_rsa(alice: object) -> None:
    key = alice
    assert key.key_algorithm is PubKeyAlgorithm.EdDSA  # type: ignore[attr-defined]
    subkeys = list(key.subkeys.values())  # type: ignore[attr-defined]
    assert [s.key_algorithm for s in subkeys] == [PubKeyAlgorithm.ECDH]


def test_the_private_key_opens_only_with_the_seed_it_was_sealed_with(alice: object) -> None:
    seed = nacl.utils.random(32)
    sealed = seal_account_key(alice, seed)
    assert bytes(alice) not in sealed.sealed  # type: ignore[call-overload]
    assert open_account_key(sealed, seed).fingerprint == alice.fingerprint  # type: ignore[attr-defined]
    with pytest.raises(CannotOpen):
        open_account_key(sealed, nacl.utils.random(32))
    with pytest.raises(CannotOpen):
        tampered = sealed.sealed[:-1] + bytes([sealed.sealed[-1] ^ 1])
        open_account_key(type(sealed)(sealed.fingerprint, sealed.public, tampered), seed)


def test_armor_round_trips_and_reads_armor_with_headers_and_checksum() -> None:
    data = nacl.utils.random(1000)
    assert dearmor(armor("MESSAGE", data).encode()) == ("MESSAGE", data)
    theirs = str(pgpy.PGPMessage.new(b"x", format="b"))  # pgpy's armor: CRC line, CRLF
    assert dearmor(theirs.encode())[1] == bytes(pgpy.PGPMessage.from_blob(theirs))
    with_header = b"-----BEGIN PGP MESSAGE-----\nComment: hi\n\n" + armor(
        "MESSAGE", data).split("\n\n", 1)[1].encode()
    assert dearmor(with_header) == ("MESSAGE", data)


@pytest.mark.parametrize(("data", "reason"), [
    (b"not a key", "not an OpenPGP key"),
    (b"-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n", "PGP message"),
    (b"x" * (1024 * 1024 + 1), "at most"),
])
def test_a_bad_key_file_is_one_line_saying_why(data: bytes, reason: str) -> None:
    with pytest.raises(OpenPgpKeyError, match=reason):
        read_public_key(data)


def test_a_private_key_file_is_refused(alice: object) -> None:
    with pytest.raises(OpenPgpKeyError, match="private key"):
        read_public_key(str(alice).encode())


def test_a_signing_only_key_is_refused() -> None:
    key = pgpy.PGPKey.new(PubKeyAlgorithm.EdDSA, pgpy.constants.EllipticCurveOID.Ed25519)
    key.add_uid(pgpy.PGPUID.new("<x@partner.example>"),
                usage={pgpy.constants.KeyFlags.Sign})
    with pytest.raises(OpenPgpKeyError, match="no encryption key"):
        read_public_key(public_armored(bytes(key.pubkey)).encode())


def test_pgp_mime_hides_the_subject_and_reads_back_with_protected_headers(
    alice: object, carol: object
) -> None:
    public = bytes(alice.pubkey)  # type: ignore[attr-defined]
    out = encrypt_message(MESSAGE, sender="alice@bubble.test", signer=alice,
                          sender_public=public, recipient=carol.pubkey)  # type: ignore[attr-defined]
    assert b"tweety-42" not in out and b"quarterly" not in out
    outer = email.message_from_bytes(out, policy=email.policy.default)
    assert outer["Subject"] == "..."
    assert outer["To"] == "carol@partner.example"
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    assert "keydata=" in outer["Autocrypt"] and "addr=alice@bubble.test" in outer["Autocrypt"]
    back = decrypt_message(out, [carol], peers=[alice.pubkey])  # type: ignore[attr-defined]
    got = email.message_from_bytes(back, policy=email.policy.default)
    assert got["Subject"] == "quarterly figures"
    assert "signature good" in got["Sealgate-OpenPGP"]
    assert got.get_content().strip() == "the canary is tweety-42"
    # not for this key: left as it came
    assert decrypt_message(out, [alice]) == out


def test_a_field_inside_cannot_speak_for_the_gateway(alice: object, carol: object) -> None:
    forged = b"Sealgate-Origin: a bubble member\r\n" + MESSAGE
    out = encrypt_message(forged, sender="carol@partner.example", signer=carol,
                          sender_public=b"", recipient=alice.pubkey)  # type: ignore[attr-defined]
    back = decrypt_message(out, [alice])
    assert b"a bubble member" not in back
    assert b"key " in back.split(b"\r\n", 1)[0]  # signer not known here: said so


def test_plaintext_is_marked_visibly(alice: object) -> None:
    out = plaintext_message(MESSAGE, sender="alice@bubble.test", sender_public=b"k")
    assert out.startswith(b"Sealgate-Warning: this message left the bubble without encryption")


def test_a_smarthost_job_opens_only_with_its_gateway_key() -> None:
    box = job_box(nacl.utils.random(32))
    sealed = seal_job(box, "alice@bubble.test", "carol@partner.example", b"ciphertext")
    assert b"carol" not in sealed
    assert open_job(box, sealed) == ("alice@bubble.test", "carol@partner.example", b"ciphertext")
    with pytest.raises(CannotOpen):
        open_job(job_box(nacl.utils.random(32)), sealed)


def test_a_status_field_from_outside_is_removed_encrypted_or_not(
    alice: object, carol: object
) -> None:
    from gateway.pgp.inbound import InboundDecryption

    class NoKeys:  # this message is not encrypted: no key is ever asked for
        def own(self, *args: object) -> object:
            raise AssertionError("no key needed")

    fake = b"Sealgate-OpenPGP: decrypted by this gateway; signed by X (signature good)\r\n"
    plain = InboundDecryption(NoKeys()).open("alice@bubble.test", None, fake + MESSAGE)  # type: ignore[arg-type]
    assert plain == MESSAGE
    out = encrypt_message(MESSAGE, sender="carol@partner.example", signer=carol,
                          sender_public=b"", recipient=alice.pubkey)  # type: ignore[attr-defined]
    back = decrypt_message(fake + out, [alice])
    assert back.count(b"Sealgate-OpenPGP:") == 1 and b"signature good" not in back


def test_the_clients_own_autocrypt_key_is_replaced_by_the_accounts(
    alice: object, carol: object
) -> None:
    client = b"Autocrypt: addr=alice@bubble.test; keydata=Q0xJRU5U\r\n" + MESSAGE
    public = bytes(alice.pubkey)  # type: ignore[attr-defined]
    out = encrypt_message(client, sender="alice@bubble.test", signer=alice,
                          sender_public=public, recipient=carol.pubkey)  # type: ignore[attr-defined]
    back = decrypt_message(out, [carol])
    for got in (out, back, plaintext_message(client, sender="alice@bubble.test",
                                             sender_public=public)):
        fields = email.message_from_bytes(got, policy=email.policy.default).get_all("Autocrypt")
        assert fields is not None and len(fields) == 1 and "Q0xJRU5U" not in fields[0]


def test_without_the_accounts_key_the_message_is_filed_as_it_came(
    alice: object, carol: object, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.pgp.inbound import InboundDecryption

    class BrokenKeys:
        def own(self, *args: object) -> object:
            raise CannotOpen("OpenPGP key")

    out = encrypt_message(MESSAGE, sender="carol@partner.example", signer=carol,
                          sender_public=b"", recipient=alice.pubkey)  # type: ignore[attr-defined]
    got = InboundDecryption(BrokenKeys()).open("alice@bubble.test", None, out)  # type: ignore[arg-type]
    assert got == out
    assert "not decrypted (CannotOpen)" in caplog.text and "alice" not in caplog.text
