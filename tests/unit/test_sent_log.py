"""The sender's records of its envelopes: sent notes with the outbox, SentLog, the notice."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from bridge.keys import AccountKeys
from gateway.notices import undelivered_notice
from gateway.store.accounts import AccountStore
from gateway.store.db import InvalidValue
from gateway.store.models import SentEnvelope
from gateway.store.outbox import Discard, Outbox, Part, SentNote, new_hold
from gateway.store.sent import SentLog
from gateway.undelivered import open_note, seal_note
from tests.unit.store_support import ALICE, BOB, RELAYS, add_account

pytest_plugins = ["tests.unit.store_fixtures"]

SUBJECT = "Budget 2027 (draft)"


def noted(n: int, keys: AccountKeys, account: str = ALICE) -> tuple[bytes, bytes, tuple[str, ...],
                                                                    SentNote]:
    envelope_id = bytes([n]) * 16
    note = seal_note(account, keys, envelope_id, BOB, f"{SUBJECT} {n}")
    return envelope_id, b"SGE\x01" + bytes([n]) * 100, RELAYS, note


def sent_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(SentEnvelope)).scalar_one())


def test_a_note_opens_only_with_its_account_keys_and_envelope_id() -> None:
    keys = AccountKeys.generate()
    note = seal_note(ALICE, keys, b"\x01" * 16, BOB, SUBJECT)
    assert note.account == ALICE
    assert BOB.encode() not in note.sealed and SUBJECT.encode() not in note.sealed
    assert open_note(keys, b"\x01" * 16, note.sealed) == (BOB, SUBJECT)
    assert open_note(keys, b"\x02" * 16, note.sealed) is None  # moved to another envelope
    assert open_note(AccountKeys.generate(), b"\x01" * 16, note.sealed) is None
    assert open_note(keys, b"\x01" * 16, note.sealed[:-1] + b"\0") is None


def test_notes_are_kept_with_their_envelopes_and_stamped_on_delivery(store_engine: Engine) -> None:
    keys = add_account(AccountStore(store_engine), ALICE)
    outbox, sent = Outbox(store_engine), SentLog(store_engine)
    outbox.put([noted(1, keys), noted(2, keys), (b"\x03" * 16, b"SGE\x01", RELAYS)])
    assert sent_count(store_engine) == 2
    now = datetime.now(UTC)
    assert sent.due(now + timedelta(days=1), 10) == []  # not deposited yet: nothing to ask
    entries = {e.envelope_id: e.id for e in outbox.due(now + timedelta(seconds=1), 2**30)}
    later = now + timedelta(hours=1)
    outbox.delivered(
        entries[b"\x01" * 16], entries[b"\x03" * 16],
        relays={entries[b"\x01" * 16]: RELAYS[1], entries[b"\x03" * 16]: RELAYS[0]},
        check_at=later,
    )
    assert sent.due(later - timedelta(seconds=1), 10) == []
    (due,) = sent.due(later, 10)
    assert (due.envelope_id, due.relay) == (b"\x01" * 16, RELAYS[1])
    sent.check_later(due.envelope_id, later + timedelta(hours=1))
    assert sent.due(later, 10) == []


def test_a_note_taken_by_a_depositor_without_status_is_forgotten(store_engine: Engine) -> None:
    keys = add_account(AccountStore(store_engine), ALICE)
    outbox, sent = Outbox(store_engine), SentLog(store_engine)
    outbox.put([noted(1, keys), noted(2, keys)])
    now = datetime.now(UTC)
    entries = {e.envelope_id: e.id for e in outbox.due(now + timedelta(seconds=1), 2**30)}
    outbox.delivered(*entries.values(), relays={entries[b"\x01" * 16]: RELAYS[0]},
                     check_at=now, forget=[entries[b"\x02" * 16]])
    assert sent_count(store_engine) == 1  # the smarthost's is gone, the relay's is asked
    assert [d.envelope_id for d in sent.due(now, 10)] == [b"\x01" * 16]


def test_a_smarthost_job_given_up_gets_its_own_reason() -> None:
    when = datetime(2026, 12, 1, 12, tzinfo=UTC)
    raw = undelivered_notice(
        account=ALICE, domain="example.org", envelope_id=b"\x01" * 16,
        recipient="carol@partner.example", subject=SUBJECT, sent=when, removed=when,
        reason="smarthost", when=when,
    )
    body = email.message_from_bytes(raw, policy=email.policy.default).get_content()
    assert "To:        carol@partner.example" in body and f"Subject:   {SUBJECT}" in body
    assert "smarthost that sends this gateway's mail outside the bubble refused" in body
    assert "the smarthost refuses this\r\ngateway's mail" in body and "relays refuse" not in body


def test_a_discarded_submission_leaves_no_note(store_engine: Engine) -> None:
    keys = add_account(AccountStore(store_engine), ALICE)
    outbox = Outbox(store_engine)
    hold = new_hold()
    outbox.write([Part(hold, [noted(1, keys)], last=False)])
    outbox.write([Discard(hold)])
    other = new_hold()
    outbox.write([Part(other, [noted(2, keys)], last=False)])
    assert sent_count(store_engine) == 1
    assert outbox.discard_held() == 1  # start-up after a crash
    assert sent_count(store_engine) == 0


def test_a_note_for_no_account_is_refused_with_its_envelope(store_engine: Engine) -> None:
    outbox = Outbox(store_engine)
    with pytest.raises(InvalidValue):
        outbox.put([noted(1, AccountKeys.generate(), "nobody@example.org")])
    assert outbox.pending_count() == 0 and sent_count(store_engine) == 0


def test_lost_envelopes_wait_for_their_account(store_engine: Engine) -> None:
    accounts = AccountStore(store_engine)
    alice, bob = add_account(accounts, ALICE), add_account(accounts, BOB)
    outbox, sent = Outbox(store_engine), SentLog(store_engine)
    outbox.put([noted(1, alice), noted(2, alice), noted(3, bob, BOB)])
    sent.lost(b"\x02" * 16, "expired", 7200)
    sent.lost(b"\x01" * 16, "purged", None)
    sent.lost(b"\x03" * 16, "purged", 3600)
    lost = sent.lost_for(ALICE)
    assert [(e.envelope_id, e.outcome, e.outcome_hour) for e in lost] == [
        (b"\x01" * 16, "purged", None), (b"\x02" * 16, "expired", 7200)
    ]
    assert open_note(alice, lost[1].envelope_id, lost[1].note) == (BOB, f"{SUBJECT} 2")
    with pytest.raises(ValueError, match="purged or expired"):
        sent.lost(b"\x01" * 16, "pending", None)
    sent.forget(b"\x01" * 16)
    assert [e.envelope_id for e in sent.lost_for(ALICE)] == [b"\x02" * 16]
    assert [e.envelope_id for e in sent.lost_for(BOB)] == [b"\x03" * 16]


def test_the_notice_shows_a_hostile_subject_on_one_short_line() -> None:
    when = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    notice = undelivered_notice(
        account=ALICE, domain="example.org", envelope_id=b"\x09" * 16, recipient=BOB,
        subject="Hello\r\nBcc: everyone@example.org\x00" + "x" * 500,
        sent=when - timedelta(days=2), removed=when - timedelta(hours=1), reason="expired",
        when=when,
    )
    message = email.message_from_bytes(notice, policy=email.policy.default)
    assert message["Subject"] == "A message you sent was not delivered"
    assert message["Bcc"] is None
    body = message.get_content()
    (line,) = [x for x in body.splitlines() if x.startswith("  Subject:")]
    assert line.startswith("  Subject:   Hello  Bcc: everyone@example.org")
    assert len(line) < 230 and line.endswith("\u2026")
    assert f"To:        {BOB}" in body and "09" * 16 in body
    assert "longer than the relay keeps messages" in body
    assert "in the hour from Tue, 01 Dec 2026 09:00:00 +0000" in body
