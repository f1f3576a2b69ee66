"""bridge.headers properties: any input parses or raises the parser's own error, the parse
accounts for every octet of the header block, and the sanitizer, the sender rules and the
IMAP renderer see the same fields."""

from __future__ import annotations

import email.errors
import email.header

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.headers import (
    HeaderError,
    HeaderTooLarge,
    block_end,
    decoded_text,
    field_spans,
    parse_addresses,
    parse_header,
)
from bridge.keys import AccountKeys
from bridge.sanitize import SanitizePolicy, sanitize
from bridge.sender import SenderRefused, check_sender
from gateway.imap.backend import header_block
from gateway.imap.render import fetch

KEY = AccountKeys(bytes(range(32))).message_id_key
POLICY = SanitizePolicy()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_pieces = st.sampled_from([
    b"From: alice@demo.bubble\r\n", b"From : bob@demo.bubble\r\n", b"From bob Mon\r\n",
    b"Sender: bob@demo.bubble\r\n", b'From: "bob@demo.bubble" <alice@demo.bubble>\r\n',
    b"Subject: s\r\n", b" folded\r\n", b"\tfolded\n", b"Received: x\n", b"\r\n", b"\n", b"\r",
    b"Bcc: (((x\r\n", b"X-A\x00: v\r\n", b"To: a@b, (c) <d@e>\r\n", b"no colon line\r\n",
    b"Message-ID: <a@host>\r\n", b"References: <a@b> <c@d>\r\n", b":\r\n", b"\x80\xff: v\r\n",
])
header_bytes = st.lists(_pieces | st.binary(max_size=24), max_size=20).map(b"".join)


@FAST
@given(header_bytes)
@example(b"From : boss@demo.bubble\r\nFrom: alice@demo.bubble\r\n\r\n")
@example(b"From x\r\n\tcont\r\nA: b")
@example(b"A: b\r\n c\r")
def test_input_parses_or_raises_the_parsers_error(raw: bytes) -> None:
    try:
        header = parse_header(raw, limit=64)
    except HeaderTooLarge:
        header = parse_header(raw)
    # Every octet of the header block is in a field, a stray line or the separator.
    separator = 0 if header.body_start is None or not header.blank_line else (
        2 if raw[: header.end].endswith(b"\r\n") else 1)
    in_fields = sum(len(f.raw) for f in header.fields)
    assert in_fields + separator <= header.end
    assert (in_fields + separator == header.end) == (header.stray_lines == 0)
    for f in header.fields:
        assert f.raw in raw[: header.end]
        assert f.name == f.name.lower() and ":" not in f.name
        assert f.raw.index(b":") + 1 == f.head_len
    try:
        check_sender(header, "alice@demo.bubble")
    except SenderRefused as refused:
        assert refused.reason and "\n" not in refused.reason
        assert "bob" not in str(refused)  # never a header value in the message


@FAST
@given(header_bytes, st.binary(max_size=40))
def test_sanitize_imap_and_parser_agree_on_the_fields(head: bytes, body: bytes) -> None:
    raw = head + b"\r\n" + body
    header = parse_header(raw)
    names = [f.name for f in header.fields]
    out = sanitize(raw, policy=POLICY, message_id_key=KEY, header=header)
    assert sanitize(raw, policy=POLICY, message_id_key=KEY) == out  # parsed once = parsed here
    kept = [n for n in names if n not in out.removed]
    assert [f.name for f in parse_header(out.message).fields] == kept
    # IMAP reads the stored (sanitized) message with the same parser and the same cut.
    stored = out.message
    assert [n for n, _ in fetch.parse_message(stored).fields] == kept
    assert fetch.HeaderBlock.parse(header_block(stored)).fields == fetch.parse_message(
        stored).fields


@FAST
@given(st.text(max_size=80))
@example("(" * 5000)
@example('"a\\')
def test_address_values_parse_or_raise_address_error(value: str) -> None:
    lenient = parse_addresses(value, strict=False)
    try:
        strict = parse_addresses(value)
    except HeaderError:
        return
    assert strict.mailboxes == lenient.mailboxes


def test_header_values_never_reach_the_error_message() -> None:
    with pytest.raises(HeaderTooLarge) as err:
        parse_header(b"Subject: secret-" + b"x" * 100, limit=50)
    assert "secret" not in str(err.value)


def _decoded_by_the_stdlib(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.text(), st.text(st.sampled_from(list(" \t\r\nab=?:_QBé\x00\ud800")))))
@example("plain subject")
@example("=?utf-8?q?caf=C3=A9?=")
@example("a =?iso-8859-1?b?Y2Fm6Q==?= b")
@example("=? not a word")
def test_decoded_text_answers_as_the_stdlib_does(value: str) -> None:
    assert decoded_text(value) == _decoded_by_the_stdlib(value)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_bytes, st.binary(max_size=16), st.integers(0, 8), st.integers(0, 8))
@example(b"A: b\r\n\r\nbody", b"", 0, 0)
@example(b"A: b\r\n c\r", b"", 0, 0)
@example(b"A: b\r\n\r", b"", 0, 1)
@example(b"", b"", 0, 0)
def test_the_header_end_is_where_the_parser_ends_the_block(
    head: bytes, body: bytes, skip: int, cut: int
) -> None:
    message = head + body
    start = min(skip, len(message))
    stop = max(start, len(message) - cut)
    assert block_end(message, start=start, stop=stop) == parse_header(
        message, limit=None, start=start, stop=stop
    ).end
    assert block_end(message) == parse_header(message, limit=None).end


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_bytes, st.sampled_from([b"", b"\r\n", b"\n", b"\r", b"\r\nbody", b"x"]))
@example(b"A: b\r\nC: d\r\n", b"\r\n")
@example(b"From x\r\nA: b\r\n", b"\r\n")
@example(b"A: b\r\n c\r", b"")
def test_field_spans_are_the_parsers_fields(head: bytes, tail: bytes) -> None:
    block = head + tail
    fields = parse_header(block, limit=None).fields
    spans = field_spans(block)
    assert [(name.decode("ascii"), block[start:end]) for start, end, name in spans] == [
        (field.name, field.raw) for field in fields
    ]
