"""The sans-I/O IMAP wire layer: bytes in, events out; responses to bytes."""

from __future__ import annotations

import ast
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.imap import protocol as wire
from gateway.imap.protocol import (
    Adjacent,
    Code,
    Continuation,
    FetchAttribute,
    FetchKind,
    ImapServerConnection,
    LiteralContinuation,
    LocalProtocolError,
    Raw,
    RemoteProtocolError,
    Section,
    SectionText,
    SequenceSet,
    Status,
    StoreMode,
    Tagged,
    Untagged,
    UntaggedStatus,
)


def events(data: bytes, **limits: int) -> list[object]:
    """Every event `data` produces, answering literal continuations as a server would."""
    conn = ImapServerConnection(**limits)
    conn.receive_data(data)
    out: list[object] = []
    while True:
        event = conn.next_event()
        if isinstance(event, wire.NeedData | wire.ConnectionClosed):
            return out
        if isinstance(event, LiteralContinuation):
            conn.send(Continuation("go"))
        out.append(event)


def command(data: bytes) -> wire.Command:
    result = wire.parse_command(data)
    assert isinstance(result, wire.Command)
    return result


def bad(data: bytes, **limits: int) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        events(data, **limits)
    return info.value


# -- tags, atoms, strings, literals


def test_simple_commands_and_case():
    assert events(b"a1 capability\r\nA.2 NoOp\r\n") == [
        wire.Capability("a1"),
        wire.Noop("A.2"),
    ]
    assert command(b"t STARTTLS\r\n") == wire.StartTls("t")
    assert command(b"t CHECK\r\n") == wire.Check("t")


def test_tag_may_not_contain_plus_or_specials():
    error = bad(b"+x NOOP\r\n")
    assert wire.serialize(error.response) == b"* BAD Expected a tag\r\n"
    assert wire.serialize(bad(b"a(b NOOP\r\n").response) == b"a BAD Expected a space\r\n"
    assert not bad(b"a(b NOOP\r\n").fatal


def test_empty_lines_are_ignored():
    assert events(b"\r\n\r\na NOOP\r\n") == [wire.Noop("a")]


def test_login_with_atoms_quoted_strings_and_escapes():
    assert command(b'a LOGIN alice "p\\"w \\\\ x"\r\n') == wire.Login("a", "alice", 'p"w \\ x')
    assert command(b"a LOGIN al]ice pw\r\n") == wire.Login("a", "al]ice", "pw")
    assert "pw" not in repr(command(b"a LOGIN alice pw\r\n"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'a LOGIN "abc def\r\n', b"a BAD Unterminated quoted string"),
        (b'a LOGIN "a\\bc" x\r\n', b"a BAD Invalid escape in quoted string"),
        (b'a LOGIN "a\x00" x\r\n', b"a BAD Invalid character in quoted string"),
        (b"a LOGIN alice\r\n", b"a BAD Incomplete LOGIN command: arguments are missing"),
        (b"a LOGIN alice pw extra\r\n", b"a BAD Unexpected characters at the end of the command"),
        (b"a LOGIN  alice pw\r\n", b"a BAD Expected an atom or string"),
        (b"a LOGIN \xff pw\r\n", b"a BAD 8-bit characters must be sent in a literal"),
        (b'a LOGIN "\xff" pw\r\n', b"a BAD Strings must be UTF-8"),
        (b"a FROB\r\n", b"a BAD Unknown command FROB"),
        (b"a UID FROB 1\r\n", b"a BAD Unknown command UID FROB"),
        (b"a NOOP x\r\n", b"a BAD Unexpected characters at the end of the command"),
    ],
)
def test_syntax_errors_are_tagged_bad_and_recoverable(data: bytes, message: bytes):
    error = bad(data)
    assert wire.serialize(error.response) == message + b"\r\n"
    assert not error.fatal


def test_synchronizing_literal_asks_for_continuation():
    conn = ImapServerConnection()
    conn.receive_data(b"a LOGIN {5}\r\n")
    assert conn.next_event() == LiteralContinuation("a", "LOGIN")
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # the server must answer with "+" first
    assert conn.send(Continuation("Ready")) == b"+ Ready\r\n"
    assert isinstance(conn.next_event(), wire.NeedData)
    conn.receive_data(b"al")
    assert isinstance(conn.next_event(), wire.NeedData)
    conn.receive_data(b"ice {2}\r\n")
    assert conn.next_event() == LiteralContinuation("a", "LOGIN")
    conn.send(Continuation("Ready"))
    conn.receive_data(b"\r\n\r\n")
    assert conn.next_event() == wire.Login("a", "alice", "\r\n")


def test_non_synchronizing_literal_needs_no_continuation():
    assert events(b"a LOGIN {5+}\r\nalice {0+}\r\n\r\nb NOOP\r\n") == [
        wire.Login("a", "alice", ""),
        wire.Noop("b"),
    ]


def test_literal_shorter_than_announced_cannot_be_confused():
    # The framer waits for all five octets, so the next command is swallowed as data.
    conn = ImapServerConnection()
    conn.receive_data(b"a LOGIN {5+}\r\nab\r\n")
    assert isinstance(conn.next_event(), wire.NeedData)


def test_unknown_command_is_refused_before_its_literal():
    error = bad(b"a FROB INBOX {10}\r\n")
    assert wire.serialize(error.response) == b"a BAD Unknown command FROB\r\n"
    assert not error.fatal
    error = bad(b"(bad {10}\r\n")
    assert wire.serialize(error.response) == b"* BAD Invalid tag\r\n"


# -- APPEND, COPY, MOVE


def test_append_with_flags_date_and_either_literal():
    message = b"Subject: hi\r\n\r\nbody\r\n"
    data = b'a APPEND Sent (\\Seen $Label) " 7-Feb-2024 09:05:01 -0130" {%d}\r\n' % len(message)
    when = datetime(2024, 2, 7, 9, 5, 1, tzinfo=timezone(-timedelta(hours=1, minutes=30)))
    assert events(data + message + b"\r\n") == [
        wire.LiteralContinuation("a", "APPEND"),
        wire.Append("a", "Sent", ("\\Seen", "$Label"), when, message),
    ]
    plus = b"b APPEND inbox {%d+}\r\n" % len(message) + message + b"\r\n"
    assert events(plus) == [wire.Append("b", "INBOX", (), None, message)]


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a APPEND INBOX\r\n", b"a BAD Incomplete APPEND command: arguments are missing"),
        (b'a APPEND INBOX "msg"\r\n', b"a BAD Expected a date-time"),
        (b"a APPEND INBOX msg\r\n", b"a BAD Expected the message as a literal"),
        (b'a APPEND INBOX "31-Feb-2024 00:00:00 +0000" {1+}\r\nx\r\n', b"a BAD Invalid date-time"),
        (b"a APPEND INBOX (\\Recent) {1+}\r\nx\r\n", b"a BAD Unknown or read-only system flag"),
        (b"a COPY 1:2\r\n", b"a BAD Incomplete COPY command: arguments are missing"),
        (b"a UID MOVE x Trash\r\n", b"a BAD Expected a sequence set"),
    ],
)
def test_bad_append_copy_move(line: bytes, text: bytes):
    assert wire.serialize(bad(line).response).startswith(text)


def test_copy_and_move_commands():
    copy = wire.Copy("a", SequenceSet(((1, 3), (5, 5))), "Trash")
    assert command(b"a COPY 1:3,5 Trash\r\n") == copy
    assert command(b"a UID MOVE 7:* Archive\r\n") == wire.Move(
        "a", SequenceSet(((7, None),)), "Archive", uid=True
    )
    assert str(SequenceSet.of([1, 2, 3, 7, 9, 10])) == "1:3,7,9:10"


def test_append_literal_over_its_limit_is_refused_before_it_is_sent():
    conn = ImapServerConnection(max_literal=1024, max_command=2048, max_append=4096)
    conn.receive_data(b"a APPEND INBOX {4097}\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert wire.serialize(info.value.response) == (
        b"a NO [TOOBIG] Messages are limited to 4096 octets\r\n"
    )
    assert not info.value.fatal
    # A message bigger than max_literal and max_command but within max_append is fine.
    message = b"x" * 4000
    conn.receive_data(b"b APPEND INBOX {4000}\r\n")
    assert isinstance(conn.next_event(), LiteralContinuation)
    conn.send(Continuation("go"))
    conn.receive_data(message + b"\r\n")
    assert conn.next_event() == wire.Append("b", "INBOX", (), None, message)
    # Sent at once (LITERAL+), the octets are already coming: BAD and the end.
    error = bad(b"c APPEND INBOX {4097+}\r\n", max_append=4096)
    assert error.fatal and b"[TOOBIG]" in wire.serialize(error.response)
    # Other commands keep max_literal.
    assert b"[TOOBIG]" in wire.serialize(bad(b"d LOGIN {1025}\r\n", max_literal=1024).response)


def test_recovery_after_errors():
    conn = ImapServerConnection()
    conn.receive_data(b"a FROB\r\nb NOOP\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.next_event() == wire.Noop("b")


def test_byte_at_a_time_gives_the_same_events():
    data = (
        b'a LOGIN {5}\r\nalice "pw"\r\nb UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (A B)]<0.9>)'
        b"\r\nc SEARCH OR SEEN (DELETED FLAGGED)\r\n"
    )
    conn = ImapServerConnection()
    got: list[object] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        while True:
            event = conn.next_event()
            if isinstance(event, wire.NeedData):
                break
            if isinstance(event, LiteralContinuation):
                conn.send(Continuation("go"))
            got.append(event)
    assert got == events(data)
    assert len(got) == 4


def test_end_of_stream():
    conn = ImapServerConnection()
    conn.receive_data(b"a NOOP\r\nb NO")
    conn.receive_data(b"")
    assert conn.next_event() == wire.Noop("a")
    assert isinstance(conn.next_event(), wire.ConnectionClosed)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


def test_continuation_line_after_a_challenge():
    conn = ImapServerConnection()
    conn.receive_data(b"a AUTHENTICATE PLAIN\r\n")
    assert conn.next_event() == wire.Authenticate("a", "PLAIN", None)
    assert conn.send(Continuation("")) == b"+ \r\n"
    conn.receive_data(b"AGFsaWNlAHB3\r\nb NOOP\r\n")
    assert conn.next_event() == wire.ContinuationLine(b"AGFsaWNlAHB3")
    assert conn.next_event() == wire.Noop("b")


def test_authenticate_initial_response():
    assert command(b"a AUTHENTICATE plain AGFsaWNlAHB3\r\n") == wire.Authenticate(
        "a", "PLAIN", b"\0alice\0pw"
    )
    assert command(b"a AUTHENTICATE PLAIN =\r\n") == wire.Authenticate("a", "PLAIN", b"")
    assert wire.serialize(bad(b"a AUTHENTICATE PLAIN AGF\r\n").response) == (
        b"a BAD Invalid base64 in the initial response\r\n"
    )


# -- limits


def test_line_too_long_is_fatal_with_toobig():
    error = bad(b"a LOGIN " + b"x" * 2000 + b" y\r\n", max_line=1024)
    assert wire.serialize(error.response) == b"a BAD [TOOBIG] Command line too long\r\n"
    assert error.fatal
    # also when the line has not ended yet
    error = bad(b"b NOOP" + b"x" * 2000, max_line=1024)
    assert wire.serialize(error.response) == b"b BAD [TOOBIG] Command line too long\r\n"
    conn = ImapServerConnection(max_line=1024)
    conn.receive_data(b"x" * 1025)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # after a fatal error the connection must be closed


def test_synchronizing_literal_too_large_is_refused_and_recovers():
    conn = ImapServerConnection(max_literal=100, max_command=1024, max_line=1024)
    conn.receive_data(b"a LOGIN {101}\r\nb NOOP\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert wire.serialize(info.value.response) == b"a BAD [TOOBIG] Literal too large\r\n"
    assert not info.value.fatal
    assert conn.next_event() == wire.Noop("b")


def test_non_synchronizing_literal_too_large_is_fatal():
    error = bad(
        b"a LOGIN {101+}\r\n" + b"x" * 101, max_literal=100, max_command=1024, max_line=1024
    )
    assert error.fatal
    assert wire.serialize(error.response) == b"a BAD [TOOBIG] Literal too large\r\n"


def test_command_too_large_counts_lines_and_literals():
    data = b"a LOGIN {600+}\r\n" + b"x" * 600 + b" {600+}\r\n" + b"y" * 600 + b"\r\n"
    error = bad(data, max_literal=1000, max_command=1100, max_line=1024)
    assert error.fatal
    assert b"TOOBIG" in wire.serialize(error.response)
    assert len(events(data, max_literal=1000, max_command=1300, max_line=1024)) == 1


def test_nesting_limit():
    deep = b"a SEARCH " + b"(" * 20 + b"ALL" + b")" * 20 + b"\r\n"
    assert wire.serialize(bad(deep).response) == b"a BAD Too deeply nested\r\n"
    assert events(deep, max_depth=21) != []
    nots = b"a SEARCH " + b"NOT " * 40 + b"ALL\r\n"
    assert wire.serialize(bad(nots).response) == b"a BAD Too deeply nested\r\n"


def test_numbers_are_32_bit():
    assert command(b"a FETCH 4294967295 UID\r\n")
    for n in (b"4294967296", b"99999999999999999999", b"0"):
        assert b"BAD" in wire.serialize(bad(b"a FETCH " + n + b" UID\r\n").response)
    assert b"BAD" in wire.serialize(bad(b"a LOGIN {99999999999} \r\n").response)


# -- command arguments


def test_sequence_sets():
    fetch = command(b"a FETCH 2,4:6,10:*,* FLAGS\r\n")
    assert isinstance(fetch, wire.Fetch)
    s = fetch.sequence_set
    assert s.ranges == ((2, 2), (4, 6), (10, None), (None, None))
    assert str(s) == "2,4:6,10:*,*"
    assert s.intervals(12) == [(2, 2), (4, 6), (10, 12)]
    assert s.intervals(3) == [(2, 10)]  # 10:* with * = 3 is 3:10, merged with its neighbours
    assert list(s.select([1, 3, 5, 7, 11, 30], 30)) == [2, 4, 5]
    for text in (b"1,", b"1::2", b":", b"1:2:3", b"a"):
        assert b"BAD" in wire.serialize(bad(b"a FETCH " + text + b" UID\r\n").response)


@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60) | st.none()), min_size=1),
    st.lists(st.integers(1, 70), unique=True),
    st.integers(1, 80),
)
def test_sequence_set_select_matches_a_naive_reading(ranges, values, star):
    s = SequenceSet(tuple((a, b) for a, b in ranges))
    values = sorted(values)
    wanted = set()
    for a, b in ranges:
        b = star if b is None else b
        wanted |= set(range(min(a, b), max(a, b) + 1))
    assert [values[i] for i in s.select(values, star)] == [v for v in values if v in wanted]


def test_fetch_attributes_sections_and_partials():
    fetch = command(
        b"a UID FETCH 1 (uid Flags INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE "
        b"RFC822 RFC822.HEADER RFC822.TEXT BODY[] BODY.PEEK[HEADER] BODY[TEXT]<5.10> "
        b'BODY.PEEK[HEADER.FIELDS (From "X Odd" {3}\r\nABC)] BODY[1.2.HEADER.FIELDS.NOT (To)] '
        b"BODY[3.MIME] BODY[2.TEXT] body.peek[1]<0.1>)\r\n"
    )
    assert isinstance(fetch, wire.Fetch) and fetch.uid
    a = fetch.attributes
    assert [x.kind for x in a[:10]] == [
        FetchKind.UID,
        FetchKind.FLAGS,
        FetchKind.INTERNALDATE,
        FetchKind.RFC822_SIZE,
        FetchKind.ENVELOPE,
        FetchKind.BODY,
        FetchKind.BODYSTRUCTURE,
        FetchKind.RFC822,
        FetchKind.RFC822_HEADER,
        FetchKind.RFC822_TEXT,
    ]
    assert a[10] == FetchAttribute(FetchKind.SECTION, Section())
    assert a[11] == FetchAttribute(FetchKind.SECTION, Section(text=SectionText.HEADER), peek=True)
    assert a[12] == FetchAttribute(FetchKind.SECTION, Section(text=SectionText.TEXT), (5, 10))
    assert a[13].section == Section((), SectionText.HEADER_FIELDS, ("From", "X Odd", "ABC"))
    assert a[14].section == Section((1, 2), SectionText.HEADER_FIELDS_NOT, ("To",))
    assert [x.response_name for x in a[10:]] == [
        "BODY[]",
        "BODY[HEADER]",
        "BODY[TEXT]<5>",
        'BODY[HEADER.FIELDS (From "X Odd" ABC)]',
        "BODY[1.2.HEADER.FIELDS.NOT (To)]",
        "BODY[3.MIME]",
        "BODY[2.TEXT]",
        "BODY[1]<0>",
    ]
    assert [x.sets_seen for x in a] == [False] * 7 + [True, False, True] + [
        True,
        False,
        True,
        False,
        True,
        True,
        True,
        False,
    ]


def test_fetch_macros_and_single_attribute():
    assert command(b"a FETCH 1 fast\r\n") == wire.Fetch(
        "a",
        SequenceSet(((1, 1),)),
        tuple(
            FetchAttribute(k)
            for k in (FetchKind.FLAGS, FetchKind.INTERNALDATE, FetchKind.RFC822_SIZE)
        ),
    )
    assert len(command(b"a FETCH 1 ALL\r\n").attributes) == 4  # type: ignore[attr-defined]
    assert len(command(b"a FETCH 1 FULL\r\n").attributes) == 5  # type: ignore[attr-defined]
    assert command(b"a FETCH 1 BODY[1]\r\n").attributes[0].section == Section((1,))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        (b"(ALL)", b"Unknown fetch attribute ALL"),
        (b"BODY.PEEK", b"Unknown fetch attribute BODY.PEEK"),
        (b"BINARY", b"BINARY needs a section such as [1]"),
        (b"BINARY.PEEK[TEXT]", b"BINARY.PEEK takes a part number only"),
        (b"BINARY.SIZE[1.MIME]", b"BINARY.SIZE takes a part number only"),
        (b"BINARY[1]<0.0>", b"Number out of range"),
        (b"BINARY.FOO[1]", b"Unknown fetch attribute BINARY.FOO"),
        (b"BODY[MIME]", b"MIME needs a part number"),
        (b"BODY[0]", b"Invalid section part number"),
        (b"BODY[1.FOO]", b"Invalid section 1.FOO"),
        (b"BODY[HEADER.FIELDS]", b"Expected a space"),
        (b"BODY[HEADER.FIELDS ()]", b"Expected an atom or string"),
        (b"BODY[]<1>", b"Expected '.' in a partial <origin.length>"),
        (b"BODY[]<1.0>", b"Number out of range"),
        (b"(FLAGS", b"Expected a space"),
    ],
)
def test_bad_fetch_attributes(attribute: bytes, message: bytes):
    response = wire.serialize(bad(b"a FETCH 1 " + attribute + b"\r\n").response)
    assert response == b"a BAD " + message + b"\r\n"


def test_search_keys():
    search = command(
        b"a UID SEARCH CHARSET utf-8 1:3 UID 5:* NOT (SEEN UNFLAGGED) OR LARGER 10 SMALLER 5 "
        b'KEYWORD $x SENTBEFORE "1-Feb-2024" SINCE 29-feb-2024 FROM {3}\r\nbob '
        b'HEADER X-Spam "" TEXT x BODY y NEW\r\n'
    )
    assert isinstance(search, wire.Search)
    assert search.uid and search.charset == "UTF-8"
    assert isinstance(search.key, wire.SearchAnd)
    assert search.key.keys == (
        wire.SearchSet(SequenceSet(((1, 3),)), uid=False),
        wire.SearchSet(SequenceSet(((5, None),)), uid=True),
        wire.SearchNot(
            wire.SearchAnd((wire.SearchFlag("\\Seen", True), wire.SearchFlag("\\Flagged", False)))
        ),
        wire.SearchOr(wire.SearchSize(True, 10), wire.SearchSize(False, 5)),
        wire.SearchFlag("$x", True),
        wire.SearchDate(wire.DateField.SENT, wire.DateRelation.BEFORE, date(2024, 2, 1)),
        wire.SearchDate(wire.DateField.INTERNAL, wire.DateRelation.SINCE, date(2024, 2, 29)),
        wire.SearchHeader("From", b"bob"),
        wire.SearchHeader("X-Spam", b""),
        wire.SearchText(b"x", with_headers=True),
        wire.SearchText(b"y", with_headers=False),
        wire.SearchAnd((wire.SearchRecent(True), wire.SearchFlag("\\Seen", False))),
    )
    assert command(b"a SEARCH ALL\r\n") == wire.Search("a", wire.SearchAll())


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (b"", b"Incomplete SEARCH command: arguments are missing"),
        (b"BOGUS", b"Unknown search key BOGUS"),
        (b"ON 30-Feb-2024", b"Invalid date"),
        (b"ON 1-Foo-2024", b"Invalid date"),
        (b"ON yesterday", b"Expected a date like 1-Feb-2024"),
        (b"(SEEN", b"Expected ) closing a search list"),
        (b"OR SEEN", b"Incomplete SEARCH command: arguments are missing"),
        (b"LARGER x", b"Expected a number"),
    ],
)
def test_bad_search_keys(keys: bytes, message: bytes):
    assert (
        wire.serialize(bad(b"a SEARCH " + keys + b"\r\n").response) == b"a BAD " + message + b"\r\n"
    )


def test_store_forms():
    assert command(b"a STORE 1:2 +FLAGS.SILENT (\\seen $Junk)\r\n") == wire.Store(
        "a", SequenceSet(((1, 2),)), StoreMode.ADD, ("\\Seen", "$Junk"), silent=True
    )
    assert command(b"a UID STORE 3 -flags \\Deleted \\Draft\r\n") == wire.Store(
        "a", SequenceSet(((3, 3),)), StoreMode.REMOVE, ("\\Deleted", "\\Draft"), uid=True
    )
    assert command(b"a STORE 1 FLAGS ()\r\n") == wire.Store(
        "a", SequenceSet(((1, 1),)), StoreMode.REPLACE, ()
    )
    for wrong in (
        b"a STORE 1 *FLAGS x\r\n",
        b"a STORE 1 FLAGS \\Recent\r\n",
        b"a STORE 1 FLAGS\r\n",
    ):
        assert b"BAD" in wire.serialize(bad(wrong).response)


def test_mailbox_arguments():
    assert command(b"a SELECT inbox\r\n") == wire.Select("a", "INBOX")
    assert command(b'a EXAMINE "Inbox"\r\n') == wire.Examine("a", "INBOX")
    assert command(b"a SELECT INBOX/Sub\r\n") == wire.Select("a", "INBOX/Sub")
    assert command(b"a SELECT &ZeVnLIqe-\r\n") == wire.Select("a", "日本語")
    assert command(b'a LIST "" %/&AOk-*\r\n') == wire.List("a", "", "%/é*")
    assert command(b"a LSUB Archive/ *\r\n") == wire.Lsub("a", "Archive/", "*")
    assert command(b"a STATUS Sent (messages unseen)\r\n") == wire.StatusCommand(
        "a", "Sent", ("MESSAGES", "UNSEEN")
    )
    assert command(b"a RENAME a b\r\n") == wire.Rename("a", "a", "b")
    for name in (b"&Jjo", b"&Jjo!-", b'"caf\xc3\xa9"'):
        assert b"Invalid mailbox name" in wire.serialize(
            bad(b"a SELECT " + name + b"\r\n").response
        )


def test_id_and_enable():
    assert command(b'a ID ("name" "mutt" "version" NIL)\r\n') == wire.Id(
        "a", (("name", "mutt"), ("version", None))
    )
    assert command(b"a ID nil\r\n") == wire.Id("a", None)
    assert command(b"a ENABLE condstore UTF8=ACCEPT\r\n") == wire.Enable(
        "a", ("CONDSTORE", "UTF8=ACCEPT")
    )
    assert b"BAD" in wire.serialize(bad(b"a ENABLE\r\n").response)
    too_many = b"a ID (" + b" ".join(b'"k%d" "v"' % i for i in range(31)) + b")\r\n"
    assert wire.serialize(bad(too_many).response) == b"a BAD Too many ID parameters\r\n"


# -- modified UTF-7


@given(st.text())
def test_mailbox_names_round_trip(name: str):
    encoded = wire.encode_mailbox(name)
    assert encoded.isascii()
    assert wire.decode_mailbox(encoded.encode()) == name


def test_mailbox_encoding_known_values():
    assert wire.encode_mailbox("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert wire.encode_mailbox("A&B") == "A&-B"


# -- responses


def test_serialize_values():
    response = Untagged(
        (
            3,
            Raw(b"FETCH"),
            (
                Raw(b"A"),
                None,
                "plain",
                'q"uo\\te',
                "caf\u00e9",
                "two\r\nlines",
                b"octets",
                b"",
                (),
                Adjacent(((1,), (2,))),
            ),
        )
    )
    assert wire.serialize(response) == (
        b'* 3 FETCH (A NIL "plain" "q\\"uo\\\\te" {5}\r\ncaf\xc3\xa9 {10}\r\ntwo\r\nlines '
        b'{6}\r\noctets "" () (1)(2))\r\n'
    )
    assert wire.serialize(Untagged(("x" * 2000,))).startswith(b"* {2000}\r\n")


def test_serialize_status_responses():
    assert wire.serialize(Tagged("a1", Status.OK, "Done.")) == b"a1 OK Done.\r\n"
    assert wire.serialize(Tagged("a1", Status.NO, "No.", Code("NONEXISTENT"))) == (
        b"a1 NO [NONEXISTENT] No.\r\n"
    )
    assert (
        wire.serialize(
            UntaggedStatus(
                Status.OK, "Flags.", Code("PERMANENTFLAGS", ((Raw(b"\\Seen"), Raw(b"\\*")),))
            )
        )
        == b"* OK [PERMANENTFLAGS (\\Seen \\*)] Flags.\r\n"
    )
    assert wire.serialize(UntaggedStatus(Status.BYE, "Bye.")) == b"* BYE Bye.\r\n"
    assert wire.serialize(Continuation()) == b"+ \r\n"


@pytest.mark.parametrize(
    "response",
    [
        Tagged("a", Status.OK, "two\r\nlines"),
        Tagged("a", Status.OK, ""),
        Tagged("a", Status.OK, "[looks like a code"),
        Continuation("x\ny"),
        Untagged((-1,)),
        Untagged((True,)),
    ],
)
def test_serialize_refuses_what_imap_cannot_say(response: wire.Response):
    with pytest.raises(LocalProtocolError):
        wire.serialize(response)


# -- fuzzing: input parses or raises RemoteProtocolError, nothing else


def _drain(conn: ImapServerConnection) -> bool:
    """Pull every event; False once the connection failed fatally or the peer closed."""
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as error:
            assert isinstance(error.response, Tagged | UntaggedStatus)
            assert error.response.status is Status.BAD
            wire.serialize(error.response)
            if error.fatal:
                return False
            continue
        if isinstance(event, wire.NeedData):
            return True
        if isinstance(event, wire.ConnectionClosed):
            return False
        if isinstance(event, LiteralContinuation):
            conn.send(Continuation("go"))


FUZZ_LIMITS = {"max_line": 1024, "max_literal": 512, "max_command": 2048, "max_depth": 8}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_random_bytes(chunks: list[bytes]):
    conn = ImapServerConnection(**FUZZ_LIMITS)
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        if not _drain(conn):
            return


_PIECES = [
    b"a1 ",
    b"UID ",
    b"FETCH ",
    b"SEARCH ",
    b"STORE ",
    b"LOGIN ",
    b"SELECT ",
    b"LIST ",
    b"AUTHENTICATE ",
    b"ID ",
    b"STATUS ",
    b"1:* ",
    b"2,4:6 ",
    b"(",
    b")",
    b"[",
    b"]",
    b"<0.5>",
    b"BODY.PEEK",
    b"BODY",
    b"BINARY[",
    b"BINARY.SIZE[",
    b"RETURN ",
    b"(MIN MAX COUNT ALL) ",
    b"GETQUOTAROOT ",
    b"SETQUOTA ",
    b"(STORAGE 512)",
    b"(SUBSCRIBED RECURSIVEMATCH) ",
    b"(CHILDREN STATUS (MESSAGES)) ",
    b"APPEND ",
    b"~{3}\r\n",
    b"HEADER.FIELDS ",
    b"(FROM TO)",
    b"{3}\r\n",
    b"{2+}\r\n",
    b"{0}\r\n",
    b'"q\\"x"',
    b"\\Seen ",
    b"+FLAGS ",
    b"NOT ",
    b"OR ",
    b"ALL",
    b"CHARSET ",
    b"MODSEQ ",
    b"(CHANGEDSINCE 5 VANISHED)",
    b"(UNCHANGEDSINCE 0) ",
    b"(QRESYNC (1 2 1:5 (1 1)) CONDSTORE)",
    b"\r\n",
    b" ",
    b"*",
    b"%",
    b"&ZeVnLIqe-",
    b"&",
    b"NIL",
    b"\x00",
    b"\xff",
    b"x",
]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40), st.integers(1, 64))
def test_fuzz_command_shaped_input(pieces: list[bytes], step: int):
    data = b"".join(pieces)
    conn = ImapServerConnection(**FUZZ_LIMITS)
    for i in range(0, len(data), step):
        conn.receive_data(data[i : i + step])
        if not _drain(conn):
            return
    conn.receive_data(b"")
    _drain(conn)


def _encode_astring(value: str, form: int) -> bytes:
    data = value.encode()
    if form == 0 and data and all(c in b"abcdefghijklmnopqrstuvwxyz0123456789.-_@" for c in data):
        return data
    if form == 1 and "\r" not in value and "\n" not in value and "\x00" not in value:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d+}\r\n" % len(data) + data


@given(st.text(max_size=30), st.text(max_size=30), st.integers(0, 2), st.integers(0, 2))
def test_login_arguments_round_trip(user: str, password: str, f1: int, f2: int):
    data = b"t LOGIN " + _encode_astring(user, f1) + b" " + _encode_astring(password, f2) + b"\r\n"
    assert events(data) == [wire.Login("t", user, password)]


def test_the_protocol_layer_imports_nothing_of_the_gateway_but_itself():
    """gateway/imap/protocol is pure: no storage contract, no session, no asyncio."""
    package = Path(wire.__file__).parent
    imported = set()
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "gateway.imap.protocol.events" in imported  # the walk found the imports
    outside = {
        name
        for name in imported
        if (name.startswith(("gateway", "bridge")) and not name.startswith("gateway.imap.protocol"))
        or name.split(".")[0] in ("asyncio", "socket", "ssl")
    }
    assert outside == set()
