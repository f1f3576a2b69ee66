"""A large APPEND literal costs the framing about one copy of the message, and the SQL
store one more: the sealed blob.

The literal arrives in reads of 64 KiB, as the server hands them over; the framing keeps
it apart from the command's lines and passes it to the parser as it is, so the peak of
what Python allocates stays near the message's size (before, chunks plus their join
plus the parser's slice: two to three copies). Storing it, libsodium writes the
ciphertext into the blob after the nonce (`gateway.store.sealing.seal`), so the store
call allocates about the blob alone (before, the ciphertext and then nonce plus
ciphertext: two copies on top of the message). On SQLite, and on PostgreSQL when it
answers.

The databases' drivers copy in C, where tracemalloc does not look, so the process's
peak RSS is measured too, in a fresh interpreter: SQLite gets a large blob in pieces
(`folder_rows.STREAMED_BLOB`), so it adds about nothing to the blob (it bound it whole,
and copied it into the row's record: two copies more); libpq copies the parameter
into its send buffer once, which no INSERT avoids.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

from sqlalchemy import Engine

from gateway.imap.protocol import Append, Continuation, ImapServerConnection, NeedData
from gateway.store.mailbox import MailboxStore
from tests.unit.store_support import ALICE

pytest_plugins = ["tests.unit.store_fixtures"]

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


def test_storing_an_append_allocates_about_its_sealed_blob(store_engine: Engine, alice) -> None:
    message = b"Subject: big\r\n\r\n" + os.urandom(SIZE)
    session = MailboxStore(store_engine, max_message_bytes=2 * SIZE).session(ALICE, alice)
    session.append("INBOX", b"Subject: warm\r\n\r\nup\r\n")  # schema, statements, caches
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        uid = session.append("INBOX", message, frozenset({"\\Seen"})).uid
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    [stored] = session.fetch("INBOX", [uid])
    assert stored.body == message and stored.meta.flags == {"\\Seen"}
    # The blob is the message plus 40 octets; the rest is a header and bookkeeping.
    assert peak < 1.25 * len(message), f"store peak {peak / len(message):.2f} x the message"


_MEASURE_RSS = """
import os, resource, sys
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.mailbox import MailboxStore
from tests.unit.store_support import ALICE, add_account
url, size = sys.argv[1], int(sys.argv[2])
engine = open_engine(url)
session = MailboxStore(engine, max_message_bytes=2 * size).session(
    ALICE, add_account(AccountStore(engine), ALICE))
session.append("INBOX", b"Subject: warm\\r\\n\\r\\nup\\r\\n")
message = os.urandom(size)  # made in one piece: no copy of it freed before the call
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
session.append("INBOX", message)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / size)
"""


def test_storing_an_append_grows_peak_rss_by_about_its_blob(store_url: str) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE_RSS, store_url, str(2 * SIZE)],
        cwd=root, capture_output=True, text=True, timeout=120, check=True,
    )
    grown = float(done.stdout)
    bound = 1.5 if store_url.startswith("sqlite") else 2.5  # libpq: the blob once more
    assert grown < bound, f"peak RSS grew {grown:.2f} x the message"


def test_literals_of_other_commands_still_parse_in_order() -> None:
    wire = ImapServerConnection()
    wire.receive_data(b"a LOGIN {5+}\r\nalice {3+}\r\npw!\r\nb LOGIN {0+}\r\n {0+}\r\n\r\n")
    first, second = wire.next_event(), wire.next_event()
    assert (first.userid, first.password) == ("alice", "pw!")  # type: ignore[attr-defined]
    assert (second.userid, second.password) == ("", "")  # type: ignore[attr-defined]
