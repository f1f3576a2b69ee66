"""gateway.store.header_cache properties: the headers of a cache block come back from its
payload with the fields the parser finds, and a cut of any set of field names (joined
into runs of neighbours for the whole block at once) is exactly those fields, in order."""

from __future__ import annotations

import os
from array import array
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.headers import parse_header
from gateway.imap import protocol as wire
from gateway.imap.backend import (
    FieldTable,
    MessageMeta,
    ParsedHeader,
    StoredHeader,
    header_block,
)
from gateway.imap.render.direct import direct_renderer
from gateway.store import header_cache
from tests.property.test_header_props import header_bytes

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHEN = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
NAMES = ["from", "to", "subject", "sender", "received", "message-id", "references", "x-a"]


@given(st.lists(header_bytes, min_size=1, max_size=12), st.sets(st.sampled_from(NAMES)))
@FAST
def test_a_blocks_headers_cut_any_names_as_the_parser_splits_them(
    messages: list[bytes], names: set[str]
) -> None:
    headers = [header_block(message) for message in messages]
    entries = [(uid, os.urandom(16), 100 + uid, header) for uid, header in enumerate(headers, 1)]
    payload = header_cache._payload(entries)
    keys = [(uid, seal_id, size) for uid, seal_id, size, _ in entries]
    opened = header_cache._block_headers(payload, keys)
    assert [h.header if h else None for h in opened] == headers
    for h in opened:
        assert h is not None
        fields = parse_header(h.header, limit=None).fields
        if not isinstance(h, ParsedHeader):  # a field the block could not record
            continue
        assert h.fields == fields
        kept = frozenset(i for i, name in enumerate(h.names) if name in names)
        assert h.cut(kept) == b"".join(raw for name, raw in fields if name in names)


@given(st.lists(header_bytes, min_size=2, max_size=8), st.data())
@FAST
def test_a_block_answers_only_for_the_messages_it_was_made_from(
    messages: list[bytes], data: st.DataObject
) -> None:
    headers = [header_block(message) for message in messages]
    entries = [(uid, os.urandom(16), 100 + uid, header) for uid, header in enumerate(headers, 1)]
    payload = header_cache._payload(entries)
    keys = [(uid, seal_id, size) for uid, seal_id, size, _ in entries]
    asked = data.draw(st.lists(st.sampled_from(keys), unique=True).map(sorted))
    changed = data.draw(st.sets(st.sampled_from(keys)))
    # a message replaced under the same UID (another seal) has no valid entry
    asked = [(uid, b"\0" * 16, size) if (uid, s, size) in changed else (uid, s, size)
             for uid, s, size in asked]
    opened = header_cache._block_headers(payload, asked)
    assert [h.header if h else None for h in opened] == [
        None if key not in keys else headers[key[0] - 1] for key in asked
    ]


ITEMS = [
    b"UID", b"FLAGS", b"RFC822.SIZE", b"INTERNALDATE", b"RFC822.HEADER",
    b"BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT MESSAGE-ID)]",
    b"BODY.PEEK[HEADER.FIELDS (RECEIVED X-A)]", b"BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
    b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]<1.5>", b"BODY.PEEK[HEADER]",
]


@given(
    st.lists(header_bytes, min_size=1, max_size=10),
    st.lists(st.sampled_from(ITEMS), min_size=1, max_size=5, unique=True),
    st.data(),
)
@FAST
def test_lines_of_many_messages_are_the_lines_of_each(
    messages: list[bytes], items: list[bytes], data: st.DataObject
) -> None:
    headers = [header_block(message) for message in messages]
    entries = [(uid, os.urandom(16), 100 + uid, header) for uid, header in enumerate(headers, 1)]
    keys = [(uid, seal_id, size) for uid, seal_id, size, _ in entries]
    opened = header_cache._block_headers(header_cache._payload(entries), keys)
    # some read one by one instead (the part of a folder after its last block)
    plain = data.draw(st.sets(st.integers(0, len(opened) - 1)))
    stored = [StoredHeader(h.uid, h.header) if i in plain else h
              for i, h in enumerate(opened) if h is not None]
    flags = st.frozensets(st.sampled_from(["\\Seen", "\\Answered", "kw", "$Junk"]))
    metas = [MessageMeta(h.uid, data.draw(flags), WHEN, 100 + h.uid, 1) for h in stored]
    recents = data.draw(st.lists(st.booleans(), min_size=len(stored), max_size=len(stored)))
    numbers = list(range(1, len(stored) + 1))
    command = wire.parse_command(b"f FETCH 1:* (" + b" ".join(items) + b")\r\n")
    assert isinstance(command, wire.Fetch)
    render = direct_renderer(command.attributes)
    assert render is not None
    assert render.lines(numbers, metas, recents, stored) == b"".join(
        map(render.line, numbers, metas, recents, stored)
    )


def test_runs_never_join_the_fields_of_two_headers() -> None:
    # The first header's last field ends at octet 17, where the second header's first
    # wanted field starts (after a line of its own that is no field): neighbours in the
    # table, and at touching offsets, yet of two headers.
    first = b"Subject: aaaaaa\r\n"
    second = b"garbage-line-xx\r\nSubject: b\r\n"
    table = FieldTable(("subject",), array("I", [0, 17]), array("I", [17, 29]), b"\0\0",
                       [0, 1, 2])
    one = ParsedHeader.of(1, first, table, 0, 1)
    two = ParsedHeader.of(2, second, table, 1, 2)
    assert table.runs(frozenset({0}))[0] == [0, 1]  # two runs, one a header
    assert (one.cut(frozenset({0})), two.cut(frozenset({0}))) == (first, b"Subject: b\r\n")
