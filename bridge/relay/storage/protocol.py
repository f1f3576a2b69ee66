"""What the relay's HTTP layer asks of storage: the `EnvelopeStorage` Protocol and its values.

Its methods are synchronous and may block (the server runs them with
`asyncio.to_thread`). Storage receives only what the outside of an envelope shows:
it never sees or stores an address or any plaintext. This module holds no I/O.

Errors a backend raises to the HTTP layer (both are `RequestError`s, so they are
answered with their status and a one-line JSON body):

    StorageFull         507: larger than the quota, or the disk is full
    StorageUnavailable  503: the database cannot be reached now; try again or elsewhere

`StorageSchemaError` is raised when a backend is opened on a database whose layout
it will not use (written by a newer relay); the CLI prints it as one line.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.directory import DirectoryRecord
from bridge.errors import BridgeError
from bridge.relay.auth import RequestError
from bridge.revocation import GatewayRevocation

HOUR = 3600
DEPOSITOR_TAG_LEN = 16
_DEPOSITOR_PERSON = b"sg-depositor"


class PutOutcome(enum.Enum):
    CREATED = "created"  # stored now
    DUPLICATE = "duplicate"  # the same bytes were already stored under this id
    CONFLICT = "conflict"  # different bytes are stored under this id; nothing changed


class EnvelopeStatus(enum.Enum):
    """What happened to a deposited envelope, as its depositor may learn it."""

    PENDING = "pending"  # stored, not yet acknowledged by its recipient
    DELIVERED = "delivered"  # acknowledged (fetched) by the recipient's gateway
    PURGED = "purged"  # removed unfetched to make room under the quota
    EXPIRED = "expired"  # removed unfetched after the retention period
    UNKNOWN = "unknown"  # never stored, tombstone forgotten, or not this gateway's


class StorageFull(RequestError):
    """507: the deposit does not fit (larger than the quota, or the disk is full)."""

    def __init__(self, reason: str) -> None:
        super().__init__(507, reason)


class StorageUnavailable(RequestError):
    """503: the relay's database cannot be reached or is shutting down."""

    def __init__(self, reason: str = "relay storage is unavailable") -> None:
        super().__init__(503, reason)


class StorageSchemaError(BridgeError):
    """The database's layout is not one this relay can use (the message says which)."""


@dataclass(frozen=True)
class NewEnvelope:
    """One envelope of a batch deposit, as its outer header names it."""

    mailbox_id: bytes
    envelope_id: bytes
    data: bytes


PutResult = PutOutcome | StorageFull  # one envelope's answer in a batch


@dataclass(frozen=True)
class StoredEnvelope:
    """One line of a mailbox listing."""

    envelope_id: bytes
    size: int
    received: int  # unix time rounded down to the hour


@dataclass(frozen=True)
class StorageUsage:
    """How much a relay holds, for its metrics and status page."""

    envelopes: int
    stored_bytes: int


@dataclass(frozen=True)
class StatusAnswer:
    status: EnvelopeStatus
    hour: int | None = None  # when it was acknowledged, purged or expired (to the hour)


@dataclass(frozen=True)
class SweepResult:
    expired: int  # envelopes removed
    forgotten: int  # tombstones removed


def coarse_hour(now: float) -> int:
    """The only receive time a relay keeps: `now` rounded down to the hour."""
    seconds = int(now)
    return seconds - seconds % HOUR


def put_in_rounds(
    envelopes: Sequence[NewEnvelope],
    put_distinct: Callable[[builtins.list[NewEnvelope]], builtins.list[PutResult]],
) -> builtins.list[PutResult]:
    """`put_many` by `put_distinct`, which stores envelopes of distinct ids: a batch
    that repeats an id stores the first in one round, then the repeat against it."""
    rounds: builtins.list[builtins.list[int]] = []
    seen: dict[bytes, int] = {}  # envelope id -> rounds it is in so far
    for index, envelope in enumerate(envelopes):
        taken = seen.get(envelope.envelope_id, 0)
        seen[envelope.envelope_id] = taken + 1
        if taken == len(rounds):
            rounds.append([])
        rounds[taken].append(index)
    results: dict[int, PutResult] = {}
    for indexes in rounds:
        answers = put_distinct([envelopes[i] for i in indexes])
        results.update(zip(indexes, answers, strict=True))
    return [results[i] for i in range(len(envelopes))]


def all_answered(results: Sequence[PutResult | None]) -> builtins.list[PutResult]:
    """`results` once every envelope has its answer (a backend's own check)."""
    done = [result for result in results if result is not None]
    if len(done) != len(results):
        raise RuntimeError("an envelope of the batch got no answer")
    return done


def put_each(
    storage: EnvelopeStorage, envelopes: Sequence[NewEnvelope], received: int,
    depositor: bytes,
) -> builtins.list[PutResult]:
    """`put_many` as one `put` per envelope (what a batch falls back to when the room
    it needs as a whole cannot be found)."""
    results: builtins.list[PutResult] = []
    for envelope in envelopes:
        try:
            results.append(storage.put(
                envelope.mailbox_id, envelope.envelope_id, envelope.data, received, depositor,
            ))
        except StorageFull as full:
            results.append(full)
    return results


def depositor_tag(gateway_key: bytes, envelope_id: bytes) -> bytes:
    """What storage keeps of who deposited an envelope: BLAKE2b of the gateway key,
    keyed by the envelope id. The tags of one gateway's envelopes are unrelated to
    each other, and the key itself is not stored."""
    return hashlib.blake2b(
        gateway_key, key=envelope_id, person=_DEPOSITOR_PERSON, digest_size=DEPOSITOR_TAG_LEN
    ).digest()


class EnvelopeStorage(Protocol):
    """What the relay's HTTP layer needs from storage. Ids are raw bytes."""

    def put(
        self, mailbox_id: bytes, envelope_id: bytes, data: bytes, received: int,
        depositor: bytes,
    ) -> PutOutcome:
        """Store `data` durably before returning CREATED; never replace other bytes.

        `depositor` is the gateway key that signed the deposit. Raises `StorageFull`.
        """

    def put_many(
        self, envelopes: Sequence[NewEnvelope], received: int, depositor: bytes,
    ) -> builtins.list[PutResult]:
        """`put` for each envelope, in one transaction: one answer per envelope, in
        order, a `StorageFull` for one that does not fit (each CREATED is durable
        when this returns). Other errors (`StorageUnavailable`) refuse the whole call;
        envelopes stored before it stay stored, and a retry answers DUPLICATE."""

    def list(self, mailbox_id: bytes, limit: int) -> builtins.list[StoredEnvelope]:
        """At most `limit` envelopes of one mailbox, oldest deposit first."""

    def get(self, mailbox_id: bytes, envelope_id: bytes) -> bytes | None:
        """The stored bytes, or None if that mailbox holds no such envelope."""

    def delete(self, mailbox_id: bytes, envelope_id: bytes) -> bool:
        """Remove an envelope of that mailbox (tombstone: delivered); False if there was none."""

    def status(self, envelope_id: bytes, depositor: bytes) -> StatusAnswer:
        """The envelope's status if `depositor` deposited it, else UNKNOWN."""

    def sweep(self, now: float) -> SweepResult:
        """Remove envelopes older than the retention period, forget old tombstones."""

    def put_directory(self, record: DirectoryRecord) -> bool:
        """Store a record unless one of the same lookup id has this or a higher version.

        True if stored; False (nothing changed) otherwise. Compare and write are one
        statement, so two racing publications cannot both win.
        """

    def get_directory(self, lookup_id: bytes) -> DirectoryRecord | None: ...

    def all_directory(self) -> builtins.list[DirectoryRecord]:
        """Every directory record, ordered by lookup id."""

    def put_gateway_revocation(self, revocation: GatewayRevocation) -> None:
        """Keep a (verified) gateway revocation; storing one twice changes nothing."""

    def gateway_revocations(self) -> builtins.list[GatewayRevocation]:
        """Every gateway revocation, ordered by gateway key."""

    def revoked_gateway_keys(self) -> frozenset[bytes] | None:
        """The revoked gateway keys when known without I/O (storage that alone writes
        them keeps them in memory); None: read `gateway_revocations` (it may block)."""

    def usage(self) -> StorageUsage:
        """Envelopes stored and their bytes, now."""

    def close(self) -> None: ...
