"""The hostile corpus (tests/data/hostile/) through ImapState on every storage backend:
every FETCH item and SEARCH key answers OK, each message is served (opaque if need be),
and the session goes on. Also: the per-message guard, for failures nobody foresaw."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.imap.config import ImapConfig
from gateway.imap.render import fetch
from tests.imap_backends import MailBackend, make_backend
from tests.unit.test_imap_state import USER, Harness, lines

CORPUS_DIR = Path(__file__).parents[1] / "data" / "hostile"
CORPUS = {p.stem: p.read_bytes() for p in sorted(CORPUS_DIR.glob("*.eml"))}

FETCH_ITEMS = (
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[1.1]",
    "BODY.PEEK[2.HEADER]",
    "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT CONTENT-TYPE)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[]<0.100>",
    "BODY.PEEK[1]<5.10>",
    "RFC822.SIZE",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "FLAGS",
    "INTERNALDATE",
    "UID",
    "RFC822",
    "BODY[]",
)
SEARCH_KEYS = (
    "TEXT hostile",
    "BODY text",
    "HEADER Content-Type mixed",
    "FROM alice",
    "SUBJECT hostile",
    'SUBJECT "caf"',
    "SENTSINCE 1-Jan-2020",
    "OR BODY bottom NOT TEXT nothing",
)


@pytest.fixture
def harness(mail_backend: MailBackend) -> Harness:
    """The corpus in USER's INBOX, in file name order, the mailbox selected."""
    mail_backend.add_account(USER, "correct horse")
    h = Harness(mail_backend)
    for raw in CORPUS.values():
        h.deliver(raw)
    assert h.select().endswith(b"s OK [READ-WRITE] SELECT completed.\r\n")
    return h


def test_the_corpus_is_what_its_script_makes():
    script = CORPUS_DIR.parent / "make_hostile_corpus.py"
    command = [sys.executable, str(script), "--check"]
    done = subprocess.run(command, capture_output=True, check=False)
    assert done.returncode == 0, done.stdout
    assert len(CORPUS) >= 30


def test_the_reported_message_no_longer_ends_the_session(mail_backend: MailBackend):
    """The message of the report: Content-Type continued by a line of raw octets holding
    both valid and invalid UTF-8. Every FETCH of BODYSTRUCTURE used to answer BYE."""
    mail_backend.add_account(USER, "correct horse")
    h = Harness(mail_backend)
    reported = (
        b"From: alice@test.bubble\r\nContent-Type: multipart/mixed; boundary=x\r\n"
        b" \xc4\x1c\xd7\x80\xec\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n"
    )
    h.deliver(reported)
    h.deliver(b"From: bob@test.bubble\r\nSubject: next\r\n\r\nhello\r\n")
    h.select()
    assert lines(h(b"f FETCH 1:* (BODYSTRUCTURE)")) == [
        b'* 1 FETCH (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 18 4'
        b" NIL NIL NIL NIL))",
        b'* 2 FETCH (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1'
        b" NIL NIL NIL NIL))",
        b"f OK FETCH completed.",
    ]


@pytest.mark.parametrize("item", FETCH_ITEMS)
def test_every_fetch_item_answers_for_every_hostile_message(harness: Harness, item: str):
    out = harness(f"f FETCH 1:* ({item})".encode())
    assert out.endswith(b"f OK FETCH completed.\r\n"), out[-200:]
    assert b"* BYE" not in out
    numbers = re.findall(rb"^\* (\d+) FETCH ", out, re.MULTILINE)
    assert [int(n) for n in numbers] == list(range(1, len(CORPUS) + 1))
    assert harness(b"n NOOP") == b"n OK NOOP completed.\r\n"


def test_body_is_served_as_sent(harness: Harness):
    for number, raw in enumerate(CORPUS.values(), 1):
        out = harness(b"f FETCH %d (BODY.PEEK[])" % number)
        sent = raw.replace(b"\x00", b"\x80")  # a literal may not hold NUL (RFC 3501 CHAR8)
        literal = b"{%d}\r\n" % len(sent) + sent if raw else b'""'
        assert out == b"* %d FETCH (BODY[] %s)\r\nf OK FETCH completed.\r\n" % (number, literal)


@pytest.mark.parametrize("key", SEARCH_KEYS)
def test_every_search_key_answers_over_the_hostile_corpus(harness: Harness, key: str):
    out = lines(harness(f"s SEARCH {key}".encode()))
    assert out[-1] == b"s OK SEARCH completed."
    assert out[0].startswith(b"* SEARCH")


def test_unparseable_parts_are_opaque_in_bodystructure():
    tree = fetch.parse_message(CORPUS["content-type-garbage"])
    kinds = [(p.content.maintype, p.content.subtype) for p in tree.children]
    assert kinds == [("application", "octet-stream")] * 4 + [("text", "plain")]
    tree = fetch.parse_message(CORPUS["rfc2231-numbered-and-unnumbered"])
    assert tree.children[0].content is fetch.OPAQUE
    assert fetch.section_octets(b"", tree, fetch.Section((1,))) == b"PDF"


def test_deep_nesting_stops_at_an_opaque_leaf():
    for name in ("nesting-multipart-200", "nesting-rfc822-200", "nesting-alternating-200"):
        tree = fetch.parse_message(CORPUS[name])
        depth = 0
        while tree.children or tree.embedded is not None:
            tree = tree.children[0] if tree.children else tree.embedded  # type: ignore[assignment]
            depth += 1
        assert depth == fetch.MAX_MIME_DEPTH, name
        assert tree.content is fetch.OPAQUE


# -- the guard: a failure nobody foresaw degrades one message, logged without content


class _Unforeseen(Exception):
    pass


def test_a_message_that_fails_to_render_is_served_opaque(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    victim = CORPUS["boundary-unterminated"]
    real = fetch.parse_message

    def parse(raw: bytes, **kwargs: object) -> fetch.MimePart:
        if raw == victim:
            raise _Unforeseen("Subject: secret plans")
        return real(raw, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch, "parse_message", parse)
    number = list(CORPUS).index("boundary-unterminated") + 1
    with caplog.at_level(logging.WARNING, logger="gateway.imap"):
        out = lines(harness(b"f FETCH %d:%d (BODYSTRUCTURE)" % (number - 1, number + 1)))
        searched = lines(harness(b"s SEARCH TEXT unterminated"))
    assert out[1] == (
        b'* %d FETCH (BODYSTRUCTURE ("application" "octet-stream" NIL NIL NIL "7bit" %d'
        b" NIL NIL NIL NIL))" % (number, len(victim.split(b"\r\n\r\n", 1)[1]))
    )
    assert out[0].startswith(b"* %d FETCH (BODYSTRUCTURE " % (number - 1))
    assert out[2].startswith(b"* %d FETCH (BODYSTRUCTURE " % (number + 1))
    assert out[3] == b"f OK FETCH completed."
    assert searched == [b"* SEARCH", b"s OK SEARCH completed."]  # opaque: nothing to match
    assert harness(b"n NOOP") == b"n OK NOOP completed.\r\n"
    assert "_Unforeseen" in caplog.text and f"uid={number}" in caplog.text
    assert "secret" not in caplog.text and "Subject" not in caplog.text


# -- the MIME limits, from ImapConfig


def test_max_mime_parts_bounds_what_fetch_shows(mail_backend: MailBackend):
    mail_backend.add_account(USER, "correct horse")
    h = Harness(mail_backend, config=ImapConfig(max_mime_parts=2))
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    raw += b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b\r\n\r\nthree\r\n--b--\r\n"
    h.deliver(raw)
    h.select()
    out = lines(h(b"f FETCH 1 (BODY BODY.PEEK[2] BODY.PEEK[3])"))
    assert out == [
        b'* 1 FETCH (BODY (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 26 5) "mixed") BODY[2] {26}',
        b"two",
        b"--b",
        b"",
        b"three",
        b"--b--",
        b' BODY[3] "")',
        b"f OK FETCH completed.",
    ]


def test_max_mime_depth_bounds_what_fetch_and_search_see(mail_backend: MailBackend):
    mail_backend.add_account(USER, "correct horse")
    h = Harness(mail_backend, config=ImapConfig(max_mime_depth=1))
    raw = b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n"
    raw += b"Subject: deep\r\n\r\nneedle\r\n"
    h.deliver(raw)
    h.select()
    out = lines(h(b"f FETCH 1 (BODY)"))
    assert out[0] == (
        b'* 1 FETCH (BODY ("message" "rfc822" NIL NIL NIL "7bit" 57 '
        b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) "
        b'("application" "octet-stream" NIL NIL NIL "7bit" 25) 5))'
    )
    assert lines(h(b"s SEARCH BODY needle")) == [b"* SEARCH", b"s OK SEARCH completed."]
    deeper = Harness(mail_backend, config=ImapConfig(max_mime_depth=3))
    deeper.select()
    assert lines(deeper(b"s SEARCH BODY needle"))[0] == b"* SEARCH 1"


# -- a property: whatever the message, every item answers and the session goes on


_line = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: multipart/digest; boundary*0*=utf-8''%FF; boundary*1=x\r\n",
        b"Content-Type: text/plain; charset=idna; name*=idna''%FF\r\n",
        b"Content-Disposition: inline; filename*=a; filename*0=b\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Subject: =?utf-8?b?!!!?= =?x?q?=FF?=\r\n",
        b"From: a@b.c\r\n",
        b"\r\n",
        b"--x\r\n",
        b"--x--\r\n",
        b" \xd7\x80\xff\r\n",
    ]
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(_line | st.binary(max_size=20), max_size=20))
def test_no_message_ends_the_session(pieces: list[bytes]):
    with make_backend("memory", Path(".")) as backend:
        backend.add_account(USER, "correct horse")
        h = Harness(backend)
        h.deliver(b"".join(pieces))
        h.select()
        for item in FETCH_ITEMS:
            assert h(f"f FETCH 1 ({item})".encode()).endswith(b"f OK FETCH completed.\r\n")
        for key in SEARCH_KEYS:
            assert h(f"s SEARCH {key}".encode()).endswith(b"s OK SEARCH completed.\r\n")
