"""The chunked DATA reader (`gateway.smtp.data`): bytes in, the message or a refusal out,
the same as aiosmtpd's line-by-line reader for any stream cut into any pieces."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.smtp.data import DataReader, DataState, has_long_line

LINE_LIMIT = 1001


def read(chunks: list[bytes], size_limit: int | None = None) -> DataReader:
    reader = DataReader(size_limit=size_limit, line_limit=LINE_LIMIT)
    for chunk in chunks:
        if reader.feed(chunk):
            return reader
    raise AssertionError("DATA did not end")


def line_by_line(stream: bytes, size_limit: int | None) -> tuple[DataState, bytes, bytes]:
    """aiosmtpd 1.4.6's `smtp_DATA` loop, over a byte string: (state, content, leftover)."""
    lines, state, size, at = [], DataState.NOMINAL, 0, 0
    while True:
        end = stream.find(b"\r\n", at)
        assert end >= 0, "DATA did not end"
        line = stream[at : end + 2]
        at = end + 2
        if line == b".\r\n":
            break
        size += len(line)
        if state is DataState.NOMINAL and size_limit and size > size_limit:
            state = DataState.TOO_MUCH
        if state is DataState.NOMINAL and len(line) > LINE_LIMIT:
            state = DataState.TOO_LONG
        lines.append(line[1:] if line.startswith(b".") else line)
    return state, b"".join(lines) if state is DataState.NOMINAL else b"", stream[at:]


def test_only_crlf_dot_crlf_ends_data() -> None:
    # (what the client sent, what the body holds: a "." at a line start is unstuffed)
    for smuggled, kept in ((b"\n.\r\n", b"\n.\r\n"), (b"\n.\n", b"\n.\n"),
                           (b"\r.\r\n", b"\r.\r\n"), (b"\r\n.\n", b"\r\n\n"),
                           (b"\r\n.\r", b"\r\n\r")):
        stream = b"Subject: a\r\n\r\nfirst" + smuggled + b"MAIL FROM:<x@y>\r\n.\r\nQUIT\r\n"
        reader = read([stream])
        assert reader.content == b"Subject: a\r\n\r\nfirst" + kept + b"MAIL FROM:<x@y>\r\n"
        assert reader.leftover == b"QUIT\r\n"


def test_a_first_line_dot_is_an_empty_message() -> None:
    reader = read([b".\r\nNOOP\r\n"])
    assert reader.content == b"" and reader.leftover == b"NOOP\r\n"


def test_dot_stuffing_is_undone_on_every_line_and_only_there() -> None:
    reader = read([b"..first\r\n.second\r\n...\r\nnot. here\r\nbare\n..lf\r\n.\r\n"])
    assert reader.content == b".first\r\nsecond\r\n..\r\nnot. here\r\nbare\n..lf\r\n"


def test_the_end_split_across_chunks() -> None:
    stream = b"Subject: a\r\n\r\nbody\r\n.\r\nRSET\r\n"
    for cut in range(1, len(stream)):
        reader = DataReader(size_limit=None, line_limit=LINE_LIMIT)
        unread = b"" if reader.feed(stream[:cut]) else stream[cut:]
        assert unread == b"" or reader.feed(unread)
        assert reader.content == b"Subject: a\r\n\r\nbody\r\n"
        assert reader.leftover + (stream[cut:] if not unread else b"") == b"RSET\r\n"


def test_over_the_size_limit_reads_to_the_end_holding_little() -> None:
    reader = DataReader(size_limit=100, line_limit=LINE_LIMIT)
    chunk = b"x" * 70 + b"\r\n"
    for _ in range(1000):
        assert not reader.feed(chunk)
        assert len(reader._buffer) <= 100 + len(chunk)
    assert reader.feed(b".\r\nQUIT\r\n")
    assert reader.state is DataState.TOO_MUCH and reader.leftover == b"QUIT\r\n"
    with pytest.raises(RuntimeError):
        reader.content  # noqa: B018 - the property raises


def test_exactly_at_the_size_limit_is_accepted() -> None:
    message = b"a" * 98 + b"\r\n"
    assert read([message + b".\r\n"], size_limit=100).content == message
    assert read([message + b"b\r\n.\r\n"], size_limit=100).state is DataState.TOO_MUCH


def test_a_line_over_the_limit_is_refused() -> None:
    ok, long = b"a" * (LINE_LIMIT - 2) + b"\r\n", b"a" * (LINE_LIMIT - 1) + b"\r\n"
    assert read([ok + b".\r\n"]).content == ok
    assert read([b"x\r\n" + long + b"y\r\n.\r\n"]).state is DataState.TOO_LONG


def test_no_feeding_after_the_end() -> None:
    reader = read([b"a\r\n.\r\n"])
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


_pieces = st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"\r\n.", b".\r\n", b"x" * 40]),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(body=_pieces, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
       limit=st.sampled_from([None, 30, 200]))
def test_the_same_as_aiosmtpd_line_by_line(
    body: list[bytes], cuts: list[int], limit: int | None
) -> None:
    stream = b"".join(body) + b"\r\n.\r\nQUIT\r\n"
    state, content, leftover = line_by_line(stream, limit)
    points = sorted({c for c in cuts if 0 < c < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    reader = DataReader(size_limit=limit, line_limit=LINE_LIMIT)
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        if reader.feed(chunk):
            break
    assert reader.done and reader.state is state
    assert reader.leftover + stream[fed:] == leftover
    if state is DataState.NOMINAL:
        assert reader.content == content


def _longest_line(buffer: bytes) -> int:
    """The longest CR LF line of `buffer`, its CR LF counted: the plain way."""
    return max(map(len, buffer.split(b"\r\n"))) + 2


@settings(max_examples=2000, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"a", b"xyz", b"x" * 17]), max_size=40),
    limit=st.integers(min_value=0, max_value=60),
)
@example(body=[b"\r\n", b"x" * 17, b"\r\n"], limit=19)
@example(body=[b"\r\n", b"x" * 17, b"\r\n"], limit=18)
@example(body=[b"\r", b"\r\n", b"\n"], limit=2)
def test_the_long_line_search_answers_as_splitting_does(body: list[bytes], limit: int) -> None:
    buffer = b"".join(body)
    expected = _longest_line(buffer) > limit
    assert has_long_line(buffer, limit) is expected
    assert has_long_line(bytearray(buffer), limit) is expected
