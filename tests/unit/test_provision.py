"""Pure parts of the operator actions: the rotated entry and the admin's version ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.directory import MAX_OLD_SIGNING_KEYS, DirectoryEntry, KeyStatus
from bridge.keys import AccountKeys
from gateway.homes import AdminHome, HomeError
from gateway.provision import ProvisionError, rotated_entry

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
