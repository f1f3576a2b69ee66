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
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate, pairwise, repeat
from typing import cast

from sqlalchemy import Connection, Row, bindparam, insert, select
from sqlmodel import col

from bridge.headers import field_spans
from gateway.imap.backend import FieldTable, ParsedHeader, StoredHeader
from gateway.store.driver_sql import DriverSql
from gateway.store.models import HeaderCacheBlock, Message
from gateway.store.sealing import open_header, open_sealed, seal

log = logging.getLogger(__name__)

BLOCK_MESSAGES = 64
# Blocks one addition makes at most, so that a folder filled without the cache (a
# migration) is caught up over several additions, never in one long write transaction.
BLOCKS_PER_ADDITION = 8
_AD_PREFIX = b"sealgate-store-header-cache-v1\0"
_AD_NUMBERS = struct.Struct(">QQQ")
_COUNT = struct.Struct(">IB")
_ENTRY = struct.Struct(">Q16sQIH")
_FIELD = struct.Struct(">IIB")
_UINT32 = next(code for code in "IL" if array(code).itemsize == 4)
_UNSPLIT = 0xFFFF  # the header's fields are not in the block
_IN_CHUNK = 500  # bound parameters per IN (...) list
# A UID range is read whole when at most this many times larger than the UIDs asked for.
_RANGE_SLACK = 4

_M = Message
_IN_FOLDER = col(_M.folder_id) == bindparam("folder_id")
# The last UID in a block of the folder (0 if none) and how many messages come after it:
# one plain statement (`gateway.store.driver_sql`) for every addition to a folder.
_UNCACHED_COUNT = DriverSql(
    "SELECT cached.uid, (SELECT count(*) FROM message WHERE folder_id = ? AND uid > cached.uid)"
    " FROM (SELECT coalesce(max(last_uid), 0) AS uid FROM header_cache_block"
    " WHERE folder_id = ?) AS cached"
)
_SELECT_UNCACHED = (
    select(col(_M.id), col(_M.uid), col(_M.seal_id), col(_M.size), col(_M.sealed_header))
    .where(_IN_FOLDER, col(_M.uid) > bindparam("after"))
    .order_by(col(_M.uid))
)
# The reads of every header sync, as plain statements (`gateway.store.driver_sql`) whose
# rows come straight from the driver's cursor.
_SELECT_BLOCKS = DriverSql(
    "SELECT id, first_uid, last_uid, sealed FROM header_cache_block"
    " WHERE folder_id = ? AND first_uid <= ? AND last_uid >= ? ORDER BY first_uid"
)
_SELECT_KEYS_IN_RANGE = DriverSql(
    "SELECT uid, seal_id, size FROM message WHERE folder_id = ? AND uid BETWEEN ? AND ?"
    " ORDER BY uid"
)
_KEYS = (col(_M.uid), col(_M.seal_id), col(_M.size))
_UID_IN = col(_M.uid).in_(bindparam("uids", expanding=True))
_SELECT_KEYS_OF = select(*_KEYS).where(_IN_FOLDER, _UID_IN).order_by(col(_M.uid))
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
    """(start, end, name number) of each field `parse_header` finds (`field_spans`),
    numbering the new names in `names`; None (and `names` unchanged) if one cannot be
    recorded."""
    spans: list[tuple[int, int, int]] = []
    added: dict[bytes, int] = {}
    for start, end, name in field_spans(header):
        number = names.get(name)
        if number is None:
            number = added.setdefault(name, len(names) + len(added))
        if start < 0 or len(name) > 0xFF or number > 0xFF or len(spans) >= _UNSPLIT:
            return None
        spans.append((start, end, number))
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
    after, count = _UNCACHED_COUNT.execute(connection, (folder_id, folder_id)).one()
    if count < BLOCK_MESSAGES:
        return 0
    params = {"folder_id": folder_id, "after": after}
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


# (UID, seal_id, size): what an entry is valid for, as the folder's rows give it.
_Key = tuple[int, bytes, int]


def _block_headers(payload: bytes, keys: Sequence[_Key]) -> list[StoredHeader | None]:
    """The headers an opened block holds for `keys` (in UID order, within its range), in
    their order; None for a key it holds no valid entry for. The slices and headers are
    made by `map` over the table's columns, the field table is read column by column into
    one shared `FieldTable`, and a block whose entries are exactly `keys` (a sync of a
    folder nobody changed) is matched by one list comparison: a sync opens every entry
    of every block, and a Python step per entry or field was most of its cost."""
    count, name_count = _COUNT.unpack_from(payload)
    at = _COUNT.size
    table = _ENTRY.iter_unpack(payload[at : at + count * _ENTRY.size])
    uids, seal_ids, sizes, lengths, field_counts = zip(*table, strict=True) if count else ((),) * 5
    at += count * _ENTRY.size
    ends = list(accumulate(lengths, initial=at))
    at = ends[-1]
    name_ends = list(accumulate(payload[at : at + name_count], initial=at + name_count))
    names = tuple(payload[a:b].decode("ascii") for a, b in pairwise(name_ends))
    at = name_ends[-1]
    entries = list(zip(uids, seal_ids, sizes, strict=True))
    if entries == keys:
        wanted: Sequence[int] = range(count)
    else:  # some expunged or replaced since the block was made, or not all asked for
        index = dict(zip(uids, range(count), strict=True))
        wanted = [-1 if (i := index.get(key[0], -1)) < 0 or entries[i] != key else i
                  for key in keys]
    split = [0 if n == _UNSPLIT else n for n in field_counts]
    firsts = list(accumulate(split, initial=0))
    fields = _field_table(names, payload[at : at + firsts[-1] * _FIELD.size], firsts)
    if isinstance(wanted, range) and _UNSPLIT not in field_counts:
        return list(map(ParsedHeader.of, uids, map(payload.__getitem__, map(slice, ends, ends[1:])),
                        repeat(fields), firsts, firsts[1:]))
    return [
        None if i < 0
        else StoredHeader(uids[i], payload[ends[i] : ends[i + 1]]) if field_counts[i] == _UNSPLIT
        else ParsedHeader.of(uids[i], payload[ends[i] : ends[i + 1]], fields, firsts[i],
                             firsts[i + 1])
        for i in wanted
    ]


def _field_table(names: tuple[str, ...], fields: bytes, firsts: Sequence[int]) -> FieldTable:
    """A block's fields ([start (4) || end (4) || name (1)] each; header i's from
    `firsts[i]`) as columns: the octets of each column gathered by strided slices into
    a big-endian array, no int object made until a field is read."""
    count = firsts[-1]
    return FieldTable(names, _column(fields, 0, count), _column(fields, 4, count),
                      fields[8 :: _FIELD.size], firsts)


def _column(fields: bytes, offset: int, count: int) -> array[int]:
    octets = bytearray(4 * count)
    for k in range(4):
        octets[k::4] = fields[offset + k :: _FIELD.size]
    column = array(_UINT32)
    column.frombytes(octets)
    if sys.byteorder == "little":
        column.byteswap()
    return column


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
    # Rows as plain tuples, fetched at once, in UID order: per-row work is what a sync
    # of thousands costs.
    keys: list[_Key]
    if high - low + 1 <= _RANGE_SLACK * len(wanted):
        keys = _SELECT_KEYS_IN_RANGE.rows(connection, (folder_id, low, high))
        if len(keys) > len(wanted):
            asked = set(wanted)
            keys = [key for key in keys if key[0] in asked]
    else:
        keys = [key for chunk in _chunks(wanted) for key in _keys(connection.execute(
            _SELECT_KEYS_OF, {"folder_id": folder_id, "uids": chunk}).all())]
    key_uids = [key[0] for key in keys]
    # An entry counts only for the message it was made from: same UID, seal_id and size.
    found: list[StoredHeader | None] = [None] * len(keys)
    for block_id, first_uid, last_uid, sealed in _SELECT_BLOCKS.rows(
        connection, (folder_id, high, low)
    ):
        start = bisect_left(key_uids, first_uid)
        stop = bisect_right(key_uids, last_uid, start)
        if start == stop:
            continue
        payload = open_sealed(storage_key, sealed,
                              _associated_data(account_id, first_uid, last_uid))
        if payload is None:
            log.warning("header cache block %s cannot be opened; skipped", block_id)
            continue
        found[start:stop] = _block_headers(payload, keys[start:stop])
    missing = [key[0] for key, header in zip(keys, found, strict=True) if header is None]
    if not missing:
        return cast(list[StoredHeader], found)
    read: dict[int, StoredHeader] = {}
    for chunk in _chunks(missing):
        rows = connection.execute(_SELECT_SEALED_HEADERS, {"folder_id": folder_id, "uids": chunk})
        for row_id, uid, seal_id, size, sealed in rows:
            header = open_header(storage_key, account_id, seal_id, size, sealed)
            if header is None:
                log.warning("stored message %s cannot be opened; skipped", row_id)
                continue
            read[uid] = StoredHeader(uid=uid, header=header)
    merged = [h for h in found if h is not None]
    merged += read.values()
    return sorted(merged, key=_uid)


def _keys(rows: Sequence[Row[int, bytes, int]]) -> list[_Key]:
    """Rows fetched whole (`all()`: iterating a result fetches them one by one)."""
    return cast(list[_Key], list(map(tuple, rows)))


def _uid(header: StoredHeader) -> int:
    return header.uid
