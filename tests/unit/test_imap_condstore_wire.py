"""The CONDSTORE and QRESYNC syntax (RFC 7162) in the sans-I/O parser: SELECT/EXAMINE
parameters, FETCH and STORE modifiers, the MODSEQ fetch item and search key; and the
fuzz rule for it: input parses or raises RemoteProtocolError, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.imap import protocol as wire
from gateway.imap.protocol import (
    FetchAttribute,
    FetchKind,
    Qresync,
    RemoteProtocolError,
    SearchAnd,
    SearchFlag,
    SearchModseq,
    SearchOr,
    SequenceSet,
    StoreMode,
)

BIGGEST = 2**63 - 1


def command(data: bytes) -> wire.Command:
    return wire.parse_command(data + b"\r\n")


def bad(data: bytes) -> bytes:
    with pytest.raises(RemoteProtocolError) as info:
        command(data)
    return wire.serialize(info.value.response).rstrip(b"\r\n")


def test_select_and_examine_parameters():
    assert command(b"a SELECT INBOX") == wire.Select("a", "INBOX")
    assert command(b"a select inbox (condstore)") == wire.Select("a", "INBOX", condstore=True)
    assert command(b"a EXAMINE Sent (QRESYNC (67890007 %d))" % BIGGEST) == wire.Examine(
        "a", "Sent", qresync=Qresync(67890007, BIGGEST)
    )
    assert command(
        b"a SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541 (1:15 41,70:73))"
        b" CONDSTORE)"
    ) == wire.Select(
        "a",
        "INBOX",
        condstore=True,
        qresync=Qresync(
            67890007,
            90060115194045000,
            SequenceSet(((41, 211), (214, 541))),
            (SequenceSet(((1, 15),)), SequenceSet(((41, 41), (70, 73)))),
        ),
    )
    # Sequence match data without known UIDs.
    assert command(b"a SELECT INBOX (QRESYNC (1 2 (1:5 1:5)))") == wire.Select(
        "a", "INBOX", qresync=Qresync(1, 2, None, (SequenceSet(((1, 5),)),) * 2)
    )


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"a SELECT INBOX (FOO)", b"a BAD Unknown or repeated select parameter FOO"),
        (b"a SELECT INBOX (CONDSTORE CONDSTORE)",
         b"a BAD Unknown or repeated select parameter CONDSTORE"),
        (b"a SELECT INBOX ()", b"a BAD Expected an atom"),
        (b"a SELECT INBOX (QRESYNC)", b"a BAD Expected a space"),
        (b"a SELECT INBOX (QRESYNC ())", b"a BAD Expected a number"),
        (b"a SELECT INBOX (QRESYNC (1))", b"a BAD Expected a space"),
        (b"a SELECT INBOX (QRESYNC (1 0))", b"a BAD Mod-sequence out of range"),
        (b"a SELECT INBOX (QRESYNC (0 1))", b"a BAD Number out of range"),
        (b"a SELECT INBOX (QRESYNC (1 %d))" % (BIGGEST + 1), b"a BAD Mod-sequence out of range"),
        (b"a SELECT INBOX (QRESYNC (1 2 1:*))", b"a BAD Known UIDs may not contain *"),
        (b"a SELECT INBOX (QRESYNC (1 2 1:5 (1:2)))", b"a BAD Expected a space"),
        (b"a SELECT INBOX (QRESYNC (1 2 1:5) ", b"a BAD Expected an atom"),
        (b"a EXAMINE INBOX (QRESYNC (1 2)", b"a BAD Expected a space"),
        (b"a EXAMINE INBOX (QRESYNC (1 2)))",
         b"a BAD Unexpected characters at the end of the command"),
    ],
)
def test_bad_select_parameters(line: bytes, answer: bytes):
    assert bad(line) == answer


def test_fetch_modseq_and_modifiers():
    flags = FetchAttribute(FetchKind.FLAGS)
    modseq = FetchAttribute(FetchKind.MODSEQ)
    assert command(b"a FETCH 1:* (FLAGS MODSEQ)") == wire.Fetch(
        "a", SequenceSet(((1, None),)), (flags, modseq)
    )
    assert command(b"a FETCH 2 modseq") == wire.Fetch("a", SequenceSet(((2, 2),)), (modseq,))
    assert command(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)") == wire.Fetch(
        "a", SequenceSet(((1, None),)), (flags,), changed_since=12345
    )
    assert command(b"a UID FETCH 300:500 (FLAGS) (VANISHED CHANGEDSINCE 12345)") == wire.Fetch(
        "a", SequenceSet(((300, 500),)), (flags,), uid=True, changed_since=12345, vanished=True
    )
    assert bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)") == (
        b"a BAD Unknown or repeated fetch modifier VANISHED"
    )
    assert bad(b"a UID FETCH 1 FLAGS (VANISHED)") == b"a BAD VANISHED needs CHANGEDSINCE"
    assert bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 0)") == b"a BAD Mod-sequence out of range"
    assert bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)") == (
        b"a BAD Unknown or repeated fetch modifier CHANGEDSINCE"
    )
    assert bad(b"a FETCH 1 FLAGS (CHANGEDSINCE)") == b"a BAD Expected a space"


def test_store_unchangedsince():
    assert command(b"a STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)") == (
        wire.Store(
            "a",
            SequenceSet(((7, 7), (5, 5), (9, 9))),
            StoreMode.ADD,
            ("\\Deleted",),
            silent=True,
            unchanged_since=320162338,
        )
    )
    assert command(b"a UID STORE 1 (unchangedsince 0) FLAGS ()") == wire.Store(
        "a", SequenceSet(((1, 1),)), StoreMode.REPLACE, (), uid=True, unchanged_since=0
    )
    assert bad(b"a STORE 1 (UNCHANGEDSINCE) FLAGS x") == b"a BAD Expected a space"
    assert bad(b"a STORE 1 (CHANGEDSINCE 5) FLAGS x") == (
        b"a BAD Unknown or repeated store modifier CHANGEDSINCE"
    )
    assert bad(b"a STORE 1 (UNCHANGEDSINCE 5 UNCHANGEDSINCE 6) FLAGS x") == (
        b"a BAD Unknown or repeated store modifier UNCHANGEDSINCE"
    )
    assert bad(b"a STORE 1 (UNCHANGEDSINCE -1) FLAGS x") == b"a BAD Expected a mod-sequence"


def test_search_modseq():
    assert command(b"a SEARCH MODSEQ 620162338") == wire.Search("a", SearchModseq(620162338))
    assert command(b'a SEARCH MODSEQ "/flags/\\\\draft" all 0 SEEN') == wire.Search(
        "a", SearchAnd((SearchModseq(0), SearchFlag("\\Seen", True)))
    )
    assert command(b"a UID SEARCH OR MODSEQ 5 MODSEQ 7") == wire.Search(
        "a", SearchOr(SearchModseq(5), SearchModseq(7)), uid=True
    )
    assert bad(b'a SEARCH MODSEQ "/flags/x" yours 5') == (
        b"a BAD Expected priv, shared or all after the MODSEQ entry name"
    )
    assert bad(b"a SEARCH MODSEQ %d" % (BIGGEST + 1)) == b"a BAD Mod-sequence out of range"
    assert bad(b"a SEARCH MODSEQ") == b"a BAD Incomplete SEARCH command: arguments are missing"


@given(
    st.integers(1, 2**32 - 1),
    st.integers(1, BIGGEST),
    st.lists(st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1)), max_size=4),
    st.booleans(),
)
def test_qresync_parameters_round_trip(
    validity: int, modseq: int, ranges: list[tuple[int, int]], with_match: bool
):
    known = SequenceSet(tuple(ranges)) if ranges else None
    text = b"%d %d" % (validity, modseq)
    if known is not None:
        text += b" " + str(known).encode()
    match = None
    if with_match:
        match = (SequenceSet(((1, 3),)), SequenceSet(((4, 4), (9, 10))))
        text += b" (1:3 4,9:10)"
    assert command(b"t EXAMINE INBOX (QRESYNC (" + text + b"))") == wire.Examine(
        "t", "INBOX", qresync=Qresync(validity, modseq, known, match)
    )


_HEADS = [
    b"a SELECT INBOX ",
    b"a EXAMINE INBOX ",
    b"a FETCH 1:* FLAGS ",
    b"a UID FETCH 1:* (FLAGS MODSEQ) ",
    b"a STORE 1:3 ",
    b"a UID STORE 2 ",
    b"a SEARCH ",
    b"a ENABLE ",
]
_PIECES = [
    b"(",
    b")",
    b" ",
    b"QRESYNC ",
    b"CONDSTORE",
    b"QRESYNC",
    b"CHANGEDSINCE ",
    b"UNCHANGEDSINCE ",
    b"VANISHED",
    b"MODSEQ ",
    b"MODSEQ",
    b"0",
    b"1",
    b"67890007",
    b"9223372036854775807",
    b"9223372036854775808",
    b"99999999999999999999999",
    b"1:*",
    b"41,43:211",
    b'"/flags/\\\\seen" ',
    b'"/flags/\\',
    b"all ",
    b"priv ",
    b"+FLAGS.SILENT ",
    b"FLAGS ",
    b"(\\Seen)",
    b"{3}\r\nabc",
    b"\xff",
    b"*",
]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(_HEADS), st.lists(st.sampled_from(_PIECES), max_size=24))
def test_fuzz_condstore_syntax(head: bytes, pieces: list[bytes]):
    """Whatever the pieces make, the parser answers a command or RemoteProtocolError."""
    try:
        result = wire.parse_command(head + b"".join(pieces) + b"\r\n")
    except RemoteProtocolError:
        return
    assert isinstance(result, wire.Command)
