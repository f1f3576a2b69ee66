"""Pending imports: sealed to the public key, deduplicated, filed once an account unlocks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import nacl.bindings
import pytest
from sqlalchemy import update
from sqlmodel import col

from gateway.keyring import KeyRing
from gateway.migrate.filing import ImportFiler
from gateway.migrate.sealing import (
    MAGIC_V1,
    ImportCannotOpen,
    ImportSealer,
    _binding,
    crlf,
    digest,
    open_import,
    seal_import,
)
from gateway.store.accounts import AccountStore
from gateway.store.db import writing
from gateway.store.imports import Checkpoint, ImportStore, NewImport
from gateway.store.mailbox import MailboxStore
from gateway.store.models import ImportedMessage
from tests.unit.store_support import ALICE, PASSWORD, add_account

pytest_plugins = ["tests.unit.store_fixtures"]

WHEN = datetime(2019, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-7)))  # kept, zone and all
SOURCE = b"s" * 32


def new_import(target, message, folder="INBOX", special=None, flags=("\\Seen", "$Work")):
    message = crlf(message)
    mark = digest(target.digest_key, message)
    sealed = seal_import(target.encryption_key, message, folder=folder, flags=flags,
                         internal_date=WHEN, message_digest=mark)
    return NewImport(folder, special, mark, tuple(flags), WHEN, len(message), sealed)


@pytest.fixture
def parts(store_engine):
    accounts = AccountStore(store_engine)
    keys = add_account(accounts, ALICE)
    keyring = KeyRing(accounts)
    imports = ImportStore(store_engine)
    filer = ImportFiler(accounts=accounts, keyring=keyring, imports=imports, interval=1.0)
    return keys, keyring, imports, filer, MailboxStore(store_engine)


def test_imports_wait_for_unlock_then_file_with_flags_date_and_new_folder(parts):
    keys, keyring, imports, filer, mailboxes = parts
    target = imports.target(ALICE)
    assert target.encryption_key == keys.public.encryption_key
    batch = [new_import(target, b"Subject: one\n\nbody one\n"),
             new_import(target, b"Subject: spam\n\nbuy\n", "Junk", "\\Junk", ("\\Seen",))]
    assert imports.add(target.account_id, batch, (SOURCE, "INBOX", Checkpoint(7, 42))) == 2
    assert imports.checkpoint(target.account_id, SOURCE, "INBOX") == Checkpoint(7, 42)

    assert filer.file_all() == 0  # locked: nothing can be filed
    keyring.unlock(ALICE, PASSWORD)
    assert filer.file_all() == 2
    assert filer.file_all() == 0

    session = mailboxes.session(ALICE, keys)
    folders = {f.name: f.attributes for f in session.list_folders()}
    assert "\\Junk" in folders["Junk"]
    inbox = session.snapshot("INBOX").messages
    assert [(m.flags, m.internal_date) for m in inbox] == [(frozenset({"\\Seen", "$Work"}), WHEN)]
    assert inbox[0].internal_date.utcoffset() == WHEN.utcoffset()
    (stored,) = session.fetch("INBOX", [inbox[0].uid])
    assert stored.body == b"Subject: one\r\n\r\nbody one\r\n"
    assert len(session.snapshot("Junk").messages) == 1
    assert imports.counts(target.account_id) == {"filed": 2}


def test_a_digest_already_imported_into_a_folder_is_skipped(parts):
    _, _, imports, _, _ = parts
    target = imports.target(ALICE)
    one = new_import(target, b"Subject: same\n\nx\n")
    assert imports.add(target.account_id, [one, one]) == 1
    assert imports.add(target.account_id, [one]) == 0
    assert imports.add(target.account_id, [new_import(target, b"Subject: same\n\nx\n", "Old")]) == 1
    assert imports.target(ALICE).digest_key == target.digest_key


def test_an_import_whose_row_was_changed_is_refused_not_filed(parts, store_engine):
    keys, keyring, imports, filer, mailboxes = parts
    target = imports.target(ALICE)
    imports.add(target.account_id, [new_import(target, b"Subject: a\n\nb\n")])
    with writing(store_engine) as connection:
        connection.execute(update(ImportedMessage).values(flags="\\Deleted"))
    keyring.unlock(ALICE, PASSWORD)
    assert filer.file_all() == 0
    assert imports.counts(target.account_id) == {"refused": 1}
    assert mailboxes.session(ALICE, keys).snapshot("INBOX").messages == ()
    with writing(store_engine) as connection:
        sealed = connection.execute(
            ImportedMessage.__table__.select().with_only_columns(col(ImportedMessage.sealed))
        ).scalar_one()
    assert sealed is None


def test_create_folder_keeps_its_special_use_and_is_idempotent(parts):
    keys, _, _, _, mailboxes = parts
    assert mailboxes.create_folder(ALICE, "Starred", "\\Flagged") is True
    assert mailboxes.create_folder(ALICE, "Starred", "\\Flagged") is False
    folders = {f.name: f.attributes for f in mailboxes.session(ALICE, keys).list_folders()}
    assert "\\Flagged" in folders["Starred"]


def test_forget_drops_the_key_digests_and_checkpoints_but_not_pending_mail(parts):
    _, keyring, imports, filer, _ = parts
    target = imports.target(ALICE)
    imports.add(target.account_id, [new_import(target, b"Subject: a\n\nb\n")],
                (SOURCE, "INBOX", Checkpoint(1, 1)))
    imports.forget(target.account_id)
    assert imports.counts(target.account_id) == {"pending": 1}  # still to be filed
    keyring.unlock(ALICE, PASSWORD)
    assert filer.file_all() == 1
    imports.forget(target.account_id)
    assert imports.counts(target.account_id) == {}
    assert imports.digests(target.account_id, "INBOX") == set()
    assert imports.checkpoint(target.account_id, SOURCE, "INBOX") is None
    assert imports.target(ALICE).digest_key != target.digest_key


def test_a_filing_pass_keeps_to_its_byte_budget_but_files_at_least_one(parts, store_engine):
    _, keyring, imports, _, _ = parts
    accounts = AccountStore(store_engine)
    filer = ImportFiler(accounts=accounts, keyring=keyring, imports=imports, interval=1.0,
                        batch_messages=100, batch_bytes=1)
    target = imports.target(ALICE)
    imports.add(target.account_id,
                [new_import(target, f"Subject: {n}\n\nbody\n".encode()) for n in range(3)])
    keyring.unlock(ALICE, PASSWORD)
    assert [filer.file_all() for _ in range(4)] == [1, 1, 1, 0]


def test_a_batch_shares_one_sender_key_and_each_message_opens_only_with_its_row(parts):
    keys, _, imports, _, _ = parts
    target = imports.target(ALICE)
    sealer = ImportSealer(target.encryption_key)
    row = {"folder": "INBOX", "flags": ("\\Seen",), "internal_date": WHEN}
    texts = [b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"]
    marks = [digest(target.digest_key, text) for text in texts]
    sealed = [sealer.seal(text, message_digest=mark, **row)
              for text, mark in zip(texts, marks, strict=True)]
    assert sealed[0][:36] == sealed[1][:36]  # MAGIC and the batch's sender key
    for text, mark, blob in zip(texts, marks, sealed, strict=True):
        assert open_import(keys, blob, size=len(text), message_digest=mark, **row) == text
    with pytest.raises(ImportCannotOpen):  # another row's digest: the binding differs
        open_import(keys, sealed[0], size=len(texts[0]), message_digest=marks[1], **row)
    with pytest.raises(ImportCannotOpen):  # a changed byte
        open_import(keys, sealed[0][:-1] + bytes([sealed[0][-1] ^ 1]), size=len(texts[0]),
                    message_digest=marks[0], **row)


def test_a_sealed_box_of_the_first_format_still_opens(parts):
    keys, _, imports, _, _ = parts
    target = imports.target(ALICE)
    text = b"Subject: old\r\n\r\nsealed by the first release\r\n"
    mark = digest(target.digest_key, text)
    binding = _binding("INBOX", ("\\Seen",), WHEN, len(text), mark)
    blob = nacl.bindings.crypto_box_seal(MAGIC_V1 + binding + text, target.encryption_key)
    assert open_import(keys, blob, folder="INBOX", flags=("\\Seen",), internal_date=WHEN,
                       size=len(text), message_digest=mark) == text
