from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from gateway.store.db import DuplicateEnvelope, InvalidValue
from gateway.store.models import OutboxItem
from gateway.store.outbox import Discard, HeldPartsMissing, Outbox, Part, new_hold
from tests.unit.store_support import RELAYS

pytest_plugins = ["tests.unit.store_fixtures"]


ALL = 2**40  # a byte budget nothing here reaches


def item(n: int, relays=RELAYS, size: int = 100):
    return (bytes([n]) * 16, b"SGE\x01" + bytes([n]) * size, relays)


def due_ids(outbox: Outbox, max_bytes: int = ALL) -> list[bytes]:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    return [entry.envelope_id for entry in outbox.due(soon, max_bytes)]


def test_put_due_retry_delivered_survive_reopening(open_store):
    outbox = Outbox(open_store())
    outbox.put([item(1), item(2, ("https://only.example",))])
    outbox.put([item(3)])
    now = datetime.now(UTC)

    reopened = Outbox(open_store())
    assert reopened.pending_count() == 3
    due = reopened.due(now + timedelta(seconds=1), ALL)
    assert [entry.envelope_id for entry in due] == [item(n)[0] for n in (1, 2, 3)]
    assert due[0].envelope == item(1)[1]
    assert due[0].relays == RELAYS
    assert due[1].relays == ("https://only.example",)
    assert all(entry.attempts == 0 for entry in due)
    assert reopened.due(now - timedelta(minutes=1), ALL) == []

    reopened.retry_later(due[0].id, now + timedelta(minutes=5), "relay unavailable: 503")
    reopened.delivered(due[1].id)
    reopened.delivered(due[1].id)  # already gone: no effect

    again = Outbox(open_store())
    assert again.pending_count() == 2
    assert [entry.envelope_id for entry in again.due(now + timedelta(seconds=1), ALL)] == [
        item(3)[0]
    ]
    later = again.due(now + timedelta(minutes=6), ALL)
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
    (entry,) = outbox.due(datetime.now(UTC) + timedelta(seconds=1), ALL)
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
        outbox.due(datetime(2024, 1, 1), ALL)
    with pytest.raises(InvalidValue):
        outbox.retry_later(1, datetime(2024, 1, 1), "error")


def test_due_loads_up_to_a_byte_budget_and_a_larger_envelope_alone(store_engine):
    outbox = Outbox(store_engine)
    outbox.put([item(1, size=1000), item(2, size=1000), item(3, size=5000), item(4, size=10)])
    envelope = len(item(1, size=1000)[1])
    assert due_ids(outbox, 2 * envelope) == [item(1)[0], item(2)[0]]
    assert due_ids(outbox, 2 * envelope - 1) == [item(1)[0]]
    assert due_ids(outbox, 1) == [item(1)[0]]  # over the budget alone: it still goes
    (first, second) = outbox.due(datetime.now(UTC) + timedelta(seconds=1), 2 * envelope)
    outbox.delivered(first.id, second.id)
    assert due_ids(outbox, 100) == [item(3)[0]]  # 5004 bytes, more than the budget
    assert due_ids(outbox) == [item(3)[0], item(4)[0]]


def test_parts_are_held_until_the_last_one_commits(open_store):
    outbox = Outbox(open_store())
    hold = new_hold()
    outbox.write([Part(hold, [item(1), item(2)], last=False)])
    outbox.write([Part(hold, [item(3)], last=False)])
    outbox.put([item(9)])  # another submission, due at once
    assert due_ids(outbox) == [item(9)[0]]
    outbox.write([Part(hold, [item(4)], last=True)])
    assert sorted(due_ids(outbox)) == sorted(item(n)[0] for n in (1, 2, 3, 4, 9))
    assert Outbox(open_store()).discard_held() == 0  # nothing held any more


def test_a_discarded_or_crashed_submission_leaves_nothing_due(open_store):
    outbox = Outbox(open_store())
    failed, crashed = new_hold(), new_hold()
    outbox.write([Part(failed, [item(1)], last=False), Part(crashed, [item(2)], last=False)])
    outbox.write([Discard(failed)])
    assert outbox.pending_count() == 1
    assert due_ids(outbox) == []
    restarted = Outbox(open_store())  # the process died before the last part
    assert restarted.discard_held() == 1
    assert restarted.pending_count() == 0
    restarted.put([item(1), item(2)])  # the client's retry queues the same ids again
    assert sorted(due_ids(restarted)) == [item(1)[0], item(2)[0]]


def test_a_duplicate_in_a_part_keeps_nothing_of_the_write(store_engine):
    outbox = Outbox(store_engine)
    outbox.put([item(1)])
    hold = new_hold()
    with pytest.raises(DuplicateEnvelope):
        outbox.write([Part(hold, [item(2)], last=False), Part(hold, [item(1)], last=True)])
    assert outbox.pending_count() == 1


def test_the_last_part_refuses_to_release_a_submission_whose_parts_were_discarded(open_store):
    outbox = Outbox(open_store())
    hold = new_hold()
    outbox.write([Part(hold, [item(1), item(2)], last=False)])
    Outbox(open_store()).discard_held()  # e.g. another gateway process starting on this store
    with pytest.raises(HeldPartsMissing):
        outbox.write([Part(hold, [item(3)], last=True, earlier=2)])
    assert outbox.pending_count() == 0  # never a part of a message without the rest
