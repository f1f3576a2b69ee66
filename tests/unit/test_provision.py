"""Operator rules of `gateway.provision`: the rotated entry, the admin's version ledger,
the password minimum and the Argon2id cost names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.directory import MAX_OLD_SIGNING_KEYS, DirectoryEntry, KeyStatus
from bridge.keys import AccountKeys, KdfCost
from gateway.cli import build_parser
from gateway.demo import _plan
from gateway.homes import AdminHome, HomeError
from gateway.provision import KDF_COSTS, ProvisionError, add_account, check_password, rotated_entry

KEYS = AccountKeys(bytes(32))
CURRENT = DirectoryEntry(address="alice@example.org", keys=KEYS.public, relays=("http://r",),
                         issued_at=0, version=4)


def test_rotation_keeps_the_old_signing_key_acceptable() -> None:
    new = KEYS.rotated()
    entry = rotated_entry(CURRENT, new.public, 5, revoke_previous=False)
    assert (entry.version, entry.keys, entry.relays) == (5, new.public, CURRENT.relays)
    assert entry.signing_key_status(KEYS.public.signing_key) is KeyStatus.PREVIOUS
    again = rotated_entry(entry, new.rotated().public, 6, revoke_previous=False)
    assert again.previous_signing == (KEYS.public.signing_key, new.public.signing_key)


def test_rotation_can_revoke_every_earlier_key() -> None:
    first = rotated_entry(CURRENT, KEYS.rotated().public, 5, revoke_previous=False)
    newest = KEYS.rotated().rotated()
    entry = rotated_entry(first, newest.public, 6, revoke_previous=True)
    assert entry.previous_signing == ()
    assert set(entry.revoked_signing) == {KEYS.public.signing_key, first.keys.signing_key}
    assert entry.signing_key_status(first.keys.signing_key) is KeyStatus.REVOKED


def test_rotation_lists_are_capped_and_the_mailbox_key_stays() -> None:
    keys = KEYS
    entry = CURRENT
    for version in range(5, 5 + MAX_OLD_SIGNING_KEYS + 3):
        keys = keys.rotated()
        entry = rotated_entry(entry, keys.public, version, revoke_previous=False)
    assert len(entry.previous_signing) == MAX_OLD_SIGNING_KEYS
    assert KEYS.public.signing_key not in entry.previous_signing  # the oldest dropped
    with pytest.raises(ProvisionError, match="mailbox key"):
        rotated_entry(CURRENT, AccountKeys.generate().public, 5, revoke_previous=False)


def test_admin_versions_only_grow(tmp_path: Path) -> None:
    admin = AdminHome.create(tmp_path / "admin", "example.org")
    lid, other = b"\x01" * 32, b"\x02" * 32
    assert admin.last_version(lid) == 0
    assert [admin.claim_version(lid), admin.claim_version(lid)] == [1, 2]
    assert admin.claim_version(lid, floor=9) == 10
    assert admin.claim_version(lid, floor=3) == 11
    assert admin.claim_version(other) == 1
    reloaded = AdminHome.load(tmp_path / "admin")
    assert reloaded.last_version(lid) == 11
    assert (admin.versions_file.stat().st_mode & 0o777) == 0o600
    admin.versions_file.write_text('{"' + lid.hex() + '": "eleven"}')
    with pytest.raises(HomeError, match="malformed"):
        reloaded.claim_version(lid)




@pytest.mark.parametrize(
    "password",
    [
        "x" * 12,
        "\u00e9" * 12,  # 24 bytes
        "e\u0301" * 12,  # e + combining acute: 24 code points, 12 characters
        "\U0001f511" * 12,  # 48 bytes
    ],
)
def test_twelve_characters_are_enough(password: str) -> None:
    assert check_password(password) == password


@pytest.mark.parametrize(
    ("password", "length"),
    [
        ("", 0),
        ("x" * 11, 11),
        ("\u00e9" * 11, 11),  # 22 bytes: bytes are not characters
        ("e\u0301" * 11, 11),  # 22 code points that a person reads as 11 letters
    ],
)
def test_fewer_than_twelve_characters_are_refused_in_one_line(password: str, length: int) -> None:
    with pytest.raises(ProvisionError) as err:
        check_password(password)
    assert str(err.value) == f"the password is too short: {length} characters, at least 12"


def test_add_account_refuses_a_short_password_before_writing_anything(tmp_path: Path) -> None:
    admin = AdminHome.create(tmp_path / "admin", "example.org")
    home = tmp_path / "gateway"
    with pytest.raises(ProvisionError, match="too short"):
        asyncio.run(
            add_account(
                "alice@example.org",
                gateway_home=home,
                admin=admin,
                relays=["http://127.0.0.1:9"],
                password="eleven-char",
            )
        )
    assert not home.exists()


def test_account_add_seals_at_the_moderate_cost_unless_told() -> None:
    base = ["account", "add", "a@b.c", "--gateway", "g", "--bubble", "b", "--relay", "http://r",
            "--password-file", "p"]
    parser = build_parser()
    assert KDF_COSTS[parser.parse_args(base).kdf_cost]() == KdfCost.moderate()
    chosen = parser.parse_args([*base, "--kdf-cost", "interactive"]).kdf_cost
    assert KDF_COSTS[chosen]() == KdfCost.interactive()
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--kdf-cost", "none"])


def test_the_demos_generated_passwords_pass_the_rule(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "demo.json", None)
    for password in plan["passwords"].values():
        check_password(password)
