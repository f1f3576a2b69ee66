"""What an account sent, as far as its relay's fate matters: the `sent_envelope` rows.

`Outbox` writes a row with each noted envelope and stamps it with the relay that took
it; this repository serves the job that asks that relay what became of it
(`gateway.undelivered`): rows due for a check, the answer recorded, the envelopes
still undeposited after a failed try (their recipient may have been revoked), and the
envelopes lost before delivery (or given up, `Outbox.give_up`) waiting for a notice.
It holds no key and opens nothing: the note stays sealed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, bindparam, delete, select, update
from sqlmodel import col

from gateway.store.db import reading, utc, writing
from gateway.store.models import Account, OutboxItem, SentEnvelope

LOST_OUTCOMES = ("purged", "expired")  # what a relay says of an envelope it removed
GAVE_UP_OUTCOMES = ("refused", "revoked", "smarthost")  # this gateway stopped delivering it


@dataclass(frozen=True)
class Undeposited:
    """A sent envelope no relay took yet, after at least one failed deposit."""

    envelope_id: bytes
    note: bytes  # sealed (see gateway.undelivered)


@dataclass(frozen=True)
class DueCheck:
    envelope_id: bytes
    relay: str
    created_at: datetime


@dataclass(frozen=True)
class LostEnvelope:
    """A sent envelope its relay removed before delivery."""

    envelope_id: bytes
    note: bytes  # sealed (see gateway.undelivered)
    outcome: str  # LOST_OUTCOMES or GAVE_UP_OUTCOMES
    outcome_hour: int | None  # unix time: to the hour, as the relay told it; or given up
    created_at: datetime  # when the sender's gateway accepted the message


_T = SentEnvelope
_DUE = (
    select(col(_T.envelope_id), col(_T.relay), col(_T.created_at))
    .where(col(_T.relay).is_not(None), col(_T.outcome).is_(None))
    .where(col(_T.next_check) <= bindparam("now"))
    .order_by(col(_T.next_check))
    .limit(bindparam("limit"))
)
_LOST = (
    select(
        col(_T.envelope_id), col(_T.note), col(_T.outcome), col(_T.outcome_hour),
        col(_T.created_at),
    )
    .join(Account, col(Account.id) == col(_T.account_id))
    .where(col(Account.address) == bindparam("address"), col(_T.outcome).is_not(None))
    .order_by(col(_T.created_at))
)
_UNDEPOSITED = (
    select(col(_T.envelope_id), col(_T.note))
    .join(Account, col(Account.id) == col(_T.account_id))
    .join(OutboxItem, col(OutboxItem.envelope_id) == col(_T.envelope_id))
    .where(col(Account.address) == bindparam("address"))
    .where(col(_T.relay).is_(None), col(_T.outcome).is_(None), col(OutboxItem.attempts) > 0)
    .order_by(col(_T.created_at))
    .limit(bindparam("limit"))
)
_FORGET = delete(_T).where(col(_T.envelope_id) == bindparam("sent_id"))
_LATER = (
    update(_T).where(col(_T.envelope_id) == bindparam("sent_id"))
    .values(next_check=bindparam("at"))
)
_LOST_AT = (
    update(_T).where(col(_T.envelope_id) == bindparam("sent_id"))
    .values(outcome=bindparam("lost_outcome"), outcome_hour=bindparam("lost_hour"))
)


class SentLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def due(self, now: datetime, limit: int) -> list[DueCheck]:
        """Deposited envelopes whose next check is at or before `now`, oldest first."""
        with reading(self._engine) as connection:
            rows = connection.execute(_DUE, {"now": utc(now), "limit": limit}).all()
        return [DueCheck(envelope_id, str(relay), created) for envelope_id, relay, created in rows]

    def check_later(self, envelope_id: bytes, at: datetime) -> None:
        with writing(self._engine) as connection:
            connection.execute(_LATER, {"sent_id": envelope_id, "at": utc(at)})

    def lost(self, envelope_id: bytes, outcome: str, hour: int | None) -> None:
        """The relay removed it before delivery: keep it for a notice."""
        if outcome not in LOST_OUTCOMES:
            raise ValueError("outcome must be purged or expired")
        with writing(self._engine) as connection:
            connection.execute(
                _LOST_AT, {"sent_id": envelope_id, "lost_outcome": outcome, "lost_hour": hour}
            )

    def forget(self, envelope_id: bytes) -> None:
        """Delivered, told, or too old to ask about: the row goes."""
        with writing(self._engine) as connection:
            connection.execute(_FORGET, {"sent_id": envelope_id})

    def undeposited_for(self, address: str, limit: int) -> list[Undeposited]:
        """The account's envelopes still in the outbox after a failed deposit, oldest first."""
        with reading(self._engine) as connection:
            rows = connection.execute(_UNDEPOSITED, {"address": address, "limit": limit}).all()
        return [Undeposited(envelope_id, note) for envelope_id, note in rows]

    def lost_for(self, address: str) -> list[LostEnvelope]:
        """The account's envelopes never delivered (removed by a relay, or given up by
        this gateway), oldest first."""
        with reading(self._engine) as connection:
            rows = connection.execute(_LOST, {"address": address}).all()
        return [
            LostEnvelope(envelope_id, note, str(outcome), hour, created)
            for envelope_id, note, outcome, hour, created in rows
        ]
