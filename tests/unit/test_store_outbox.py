from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from gateway.store.db import DuplicateEnvelope, InvalidValue
from gateway.store.models import OutboxItem
from gateway.store.outbox import Outbox
from tests.unit.store_support import RELAYS

pytest_plugins = ["tests.unit.store_fixtures"]


def item(n: int, relays=RELAYS):
    return (bytes([n]) * 16, b"SGE\x01" + bytes([n]) * 100, relays)


def test_put_due_retry_delivered_survive_reopening(open_store):
    outbox = Outbox(open_store())
    outbox.put([item(1), item(2, ("https://only.example",))])
    outbox.put([item(3)])
    now = datetime.now(UTC)

    reopened = Outbox(open_store())
    assert reopened.pending_count() == 3
    due = reopened.due(now + timedelta(seconds=1))
    assert [entry.envelope_id for entry in due] == [item(n)[0] for n in (1, 2, 3)]
    assert due[0].envelope == item(1)[1]
    assert due[0].relays == RELAYS
    assert due[1].relays == ("https://only.example",)
    assert all(entry.attempts == 0 for entry in due)
    assert reopened.due(now - timedelta(minutes=1)) == []
    assert len(reopened.due(now + timedelta(seconds=1), limit=2)) == 2

    reopened.retry_later(due[0].id, now + timedelta(minutes=5), "relay unavailable: 503")
    reopened.delivered(due[1].id)
    reopened.delivered(due[1].id)  # already gone: no effect

    again = Outbox(open_store())
    assert again.pending_count() == 2
    assert [entry.envelope_id for entry in again.due(now + timedelta(seconds=1))] == [item(3)[0]]
    later = again.due(now + timedelta(minutes=6))
    assert [entry.envelope_id for entry in later] == [item(3)[0], item(1)[0]]
    assert later[1].attempts == 1


def test_duplicate_envelope_id_keeps_nothing_of_the_batch(store_engine):
    outbox = Outbox(store_engine)
    outbox.put([item(1)])
    with pytest.raises(DuplicateEnvelope):
        outbox.put([item(2), item(1)])
    assert outbox.pending_count() == 1


@pytest.mark.parametrize(
    "bad", [(b"", b"env", RELAYS), (b"id", b"env", ()), (b"id", b"env", "https://one.example")]
)
def test_unusable_items_are_refused(store_engine, bad):
    outbox = Outbox(store_engine)
    with pytest.raises(InvalidValue):
        outbox.put([item(1), bad])
    assert outbox.pending_count() == 0


def test_last_error_is_one_short_line(store_engine):
    outbox = Outbox(store_engine)
    outbox.put([item(1)])
    (entry,) = outbox.due(datetime.now(UTC) + timedelta(seconds=1))
    outbox.retry_later(entry.id, datetime.now(UTC), "timeout\n  talking to relay\r\n" + "x" * 500)
    with Session(store_engine) as session:
        stored = session.exec(select(OutboxItem).where(col(OutboxItem.id) == entry.id)).one()
    assert stored.last_error is not None
    assert stored.last_error.startswith("timeout talking to relay x")
    assert len(stored.last_error) == 200
    assert stored.attempts == 1


def test_naive_times_are_refused(store_engine):
    outbox = Outbox(store_engine)
    with pytest.raises(InvalidValue):
        outbox.due(datetime(2024, 1, 1))
    with pytest.raises(InvalidValue):
        outbox.retry_later(1, datetime(2024, 1, 1), "error")
