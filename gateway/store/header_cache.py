"""The sealed header cache: the header blocks of runs of a folder's messages, sealed together.

A client's first header sync (`UID FETCH 1:* (... BODY.PEEK[HEADER.FIELDS (...)])`)
reads the header of every message. Opening each message's own sealed header costs a
row and a decryption per message, and the fixed costs dominate (PyNaCl's checks around
the C call, SQLAlchemy's per-row work). Dovecot answers from a cache file of header
fields; this is its sealed equivalent. A `header_cache_block` row holds the header
blocks of up to `BLOCK_MESSAGES` consecutive messages of one folder (by UID), sealed as
one blob under the account's storage key (`gateway.store.sealing`):

    ad      = b"sealgate-store-header-cache-v1\\0" || account id (8) || first UID (8)
              || last UID (8)
    payload = count (4) || names (1)
              || count x [UID (8) || seal_id (16) || size (8) || length (4) || fields (2)]
              || the header blocks, concatenated
              || names x [length (1)] || the block's distinct field names, concatenated
              || for every field of every header: [start (4) || end (4) || name (1)]

so a header FETCH of 2,000 messages opens about 16 blobs and reads 16 rows of them. The
fields are those `bridge.headers.parse_header` finds (offsets into their header block,
lower-case names), split once when the block is made: `fetch_headers` returns them as
`ParsedHeader`s, as offsets (no object per field), and the IMAP layer need not parse the
headers again. A header whose fields cannot be recorded (a field name over 255 octets, or
more than 255 distinct names in the block) has `fields` 0xFFFF and comes back as a plain
`StoredHeader`.

It is a cache; every message keeps its own `sealed_header`, which stays the reference:

- Blocks are made in the transaction that adds messages to a folder (delivery, Sent
  copies, APPEND, COPY, MOVE) once the messages after the folder's last block make a
  full run: their header blobs are opened and sealed again, together. Messages after
  the last block (fewer than a run) are read one by one, as are those of a folder filled
  by a migration until messages arrive there (each addition makes at most
  `BLOCKS_PER_ADDITION` blocks, so a backlog never holds the write lock for long).
- An entry is used only while the folder holds a message with its UID, seal_id and
  size (UIDs are never reused in a folder): entries of expunged or moved messages are
  skipped, so EXPUNGE and MOVE change nothing here. A block that does not open is
  logged by row id and its messages are read one by one.

What it costs: every `BLOCK_MESSAGES`-th addition to a folder opens that many header
blobs (about a millisecond), and each header is stored twice, sealed both times (some
5 % of a 10 KB message). This module never logs or raises with message content.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from itertools import chain

from sqlalchemy import Connection, bindparam, func, insert, select
from sqlmodel import col

from bridge.headers import parse_header
from gateway.imap.backend import ParsedHeader, StoredHeader
from gateway.store.models import HeaderCacheBlock, Message
from gateway.store.sealing import open_header, open_sealed, seal

log = logging.getLogger(__name__)

BLOCK_MESSAGES = 128
# Blocks one addition makes at most, so that a folder filled without the cache (a
# migration) is caught up over several additions, never in one long write transaction.
BLOCKS_PER_ADDITION = 8
_AD_PREFIX = b"sealgate-store-header-cache-v1\0"
_AD_NUMBERS = struct.Struct(">QQQ")
_COUNT = struct.Struct(">IB")
_ENTRY = struct.Struct(">Q16sQIH")
_FIELD = struct.Struct(">IIB")
_UNSPLIT = 0xFFFF  # the header's fields are not in the block
_IN_CHUNK = 500  # bound parameters per IN (...) list
# A UID range is read whole when at most this many times larger than the UIDs asked for.
_RANGE_SLACK = 4

_B = HeaderCacheBlock
_M = Message
_IN_FOLDER = col(_M.folder_id) == bindparam("folder_id")
_SELECT_LAST_BLOCK = select(func.max(col(_B.last_uid))).where(
    col(_B.folder_id) == bindparam("folder_id")
)
_COUNT_AFTER = select(func.count()).where(_IN_FOLDER, col(_M.uid) > bindparam("after"))
_SELECT_UNCACHED = (
    select(col(_M.id), col(_M.uid), col(_M.seal_id), col(_M.size), col(_M.sealed_header))
    .where(_IN_FOLDER, col(_M.uid) > bindparam("after"))
    .order_by(col(_M.uid))
)
_SELECT_BLOCKS = (
    select(col(_B.id), col(_B.first_uid), col(_B.last_uid), col(_B.sealed))
    .where(col(_B.folder_id) == bindparam("folder_id"),
           col(_B.first_uid) <= bindparam("high"), col(_B.last_uid) >= bindparam("low"))
    .order_by(col(_B.first_uid))
)
_KEYS = (col(_M.uid), col(_M.seal_id), col(_M.size))
_SELECT_KEYS_IN_RANGE = select(*_KEYS).where(
    _IN_FOLDER, col(_M.uid).between(bindparam("low"), bindparam("high"))
)
_UID_IN = col(_M.uid).in_(bindparam("uids", expanding=True))
_SELECT_KEYS_OF = select(*_KEYS).where(_IN_FOLDER, _UID_IN)
_SELECT_SEALED_HEADERS = select(
    col(_M.id), col(_M.uid), col(_M.seal_id), col(_M.size), col(_M.sealed_header)
).where(_IN_FOLDER, _UID_IN)


def _associated_data(account_id: int, first_uid: int, last_uid: int) -> bytes:
    return _AD_PREFIX + _AD_NUMBERS.pack(account_id, first_uid, last_uid)


def _chunks(values: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


# -- building ----------------------------------------------------------------------------


def _field_spans(header: bytes, names: dict[bytes, int]) -> list[tuple[int, int, int]] | None:
    """(start, end, name number) of each field `parse_header` finds, numbering the new
    names in `names`; None (and `names` unchanged) if one cannot be recorded. A header's
    fields are consecutive slices of it."""
    spans: list[tuple[int, int, int]] = []
    added: dict[bytes, int] = {}
    position = 0
    for name, raw in parse_header(header, limit=None).fields:
        start = header.find(raw, position)
        encoded = name.encode("ascii")
        number = names.get(encoded)
        if number is None:
            number = added.setdefault(encoded, len(names) + len(added))
        if start < 0 or len(encoded) > 0xFF or number > 0xFF or len(spans) >= _UNSPLIT:
            return None
        position = start + len(raw)
        spans.append((start, position, number))
    names.update(added)
    return spans


def _payload(entries: Sequence[tuple[int, bytes, int, bytes]]) -> bytes:
    table: list[bytes] = []
    fields: list[bytes] = []
    names: dict[bytes, int] = {}
    for uid, seal_id, size, header in entries:
        spans = _field_spans(header, names)
        table.append(_ENTRY.pack(uid, seal_id, size, len(header),
                                 _UNSPLIT if spans is None else len(spans)))
        fields.extend(_FIELD.pack(*span) for span in spans or ())
    headers = b"".join(header for *_, header in entries)
    ordered = sorted(names, key=names.__getitem__)
    return b"".join((_COUNT.pack(len(entries), len(ordered)), *table, headers,
                     bytes(len(name) for name in ordered), *ordered, *fields))


def extend(connection: Connection, storage_key: bytes, account_id: int, folder_id: int) -> int:
    """Seal the messages after the folder's last block into blocks, while they make full
    runs; the number of blocks made. Call it in the transaction that added messages,
    with the folder row locked."""
    after = connection.execute(_SELECT_LAST_BLOCK, {"folder_id": folder_id}).scalar() or 0
    params = {"folder_id": folder_id, "after": after}
    if connection.execute(_COUNT_AFTER, params).scalar_one() < BLOCK_MESSAGES:
        return 0
    rows = connection.execute(
        _SELECT_UNCACHED.limit(BLOCK_MESSAGES * BLOCKS_PER_ADDITION), params
    ).all()
    made = 0
    for start in range(0, len(rows) - BLOCK_MESSAGES + 1, BLOCK_MESSAGES):
        run = rows[start : start + BLOCK_MESSAGES]
        entries = []
        for row_id, uid, seal_id, size, sealed in run:
            header = open_header(storage_key, account_id, seal_id, size, sealed)
            if header is None:
                log.warning("stored message %s cannot be opened; not cached", row_id)
                continue
            entries.append((uid, seal_id, size, header))
        first_uid, last_uid = run[0][1], run[-1][1]
        connection.execute(insert(HeaderCacheBlock), {
            "folder_id": folder_id, "first_uid": first_uid, "last_uid": last_uid,
            "sealed": seal(storage_key, _payload(entries),
                           _associated_data(account_id, first_uid, last_uid)),
        })
        made += 1
    return made


# -- reading -----------------------------------------------------------------------------


_Entry = tuple[bytes, int, StoredHeader]


def _entries(payload: bytes) -> dict[int, _Entry]:
    """UID -> (seal_id, size, header) of an opened block."""
    count, name_count = _COUNT.unpack_from(payload)
    at = _COUNT.size
    table = list(_ENTRY.iter_unpack(payload[at : at + count * _ENTRY.size]))
    at += count * _ENTRY.size
    headers = []
    for _, _, _, length, _ in table:
        headers.append(payload[at : at + length])
        at += length
    lengths = payload[at : at + name_count]
    at += name_count
    names = []
    for length in lengths:
        names.append(payload[at : at + length].decode("ascii"))
        at += length
    shared = tuple(names)
    total = sum(n for *_, n in table if n != _UNSPLIT)
    spans = tuple(chain.from_iterable(_FIELD.iter_unpack(payload[at : at + total * _FIELD.size])))
    entries: dict[int, _Entry] = {}
    first = 0
    for (uid, seal_id, size, _, n), header in zip(table, headers, strict=True):
        if n == _UNSPLIT:
            entries[uid] = (seal_id, size, StoredHeader(uid, header))
            continue
        last = first + 3 * n
        entries[uid] = (seal_id, size, ParsedHeader(uid, header, shared, spans[first:last]))
        first = last
    return entries


def read_headers(
    connection: Connection, storage_key: bytes, account_id: int, folder_id: int,
    uids: Sequence[int],
) -> list[StoredHeader]:
    """The header blocks of the messages among `uids` that exist and open, in UID order
    (the contract of `MailSession.fetch_headers`): from the cache where it holds them
    (as `ParsedHeader`s), else from each message's own sealed header."""
    wanted = sorted(set(uids))
    if not wanted:
        return []
    low, high = wanted[0], wanted[-1]
    params = {"folder_id": folder_id, "low": low, "high": high}
    # Rows as plain tuples, fetched at once: per-row work is what a sync of thousands costs.
    if high - low + 1 <= _RANGE_SLACK * len(wanted):
        keys = connection.execute(_SELECT_KEYS_IN_RANGE, params).all()
        if len(keys) > len(wanted):
            asked = set(wanted)
            keys = [key for key in keys if key[0] in asked]
    else:
        keys = [key for chunk in _chunks(wanted) for key in connection.execute(
            _SELECT_KEYS_OF, {"folder_id": folder_id, "uids": chunk}).all()]
    cached: dict[int, _Entry] = {}
    blocks = connection.execute(_SELECT_BLOCKS, params).all()
    for block_id, first_uid, last_uid, sealed in blocks:
        payload = open_sealed(storage_key, sealed,
                              _associated_data(account_id, first_uid, last_uid))
        if payload is None:
            log.warning("header cache block %s cannot be opened; skipped", block_id)
            continue
        cached.update(_entries(payload))
    found: dict[int, StoredHeader] = {}
    missing: list[int] = []
    for uid, seal_id, size in keys:
        entry = cached.get(uid)
        if entry is not None and entry[0] == seal_id and entry[1] == size:
            found[uid] = entry[2]
        else:
            missing.append(uid)
    for chunk in _chunks(missing):
        rows = connection.execute(_SELECT_SEALED_HEADERS, {"folder_id": folder_id, "uids": chunk})
        for row_id, uid, seal_id, size, sealed in rows:
            header = open_header(storage_key, account_id, seal_id, size, sealed)
            if header is None:
                log.warning("stored message %s cannot be opened; skipped", row_id)
                continue
            found[uid] = StoredHeader(uid=uid, header=header)
    return [found[uid] for uid in sorted(found)]
