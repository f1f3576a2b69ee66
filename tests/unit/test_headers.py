"""bridge.headers: header blocks in, fields (exact octets, unfolded values) and addresses out."""

from __future__ import annotations

import pytest

from bridge.headers import (
    MAX_ADDRESS_FIELD,
    MAX_HEADER_BLOCK,
    AddressError,
    Field,
    HeaderTooLarge,
    Mailbox,
    parse_addresses,
    parse_header,
)


def test_fields_keep_their_exact_octets_and_unfold() -> None:
    raw = b"Subject: one\r\n two\r\n\tthree\r\nTo: a@b\n\r\nbody\r\n"
    header = parse_header(raw)
    assert header.fields == (
        Field("subject", b"Subject: one\r\n two\r\n\tthree\r\n"),
        Field("to", b"To: a@b\n"),
    )
    assert header.fields[0].value == b" one two\tthree"
    assert header.fields[0].text == "one two\tthree"
    assert (header.end, header.body_start, header.blank_line) == (len(raw) - 6,) * 2 + (True,)


def test_white_space_before_the_colon_is_a_field_and_is_reported() -> None:
    header = parse_header(b"From : boss@x\r\nFrom\t: b@x\r\nFrom: me@x\r\n\r\n")
    assert [f.name for f in header.fields] == ["from", "from", "from"]
    assert [f.spaced for f in header.fields] == [True, True, False]
    assert header.stray_lines == 0


@pytest.mark.parametrize(
    ("raw", "stray", "blank_line", "names"),
    [
        (b"From boss@x Mon Jan 1\r\nFrom: me@x\r\n\r\n", 1, True, ["from"]),
        (b" orphan\r\nFrom: me@x\r\n\r\n", 1, True, ["from"]),
        (b"From: me@x\r\nnot a field\r\nFrom: boss@x\r\n\r\n", 0, False, ["from"]),
        (b"From: me@x\r\n", 0, False, ["from"]),
        (b"\r\nFrom: boss@x\r\n", 0, True, []),
    ],
)
def test_lines_that_belong_to_no_field(
    raw: bytes, stray: int, blank_line: bool, names: list[str]
) -> None:
    header = parse_header(raw)
    assert (header.stray_lines, header.blank_line) == (stray, blank_line)
    assert [f.name for f in header.fields] == names


def test_last_line_without_line_end_is_kept_as_received() -> None:
    assert parse_header(b"A: b\r\n c\r").fields == (Field("a", b"A: b\r\n c\r"),)
    assert parse_header(b"A: b").fields == (Field("a", b"A: b"),)


@pytest.mark.parametrize(
    ("line", "control"),
    [
        (b"S: a\tb\r\n", False), (b"S: caf\xc3\xa9 \xff\r\n", False), (b"S: a\x00b\r\n", True),
        (b"S: a\x1bb\r\n", True), (b"S: a\rb\r\n", True), (b"S: a\x7f\r\n", True),
        (b"S: a\r\n\x0bb\r\n", False),  # not a continuation: the next line ends the block
    ],
)
def test_control_characters(line: bytes, control: bool) -> None:
    assert parse_header(line).fields[0].has_control is control


def test_header_block_limit_is_the_parsers() -> None:
    fits = b"X: " + b"a" * (MAX_HEADER_BLOCK - 5) + b"\r\n"
    assert len(parse_header(fits + b"\r\nbody").fields) == 1
    with pytest.raises(HeaderTooLarge):
        parse_header(fits + b"Y: b\r\n\r\n")
    assert len(parse_header(fits + b"Y: b\r\n\r\n", limit=None).fields) == 2


def test_addresses_strict_and_lenient() -> None:
    parsed = parse_addresses('"boss@x" <me@y>, Team: a@b, c@d;')
    assert parsed.mailboxes == (
        Mailbox("boss@x", "me", "y"), Mailbox("", "a", "b"), Mailbox("", "c", "d"),
    )
    assert [g.name for g in parsed.groups] == [None, "Team"]
    for bad in ("a@b <c@d>", "<>", "a@b,,", "(" * 3000, "x" * (MAX_ADDRESS_FIELD + 1)):
        with pytest.raises(AddressError, match="^address field does not parse$"):
            parse_addresses(bad)
        parse_addresses(bad, strict=False)  # never raises
    assert parse_addresses("a@b <c@d>", strict=False).mailboxes[0].address == "a@b"
    long = ", ".join(f"a{i}@b.c" for i in range(1000))
    assert len(parse_addresses(long, strict=False).mailboxes) == 1000
