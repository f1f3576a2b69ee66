"""Operator rules of `gateway.provision`: the password minimum and the Argon2id cost names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.keys import KdfCost
from gateway.cli import build_parser
from gateway.demo import _plan
from gateway.homes import AdminHome
from gateway.provision import KDF_COSTS, ProvisionError, add_account, check_password


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
