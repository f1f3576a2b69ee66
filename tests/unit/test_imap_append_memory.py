"""A large APPEND literal costs the framing about one copy of the message.

The literal arrives in reads of 64 KiB, as the server hands them over; the framing keeps
it apart from the command's lines and passes it to the parser as it is, so the peak of
what Python allocates stays near the message's size (before, chunks plus their join
plus the parser's slice: two to three copies).
"""

from __future__ import annotations

import os
import tracemalloc

from gateway.imap.protocol import Append, Continuation, ImapServerConnection, NeedData

MiB = 1024 * 1024
SIZE = 8 * MiB


def test_append_literal_is_held_once() -> None:
    message = b"Subject: big\r\n\r\n" + os.urandom(SIZE)
    chunks = [message[i : i + 65_536] for i in range(0, len(message), 65_536)]
    wire = ImapServerConnection(max_append=16 * MiB)
    tracemalloc.start()
    try:
        wire.receive_data(b'a APPEND INBOX (\\Seen) {%d}\r\n' % len(message))
        wire.next_event()
        wire.send(Continuation("Ready for literal data."))
        for chunk in chunks:
            wire.receive_data(chunk)
            assert isinstance(wire.next_event(), NeedData)
        wire.receive_data(b"\r\n")
        event = wire.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(event, Append) and event.message == message
    assert event.flags == ("\\Seen",)
    assert peak < 1.25 * len(message), f"framing peak {peak / MiB:.1f} MiB"


def test_literals_of_other_commands_still_parse_in_order() -> None:
    wire = ImapServerConnection()
    wire.receive_data(b"a LOGIN {5+}\r\nalice {3+}\r\npw!\r\nb LOGIN {0+}\r\n {0+}\r\n\r\n")
    first, second = wire.next_event(), wire.next_event()
    assert (first.userid, first.password) == ("alice", "pw!")  # type: ignore[attr-defined]
    assert (second.userid, second.password) == ("", "")  # type: ignore[attr-defined]
