"""CONDSTORE and QRESYNC (RFC 7162) with ENABLE (RFC 5161), over real sockets.

Raw clients against an ImapServer on 127.0.0.1:0, on every backend (memory, SQLite,
PostgreSQL): modseqs in FETCH, SEARCH and STATUS, conditional STORE, SELECT's QRESYNC
resync, VANISHED in place of EXPUNGE, HIGHESTMODSEQ in the tagged OK of NOOP, CHECK and
IDLE when it moved, and two sessions on one mailbox where one changes flags and expunges
while the other is told with MODSEQ and VANISHED.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.imap_backends import MailBackend
from tests.integration.test_imap_server import (
    NOTE,
    PASSWORD,
    USER,
    Raw,
    ServerThread,
    make_server,
    seed_inbox,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    """LUNCH (UID 1, unseen) and NEWS (UID 2, \\Seen) in INBOX, plus NOTE (UID 3)."""
    seed_inbox(mail_backend)
    mail_backend.deliver(USER, "INBOX", NOTE)
    return mail_backend


@pytest.fixture
def server(backend: MailBackend) -> Iterator[ServerThread]:
    running = make_server(backend, None, bad_command_limit=50)
    yield running
    running.close()


def client(server: ServerThread, *setup: bytes) -> Raw:
    """A logged-in raw client that ran `setup` (each command tagged `s0`, `s1`, ...)."""
    raw = Raw(server.port)
    raw.send(f'l LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    assert raw.until_tagged(b"l")[-1].startswith(b"l OK")
    for n, line in enumerate(setup):
        tag = b"s%d" % n
        raw.send(tag + b" " + line + b"\r\n")
        assert raw.until_tagged(tag)[-1].startswith(tag + b" OK"), line
    return raw


def ask(raw: Raw, line: bytes, tag: bytes = b"t") -> list[bytes]:
    raw.send(tag + b" " + line + b"\r\n")
    return [answer.rstrip(b"\r\n") for answer in raw.until_tagged(tag)]


def number(lines: list[bytes], pattern: bytes) -> int:
    """The first number the regex `pattern` captures in these lines."""
    for line in lines:
        m = re.search(pattern, line)
        if m:
            return int(m[1])
    raise AssertionError(f"{pattern!r} not in {lines}")


def modseqs(raw: Raw) -> dict[int, int]:
    """UID -> MODSEQ of every message, as the server tells it."""
    found = {}
    for line in ask(raw, b"UID FETCH 1:* (MODSEQ)", b"m")[:-1]:
        m = re.fullmatch(rb"\* \d+ FETCH \(UID (\d+) MODSEQ \((\d+)\)\)", line)
        assert m, line
        found[int(m[1])] = int(m[2])
    return found


def test_capability_enable_select_and_status(server: ServerThread):
    raw = Raw(server.port)
    assert b" CONDSTORE QRESYNC" in raw.greeting
    assert ask(raw, b"ENABLE CONDSTORE")[-1] == b"t BAD Log in first."
    raw.close()
    raw = client(server)
    assert ask(raw, b"ENABLE QRESYNC") == [b"* ENABLED QRESYNC", b"t OK ENABLE completed."]
    # QRESYNC turned CONDSTORE on already: ENABLED lists only what this command enabled.
    assert ask(raw, b"ENABLE CONDSTORE") == [b"* ENABLED", b"t OK ENABLE completed."]
    status = ask(raw, b"STATUS INBOX (HIGHESTMODSEQ MESSAGES)")
    highest = number(status, rb"HIGHESTMODSEQ (\d+)")
    assert status[0] == b'* STATUS "INBOX" (HIGHESTMODSEQ %d MESSAGES 3)' % highest
    selected = ask(raw, b"SELECT INBOX")
    assert b"* OK [HIGHESTMODSEQ %d] Highest modseq." % highest in selected
    assert ask(raw, b"ENABLE QRESYNC")[-1] == b"t BAD Command not allowed in the selected state."
    raw.close()


def test_select_condstore_fetch_modseq_and_changedsince(server: ServerThread):
    raw = client(server)
    selected = ask(raw, b"EXAMINE INBOX (CONDSTORE)")
    highest = number(selected, rb"\[HIGHESTMODSEQ (\d+)\]")
    seqs = modseqs(raw)
    assert sorted(seqs) == [1, 2, 3] and max(seqs.values()) == highest
    # EXAMINE takes no \Recent but shows what no session took yet: all three here.
    assert ask(raw, b"FETCH 2 (FLAGS MODSEQ)") == [
        b"* 2 FETCH (FLAGS (\\Recent \\Seen) MODSEQ (%d))" % seqs[2],
        b"t OK FETCH completed.",
    ]
    # CHANGEDSINCE answers only what changed after it, MODSEQ implied.
    since = ask(raw, b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % seqs[1])
    assert since == [
        b"* %d FETCH (FLAGS (\\Recent%s) MODSEQ (%d))" % (uid, b" \\Seen" if uid == 2 else b"", seq)
        for uid, seq in sorted(seqs.items())
        if seq > seqs[1]
    ] + [b"t OK FETCH completed."]
    assert ask(raw, b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest) == [
        b"t OK FETCH completed."
    ]
    raw.close()


def test_modseq_fetch_enables_condstore_in_the_selected_state(server: ServerThread):
    raw = client(server, b"SELECT INBOX")
    answer = ask(raw, b"FETCH 1 (MODSEQ)")
    assert answer[0].startswith(b"* OK [HIGHESTMODSEQ ") and answer[1].startswith(b"* 1 FETCH")
    # From now on every flag change told carries MODSEQ, even a FETCH setting \Seen.
    answer = ask(raw, b"FETCH 1 (BODY[TEXT]<0.4>)")
    assert answer[0] == b"* 1 FETCH (BODY[TEXT]<0> {4}", answer
    assert re.fullmatch(rb"--al FLAGS \(\\Recent \\Seen\) MODSEQ \(\d+\)\)", answer[1]), answer
    assert ask(raw, b"FETCH 1 (MODSEQ)")[0].startswith(b"* 1 FETCH (MODSEQ (")
    raw.close()


def test_store_unchangedsince_reports_modified(server: ServerThread):
    raw = client(server, b"SELECT INBOX (CONDSTORE)")
    seqs = modseqs(raw)
    old = max(seqs.values())
    answer = ask(raw, b"STORE 1 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Flagged)" % old)
    assert answer[-1] == b"t OK STORE completed."
    new = number(answer, rb"MODSEQ \((\d+)\)")
    assert new > max(seqs.values())
    assert answer[:-1] == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % new]
    # The same condition again fails for message 1 (changed since); 2 and 3 pass.
    answer = ask(raw, b"STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)" % old, b"u")
    assert answer[-1] == b"u OK [MODIFIED 1] Conditional STORE failed."
    assert [line.split(b" FLAGS")[0] for line in answer[:-1]] == [
        b"* 2 FETCH (UID 2",
        b"* 3 FETCH (UID 3",
    ]
    assert ask(raw, b"FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"
    # UID STORE names UIDs; UNCHANGEDSINCE 0 fails wherever the message exists.
    answer = ask(raw, b"UID STORE 2:3 (UNCHANGEDSINCE 0) FLAGS (\\Deleted)", b"v")
    assert answer == [b"v OK [MODIFIED 2:3] Conditional STORE failed."]
    raw.close()


def test_search_modseq(server: ServerThread):
    raw = client(server, b"SELECT INBOX")
    answer = ask(raw, b"SEARCH MODSEQ 1")
    assert answer[0].startswith(b"* OK [HIGHESTMODSEQ ")
    highest = number(answer, rb"HIGHESTMODSEQ (\d+)")
    assert answer[1] == b"* SEARCH 1 2 3 (MODSEQ %d)" % highest
    seqs = modseqs(raw)
    assert ask(raw, b'UID SEARCH MODSEQ "/flags/\\\\seen" all %d' % seqs[3]) == [
        b"* SEARCH 3 (MODSEQ %d)" % seqs[3],
        b"t OK SEARCH completed.",
    ]
    assert ask(raw, b"SEARCH MODSEQ %d" % (highest + 1)) == [
        b"* SEARCH",
        b"t OK SEARCH completed.",
    ]
    assert ask(raw, b"SEARCH SEEN")[0] == b"* SEARCH 2"  # no MODSEQ without the key
    raw.close()


def test_two_sessions_see_modseq_and_vanished(server: ServerThread, backend: MailBackend):
    watcher = client(server, b"ENABLE QRESYNC", b"SELECT INBOX")
    actor = client(server, b"SELECT INBOX")
    actor_answer = ask(actor, b"STORE 1 +FLAGS (\\Flagged)")
    # No CONDSTORE here, and no \Recent: the watcher's SELECT took it.
    assert actor_answer[0] == b"* 1 FETCH (UID 1 FLAGS (\\Flagged))"
    answer = ask(watcher, b"NOOP")
    modseq = number(answer, rb"MODSEQ \((\d+)\)")
    assert answer == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % modseq,
        b"t OK [HIGHESTMODSEQ %d] NOOP completed." % modseq,
    ]
    # An expunge by the other session is told as VANISHED, with UIDs, not EXPUNGE.
    ask(actor, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert ask(actor, b"EXPUNGE") == [b"* 2 EXPUNGE", b"t OK EXPUNGE completed."]
    # (its \\Deleted flag is not worth telling for a message that is gone)
    answer = ask(watcher, b"NOOP")
    assert answer[0] == b"* VANISHED 2" and len(answer) == 2
    assert number(answer, rb"t OK \[HIGHESTMODSEQ (\d+)\] NOOP completed\.$") > modseq
    # IDLE pushes them as they happen: new mail, then a CLOSE that expunges.
    watcher.send(b"i IDLE\r\n")
    assert watcher.line() == b"+ idling\r\n"
    backend.deliver(USER, "INBOX", NOTE)
    assert watcher.line() == b"* 3 EXISTS\r\n"
    assert watcher.line() == b"* 3 RECENT\r\n"  # UIDs 1, 3 and the new 4: the watcher's
    ask(actor, b"UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    fetched = watcher.line()
    assert fetched.startswith(b"* 2 FETCH (UID 3 FLAGS (\\Deleted \\Recent) MODSEQ ("), fetched
    # The actor holds none of them: CHANGEDSINCE tells their flags without \Recent.
    changed = ask(actor, b"UID FETCH 3:* (FLAGS) (CHANGEDSINCE 1)")
    assert changed[0].startswith(b"* OK [HIGHESTMODSEQ ")  # CHANGEDSINCE enabled CONDSTORE
    assert [re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ (n)", line) for line in changed[1:]] == [
        b"* 2 FETCH (UID 3 FLAGS (\\Deleted) MODSEQ (n))",
        b"* 3 FETCH (UID 4 FLAGS () MODSEQ (n))",
        b"t OK FETCH completed.",
    ]
    ask(actor, b"CLOSE")
    assert watcher.line() == b"* VANISHED 3\r\n"
    watcher.send(b"DONE\r\n")
    [done] = watcher.until_tagged(b"i")
    assert re.fullmatch(rb"i OK \[HIGHESTMODSEQ \d+\] IDLE terminated\.\r\n", done)
    assert ask(watcher, b"FETCH 1:* (UID)") == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 4)",
        b"t OK FETCH completed.",
    ]
    for raw in (watcher, actor):
        raw.close()


def test_highestmodseq_stays_below_an_expunge_not_yet_told(server: ServerThread):
    watcher = client(server, b"SELECT INBOX")
    actor = client(server, b"SELECT INBOX")
    ask(actor, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    ask(actor, b"EXPUNGE")
    expunged_at = number(ask(actor, b"STATUS INBOX (HIGHESTMODSEQ)"), rb"HIGHESTMODSEQ (\d+)")
    # A FETCH by number may not tell the expunge (it learns of it and keeps it waiting);
    # the HIGHESTMODSEQ a later one enables CONDSTORE with must not claim it was told.
    assert ask(watcher, b"FETCH 1 (UID)") == [b"* 1 FETCH (UID 1)", b"t OK FETCH completed."]
    answer = ask(watcher, b"FETCH 1 (MODSEQ)")
    assert number(answer, rb"\[HIGHESTMODSEQ (\d+)\]") < expunged_at
    answer = ask(watcher, b"EXPUNGE")
    assert answer[0] == b"* 2 EXPUNGE"
    assert number(answer, rb"\[HIGHESTMODSEQ (\d+)\]") >= expunged_at
    for raw in (watcher, actor):
        raw.close()


def test_noop_check_and_idle_tell_a_new_highestmodseq(
    server: ServerThread, backend: MailBackend
):
    """Once CONDSTORE is on, the tagged OK of NOOP, CHECK and IDLE carries HIGHESTMODSEQ
    when what the session was told took it past the last one it was given; not when
    nothing changed, and never without CONDSTORE."""
    watcher = client(server, b"SELECT INBOX (CONDSTORE)")
    plain = client(server, b"EXAMINE INBOX")
    actor = client(server, b"SELECT INBOX")

    def highest() -> int:
        return number(ask(actor, b"STATUS INBOX (HIGHESTMODSEQ)"), rb"\(HIGHESTMODSEQ (\d+)\)")

    assert ask(watcher, b"NOOP") == [b"t OK NOOP completed."]
    assert ask(watcher, b"CHECK") == [b"t OK CHECK completed."]
    ask(actor, b"STORE 1 +FLAGS.SILENT (\\Flagged)")
    flagged = highest()
    answer = ask(watcher, b"NOOP")
    assert answer[1:] == [b"t OK [HIGHESTMODSEQ %d] NOOP completed." % flagged]
    assert ask(watcher, b"NOOP") == [b"t OK NOOP completed."]  # given already
    assert ask(plain, b"NOOP")[1:] == [b"t OK NOOP completed."]  # no CONDSTORE, no code

    backend.deliver(USER, "INBOX", NOTE)
    answer = ask(watcher, b"CHECK")
    assert answer[:2] == [b"* 4 EXISTS", b"* 4 RECENT"]
    assert answer[-1] == b"t OK [HIGHESTMODSEQ %d] CHECK completed." % highest()

    ask(actor, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert ask(watcher, b"NOOP")[-1] == b"t OK [HIGHESTMODSEQ %d] NOOP completed." % highest()
    watcher.send(b"i IDLE\r\n")
    assert watcher.line() == b"+ idling\r\n"
    ask(actor, b"EXPUNGE")
    assert watcher.line() == b"* 2 EXPUNGE\r\n"
    watcher.send(b"DONE\r\n")
    done = b"i OK [HIGHESTMODSEQ %d] IDLE terminated.\r\n" % highest()
    assert watcher.until_tagged(b"i") == [done]
    watcher.send(b"j IDLE\r\n")
    assert watcher.line() == b"+ idling\r\n"
    watcher.send(b"DONE\r\n")
    assert watcher.until_tagged(b"j") == [b"j OK IDLE terminated.\r\n"]
    for raw in (watcher, plain, actor):
        raw.close()


def test_noop_highestmodseq_never_passes_an_expunge_not_yet_told(server: ServerThread):
    """A FETCH by number keeps an expunge waiting while it tells newer flags; the NOOP
    that then tells the expunge gives the HIGHESTMODSEQ past both, and no command gave
    one past the expunge before (RFC 7162 section 3.2)."""
    watcher = client(server, b"SELECT INBOX (CONDSTORE)")
    actor = client(server, b"SELECT INBOX")
    ask(actor, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    ask(actor, b"EXPUNGE")
    ask(actor, b"STORE 2 +FLAGS.SILENT (\\Flagged)")  # UID 3, after the expunge
    after = number(ask(actor, b"STATUS INBOX (HIGHESTMODSEQ)"), rb"\(HIGHESTMODSEQ (\d+)\)")
    answer = ask(watcher, b"FETCH 3 (UID)")  # by number: the expunge waits
    assert answer == [
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % after,
        b"* 3 FETCH (UID 3)",
        b"t OK FETCH completed.",
    ]
    answer = ask(watcher, b"NOOP")
    assert answer == [b"* 2 EXPUNGE", b"t OK [HIGHESTMODSEQ %d] NOOP completed." % after]
    for raw in (watcher, actor):
        raw.close()


def test_own_expunge_and_move_with_qresync(server: ServerThread):
    raw = client(server, b"ENABLE QRESYNC", b"SELECT INBOX")
    ask(raw, b"STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    answer = ask(raw, b"EXPUNGE")
    highest = number(answer, rb"HIGHESTMODSEQ (\d+)")
    assert answer == [b"* VANISHED 1,3", b"t OK [HIGHESTMODSEQ %d] EXPUNGE completed." % highest]
    answer = ask(raw, b"UID MOVE 2 Archive")
    assert answer[0].startswith(b"* OK [COPYUID ")
    assert answer[1] == b"* VANISHED 2"
    assert re.fullmatch(rb"t OK \[HIGHESTMODSEQ \d+\] MOVE completed\.", answer[2])
    raw.close()


def test_qresync_select_reports_what_changed(server: ServerThread, backend: MailBackend):
    raw = client(server, b"SELECT INBOX")
    selected = ask(raw, b"SELECT INBOX")
    validity = number(selected, rb"UIDVALIDITY (\d+)")
    known = number(selected, rb"HIGHESTMODSEQ (\d+)")
    # Meanwhile: 2 expunged, 3 flagged, a new message 4.
    ask(raw, b"UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    ask(raw, b"EXPUNGE")
    ask(raw, b"UID STORE 3 +FLAGS.SILENT ($Later)")
    backend.deliver(USER, "INBOX", NOTE)
    raw.close()

    raw = client(server, b"ENABLE QRESYNC")
    answer = ask(raw, b"SELECT INBOX (QRESYNC (%d %d))" % (validity, known))
    assert answer[-1] == b"t OK [READ-WRITE] SELECT completed."
    tail = answer[answer.index(b"* OK [HIGHESTMODSEQ %d] Highest modseq." % number(
        answer, rb"HIGHESTMODSEQ (\d+)")) + 1 : -1]
    assert tail[0] == b"* VANISHED (EARLIER) 2"
    assert [re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ (n)", line) for line in tail[1:]] == [
        b"* 2 FETCH (UID 3 FLAGS ($Later) MODSEQ (n))",
        b"* 3 FETCH (UID 4 FLAGS (\\Recent) MODSEQ (n))",  # this SELECT took 4, not 3
    ]
    # Known UIDs narrow both answers; an unchanged mailbox says nothing more.
    answer = ask(raw, b"EXAMINE INBOX (QRESYNC (%d %d 1:2))" % (validity, known))
    assert b"* VANISHED (EARLIER) 2" in answer
    assert not [line for line in answer if b"FETCH" in line]
    now = number(answer, rb"HIGHESTMODSEQ (\d+)")
    answer = ask(raw, b"SELECT INBOX (QRESYNC (%d %d 1:10 (1:3 1,3:4)))" % (validity, now))
    assert not [line for line in answer if b"VANISHED" in line or b"FETCH" in line]
    # Another UIDVALIDITY: the parameter is ignored, a plain SELECT.
    answer = ask(raw, b"SELECT INBOX (QRESYNC (%d %d))" % (validity + 1, known))
    assert answer[-1] == b"t OK [READ-WRITE] SELECT completed."
    assert not [line for line in answer if b"VANISHED" in line or b"FETCH" in line]
    raw.close()


def test_uid_fetch_vanished(server: ServerThread):
    raw = client(server, b"ENABLE QRESYNC", b"SELECT INBOX")
    before = max(modseqs(raw).values())
    ask(raw, b"STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    ask(raw, b"EXPUNGE")
    answer = ask(raw, b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % before)
    assert answer == [b"* VANISHED (EARLIER) 1:2", b"t OK FETCH completed."]
    answer = ask(raw, b"UID FETCH 2:3 (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert answer[0] == b"* VANISHED (EARLIER) 2"
    assert re.fullmatch(rb"\* 1 FETCH \(UID 3 FLAGS \(\\Recent\) MODSEQ \(\d+\)\)", answer[1])
    raw.close()


@pytest.mark.parametrize(
    ("setup", "line", "answer"),
    [
        ((), b"SELECT INBOX (QRESYNC (1 1))", b"t BAD QRESYNC must be enabled first."),
        ((b"SELECT INBOX",), b"UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)",
         b"t BAD QRESYNC must be enabled first."),
        ((b"ENABLE QRESYNC", b"SELECT INBOX"), b"FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)",
         b"t BAD Unknown or repeated fetch modifier VANISHED"),
        ((b"ENABLE QRESYNC", b"SELECT INBOX"), b"UID FETCH 1:* FLAGS (VANISHED)",
         b"t BAD VANISHED needs CHANGEDSINCE"),
        ((b"ENABLE QRESYNC",), b"SELECT INBOX (QRESYNC (1 2 1:*))",
         b"t BAD Known UIDs may not contain *"),
        ((b"ENABLE QRESYNC",), b"SELECT INBOX (QRESYNC (0 2))", b"t BAD Number out of range"),
        ((), b"SELECT INBOX (FOO)", b"t BAD Unknown or repeated select parameter FOO"),
        ((b"SELECT INBOX",), b"FETCH 1 FLAGS (CHANGEDSINCE 0)",
         b"t BAD Mod-sequence out of range"),
        ((b"SELECT INBOX",), b"STORE 1 (UNCHANGEDSINCE 9223372036854775808) FLAGS x",
         b"t BAD Mod-sequence out of range"),
        ((b"SELECT INBOX",), b"STORE 1 (FOO 1) FLAGS x",
         b"t BAD Unknown or repeated store modifier FOO"),
        ((b"EXAMINE INBOX",), b"STORE 1 (UNCHANGEDSINCE 5) FLAGS x",
         b"t NO [READ-ONLY] Mailbox is read-only."),
        ((), b"FETCH 1 (MODSEQ)", b"t BAD No mailbox selected."),
    ],
)
def test_wrong_state_and_bad_arguments(
    server: ServerThread, setup: tuple[bytes, ...], line: bytes, answer: bytes
):
    raw = client(server, *setup)
    assert ask(raw, line)[-1] == answer
    assert ask(raw, b"NOOP")[-1] == b"t OK NOOP completed."  # the session goes on
    raw.close()
