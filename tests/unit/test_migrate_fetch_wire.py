"""The migration's reader of a bulk UID FETCH answer: bytes in, messages out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.migrate.fetch_wire import FetchReader, FetchWireError, internal_date

BODY = b"Subject: x\r\n\r\nline {5}\r\n) ends with a paren\r\nA1 OK not the end\r\n"
ANSWER = (
    b"* 1 FETCH (UID 7 FLAGS (\\Seen $Work) INTERNALDATE \"01-Jun-2015 08:00:00 +0000\" "
    b"RFC822.SIZE %d BODY[]<0> {%d}\r\n%s)\r\n"
    b"* 3 EXISTS\r\n"
    b"* 2 FETCH (UID 9 FLAGS () INTERNALDATE \"02-Jun-2015 08:00:00 +0200\" RFC822.SIZE 3 "
    b"BODY[]<0> \"a\\\"b\")\r\n"
    b"* 3 FETCH (UID 11 FLAGS (\\Deleted) INTERNALDATE \"03-Jun-2015 08:00:00 +0000\" "
    b"RFC822.SIZE 0 BODY[]<0> NIL)\r\n"
    b"* 4 FETCH (FLAGS (\\Flagged))\r\n* 4 FETCH (UID 12 RFC822.SIZE 4)\r\n"
    b"A1 OK Fetch completed.\r\n* 5 EXISTS\r\n"
) % (len(BODY), len(BODY), BODY)


def read(chunks: list[bytes]) -> tuple[FetchReader, bytes]:
    reader = FetchReader("A1", max_literal=1000)
    rest = b""
    for chunk in chunks:
        rest += reader.feed(chunk)
    return reader, rest


def test_an_answer_gives_each_message_its_items_and_what_follows_the_tagged_line() -> None:
    reader, rest = read([ANSWER])
    assert reader.result == ("OK", b"Fetch completed.")
    assert rest == b"* 5 EXISTS\r\n"
    first, second, third, fourth = (reader.messages[n] for n in (1, 2, 3, 4))
    assert (first.uid, first.flags, first.size, first.body) == (7, b"\\Seen $Work", len(BODY),
                                                                BODY)
    assert first.internal_date == b"01-Jun-2015 08:00:00 +0000"
    assert (second.uid, second.flags, second.body) == (9, b"", b'a"b')  # a quoted body
    assert (third.uid, third.body) == (11, None)  # NIL: the server has no body for it
    assert (fourth.uid, fourth.flags, fourth.size) == (12, b"\\Flagged", 4)  # merged


@given(st.lists(st.integers(min_value=0, max_value=len(ANSWER)), max_size=12))
def test_the_same_answer_in_any_pieces_reads_the_same(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(ANSWER)]
    reader, rest = read([ANSWER[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    whole, whole_rest = read([ANSWER])
    assert (reader.messages, reader.result, rest) == (whole.messages, whole.result, whole_rest)


@pytest.mark.parametrize(("data", "message"), [
    (b"* 1 FETCH (UID 1 BODY[]<0> {1001}\r\n", "a literal of 1001 octets"),
    (b"* 1 FETCH (UID 1 " + b"x" * 2000, "a line of the FETCH answer over 1024 octets"),
    (b"* 1 FETCH (UID 1 " + b"x" * 2000 + b"\r\n", "a line of the FETCH answer over 1024"),
])
def test_an_answer_over_the_limits_is_refused(data: bytes, message: str) -> None:
    reader = FetchReader("A1", max_literal=1000, max_line=1024)
    with pytest.raises(FetchWireError, match=message):
        reader.feed(data)


def test_a_refusal_ends_the_answer() -> None:
    reader, rest = read([b"* 1 EXISTS\r\nA0 OK other tag\r\nA1 NO [SERVERBUG] Internal error\r\n"])
    assert (reader.result, reader.messages, rest) == (("NO", b"[SERVERBUG] Internal error"), {},
                                                      b"")


@pytest.mark.parametrize(("raw", "expected"), [
    (b"01-Jun-2015 08:00:00 +0000", datetime(2015, 6, 1, 8, tzinfo=UTC)),
    (b" 7-DEC-1999 23:59:59 -0130",
     datetime(1999, 12, 7, 23, 59, 59, tzinfo=timezone(-timedelta(hours=1, minutes=30)))),
    (b"29-Feb-2024 00:00:01 +1400",
     datetime(2024, 2, 29, 0, 0, 1, tzinfo=timezone(timedelta(hours=14)))),
    (b"31-Feb-2024 00:00:00 +0000", None),
    (b"01-Foo-2015 08:00:00 +0000", None),
    (b"01-Jun-2015 08:00 +0000", None),
    (b"", None),
])
def test_internal_dates_parse_as_rfc_3501_writes_them(raw: bytes, expected: datetime | None
                                                      ) -> None:
    assert internal_date(raw) == expected
    if expected is not None:
        assert datetime.strptime(raw.decode().strip(), "%d-%b-%Y %H:%M:%S %z") == expected
