"""MIME structure, ENVELOPE, BODYSTRUCTURE and BODY[section] of single messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.imap.protocol import Raw, Section, SectionText, Untagged, serialize
from gateway.imap.render import fetch


def render(value: object) -> bytes:
    return serialize(Untagged((Raw(b"X"), value)))[4:-2]  # type: ignore[arg-type]


def octets(raw: bytes, spec: str, *fields: str) -> bytes:
    """BODY[spec] of raw, spec like "1.2.HEADER"."""
    pieces = spec.split(".") if spec else []
    part = tuple(int(p) for p in pieces if p.isdigit())
    text = ".".join(p for p in pieces if not p.isdigit())
    section = Section(part, SectionText(text) if text else None, fields)
    return fetch.section_octets(raw, fetch.parse_message(raw), section)


SIMPLE = b"Subject: hi\r\nFrom: a@b.c\r\n\r\nline one\r\nline two\r\n"

NESTED = (
    b"From: a@b.c\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: forwarded\r\n"
    b'Content-Type: multipart/mixed; boundary="fw"\r\n'
    b"\r\n"
    b"--fw\r\n"
    b"\r\n"
    b"first\r\n"
    b"--fw\r\n"
    b"Content-Type: image/png\r\n"
    b"\r\n"
    b"PNG\r\n"
    b"--fw--\r\n"
    b"--outer--\r\n"
)


def test_single_part_message():
    assert octets(SIMPLE, "") == SIMPLE
    assert octets(SIMPLE, "HEADER") == b"Subject: hi\r\nFrom: a@b.c\r\n\r\n"
    assert octets(SIMPLE, "TEXT") == b"line one\r\nline two\r\n"
    assert octets(SIMPLE, "1") == b"line one\r\nline two\r\n"
    assert octets(SIMPLE, "2") == b""
    assert render(fetch.body_structure(fetch.parse_message(SIMPLE))) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2 NIL NIL NIL NIL)'
    )


def test_message_without_body_or_header():
    assert octets(b"Subject: x\r\n", "TEXT") == b""
    assert octets(b"Subject: x\r\n", "HEADER") == b"Subject: x\r\n"
    assert octets(b"\r\nbody only", "TEXT") == b"body only"
    assert octets(b"\r\nbody only", "HEADER") == b"\r\n"


def test_nested_part_numbers():
    assert octets(NESTED, "1.1") == b"plain"
    assert octets(NESTED, "1.2") == b"<p>html</p>"
    assert octets(NESTED, "1.2.MIME") == b"Content-Type: text/html\r\n\r\n"
    assert octets(NESTED, "2.HEADER").startswith(b"Subject: forwarded\r\n")
    assert octets(NESTED, "2.1") == b"first"
    assert octets(NESTED, "2.2") == b"PNG"
    assert octets(NESTED, "2.HEADER.FIELDS", "subject") == b"Subject: forwarded\r\n\r\n"
    assert octets(NESTED, "1.HEADER") == b""  # HEADER of a non-message part: empty
    assert octets(NESTED, "2.1.1") == b""
    assert octets(NESTED, "3") == b""


def test_nested_bodystructure():
    tree = fetch.parse_message(NESTED)
    assert render(fetch.body_structure(tree, extensible=False)) == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 0) "alternative")'
        b'("message" "rfc822" NIL NIL NIL "7bit" 127 '
        b'(NIL "forwarded" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)'
        b'("image" "png" NIL NIL NIL "7bit" 3) "mixed") 11) "mixed")'
    )


def test_boundary_that_prefixes_another_line_is_not_a_delimiter():
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\n\r\none\r\n--bb is not a delimiter\r\n--b  \r\n\r\ntwo\r\n--b--\r\n"
    )
    assert octets(raw, "1") == b"one\r\n--bb is not a delimiter"
    assert octets(raw, "2") == b"two"


def test_unterminated_and_partless_multiparts():
    unterminated = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nrest'
    assert octets(unterminated, "1") == b"rest"
    no_parts = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\njust text\r\n'
    structure = render(fetch.body_structure(fetch.parse_message(no_parts)))
    assert structure.startswith(b'("text" "plain"')
    assert octets(no_parts, "1") == b"just text\r\n"


def _walk(part: fetch.MimePart) -> list[fetch.MimePart]:
    inner = [*part.children, *([part.embedded] if part.embedded else [])]
    return [part] + [p for child in inner for p in _walk(child)]


def test_parts_are_offsets_into_the_message_not_copies():
    tree = fetch.parse_message(NESTED)
    parts = _walk(tree)
    assert len(parts) == 8 and all(p.source is NESTED for p in parts)
    assert [p.body for p in parts if p.content.subtype == "png"] == [b"PNG"]


def test_a_message_is_cut_into_at_most_max_mime_parts():
    count = fetch.MAX_MIME_PARTS + 5
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    raw += b"".join(b"--b\r\n\r\npart %d\r\n" % n for n in range(count)) + b"--b--\r\n"
    tree = fetch.parse_message(raw)
    assert len(tree.children) == fetch.MAX_MIME_PARTS
    assert octets(raw, "1") == b"part 0"
    last = b"".join(b"part %d\r\n--b\r\n\r\n" % n for n in range(count - 6, count - 1))
    assert octets(raw, str(fetch.MAX_MIME_PARTS)) == last + b"part %d\r\n--b--\r\n" % (count - 1)
    inner = b'Content-Type: multipart/mixed; boundary="i"\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n'
    nested = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    nested += b"".join(b"--b\r\n" + inner for _ in range(count)) + b"--b--\r\n"
    parts = _walk(fetch.parse_message(nested))
    assert len(parts) <= fetch.MAX_MIME_PARTS + 1  # the budget covers nested parts too
    assert parts[-1].content is fetch.OPAQUE


def test_digest_parts_default_to_messages():
    raw = (
        b'Content-Type: multipart/digest; boundary="d"\r\n\r\n'
        b"--d\r\n\r\nSubject: one\r\n\r\nbody one\r\n--d--\r\n"
    )
    assert octets(raw, "1.HEADER") == b"Subject: one\r\n\r\n"
    assert b'("message" "rfc822"' in render(fetch.body_structure(fetch.parse_message(raw)))


def test_mime_depth_is_limited():
    raw = b"Subject: deep\r\n\r\nbottom"
    for level in range(fetch.MAX_MIME_DEPTH + 10):
        raw = b'Content-Type: multipart/mixed; boundary="%d"\r\n\r\n--%d\r\n' % (level, level) + raw
        raw += b"\r\n--%d--\r\n" % level
    tree = fetch.parse_message(raw)
    structure = render(fetch.body_structure(tree))
    assert structure.count(b'"mixed"') == fetch.MAX_MIME_DEPTH
    assert b'"application" "octet-stream"' in structure


def test_envelope_defaults_groups_and_odd_addresses():
    raw = (
        b"From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\n"
        b"Reply-To: \r\n"
        b"To: undisclosed-recipients:;\r\n"
        b'Cc: Team: x@y.z, "Q, R" <q@r.s>;, root\r\n'
        b"Subject: caf\xc3\xa9 \xff\r\n"
        b"In-Reply-To: <a@b>\r\n"
        b"\r\n"
    )
    value = render(fetch.envelope(fetch.parse_message(raw)))
    jorg = b'(("=?utf-8?q?J=C3=B6rg?=" NIL "j" "example.org"))'  # encoded words as sent
    assert value == (
        b"(NIL {7}\r\ncaf\xc3\xa9 \xff " + jorg + b" " + jorg + b" " + jorg + b" "
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL NIL "Team" NIL)(NIL NIL "x" "y.z")("Q, R" NIL "q" "r.s")(NIL NIL NIL NIL)'
        b'(NIL NIL "root" "MISSING_DOMAIN")) NIL "<a@b>" NIL)'
    )


def test_envelope_of_an_empty_header():
    assert render(fetch.envelope(fetch.parse_message(b"\r\n"))) == (
        b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    )


def test_rfc2231_parameters_are_given_back_extended():
    raw = (
        b"Content-Type: application/pdf\r\n"
        b"Content-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''%E2%82%AC%20rate;\r\n"
        b' filename*1=".pdf"\r\n'
        b"Content-Language: en, de\r\n"
        b"\r\nX"
    )
    structure = render(fetch.body_structure(fetch.parse_message(raw)))
    assert structure == (
        b'("application" "pdf" NIL NIL NIL "7bit" 1 NIL '
        b'("attachment" ("filename*" "utf-8\'\'%E2%82%AC%20rate.pdf")) ("en" "de") NIL)'
    )


def test_internal_date_format():
    when = datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-7, minutes=-30)))
    assert fetch.internal_date(when) == "03-Feb-2024 04:05:06 -0730"
    assert fetch.internal_date(datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)) == (
        "31-Dec-1999 23:59:59 +0000"
    )


def test_decoded_text_for_search():
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nd=E9j=E0 vu\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nw7xiZXI=\r\n"
        b"--b\r\nContent-Type: image/png\r\n\r\nnot text\r\n--b--\r\n"
    )
    text = fetch.decoded_text(fetch.parse_message(raw))
    assert "déjà vu" in text and "über" in text and "not text" not in text


# -- properties


_leaf = st.builds(
    lambda ctype, body: b"Content-Type: " + ctype + b"\r\n\r\n" + body,
    st.sampled_from([b"text/plain", b"text/html; charset=utf-8", b"image/gif", b"application/x"]),
    st.binary(max_size=40).map(lambda b: b.replace(b"-", b"_")),
)


def _multipart(children: list[bytes], depth_tag: int) -> bytes:
    boundary = b"=_%d" % depth_tag
    out = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    for child in children:
        out += b"--" + boundary + b"\r\n" + child + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


_tree = st.recursive(
    _leaf,
    lambda inner: (
        st.builds(_multipart, st.lists(inner, min_size=1, max_size=3), st.integers(0, 10**9))
        | inner.map(lambda m: b"Content-Type: message/rfc822\r\n\r\nSubject: s\r\n" + m)
    ),
    max_leaves=8,
)


def _paths(structure: object, prefix: tuple[int, ...]) -> list[tuple[tuple[int, ...], int]]:
    """(part path, size) of every leaf in a BODYSTRUCTURE value."""
    assert isinstance(structure, tuple)
    first = structure[0]
    if isinstance(first, fetch.Adjacent):
        found = []
        for n, child in enumerate(first.items, 1):
            found += _paths(child, (*prefix, n))
        return found
    own = prefix or (1,)  # a single-part message is its own part 1
    found = [(own, structure[6])]
    if structure[0] == "message" and structure[1] == "rfc822":
        inner = structure[8]
        assert isinstance(inner, tuple)
        if isinstance(inner[0], fetch.Adjacent):
            found += _paths(inner, own)
        else:
            found += [((*own, 1), inner[6])]
    return found


@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
    derandomize=True,
)
@given(_tree)
def test_bodystructure_sizes_match_section_octets(raw: bytes):
    message = b"Subject: t\r\n" + raw
    tree = fetch.parse_message(message)
    for path, size in _paths(fetch.body_structure(tree), ()):
        assert len(fetch.section_octets(message, tree, Section(path))) == size, path


_header_piece = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: text/plain; charset="\xff"\r\n',
        b"Content-Type: ;;;=\r\n",
        b"Content-Disposition: attachment; filename*0*=zz'%ZZ\r\n",
        b"Content-Disposition: inline; filename*=a; filename*0=b\r\n",
        b"Content-Type: text/plain; charset=idna; name*=idna''%FF\r\n",
        b"Content-Type: multipart/digest; boundary*0*=utf-8''%FF; boundary*1=x\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b'From: "unterminated <a@\r\n',
        b"To: a:b:c;;, <>, @@, =?x?q?y?=\r\n",
        b"Date: 99 Foo 99999\r\n",
        b"\r\n",
        b"--x\r\n",
        b"--x--\r\n",
        b" folded\r\n",
    ]
)


# Inputs that made rendering raise before Content-* fields were read into ContentFields:
# compat32 gave a field with undecodable octets back as a Header (no .split, not
# iterable), whose str() raised when the field also held decoded non-ASCII text.
@example([b"Content-Disposition: attachment; filename*0*=zz'%ZZ\r\n", b"\t", b"\x80"])
@example([b"Content-Type: multipart/mixed; boundary=x\r\n", b" \xc4\x1c\xd7\x80\xec"])
@example([b'Content-Type: text/plain; charset="\xff"\r\n', b" \tV\xc4\x1c\xd7\x80\xec"])
@example([b"Content-Transfer-Encoding: base64\xff\r\n\r\n"])
@example([b"Content-Language: en\xff\r\n\r\n"])
@example([b"Content-ID: <\xff>\r\n\r\n"])
# email's RFC 2231 decoding: numbered and unnumbered sections of one name sort as
# None < int (TypeError); a section number past int()'s digit limit (ValueError).
@example([b"Content-Disposition: inline; filename*=a; filename*0=b\r\n"])
@example([b"Content-Disposition: inline; filename*" + b"9" * 5000 + b"=x\r\n"])
# Codecs that refuse errors="replace" (UnicodeError, not LookupError).
@example([b"Content-Type: text/plain; charset=idna\r\n\r\n\xff"])
@example([b"Content-Type: text/plain; charset=idna; name*=idna''%FF\r\n"])
@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
    derandomize=True,
)
@given(st.lists(_header_piece | st.binary(max_size=30), max_size=25))
def test_malformed_mail_renders_without_raising(pieces: list[bytes]):
    raw = b"".join(pieces)
    for tree in (fetch.parse_message(raw), fetch.opaque_message(raw)):
        render(fetch.envelope(tree))
        render(fetch.body_structure(tree))
        render(fetch.body_structure(tree, extensible=False))
        fetch.decoded_text(tree)
        fetch.header_text(tree)
    for spec in ("1", "1.1", "2.MIME", "1.HEADER", "TEXT"):
        octets(raw, spec)


def test_group_syntax_takes_the_full_parser_and_keeps_names_as_sent():
    raw = b'To: Team: =?utf-8?q?J=C3=B6rg?= <j@x.y>, "Re: x" <r@x.y>;\r\n\r\n'
    to = render(fetch.envelope(fetch.parse_message(raw))).split(b" ", 5)[5]
    assert to.startswith(
        b'((NIL NIL "Team" NIL)("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x.y")("Re: x" NIL "r" "x.y")'
        b"(NIL NIL NIL NIL))"
    )
