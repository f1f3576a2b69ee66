"""FETCH and SEARCH that read only headers open only the header block (`fetch_headers`).

On every storage backend: items that read headers only (ENVELOPE, RFC822.HEADER,
BODY[HEADER], BODY[HEADER.FIELDS (.NOT)], with or without a partial) are answered from the
header block and give exactly the octets the whole message gives; metadata items read
nothing; anything else reads whole messages. Header blocks are read in batches.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from gateway.imap import protocol as wire
from gateway.imap.backend import FlagMode, MessageMeta, StoredHeader
from gateway.imap.config import ImapConfig
from gateway.imap.protocol import Content
from gateway.imap.render.direct import direct_renderer
from gateway.imap.render.plan import FetchPlan, with_recent
from gateway.imap.session import selected
from gateway.store import header_cache
from tests.imap_backends import MailBackend
from tests.unit.test_imap_state import PASSWORD, PLAIN, USER, Harness, lines, mixed

ODD_MESSAGES = [
    PLAIN,
    mixed(),
    # folded fields, 8-bit text, an encoded word, a group, a field name in odd case
    b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.org>\r\n"
    b"To: friends: a@example.org, b@example.org;\r\n"
    b"subject: Gr\xc3\xbc\xc3\x9fe\r\n  and a folded tail\r\n"
    b"Date: Thu, 4 Jan 2024 10:00:00 +0000\r\n"
    b"\r\n"
    b"Hallo.\r\n",
    b"From: nobody@example.org\r\nSubject: all header, no blank line\r\n",
    b"\r\nA message that starts with the empty line.\r\n",
    b"From: lf@example.org\nSubject: bare LF\n\nbody\n",
    b"Subject: header only\r\n\r\n",
]

HEADER_ITEMS = (
    b"UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE RFC822.HEADER BODY.PEEK[HEADER] "
    b"BODY.PEEK[HEADER.FIELDS (FROM Subject X-Missing)] BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] "
    b"BODY.PEEK[HEADER]<3.10>"
)


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    mail_backend.add_account(USER, PASSWORD)
    return mail_backend


def attribute_list(items: bytes) -> tuple[wire.FetchAttribute, ...]:
    command = wire.parse_command(b"f FETCH 1 (" + items + b")\r\n")
    assert isinstance(command, wire.Fetch)
    return command.attributes


def attribute(text: str) -> wire.FetchAttribute:
    command = wire.parse_command(f"f FETCH 1 {text}\r\n".encode())
    assert isinstance(command, wire.Fetch)
    (attr,) = command.attributes
    return attr


@pytest.mark.parametrize(
    ("item", "content"),
    [
        ("UID", Content.NONE),
        ("FLAGS", Content.NONE),
        ("INTERNALDATE", Content.NONE),
        ("RFC822.SIZE", Content.NONE),
        ("ENVELOPE", Content.HEADER),
        ("RFC822.HEADER", Content.HEADER),
        ("BODY[HEADER]", Content.HEADER),
        ("BODY.PEEK[HEADER.FIELDS (FROM)]", Content.HEADER),
        ("BODY.PEEK[HEADER.FIELDS.NOT (FROM)]<0.5>", Content.HEADER),
        ("BODY.PEEK[]", Content.FULL),
        ("BODY.PEEK[TEXT]", Content.FULL),
        ("BODY.PEEK[1]", Content.FULL),
        ("BODY.PEEK[1.HEADER]", Content.FULL),
        ("BODY.PEEK[1.MIME]", Content.FULL),
        ("RFC822", Content.FULL),
        ("RFC822.TEXT", Content.FULL),
        ("BODY", Content.FULL),
        ("BODYSTRUCTURE", Content.FULL),
    ],
)
def test_what_each_item_reads(item: str, content: Content):
    assert attribute(item).content is content


def test_header_items_equal_what_the_whole_message_gives(backend: MailBackend):
    h = Harness(backend)
    for body in ODD_MESSAGES:
        h.deliver(body)
    h.select()
    for n in range(1, len(ODD_MESSAGES) + 1):
        backend.fetch_calls.clear()
        backend.header_calls.clear()
        alone = h(b"f FETCH %d (%s)" % (n, HEADER_ITEMS))
        assert backend.fetch_calls == [] and backend.header_calls == [1]
        with_text = h(b"f FETCH %d (%s BODY.PEEK[TEXT])" % (n, HEADER_ITEMS))
        assert backend.fetch_calls == [1] and backend.header_calls == [1]
        assert alone.endswith(b")\r\nf OK FETCH completed.\r\n")
        head = alone[: -len(b")\r\nf OK FETCH completed.\r\n")]
        assert with_text.startswith(head + b" BODY[TEXT] ")
        assert with_text.endswith(b")\r\nf OK FETCH completed.\r\n")


SYNC_ITEMS = (
    b"UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM To SUBJECT X-Missing)] "
    b"BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]<2.40> RFC822.HEADER BODY.PEEK[HEADER]<5000.10>"
)


def test_header_sync_items_written_directly_equal_the_generic_rendering(
    backend: MailBackend, monkeypatch: pytest.MonkeyPatch
):
    # Runs of 2 put most messages in the SQL store's header cache (split fields), the
    # last one not (a plain header block): both reach the direct writer.
    monkeypatch.setattr(header_cache, "BLOCK_MESSAGES", 2)
    h = Harness(backend)
    for n, body in enumerate(ODD_MESSAGES):
        h.deliver(body, flags=("\\Answered", f"kw{n % 2}"))
    h.select()
    assert FetchPlan(attribute_list(SYNC_ITEMS)).writes_directly
    assert not FetchPlan(attribute_list(SYNC_ITEMS + b" ENVELOPE")).writes_directly
    tail = b")\r\nf OK FETCH completed.\r\n"
    generic = []
    for n in range(1, len(ODD_MESSAGES) + 1):
        direct = h(b"f FETCH %d (%s)" % (n, SYNC_ITEMS))
        with_envelope = h(b"f FETCH %d (%s ENVELOPE)" % (n, SYNC_ITEMS))
        assert direct.endswith(tail)
        assert with_envelope.startswith(direct[: -len(tail)] + b" ENVELOPE (")
        generic.append(direct[: -len(b"f OK FETCH completed.\r\n")])
    assert h(b"f FETCH 1:* (%s)" % SYNC_ITEMS) == b"".join(generic) + b"f OK FETCH completed.\r\n"
    # This session's SELECT took the new messages as \Recent (RFC 3501 2.3.2).
    flags = h(b"f FETCH 1:* (UID FLAGS)")
    assert flags.count(b"FLAGS (\\Answered \\Recent kw") == len(ODD_MESSAGES)


def test_the_direct_writer_takes_a_field_name_with_a_percent_sign():
    # It formats each line with "%"; a field name is text of that format, not a field of it.
    attributes = attribute_list(b'UID FLAGS BODY.PEEK[HEADER.FIELDS ("X-50%d" SUBJECT)]')
    render = direct_renderer(attributes)
    assert render is not None
    header = b"Subject: Sale\r\nX-50%d: yes\r\nFrom: shop@example.org\r\n\r\n"
    meta = MessageMeta(7, frozenset({"\\Seen"}), datetime(2024, 1, 1, tzinfo=UTC), 99, 1)
    plan = FetchPlan(attributes)
    generic = wire.serialize(wire.Untagged(
        (3, wire.Raw(b"FETCH"), plan.items(with_recent(meta), header))
    ))
    assert render.line(3, meta, True, StoredHeader(7, header)) == generic
    assert generic == (
        b'* 3 FETCH (UID 7 FLAGS (\\Recent \\Seen) BODY[HEADER.FIELDS ("X-50%d" SUBJECT)] {30}'
        b"\r\nSubject: Sale\r\nX-50%d: yes\r\n\r\n)\r\n"
    )


def test_header_fetch_sets_seen_and_reports_it(backend: MailBackend):
    h = Harness(backend)
    h.deliver()
    h.select()
    out = h(b"f FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")
    assert lines(out) == [
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}",
        b"Subject: Lunch",
        b"",
        b" FLAGS (\\Recent \\Seen))",
        b"f OK FETCH completed.",
    ]
    assert backend.fetch_calls == [] and backend.header_calls == [1]
    assert h.flags(1) == frozenset({"\\Seen"})


def test_header_sync_skips_messages_expunged_meanwhile(backend: MailBackend):
    h = Harness(backend)
    for _ in range(3):
        h.deliver()
    h.select()
    other = backend.other_session(USER)
    try:
        other.store_flags("INBOX", [2], frozenset({"\\Deleted"}), FlagMode.ADD)
        other.expunge("INBOX")
    finally:
        other.close()
    out = h(b"f FETCH 1:3 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert out.count(b" FETCH (UID ") == 2
    assert b"* 2 FETCH (UID 2 " not in out
    assert out.endswith(b"f OK FETCH completed.\r\n")


def test_header_blocks_are_read_in_batches(backend: MailBackend):
    h = Harness(backend, config=ImapConfig(header_batch=2))
    for _ in range(5):
        h.deliver()
    h.select()
    out = h(b"f FETCH 1:* ENVELOPE")
    assert out.count(b" FETCH (ENVELOPE (") == 5
    assert backend.header_calls == [2, 2, 1] and backend.fetch_calls == []


def test_the_first_batches_are_small_so_the_answer_starts_early(
    backend: MailBackend, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(selected, "FIRST_BATCH", 2)
    h = Harness(backend, config=ImapConfig(header_batch=8))
    for _ in range(20):
        h.deliver()
    h.select()
    out = h(b"f UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert [int(n) for n in re.findall(rb"\* (\d+) FETCH", out)] == list(range(1, 21))
    assert backend.header_calls == [2, 4, 8, 6]  # doubling from the first, up to the setting


def test_a_header_batch_is_bounded_by_message_sizes(backend: MailBackend):
    size = len(PLAIN)
    h = Harness(backend, config=ImapConfig(header_batch_octets=2 * size))
    for _ in range(5):
        h.deliver()
    big = PLAIN + b"x" * (3 * size) + b"\r\n"
    h.deliver(big)  # bigger than a batch may be: it goes alone
    h.deliver()
    h.select()
    out = h(b"f FETCH 1:* RFC822.HEADER")
    assert out.count(b" FETCH (RFC822.HEADER {") == 7
    assert backend.header_calls == [2, 2, 1, 1, 1]


def test_search_on_headers_reads_header_blocks_only(backend: MailBackend):
    h = Harness(backend)
    h.deliver(PLAIN)
    h.deliver(mixed())
    h.select()
    assert lines(h(b's SEARCH HEADER SUBJECT "lunch"'))[0] == b"* SEARCH 1"
    assert lines(h(b"s SEARCH SENTSINCE 3-Jan-2024"))[0] == b"* SEARCH 2"
    assert lines(h(b's SEARCH OR FROM "carol" SENTBEFORE 1-Jan-2024'))[0] == b"* SEARCH 2"
    assert backend.fetch_calls == [] and backend.header_calls == [2, 2, 2]
    assert lines(h(b's SEARCH FROM "bob" BODY "noon"'))[0] == b"* SEARCH 1"
    assert backend.fetch_calls == [2] and backend.header_calls == [2, 2, 2]
