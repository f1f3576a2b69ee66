from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bubble_processes import Bubble


def start_bubble(
    root: Path, users: tuple[str, ...], *, https: bool = False,
    gateway_settings: tuple[str, ...] = (),
) -> Bubble:
    bubble = Bubble(root, https=https, gateway_settings=gateway_settings)
    try:
        bubble.init()
        for user in users:
            bubble.add_account(user, f"{user}-{secrets.token_hex(4)}")
        bubble.start_gateway(*users)
    except BaseException:
        bubble.kill_all()
        raise
    return bubble


@pytest.fixture
def bubble(tmp_path: Path) -> Iterator[Bubble]:
    """A fresh bubble per test: relay, alice's and bob's gateways as separate processes."""
    b = start_bubble(tmp_path, ("alice", "bob"))
    try:
        yield b
    finally:
        b.kill_all()


@pytest.fixture(scope="module")
def shared_bubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bubble]:
    """One bubble (alice, bob, carol) for tests that only add mail and never stop parts."""
    b = start_bubble(tmp_path_factory.mktemp("bubble"), ("alice", "bob", "carol"))
    try:
        yield b
    finally:
        b.kill_all()
